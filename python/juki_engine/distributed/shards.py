"""A registry split into shards: N snapshots of contiguous person ranges, their manifest, and
the routing tables that send each identifier to the one shard holding it.

    shard(registry, 4, "nation-shards")     # or `juki shard SNAPSHOT --shards 4 --out DIR`

`DIR/shards.json` names each shard's snapshot (`shard-<k>/`), the first person id it holds and
its rows; `DIR/routes.arrow` holds every person's identifiers, from which the front end builds
its routing index (see `Routes`). A shard's row r is person `first_person + r`:
person ids stay those of the registry it was split from, so the audit trail and the residents'
view key on the same ids whichever shard answers. docs/sharding.md gives the design.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from juki_engine import _core
from juki_engine._core import JukiError
from juki_engine.registry import Registry

__all__ = ["FORMAT", "KINDS", "Routes", "ShardInfo", "ShardSet", "shard"]

FORMAT = "juki-shards/1"
KINDS = ("my_number", "resident_code")
MANIFEST = "shards.json"
ROUTES = "routes.arrow"
#: A shard id is a byte in the routing tables.
MAX_SHARDS = 255


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
    routes_sha256: str
    """The SHA-256 of `routes.arrow` as `shard` wrote it, checked before the routes are read."""

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    def routes(self) -> Routes:
        """The routing tables, their file checked against the manifest's SHA-256 first (as a
        snapshot checks its files): a route to the wrong shard would answer a resident as no
        one."""
        path = self.directory / ROUTES
        try:
            digest = _sha256(path)
        except OSError as e:
            raise ShardError(f"{path}: cannot be read: {e}") from e
        if digest != self.routes_sha256:
            raise ShardError(f"{path}: SHA-256 {digest}, {MANIFEST} says otherwise")
        return Routes.load(path, self)

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
        digest = manifest.get("routes_sha256")
        if not (isinstance(digest, str) and re.fullmatch("[0-9a-f]{64}", digest)):
            raise ShardError(f"{path}: 'routes_sha256' must be the SHA-256 of {ROUTES}, in hex")
        return cls(root, tuple(shards), digest)


def _sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 16 MiB pieces (the nation's routes are 2 GiB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


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
    Routes.save(registry, root / ROUTES)
    manifest = {
        "format": FORMAT,
        "routes_sha256": _sha256(root / ROUTES),
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


class Routes:
    """Per identifier kind, the index from identifier to person id, and the first person of
    each shard: which shard holds the resident a key names (`_core.Router`, the registry's own
    hash index kind: ~16 bytes a resident and kind, 4 GiB for the nation's two kinds;
    docs/sharding.md weighs a minimal perfect hash for larger countries). Saved as the
    identifiers in person order (`routes.arrow`), the index built when loaded. A key that names
    no one goes to shard 0, which answers it as the single engine would (not found, or why it
    is invalid)."""

    def __init__(self, router: _core.Router) -> None:
        self.router = router

    @staticmethod
    def save(registry: Registry, path: Path) -> None:
        """Write `registry`'s identifiers in person order to `path` (atomically)."""
        table = pa.table(
            {kind: pc.cast(registry.to_arrow([kind])[kind], pa.uint64()) for kind in KINDS}
        )
        tmp = path.with_suffix(".tmp")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, shards: ShardSet) -> Routes:
        """The routes of `path` for `shards`: checked (types, one identifier a person, no
        identifier twice) before the index is built."""
        try:
            table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        except (OSError, pa.ArrowInvalid) as e:
            raise ShardError(f"{path}: cannot be read as routing tables: {e}") from e
        if table.column_names != list(KINDS) or table.num_rows != shards.rows:
            raise ShardError(
                f"{path}: must hold columns {list(KINDS)} of {shards.rows:,} rows, one a person"
            )
        try:
            router = _core.Router(
                table["my_number"].combine_chunks(),
                table["resident_code"].combine_chunks(),
                [s.first_person for s in shards.shards],
            )
        except JukiError as e:
            raise ShardError(f"{path}: {e}") from e
        return cls(router)

    def route(self, keys: pa.Array, kind: str) -> np.ndarray:
        """The shard of each key (`kind`'s identifiers); keys of no one → 0."""
        try:
            shards: np.ndarray = self.router.route(keys, kind).to_numpy(zero_copy_only=False)
            return shards
        except JukiError:  # an array the engine does not take: shard 0 refuses it, as one does
            return np.zeros(len(keys), np.uint8)
