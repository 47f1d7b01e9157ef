"""A registry split into shards: N snapshots of contiguous person ranges, their manifest, and
the routing tables that send each identifier to the one shard holding it.

    shard(registry, 4, "nation-shards")     # or `juki shard SNAPSHOT --shards 4 --out DIR`

`DIR/shards.json` names each shard's snapshot (`shard-<k>/`), the first person id it holds and
its rows; `DIR/routes.arrow` holds every person's identifiers and `DIR/routes_<kind>.phast` the
routing function built from them, from which the front end fills its routing tables (see
`Routes`); `DIR/held_<kind>.u64`, the same identifiers in ascending order (and those persons
held before, for a registry split with history), which the shards never issue to a new person;
`DIR/routes_former.arrow`, for a registry split with history, the identifiers persons held
before their current ones, which still route to their shards. A shard's row r is person
`first_person + r`:
person ids stay those of the registry it was split from, so the audit trail and the residents'
view key on the same ids whichever shard answers. docs/sharding.md gives the design.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from juki_engine import _core
from juki_engine._core import JukiError
from juki_engine.registry import Registry

__all__ = ["FORMAT", "KINDS", "Routes", "ShardInfo", "ShardSet", "shard"]

FORMAT = "juki-shards/2"
#: Format 1 had no saved routing functions: the front end builds them when it loads the routes.
FORMATS = ("juki-shards/1", FORMAT)
KINDS = ("my_number", "resident_code")
MANIFEST = "shards.json"
ROUTES = "routes.arrow"
FUNCTION = "routes_{}.phast"
#: Every identifier of a kind held at the split, ascending uint64: what no shard may issue.
HELD = "held_{}.u64"
#: Identifiers persons held before their current ones (a registry split with history).
FORMER = "routes_former.arrow"
FORMER_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string(), False),
        pa.field("value", pa.uint64(), False),
        pa.field("person", pa.uint32(), False),
    ]
)
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
    functions_sha256: dict[str, str] | None
    """Per identifier kind, the SHA-256 of its routing function's file (None: format 1, where
    the front end builds the functions)."""
    held_sha256: dict[str, str] | None
    """Per identifier kind, the SHA-256 of the identifiers held at the split (`held_<kind>.u64`;
    None: format 1, whose shards take no changes)."""
    former_sha256: str | None = None
    """The SHA-256 of `routes_former.arrow`: a registry split with history (None: without)."""

    def held(self) -> tuple[str, str] | None:
        """The held identifiers' files (My Numbers, resident codes), checked against the
        manifest; None for a directory of format 1."""
        if self.held_sha256 is None:
            return None
        mn, rc = self._checked(HELD, self.held_sha256)
        return str(mn), str(rc)

    def _checked(self, name: str, sha256: dict[str, str]) -> list[Path]:
        """Each kind's file of `name` (a template), checked against its SHA-256."""
        files = [self.directory / name.format(kind) for kind in KINDS]
        for file, kind in zip(files, KINDS, strict=True):
            _check(file, sha256[kind])
        return files

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    def routes(self) -> Routes:
        """The routing tables, their file checked against the manifest's SHA-256 first (as a
        snapshot checks its files): a route to the wrong shard would answer a resident as no
        one."""
        path = self.directory / ROUTES
        _check(path, self.routes_sha256)
        functions = None
        if self.functions_sha256 is not None:
            mn, rc = self._checked(FUNCTION, self.functions_sha256)
            functions = (mn.read_bytes(), rc.read_bytes())
        routes = Routes.load(path, self, functions)
        if self.former_sha256 is not None:
            _check(self.directory / FORMER, self.former_sha256)
            routes.add_former(self.directory / FORMER, self)
        return routes

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ShardSet:
        root = Path(directory)
        path = root / MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ShardError(f"{path}: cannot be read as a shard manifest: {e}") from e
        if not isinstance(manifest, dict) or manifest.get("format") not in FORMATS:
            raise ShardError(f"{path}: not a manifest of {' or '.join(FORMATS)}")
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
        if manifest["format"] == FORMATS[0]:
            return cls(root, tuple(shards), digest, None, None)
        for key, name in (("functions_sha256", FUNCTION), ("held_sha256", HELD)):
            value = manifest.get(key)
            if not (
                isinstance(value, dict)
                and sorted(value) == sorted(KINDS)
                and all(
                    isinstance(v, str) and re.fullmatch("[0-9a-f]{64}", v) for v in value.values()
                )
            ):
                raise ShardError(
                    f"{path}: '{key}' must give the SHA-256 of each of "
                    f"{[name.format(kind) for kind in KINDS]}, in hex"
                )
        former = manifest.get("former_sha256")
        if former is not None and not (
            isinstance(former, str) and re.fullmatch("[0-9a-f]{64}", former)
        ):
            raise ShardError(f"{path}: 'former_sha256' must be the SHA-256 of {FORMER}, in hex")
        return cls(
            root,
            tuple(shards),
            digest,
            manifest["functions_sha256"],
            manifest["held_sha256"],
            former,
        )


