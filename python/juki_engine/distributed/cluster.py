"""The sharded registry on Ray: one actor per shard, each holding its shard's snapshot (mapped),
and a front end that splits each call by shard and merges the answers in the caller's order.

    registry = ShardedRegistry.start("nation-shards", address="auto")   # a running cluster
    registry.verify(claims, by="my_number")      # the same answer as Registry.verify, row for row

Claims reach exactly one shard each, by the routing tables (`shards.Routes`); the sub-tables
travel through Ray's object store as Arrow (no copy into the actors' heaps beyond Ray's own). An
actor that dies is restarted by Ray (it reopens its snapshot) and the call in flight is retried
on it: reads are idempotent, so a retried call is still the whole, right answer. A call whose
retries are spent raises `ShardUnavailable`, never a partial answer.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from juki_engine.distributed.shards import Routes, ShardError, ShardSet
from juki_engine.registry import Registry

__all__ = ["ShardUnavailable", "ShardedRegistry"]

#: Ray's object store, where a local Ray instance is started here: what the claims and answers
#: in flight may take, so that the whole stays within the project's memory budget.
OBJECT_STORE_BYTES = 2 * 2**30
#: How often Ray restarts a dead actor, and retries a call on the restarted one.
MAX_RESTARTS = -1
MAX_TASK_RETRIES = 3
_ROW = re.compile(r"^row (\d+): ")
T = TypeVar("T")


class ShardUnavailable(RuntimeError):
    """A shard's actor could not answer (dead, and its retries spent): the call has no answer."""


class NotSharded(RuntimeError):
    """What a sharded registry does not do yet: take changes, owe notices, keep watch lists
    (docs/sharding.md says how they will route)."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:  # pragma: no cover - the dev extra installs it
        raise RuntimeError(
            "the sharded registry runs on Ray: pip install 'juki_engine[ray]'"
        ) from e
    return ray


class ShardActor:
    """One shard's registry, in a Ray worker process."""

    def __init__(self, path: str, first_person: int) -> None:
        self.registry = Registry.open(path, mmap=True)
        self.first_person = first_person

    def verify(self, claims: pa.Table, by: str, match: str, columns: list[str]) -> pa.Table:
        return self.registry.verify(claims, by=by, match=match, columns=columns)

    def lookup(self, keys: pa.Array, by: str, columns: list[str] | None) -> pa.Table:
        return self.registry.lookup(keys, by=by, columns=columns)

    def search(self, claims: pa.Table, match: str, columns: list[str]) -> pa.Table:
        return self.registry.search(claims, match=match, columns=columns)

    def verify_one(
        self, key: str, by: str, claims: dict[str, Any], columns: list[str], match: str
    ) -> dict[str, Any]:
        return self.registry.verify_one(key, by, claims, columns=columns, match=match)

    def persons(self, keys: pa.Array, by: str) -> pa.Table:
        return self.registry._persons(keys, by)

    def by_person(self, persons: list[int], columns: list[str] | None) -> pa.Table:
        return self.registry._by_person(persons, columns)

    def memory_bytes(self) -> int:
        return self.registry.memory_bytes

    def pid(self) -> int:
        return os.getpid()


def _failover(method: Callable[..., T]) -> Callable[..., T]:
    """Run a read on one replica of each shard, the next ones in turn (spreading calls); where
    a shard cannot answer, again on the next replicas (reads are idempotent), until each
    replica was tried."""

    @functools.wraps(method)
    def read(self: ShardedRegistry, *args: Any, **kwargs: Any) -> T:
        tries = max(len(r) for r in self.replicas)
        for attempt in range(tries):
            self._rotate()
            try:
                return method(self, *args, **kwargs)
            except ShardUnavailable:
                if attempt == tries - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    return read


