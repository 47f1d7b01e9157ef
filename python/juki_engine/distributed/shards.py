"""A registry split into shards: N snapshots of contiguous person ranges, their manifest, and
the routing tables that send each identifier to the one shard holding it.

    shard(registry, 4, "nation-shards")     # or `juki shard SNAPSHOT --shards 4 --out DIR`

`DIR/shards.json` names each shard's snapshot (`shard-<k>/`), the first person id it holds and
its rows; `DIR/routes.arrow` holds, per identifier kind, every identifier of the registry sorted,
with the shard that holds it (see `Routes`). A shard's row r is person `first_person + r`:
person ids stay those of the registry it was split from, so the audit trail and the residents'
view key on the same ids whichever shard answers. docs/sharding.md gives the design.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from juki_engine.registry import Registry

__all__ = ["FORMAT", "KINDS", "Routes", "ShardInfo", "ShardSet", "shard"]

FORMAT = "juki-shards/1"
KINDS = ("my_number", "resident_code")
MANIFEST = "shards.json"
ROUTES = "routes.arrow"
#: A shard id is a byte in the routing tables.
MAX_SHARDS = 255
#: Each kind's digits: a key of another shape is no one's, and goes to shard 0 to be refused
#: as the single engine refuses it.
DIGITS = {"my_number": 12, "resident_code": 11}


class ShardError(ValueError):
    """A shard directory that is missing, damaged or of another format, named."""


@dataclass(frozen=True, slots=True)
class ShardInfo:
    path: Path
    first_person: int
    rows: int


@dataclass(frozen=True, slots=True)
class ShardSet:
    """A shard directory as its manifest describes it (validated: it is a file from outside)."""

    directory: Path
    shards: tuple[ShardInfo, ...]

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ShardSet:
        root = Path(directory)
        path = root / MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ShardError(f"{path}: cannot be read as a shard manifest: {e}") from e
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ShardError(f"{path}: not a {FORMAT} manifest")
        entries = manifest.get("shards")
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_SHARDS:
            raise ShardError(f"{path}: 'shards' must list 1 to {MAX_SHARDS} shards")
        shards = []
        expected = 0
        for k, entry in enumerate(entries):
            name = f"shard-{k}"
            ok = (
                isinstance(entry, dict)
                and entry.get("path") == name
                and all(
                    isinstance(entry.get(f), int) and not isinstance(entry.get(f), bool)
                    for f in ("first_person", "rows")
                )
            )
            if not ok or entry["first_person"] != expected or entry["rows"] < 1:
                raise ShardError(
                    f"{path}: shard {k} must be {{'path': '{name}', 'first_person': {expected}, "
                    "'rows': ≥ 1}: the shards hold contiguous person ranges in order"
                )
            shards.append(ShardInfo(root / name, expected, entry["rows"]))
            expected += entry["rows"]
        return cls(root, tuple(shards))


def shard(registry: Registry, shards: int, out: str | os.PathLike[str]) -> ShardSet:
    """Split `registry` (one without changes) into `shards` snapshots of contiguous person
    ranges of near-equal size under `out`, with their manifest and routing tables."""
    n = len(registry)
    if not 1 <= shards <= min(MAX_SHARDS, n):
        raise ValueError(f"shards must be 1 to {min(MAX_SHARDS, n)} for {n:,} residents")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    if (root / MANIFEST).exists():
        raise ValueError(f"{root} holds shards already; give an empty directory")
    bounds = [n * k // shards for k in range(shards + 1)]
    from juki_engine import names

    names.install()  # each shard keeps its 4情報 index, as a saved snapshot does
    for k in range(shards):
        registry._core.save_rows(str(root / f"shard-{k}"), bounds[k], bounds[k + 1] - bounds[k])
    Routes.build(registry, bounds).save(root / ROUTES)
    manifest = {
        "format": FORMAT,
        "shards": [
            {"path": f"shard-{k}", "first_person": bounds[k], "rows": bounds[k + 1] - bounds[k]}
            for k in range(shards)
        ],
    }
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(root / MANIFEST)
    return ShardSet.load(root)


@dataclass(frozen=True, slots=True)
class Routes:
    """Per identifier kind, every identifier (its full value) sorted, and the shard holding it:
    9 bytes a resident and kind (2.3 GB for the nation's two kinds; docs/sharding.md weighs a
    minimal perfect hash for larger countries). A key in no table is no one's: it is sent to
    shard 0, which answers it as the single engine would (not found, or why it is invalid)."""

    values: dict[str, np.ndarray]
    shards: dict[str, np.ndarray]

    @classmethod
    def build(cls, registry: Registry, bounds: list[int]) -> Routes:
        sizes = [bounds[k + 1] - bounds[k] for k in range(len(bounds) - 1)]
        owner = np.repeat(np.arange(len(sizes), dtype=np.uint8), sizes)
        values, shards = {}, {}
        for kind in KINDS:
            ids = pc.cast(registry.to_arrow([kind])[kind], pa.uint64()).to_numpy()
            order = np.argsort(ids, kind="stable")
            values[kind], shards[kind] = ids[order], owner[order]
        return cls(values, shards)

    def save(self, path: Path) -> None:
        columns = {}
        for kind in KINDS:
            columns[kind] = pa.array(self.values[kind], pa.uint64())
            columns[f"{kind}_shard"] = pa.array(self.shards[kind], pa.uint8())
        tmp = path.with_suffix(".tmp")
        with pa.OSFile(str(tmp), "wb") as sink:
            table = pa.table(columns)
            with pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, shards: int, rows: int) -> Routes:
        """The tables of `path`, mapped, for a set of `shards` shards of `rows` residents:
        checked sorted, of the right length, naming only shards that exist."""
        try:
            table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        except (OSError, pa.ArrowInvalid) as e:
            raise ShardError(f"{path}: cannot be read as routing tables: {e}") from e
        values, owners = {}, {}
        for kind in KINDS:
            try:
                v = table[kind].combine_chunks()
                s = table[f"{kind}_shard"].combine_chunks()
            except KeyError as e:
                raise ShardError(f"{path}: no column {e}") from e
            if v.type != pa.uint64() or s.type != pa.uint8() or v.null_count or s.null_count:
                raise ShardError(f"{path}: {kind} must be uint64 with uint8 shards, no nulls")
            va, sa = v.to_numpy(), s.to_numpy()
            if len(va) != rows or (len(va) > 1 and not np.all(va[1:] > va[:-1])):
                raise ShardError(f"{path}: {kind} must hold {rows:,} identifiers, sorted, once")
            if len(sa) and int(sa.max()) >= shards:
                raise ShardError(f"{path}: {kind} names a shard beyond the {shards} there are")
            values[kind], owners[kind] = va, sa
        return cls(values, owners)

    def route(self, keys: pa.Array, kind: str) -> np.ndarray:
        """The shard of each key (`kind`'s strings); keys of no one (or of another shape) → 0."""
        values, owners = self.values[kind], self.shards[kind]
        if not (pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type)):
            return np.zeros(len(keys), np.uint8)
        shaped = pc.fill_null(pc.match_substring_regex(keys, f"^[0-9]{{{DIGITS[kind]}}}$"), False)
        digits = pc.if_else(shaped, keys, pa.scalar("0", keys.type))
        ids = pc.cast(digits, pa.uint64()).to_numpy(zero_copy_only=False)
        at = np.minimum(np.searchsorted(values, ids), max(len(values) - 1, 0))
        hit = values[at] == ids if len(values) else np.zeros(len(ids), bool)
        return np.where(hit, owners[at], 0).astype(np.uint8)