def _sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 16 MiB pieces (the nation's routes are 2 GiB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _check(path: Path, expected: str) -> None:
    """`path` read whole and found as the manifest says (as a snapshot checks its files): a
    route to the wrong shard would answer a resident as no one."""
    try:
        digest = _sha256(path)
    except OSError as e:
        raise ShardError(f"{path}: cannot be read: {e}") from e
    if digest != expected:
        raise ShardError(f"{path}: SHA-256 {digest}, {MANIFEST} says otherwise")


def shard(registry: Registry, shards: int, out: str | os.PathLike[str]) -> ShardSet:
    """Split `registry` into `shards` snapshots of contiguous person ranges of near-equal size
    under `out`, with their manifest and routing tables. A registry with history (opened from
    a checkpoint, with nothing in its change log) gives each shard its persons' history,
    numbered as the registry numbered its changes, and its share of the writer's state
    (docs/sharding.md)."""
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
        registry._core.save_rows(
            str(root / f"shard-{k}"), bounds[k], bounds[k + 1] - bounds[k], k, shards
        )
    functions, held, former = Routes.save(registry, root / ROUTES)
    manifest: dict[str, object] = {
        "format": FORMAT,
        "routes_sha256": _sha256(root / ROUTES),
        "functions_sha256": {kind: _sha256(path) for kind, path in functions.items()},
        "held_sha256": {kind: _sha256(path) for kind, path in held.items()},
        "shards": [
            {"path": f"shard-{k}", "first_person": bounds[k], "rows": bounds[k + 1] - bounds[k]}
            for k in range(shards)
        ],
    }
    if former is not None:
        manifest["former_sha256"] = _sha256(former)
    with _replacing(root / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    return ShardSet.load(root)


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path to write `path`'s new content to; made durable and renamed over
    `path` once written (a crash leaves the old file or none, never half of one)."""
    tmp = path.with_name(path.name + ".tmp")
    yield tmp
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


class Routes:
    """Which shard holds the resident a key names (`_core.Router`): per identifier kind, a
    minimal perfect hash of every person's identifier and a shard byte per slot, ~1.3 bytes a
    resident and kind (0.32 GiB for the nation's two kinds). Saved as the identifiers in person
    order (`routes.arrow`) and the hash built from them (`routes_<kind>.phast`: building it takes
    ~45 s a kind for the nation, reading it a moment); the shard bytes are filled when loaded,
    checking that every person has a slot of their own. A key that names no one goes to some
    shard, which answers it as the single engine would (not found); an invalid key goes to
    shard 0, which says why, as the single engine would."""

    def __init__(self, router: _core.Router) -> None:
        self.router = router

    @staticmethod
    def save(
        registry: Registry, path: Path
    ) -> tuple[dict[str, Path], dict[str, Path], Path | None]:
        """Write `registry`'s identifiers in person order to `path`, and beside it each kind's
        routing function and its identifiers in ascending order with those persons held before
        (what no shard may issue), and those former identifiers by person (a registry with
        history), each atomically; the functions' and the held identifiers' paths by kind, and
        the former identifiers' (None: none)."""
        table = pa.table(
            {kind: pc.cast(registry.to_arrow([kind])[kind], pa.uint64()) for kind in KINDS}
        )
        former = registry._core._former_identifiers()
        former_path = None
        if former.num_rows:
            former_path = path.parent / FORMER
            with _replacing(former_path) as tmp:
                with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, FORMER_SCHEMA) as w:
                    w.write_table(former.cast(FORMER_SCHEMA))
        with _replacing(path) as tmp:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
                w.write_table(table)
        functions, held = {}, {}
        for kind in KINDS:
            values = table[kind].combine_chunks()
            functions[kind] = path.parent / FUNCTION.format(kind)
            with _replacing(functions[kind]) as tmp:
                tmp.write_bytes(_core.Router.function(values, kind))
            held[kind] = path.parent / HELD.format(kind)
            before = former.filter(pc.equal(former["kind"], kind))["value"].to_numpy()
            ever = np.unique(np.concatenate([values.to_numpy(), before]))
            with _replacing(held[kind]) as tmp:
                ever.astype("<u8").tofile(tmp)
        return functions, held, former_path

    @classmethod
    def load(
        cls, path: Path, shards: ShardSet, functions: tuple[bytes, bytes] | None = None
    ) -> Routes:
        """The routes of `path` for `shards` by `functions` (built here where None): checked
        (types, one identifier a person, no identifier twice, a slot of their own for each
        person) before they are used."""
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
                functions,
            )
        except JukiError as e:
            raise ShardError(f"{path}: {e}") from e
        return cls(router)

    def add_former(self, path: Path, shards: ShardSet) -> None:
        """Route the identifiers persons held before their current ones (`path`, as `save`
        wrote it) to their persons' shards: they answer `replaced` there."""
        try:
            table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        except (OSError, pa.ArrowInvalid) as e:
            raise ShardError(f"{path}: cannot be read as former identifiers: {e}") from e
        if (
            not table.schema.equals(FORMER_SCHEMA)
            or pc.any(pc.invert(pc.is_in(table["kind"], value_set=pa.array(KINDS)))).as_py()
        ):
            raise ShardError(f"{path}: must hold {FORMER_SCHEMA} of kinds {list(KINDS)}")
        persons = table["person"].to_numpy()
        if len(persons) and persons.max() >= shards.rows:
            raise ShardError(f"{path}: names person {persons.max()}, past the split's persons")
        firsts = np.array([s.first_person for s in shards.shards])
        owner = np.searchsorted(firsts, persons, side="right") - 1
        for kind in KINDS:
            mine = pc.equal(table["kind"], kind).to_numpy(zero_copy_only=False)
            values = table["value"].filter(pa.array(mine)).combine_chunks()
            try:
                self.router.add(values, kind, owner[mine].tolist())
            except JukiError as e:
                raise ShardError(f"{path}: {e}") from e

    def route(self, keys: pa.Array, kind: str) -> np.ndarray:
        """The shard of each key (`kind`'s identifiers): its person's; any for a key of no one;
        0 for an invalid key."""
        try:
            shards: np.ndarray = self.router.route(keys, kind).to_numpy(zero_copy_only=False)
            return shards
        except JukiError:  # an array the engine does not take: shard 0 refuses it, as one does
            return np.zeros(len(keys), np.uint8)