class ShardedRegistry:
    """The read API of `Registry` (verify, lookup, search) over a shard directory served by Ray
    actors, with `replicas` actors a shard."""

    def __init__(self, shards: ShardSet, routes: Routes, replicas: list[list[Any]]) -> None:
        self.shards = shards
        self.routes = routes
        self.replicas = replicas
        self._turn = itertools.count()
        self._current = [r[0] for r in replicas]

    @property
    def actors(self) -> list[Any]:
        """One replica of each shard: those calls go to now (any replica of a shard answers as
        any other, so a call that mixes turns is still right)."""
        return self._current

    def _rotate(self) -> None:
        turn = next(self._turn)
        self._current = [r[turn % len(r)] for r in self.replicas]

    @classmethod
    def start(
        cls,
        directory: str | os.PathLike[str],
        *,
        address: str | None = None,
        replicas: int = 1,
        restarts: int = MAX_RESTARTS,
    ) -> ShardedRegistry:
        """Connect to the Ray cluster at `address` (None: the one this process started, or a
        new local one) and start `replicas` actors for each shard of `directory`, each
        restarted by Ray `restarts` times (-1: always) when it dies."""
        if replicas < 1:
            raise ValueError(f"replicas must be ≥ 1, not {replicas}")
        ray = _ray()
        if not ray.is_initialized():
            # A cluster started elsewhere sized its own object store (`ray start
            # --object-store-memory`); a local one started here is capped.
            store = {"object_store_memory": OBJECT_STORE_BYTES} if address is None else {}
            ray.init(address=address, log_to_driver=False, include_dashboard=False, **store)
        shards = ShardSet.load(directory)
        routes = shards.routes()
        actor = ray.remote(
            max_restarts=restarts, max_task_retries=MAX_TASK_RETRIES if restarts else 0
        )(ShardActor)
        actors = [
            [actor.remote(str(s.path), s.first_person) for _ in range(replicas)]
            for s in shards.shards
        ]
        # Each has opened its snapshot, or says why it could not (a damaged shard file).
        for info, replicas_of in zip(shards.shards, actors, strict=True):
            try:
                ray.get([a.pid.remote() for a in replicas_of])
            except ray.exceptions.RayActorError as e:
                for a in (a for r in actors for a in r):
                    ray.kill(a)
                # Ray's message ends with the actor's own error (e.g. SnapshotCorrupt naming
                # the file): that line says why.
                why = str(e).strip().splitlines()[-1]
                raise ShardError(f"{info.path}: its actor could not open it: {why}") from e
        return cls(shards, routes, actors)

    def __len__(self) -> int:
        return self.shards.rows

    @property
    def memory_bytes(self) -> int:
        """The shards' registries (each replica's) and the front end's routing index."""
        shards: list[int] = self._gather(
            [a.memory_bytes.remote() for r in self.replicas for a in r]
        )
        return sum(shards) + self.routes.router.memory_bytes

    applied_changes = 0

    @_failover
    def verify_one(
        self,
        key: str,
        by: str,
        claims: dict[str, Any],
        *,
        columns: list[str] | tuple[str, ...] = (),
        match: str = "exact",
    ) -> dict[str, Any]:
        """As `Registry.verify_one`: one key, answered by the shard holding it."""
        k = int(self.routes.route(pa.array([key], pa.string()), by)[0])
        (row,) = self._gather(
            [self.actors[k].verify_one.remote(key, by, claims, list(columns), match)]
        )
        if row.get("person") is not None:
            row["person"] += self.shards.shards[k].first_person
        return row  # type: ignore[no-any-return]

    @_failover
    def _persons(self, keys: Any, by: str = "my_number") -> pa.Table:
        """The person ids `keys` name (null: invalid or no one), from the shards holding them."""
        array = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else pa.array(keys)
        return self._scatter(array, by, 0, lambda a, rows: a.persons.remote(array.take(rows), by))

    @_failover
    def _by_person(self, persons: list[int], columns: list[str] | None = None) -> pa.Table:
        """The records of persons by id, each from the shard whose range holds it (a person of
        no shard is null, as the single engine answers an id past its last person)."""
        firsts = np.array([s.first_person for s in self.shards.shards], np.int64)
        ids = np.asarray(persons, np.int64)
        owner = np.clip(np.searchsorted(firsts, ids, side="right") - 1, 0, None)
        return self._scattered(
            owner,
            0,
            lambda k, a, rows: a.by_person.remote((ids[rows] - firsts[k]).tolist(), columns),
        )

    def _not_sharded(self, *_: Any, **__: Any) -> Any:
        raise NotSharded(
            "this server serves a sharded registry, which takes no changes, owes no notices "
            "and keeps no watch lists yet (docs/sharding.md)"
        )

    apply = notices = register = _watched_changes = _not_sharded

    def _notice_backlog(self, acknowledged: dict[str, int]) -> dict[str, int]:
        return {}

    @_failover
    def verify(
        self,
        claims: Any,
        by: str = "my_number",
        *,
        match: str = "exact",
        first_row: int = 0,
        columns: list[str] | tuple[str, ...] = (),
    ) -> pa.Table:
        """As `Registry.verify`: each claim answered by the shard holding its key."""
        # A table, or claims the core decoded from the wire (`_core.Claims`).
        table = claims.to_arrow() if hasattr(claims, "to_arrow") else pa.table(claims)
        if by not in table.column_names:  # the single engine names what is missing
            return self._gather([self.actors[0].verify.remote(table, by, match, list(columns))])[0]
        keys = table[by].combine_chunks()
        return self._scatter(
            keys,
            by,
            first_row,
            lambda a, rows: a.verify.remote(table.take(rows), by, match, list(columns)),
        )

    @_failover
    def lookup(
        self, keys: Any, by: str = "my_number", *, columns: list[str] | None = None
    ) -> pa.Table:
        """As `Registry.lookup`: each key answered by the shard holding it."""
        array = _array(keys)
        return self._scatter(
            array, by, 0, lambda a, rows: a.lookup.remote(array.take(rows), by, columns)
        )

    @_failover
    def search(
        self, claims: Any, *, match: str = "normalised", columns: list[str] | tuple[str, ...] = ()
    ) -> pa.Table:
        """As `Registry.search`: a search has no key, so every shard searches every claim, and
        the candidates are merged per claim: agreeing on every fact counted across shards (two
        residents alike on two shards are `ambiguous`, never two `unique`s), most facts
        agreeing first, then by person id, as one registry ranks them."""
        table = claims if isinstance(claims, pa.Table) else pa.table(claims)
        asked = list(columns) if "person" in columns else [*columns, "person"]
        answers = self._gather([a.search.remote(table, match, asked) for a in self.actors])
        offsets = [s.first_person for s in self.shards.shards]
        merged = _merged_search(answers, offsets, table.num_rows)
        return merged if "person" in columns else merged.drop_columns(["person"])

    def _gather(self, refs: list[Any]) -> list[pa.Table]:
        """The answers of `refs`; a shard that cannot answer is `ShardUnavailable`, a call it
        refused raises what the single engine raises."""
        ray = _ray()
        try:
            answers: list[pa.Table] = ray.get(refs)
        except ray.exceptions.RayTaskError as e:
            raise e.cause from None
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as e:
            raise ShardUnavailable(f"a shard could not answer: {e}") from e
        return answers

    def _scatter(self, keys: pa.Array, by: str, first_row: int, call: Any) -> pa.Table:
        """Route `keys`, call each shard with its rows (`call(actor, rows)`), and merge."""
        return self._scattered(
            self.routes.route(keys, by),
            first_row,
            lambda _, actor, rows: call(actor, pa.array(rows, pa.int64())),
        )

    def _scattered(self, owner: np.ndarray, first_row: int, call: Any) -> pa.Table:
        """Call each shard with the caller's rows `owner` gives it (`call(k, actor, rows)`) and
        merge the answers in the caller's order."""
        calls: list[tuple[int, np.ndarray, Any]] = []
        for k, actor in enumerate(self.actors):
            rows = np.flatnonzero(owner == k)
            # No rows at all: shard 0 still answers, for the reply's schema.
            if len(rows) or (k == 0 and not len(owner)):
                calls.append((k, rows, call(k, actor, rows)))
        answers = self._gather([ref for _, _, ref in calls])
        offsets = [s.first_person for s in self.shards.shards]
        parts = [
            (rows, answer, offsets[k]) for (k, rows, _), answer in zip(calls, answers, strict=True)
        ]
        return _merged(parts, first_row)


def _merged(parts: list[tuple[np.ndarray, pa.Table, int]], first_row: int) -> pa.Table:
    """The shards' answers (each with the caller's rows it answers, and its shard's first
    person id) as one table in the caller's row order: person ids global, each error's row
    number the caller's."""
    tables = []
    for rows, answer, first_person in parts:
        if "person" in answer.column_names:
            answer = _globalised(answer, first_person)
        if "error" in answer.column_names:
            answer = _renumbered(answer, rows, first_row)
        tables.append(answer)
    merged = pa.concat_tables(tables).unify_dictionaries()
    order = np.concatenate([rows for rows, _, _ in parts])
    return merged.take(pa.array(np.argsort(order, kind="stable"))).combine_chunks()


def _array(keys: Any) -> pa.Array:
    """Keys as one Arrow array (a list, an array or a chunked one)."""
    if isinstance(keys, pa.ChunkedArray):
        return keys.combine_chunks()
    return keys if isinstance(keys, pa.Array) else pa.array(keys)


def _globalised(answer: pa.Table, first_person: int) -> pa.Table:
    """`answer` with its shard's person ids made the registry's."""
    i = answer.schema.get_field_index("person")
    return answer.set_column(
        i, "person", pc.add(answer["person"], pa.scalar(first_person, pa.uint32()))
    )


def _merged_search(answers: list[pa.Table], offsets: list[int], claims: int) -> pa.Table:
    """Every shard's search answers as one registry's (see `ShardedRegistry.search`)."""
    merged = pa.concat_tables(
        [_globalised(a, first) for a, first in zip(answers, offsets, strict=True)]
    ).unify_dictionaries()
    claim = merged["claim"].to_numpy()
    # A shard's `candidates` is its count of residents agreeing on every fact; summed over
    # the shards (once per shard and claim), it is the registry's.
    total = np.zeros(claims, np.int64)
    for a in answers:
        c = a["claim"].to_numpy()
        first = np.r_[True, c[1:] != c[:-1]] if len(c) else np.zeros(0, bool)
        np.add.at(total, c[first], a["candidates"].to_numpy()[first])
    real = merged["person"].is_valid().to_numpy(zero_copy_only=False)
    person = merged["person"].fill_null(0).to_numpy()
    agreed = merged["agreed"].to_numpy().astype(np.int64)
    rows = np.flatnonzero(real)
    rows = rows[np.lexsort((person[rows], -agreed[rows], claim[rows]))]
    # A claim no shard found anyone for: one row without a resident.
    none = np.setdiff1d(np.arange(claims), claim[rows])
    body = merged.take(pa.array(rows, pa.int64()))
    if len(none):
        indices = pa.array(np.r_[rows, np.zeros(len(none), np.int64)], pa.int64())
        mask = pa.array(np.r_[np.zeros(len(rows), bool), np.ones(len(none), bool)])
        body = merged.take(pc.if_else(mask, pa.scalar(None, pa.int64()), indices))
    claim_out = np.r_[claim[rows], none].astype(np.uint32)
    full = total[claim_out]
    outcome = np.where(full == 0, 2, np.where(full == 1, 0, 1)).astype(np.uint8)
    outcomes = pa.DictionaryArray.from_arrays(
        pa.array(outcome, pa.uint8()), pa.array(["unique", "ambiguous", "not_found"])
    )
    agreed_out = np.r_[agreed[rows], np.zeros(len(none), np.int64)].astype(np.uint8)
    columns = {
        "claim": pa.array(claim_out, pa.uint32()),
        "outcome": outcomes,
        "candidates": pa.array(full.astype(np.uint32), pa.uint32()),
        "agreed": pa.array(agreed_out, pa.uint8()),
    }
    out = pa.table(
        {name: columns.get(name, body[name]) for name in merged.column_names},
        schema=merged.schema,
    )
    return out.take(pa.array(np.argsort(claim_out, kind="stable"))).combine_chunks()


def _renumbered(answer: pa.Table, rows: np.ndarray, first_row: int) -> pa.Table:
    """`answer`'s errors (each "row j: …" of the shard's sub-table) naming the caller's row."""
    errors = answer["error"].combine_chunks()
    bad = np.flatnonzero(errors.is_valid().to_numpy(zero_copy_only=False))
    if not len(bad):
        return answer
    texts = errors.to_pylist()
    for j in bad.tolist():
        text = texts[j]
        m = _ROW.match(text)
        if m is None or int(m.group(1)) != j:
            raise AssertionError(f"a shard's error does not name its row {j}: {text!r}")
        texts[j] = f"row {first_row + int(rows[j])}: {text[m.end() :]}"
    i = answer.schema.get_field_index("error")
    return answer.set_column(i, answer.schema.field(i), pa.array(texts, errors.type))
