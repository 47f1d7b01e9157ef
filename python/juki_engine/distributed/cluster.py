"""The sharded registry on Ray: one actor per shard, each holding its shard's snapshot (mapped),
and a front end that splits each call by shard and merges the answers in the caller's order.

    registry = ShardedRegistry.start("nation-shards", address="auto")   # a running cluster
    registry.verify(claims, by="my_number")      # the same answer as Registry.verify, row for row

Claims reach exactly one shard each, by the routing tables (`shards.Routes`); the sub-tables
travel through Ray's object store as Arrow (no copy into the actors' heaps beyond Ray's own). An
actor that dies is restarted by Ray (it reopens its snapshot and redoes its change log) and the
call in flight is retried on it: reads are idempotent, so a retried call is still the whole,
right answer. A call whose retries are spent raises `ShardUnavailable`, never a partial answer.
Changes go to the shard holding their resident (`ShardedRegistry.apply`), numbered across the
shards so that notices and watched changes merge in order; every replica of a shard applies them
with its own change log, and one that missed some is caught up by log shipping
(docs/sharding.md).
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from juki_engine._core import JukiError
from juki_engine.distributed.shards import KINDS, Routes, ShardError, ShardSet
from juki_engine.registry import SCANNED_THROUGH, Registry, scanned_through

__all__ = ["ShardUnavailable", "ShardedRegistry"]

#: Ray's object store, where a local Ray instance is started here: what the claims and answers
#: in flight may take, so that the whole stays within the project's memory budget.
OBJECT_STORE_BYTES = 2 * 2**30
#: How often Ray restarts a dead actor, and retries a call on the restarted one.
MAX_RESTARTS = -1
MAX_TASK_RETRIES = 3
_ROW = re.compile(r"^row (\d+): ")
#: Change reasons that may issue identifiers (a new person's, a new code or number): their
#: applied rows' identifiers are added to the routes.
ISSUING = frozenset(
    {"birth", "return_from_abroad", "official_entry", "resident_code_change", "my_number_change"}
)
T = TypeVar("T")
log = logging.getLogger(__name__)


class ShardUnavailable(RuntimeError):
    """A shard's actor could not answer (dead, and its retries spent): the call has no answer."""


class NotSharded(RuntimeError):
    """What a sharded registry of the first format does not do: take changes (split it
    again, docs/sharding.md)."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:  # pragma: no cover - the dev extra installs it
        raise RuntimeError(
            "the sharded registry runs on Ray: pip install 'juki_engine[ray]'"
        ) from e
    return ray


class ShardActor:
    """One shard's registry, in a Ray worker process: its snapshot mapped, its change log
    redone (an actor Ray restarts has every change it made durable)."""

    def __init__(
        self, path: str, k: int, of: int, held: tuple[str, str] | None, log: str | None
    ) -> None:
        self.registry = Registry.open(path, mmap=True, log=log)
        if held is not None:
            self.registry._core._as_shard(k, of, held)

    def apply(
        self, changes: pa.Table, today: dt.date, numbers: list[int], recorded: int, rows: list[int]
    ) -> pa.Table:
        return self.registry._apply(changes, today, numbers=numbers, recorded=recorded, rows=rows)

    def last_batch(self) -> int:
        return self.registry._last_batch()

    def last_record(self) -> tuple[int, int] | None:
        return self.registry._last_record()

    def log_since(self, batch: int) -> list[bytes]:
        return self.registry._log_since(batch)

    def redo_shipped(self, records: list[bytes]) -> int:
        return self.registry._redo_shipped(records)

    def checkpoint(self) -> tuple[int, int]:
        """Checkpoint the shard (its own replica): the history entries, and the last batch
        the snapshot holds."""
        return self.registry.checkpoint(), self.registry._last_batch()

    def log_covered(self, batch: int) -> None:
        self.registry._log_covered(batch)

    def last_change(self) -> int:
        return self.registry._last_change()

    def notices(self, municipality: str, after: int, limit: int) -> pa.Table:
        return self.registry.notices(municipality, after=after, limit=limit)

    def notice_backlog(self, acknowledged: dict[str, int]) -> dict[str, int]:
        return self.registry._notice_backlog(acknowledged)

    def watched_changes(self, watch: bytes, reasons: list[str], after: int, limit: int) -> pa.Table:
        return self.registry._watched_changes(watch, reasons, after, limit)

    def seen(self, municipalities: list[str | None], sequences: list[int | None]) -> bytes:
        return self.registry._core._seen(municipalities, sequences)

    def issued(self) -> pa.Table:
        """The identifiers changes issued here since the snapshot (`my_number`,
        `resident_code`), for the front end's routes."""
        watch = b"\xff" * (len(self.registry) // 8 + 1)
        parts, after = [], 0
        while True:
            page = self.registry._watched_changes(watch, sorted(ISSUING), after, 100_000)
            if not page.num_rows:
                break
            parts.append(pa.table({kind: page[kind].cast(pa.string()) for kind in KINDS}))
            after = int(page["change"][-1].as_py())
        empty = pa.table({kind: pa.array([], pa.string()) for kind in KINDS})
        return pa.concat_tables([empty, *parts]).drop_null()

    def size(self) -> int:
        return len(self.registry)

    def applied_changes(self) -> int:
        return self.registry.applied_changes

    def verify(self, claims: pa.Table, by: str, match: str, columns: list[str]) -> pa.Table:
        return self.registry.verify(claims, by=by, match=match, columns=columns)

    def lookup(self, keys: pa.Array, by: str, columns: list[str] | None) -> pa.Table:
        return self.registry.lookup(keys, by=by, columns=columns)

    def history(self, keys: pa.Array, by: str) -> pa.Table:
        return self.registry.history(keys, by)

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
    """`Registry`'s API over a shard directory served by Ray actors, `replicas` actors a shard:
    reads (verify, lookup, search, history), changes (`apply`, numbered across the shards),
    the feeds they owe (notices, watched changes) and `checkpoint`."""

    def __init__(self, shards: ShardSet, routes: Routes, replicas: list[list[Any]]) -> None:
        self.shards = shards
        self.routes = routes
        self.replicas = replicas
        self.persons = PersonIds(shards)
        self._turn = itertools.count()
        self._current = [r[0] for r in replicas]
        # Replicas (shard, replica) not called: behind their shard (they missed a batch, until
        # the records are shipped to them) or unreachable; those whose answer differed from
        # their shard's, for good. Shards whose replicas may differ are settled before the next
        # batch (and at start).
        self._out: set[tuple[int, int]] = set()
        self._diverged: set[tuple[int, int]] = set()
        self._unsettled = set(range(len(replicas)))
        # One change batch at a time across the shards (as one registry's writer): which shard
        # saw a change is asked, then the batch applied, without another batch between. Feeds
        # (notices, watched changes) are read between batches, never during one.
        self._applying = threading.Lock()
        # The number of the next change row: every row of the registry is numbered, across the
        # shards, in the order batches were applied (see `apply`).
        self._next_number = 1

    @property
    def actors(self) -> list[Any]:
        """One replica of each shard: those calls go to now (any replica of a shard answers as
        any other, so a call that mixes turns is still right)."""
        return self._current

    def replica_states(self) -> list[tuple[int, int, str]]:
        """(shard, replica, state) for every replica: `in_step`; `out` (it missed a batch or
        could not be reached: caught up before the next batch, or when it answers again); or
        `diverged` (left out for good: remove its change log, and the next start rebuilds it
        from a peer's)."""
        return [
            (
                k,
                r,
                "diverged"
                if (k, r) in self._diverged
                else "out"
                if (k, r) in self._out
                else "in_step",
            )
            for k, replicas in enumerate(self.replicas)
            for r in range(len(replicas))
        ]

    def _in_step(self, k: int) -> list[tuple[int, Any]]:
        """Shard k's replicas in step with each other, by replica number (replica 0 if none
        is: a call to it fails, and says so)."""
        replicas = [(r, a) for r, a in enumerate(self.replicas[k]) if (k, r) not in self._out]
        return replicas or [(0, self.replicas[k][0])]

    def _rotate(self) -> None:
        turn = next(self._turn)
        self._current = []
        for k in range(len(self.replicas)):
            replicas = self._in_step(k)
            self._current.append(replicas[turn % len(replicas)][1])

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
        held = shards.held()
        actor = ray.remote(
            max_restarts=restarts, max_task_retries=MAX_TASK_RETRIES if restarts else 0
        )(ShardActor)
        n = len(shards.shards)
        # Each replica keeps its own change log beside the shard's snapshot (replica 0 the
        # shard's own: the same shards served without replicas have its changes).
        actors = [
            [
                actor.remote(str(s.path), k, n, held, f"changes.replica-{r}.log" if r else None)
                for r in range(replicas)
            ]
            for k, s in enumerate(shards.shards)
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
        sharded = cls(shards, routes, actors)
        sharded._settle()
        sharded._rotate()
        # Numbering resumes past every change any shard holds.
        last: list[int] = sharded._gather([a.last_change.remote() for a in sharded.actors])
        sharded._next_number = max(last) + 1
        if held is not None:
            # Identifiers changes issued since the split (in the shards' change logs) route to
            # the shards that issued them.
            for k, issued in enumerate(
                sharded._gather([a.issued.remote() for a in sharded.actors])
            ):
                for kind in KINDS:
                    values = issued[kind].combine_chunks().cast(pa.uint64())
                    routes.router.add(values, kind, [k] * len(values))
        return sharded

    def stop(self) -> None:
        """Stop every actor (their changes are durable in their shards' logs already)."""
        ray = _ray()
        for actor in (a for r in self.replicas for a in r):
            ray.kill(actor)

    def __len__(self) -> int:
        """Persons: the shards' at the split, and those changes created since."""
        sizes: list[int] = self._gather([a.size.remote() for a in self.actors])
        return sum(sizes)

    @property
    def memory_bytes(self) -> int:
        """The shards' registries (each replica's in step) and the front end's routing index."""
        shards: list[int] = self._gather(
            [
                a.memory_bytes.remote()
                for k in range(len(self.replicas))
                for _, a in self._in_step(k)
            ]
        )
        return sum(shards) + self.routes.router.memory_bytes

    @property
    def applied_changes(self) -> int:
        counts: list[int] = self._gather([a.applied_changes.remote() for a in self.actors])
        return sum(counts)

    def apply(self, changes: Any, *, today: dt.date | None = None, first_row: int = 0) -> pa.Table:
        """As `Registry.apply`: each change applied by the shard holding its resident, one
        result per row in the caller's order, durable in that shard's change log when this
        returns (docs/sharding.md says how each row is routed; a batch is atomic on each shard,
        not across them).

        A change seen before, by any shard, goes back to that shard, which answers it as a
        duplicate; a cancel goes to the shard that applied the change it cancels; a new person
        (a birth, an entry without identifiers) to the shard of the municipality's choosing
        (its code modulo the shards). Identifiers a row issues are routed to its shard before
        this returns: a 住民票コード変更 or 個人番号変更 is one change, and the new identifier
        answers from the moment the caller learns it; the former one still reaches its person
        (`replaced`). A call whose shard died and was restarted is retried there: rows its
        first attempt made durable answer `duplicate`, with their first results, as a
        municipality's own retry would.

        The rows are numbered across the shards, in the order batches are applied (the
        registry's change numbers, with gaps where a row was rejected or a duplicate): each shard
        logs its rows' numbers with them, so that a municipality's notices and an agency's
        watched changes merge from every shard in the order they were recorded."""
        if self.shards.held_sha256 is None:
            raise NotSharded(
                "this sharded registry takes no changes: its shards were split before shards "
                "took changes (split it again, docs/sharding.md)"
            )
        table = changes if isinstance(changes, pa.Table) else pa.table(changes)
        with self._applying:
            self._settle()
            self._rotate()
            owner = self._owners(table)
            numbers = np.arange(self._next_number, self._next_number + table.num_rows)
            # Past this batch whatever happens: a shard may have applied its part of a batch
            # that fails on another, and numbers are never given twice.
            self._next_number += table.num_rows
            # One day and one commit time for every replica: each makes the same registry.
            today = today or dt.datetime.now(dt.UTC).date()
            out = self._applied(owner, first_row, table, today, numbers, time.time_ns() // 1000)
            self._route_issued(table, out, owner)
        return out

    def _applied(
        self,
        owner: np.ndarray,
        first_row: int,
        table: pa.Table,
        today: dt.date,
        numbers: np.ndarray,
        recorded: int,
    ) -> pa.Table:
        """Each shard's rows applied by each of its replicas in step: the same rows, numbers,
        day and commit time make the same registry on each (each logs them in its own change
        log). A replica that cannot answer is left out and its shard settled before the next
        batch; the shard answers if one replica did."""
        ray = _ray()
        calls = []
        for k in range(len(self.replicas)):
            rows = np.flatnonzero(owner == k)
            # No rows at all: shard 0 still answers, for the reply's schema.
            if not (len(rows) or (k == 0 and not len(owner))):
                continue
            part = ray.put(table.take(pa.array(rows, pa.int64())))
            mine = numbers[rows].tolist()
            # Messages name the caller's rows at the source: a duplicate resent later gives the
            # first result's message word for word, as the single engine does.
            named = (rows + first_row).tolist()
            refs = [
                (r, a.apply.remote(part, today, mine, recorded, named)) for r, a in self._in_step(k)
            ]
            calls.append((k, rows, refs))
        parts = []
        for k, rows, refs in calls:
            answers: dict[int, pa.Table] = {}
            for r, ref in refs:
                try:
                    (answers[r],) = self._gather([ref])
                except ShardUnavailable as e:
                    log.warning("replica %d of shard %d missed a change batch: %s", r, k, e)
                    self._out.add((k, r))
                    self._unsettled.add(k)
            if not answers:
                raise ShardUnavailable(f"no replica of shard {k} could apply its rows")
            parts.append((rows, self._agreed(k, answers), k))
        return _merged(parts, None, self.persons)

    def _agreed(self, k: int, answers: dict[int, pa.Table]) -> pa.Table:
        """Shard k's answer from its replicas' (by replica number), which must agree: one that
        does not has diverged and is left out for good (docs/sharding.md)."""
        first, *others = sorted(answers)
        agreed = answers[first]
        facts = ["code", "error", "resident_code", "my_number"]
        for r in others:
            answer = answers[r]
            if not answer.select(facts).equals(agreed.select(facts)):
                log.error("replica %d of shard %d answered a change batch differently", r, k)
                self._diverged.add((k, r))
                self._out.add((k, r))
                continue
            # A replica whose first attempt made the rows durable (Ray retried it) answers them
            # `duplicate`, with the first results: another's `applied` or `rejected` stands.
            outcome = pc.if_else(
                pc.equal(agreed["outcome"], "duplicate"), answer["outcome"], agreed["outcome"]
            )
            agreed = agreed.set_column(0, agreed.schema.field(0), outcome)
        return agreed

    def _settle(self) -> None:
        """Bring the replicas of each unsettled shard (at start; after a replica missed a batch)
        to the most advanced one's batches, shipping each the change log records it lacks
        (log shipping). One that cannot be reached stays out and its shard unsettled, tried
        again before the next batch; one that refuses the records (it diverged) is left out
        for good."""
        for k in sorted(self._unsettled):
            replicas = [
                (r, a) for r, a in enumerate(self.replicas[k]) if (k, r) not in self._diverged
            ]
            batches: dict[int, int] = {}
            for r, a in replicas:
                try:
                    (batches[r],) = self._gather([a.last_batch.remote()])
                except ShardUnavailable:
                    self._out.add((k, r))
            settled = len(batches) == len(replicas)
            if not batches:
                continue
            lead = max(batches, key=lambda r: batches[r])
            self._diverged |= {(k, r) for r in self._unlike(k, lead, batches)}
            for r, last in batches.items():
                if (k, r) in self._diverged:
                    self._out.add((k, r))
                    continue
                if last < batches[lead]:
                    try:
                        (records,) = self._gather([self.replicas[k][lead].log_since.remote(last)])
                    except ShardUnavailable:
                        settled = False  # the leader went: the next settling finds another
                        break
                    except JukiError as e:
                        # A checkpoint holds what it lacks: it reopens from the snapshot (Ray
                        # restarts it), and the next settling ships it the rest.
                        log.warning("replica %d of shard %d reopens: %s", r, k, e)
                        _ray().kill(self.replicas[k][r], no_restart=False)
                        self._out.add((k, r))
                        settled = False
                        continue
                    try:
                        self._gather([self.replicas[k][r].redo_shipped.remote(records)])
                    except ShardUnavailable:
                        self._out.add((k, r))
                        settled = False
                        continue
                    except JukiError as e:
                        log.error("replica %d of shard %d diverged: %s", r, k, e)
                        self._diverged.add((k, r))
                        self._out.add((k, r))
                        continue
                    log.info("replica %d of shard %d caught up to batch %d", r, k, batches[lead])
                self._out.discard((k, r))
            if settled:
                self._unsettled.discard(k)

    def _unlike(self, k: int, lead: int, batches: dict[int, int]) -> list[int]:
        """Shard k's replicas at the leader's last batch whose record of it differs from the
        leader's (their digests, kept by each since it opened): replicas in step log the same
        bytes, so one that does not has diverged (one reopened from a checkpoint has no record
        to compare until the next batch)."""
        last = batches[lead]
        same = [r for r, b in batches.items() if b == last and r != lead]
        if not last or not same:
            return []
        try:
            records = self._gather(
                [self.replicas[k][r].last_record.remote() for r in (lead, *same)]
            )
        except ShardUnavailable:
            return []
        if records[0] is None or records[0][0] != last:
            return []
        unlike = [
            r
            for r, mine in zip(same, records[1:], strict=True)
            if mine is not None and mine[0] == last and tuple(mine) != tuple(records[0])
        ]
        for r in unlike:
            log.error("replica %d of shard %d logged batch %d unlike replica %d", r, k, last, lead)
        return unlike

    def _owners(self, table: pa.Table) -> np.ndarray:
        """The shard each change row goes to (see `apply`)."""
        n = table.num_rows

        def column(name: str) -> list[Any]:
            return table[name].to_pylist() if name in table.column_names else [None] * n

        munis = [m if isinstance(m, str) else None for m in column("municipality")]
        sequences = [_whole(v) for v in column("sequence")]
        cancels = [_whole(v) for v in column("cancels")]
        reasons = column("reason")
        # Which shard saw each change before, and which applied each cancel's target.
        answers: list[bytes] = self._gather(
            [a.seen.remote(munis * 2, sequences + cancels) for a in self.actors]
        )
        seen = np.frombuffer(b"".join(answers), np.uint8).reshape(len(self.actors), 2 * n)
        # Where each row goes by what it names: its resident's shard (by resident code, else
        # My Number), a new person's municipality's, a cancel its change's (or shard 0).
        count = len(self.actors)
        owner = np.array(
            [int(m) % count if m and m.isascii() and m.isdigit() else 0 for m in munis], np.int64
        )
        for kind in ("my_number", "resident_code"):  # the resident code wins where both are
            if kind in table.column_names:
                keys = table[kind].combine_chunks()
                named = keys.is_valid().to_numpy(zero_copy_only=False)
                owner = np.where(named, self.routes.route(keys, kind), owner)
        cancelling = np.array([r == "cancel" for r in reasons], bool)
        target = _first_shard(seen[:, n:] == 1)
        owner = np.where(cancelling, np.maximum(target, 0), owner)
        # A change seen before goes back to the shard that saw it.
        before = _first_shard(seen[:, :n] > 0)
        owner = np.where(before >= 0, before, owner)
        # Within the batch: a change again goes where it went first; a cancel of a change
        # earlier in the batch (seen by no shard yet) goes where that change went.
        placed: dict[tuple[str | None, int | None], int] = {}
        for i, key in enumerate(zip(munis, sequences, strict=True)):
            if key in placed:
                owner[i] = placed[key]
                continue
            if cancelling[i] and before[i] < 0 and target[i] < 0:
                owner[i] = placed.get((munis[i], cancels[i]), owner[i])
            if key[0] is not None and key[1] is not None:
                placed[key] = int(owner[i])
        return owner

    def _route_issued(self, table: pa.Table, out: pa.Table, owner: np.ndarray) -> None:
        """Route the identifiers the applied rows of `table` may have issued to their shards."""
        if "reason" not in table.column_names:
            return
        issuing = pc.and_(
            pc.equal(out["outcome"].cast(pa.string()), "applied"),
            pc.is_in(table["reason"].cast(pa.string()), pa.array(sorted(ISSUING))),
        )
        rows = np.flatnonzero(issuing.to_numpy(zero_copy_only=False))
        if not len(rows):
            return
        for kind in KINDS:
            values = out[kind].take(pa.array(rows, pa.int64())).combine_chunks()
            self.routes.router.add(values.cast(pa.uint64()), kind, owner[rows].tolist())

    def checkpoint(self) -> int:
        """As `Registry.checkpoint`, for every shard: its own replica (replica 0, whose change
        log is the shard's) writes a new snapshot of the shard with its changes folded in and
        kept as history (their numbers too), and empties its log; the shard's other replicas in
        step then empty theirs, which the snapshot covers (one that was out skips, when it
        reopens, the records the snapshot holds). Changes wait meanwhile. Returns the history
        entries the shards' snapshots hold."""
        if self.shards.held_sha256 is None:
            raise NotSharded("shards of the first format take no changes: none to checkpoint")
        with self._applying:
            self._settle()
            late = [k for k in range(len(self.replicas)) if (k, 0) in self._out]
            if late:
                raise ShardUnavailable(
                    f"the own replica of shards {late} is not in step; checkpoint later"
                )
            done: list[tuple[int, int]] = self._gather(
                [replicas[0].checkpoint.remote() for replicas in self.replicas]
            )
            for k, (_, batch) in enumerate(done):
                for r, actor in self._in_step(k):
                    if r:
                        self._gather([actor.log_covered.remote(batch)])
        return sum(entries for entries, _ in done)

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
            row["person"] = self.persons.global_id(k, row["person"])
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
        owner, local = self.persons.local_ids(np.asarray(persons, np.int64))
        return self._scattered(
            owner, 0, lambda k, a, rows: a.by_person.remote(local[rows].tolist(), columns)
        )

    @_failover
    def notices(self, municipality: str, *, after: int = 0, limit: int = 1000) -> pa.Table:
        """As `Registry.notices`: the notices every shard owes `municipality`, merged in the
        order their changes were recorded (their numbers are the registry's, see `apply`)."""
        with self._applying:
            pages = self._gather(
                [a.notices.remote(municipality, after, limit) for a in self.actors]
            )
        return _merged_feed(pages, "notice", limit)

    @_failover
    def _notice_backlog(self, acknowledged: dict[str, int]) -> dict[str, int]:
        with self._applying:
            counts: list[dict[str, int]] = self._gather(
                [a.notice_backlog.remote(acknowledged) for a in self.actors]
            )
        return {code: sum(c.get(code, 0) for c in counts) for code in acknowledged}

    @_failover
    def _watched_changes(
        self, watch: bytes, reasons: list[str], after: int = 0, limit: int = 1000
    ) -> pa.Table:
        """As `Registry._watched_changes`: `watch` (a bitmap over the registry's person ids)
        split into each shard's, and their changes merged in the order they were recorded."""
        ids = np.flatnonzero(np.unpackbits(np.frombuffer(watch, np.uint8), bitorder="little"))
        owner, local = self.persons.local_ids(ids)
        watches = []
        for k in range(len(self.actors)):
            mine = local[owner == k]
            bits = np.zeros(int(mine.max()) + 1 if len(mine) else 0, np.uint8)
            bits[mine] = 1
            watches.append(np.packbits(bits, bitorder="little").tobytes())
        with self._applying:
            pages = self._gather(
                [
                    a.watched_changes.remote(w, list(reasons), after, limit)
                    for a, w in zip(self.actors, watches, strict=True)
                ]
            )
        return _merged_feed(pages, "change", limit)

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
    def history(self, keys: Any, by: str = "my_number") -> pa.Table:
        """As `Registry.history`: each key's changes from the shard holding its resident, the
        keys in the caller's order."""
        array = _array(keys)
        owner = self.routes.route(array, by)
        calls = [
            (k, np.flatnonzero(owner == k)) for k in range(len(self.actors)) if (owner == k).any()
        ] or [(0, np.array([], np.int64))]
        answers = self._gather(
            [
                self.actors[k].history.remote(array.take(pa.array(rows, pa.int64())), by)
                for k, rows in calls
            ]
        )
        merged = pa.concat_tables(answers)
        # Each shard's rows come key by key in its keys' order: put the keys in the caller's
        # (a stable sort keeps each key's changes oldest first).
        at = pc.index_in(merged[by], value_set=array.cast(merged.schema.field(by).type))
        return merged.take(pc.sort_indices(pa.table({"at": at}), [("at", "ascending")]))

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
        merged = _merged_search(answers, self.persons, table.num_rows)
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
        parts = [(rows, answer, k) for (k, rows, _), answer in zip(calls, answers, strict=True)]
        return _merged(parts, first_row, self.persons)


class PersonIds:
    """Person ids across the shards. Shard k's row r at the split is person `first_person(k) +
    r`, the id the registry it was split from gave it; a person a change creates on shard k
    (its j-th, counted from the split's rows) is `N + j·S + k`, past every person of the split
    (N persons, S shards), so ids stay unique and never change whichever shard answers."""

    def __init__(self, shards: ShardSet) -> None:
        self.firsts = np.array([s.first_person for s in shards.shards], np.int64)
        self.rows = np.array([s.rows for s in shards.shards], np.int64)
        self.total, self.count = int(self.rows.sum()), len(self.rows)

    def global_id(self, k: int, local: int) -> int:
        if local < self.rows[k]:
            return int(self.firsts[k] + local)
        return self.total + (local - int(self.rows[k])) * self.count + k

    def globalised(self, answer: pa.Table, k: int) -> pa.Table:
        """`answer` (shard k's) with its person ids made the registry's."""
        i = answer.schema.get_field_index("person")
        local = answer["person"].combine_chunks()
        at_split = pc.add(local, pa.scalar(int(self.firsts[k]), local.type))
        # Unchecked: it wraps where the id is of the split, which `new` does not take.
        created = pc.subtract(local, pa.scalar(int(self.rows[k]), local.type))
        created = pc.add(
            pc.multiply(created, pa.scalar(self.count, local.type)),
            pa.scalar(self.total + k, local.type),
        )
        new = pc.greater_equal(local, pa.scalar(int(self.rows[k]), local.type))
        return answer.set_column(
            i, answer.schema.field(i), pc.if_else(pc.fill_null(new, False), created, at_split)
        )

    def local_ids(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each id's shard and its id there (an id of no one: shard 0, an id past its rows)."""
        split = ids < self.total
        owner = np.where(
            split,
            np.clip(np.searchsorted(self.firsts, ids, side="right") - 1, 0, None),
            (ids - self.total) % self.count,
        )
        local = np.where(
            split,
            ids - self.firsts[owner],
            self.rows[owner] + (ids - self.total) // self.count,
        )
        bad = ids < 0
        return np.where(bad, 0, owner), np.where(bad, 2**32 - 1, local)


def _merged_feed(pages: list[pa.Table], column: str, limit: int) -> pa.Table:
    """The shards' pages of one feed (a municipality's notices, a watch list's changes: each
    shard's numbered after one cursor, in order, at most `limit`) as the registry's page: in
    number order, at most `limit`, and only through the number every shard was read to (a shard
    whose page is full may hold more before another shard's last), which is what the page says
    it scanned through."""
    scanned = [scanned_through(p) for p in pages]
    full = [s for p, s in zip(pages, scanned, strict=True) if p.num_rows >= limit]
    through = min(full) if full else max(scanned)
    merged = pa.concat_tables([p.replace_schema_metadata(None) for p in pages])
    merged = merged.filter(pc.less_equal(merged[column], through)).sort_by(column)
    if merged.num_rows > limit:
        merged = merged.slice(0, limit)
        through = merged[column][-1].as_py()
    return merged.replace_schema_metadata({SCANNED_THROUGH: str(through)})


def _first_shard(hits: np.ndarray) -> np.ndarray:
    """Per column of `hits` (shards × rows), the first shard with a hit; -1 where none."""
    return np.where(hits.any(axis=0), hits.argmax(axis=0), -1)


def _whole(value: Any) -> int | None:
    """`value` where it is a whole number (the core answers for anything else)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _merged(
    parts: list[tuple[np.ndarray, pa.Table, int]], first_row: int | None, persons: PersonIds
) -> pa.Table:
    """The shards' answers (each with the caller's rows it answers, and its shard) as one table
    in the caller's row order: person ids global, each error's row number the caller's (from
    `first_row`; None: the shards named the caller's rows already)."""
    tables = []
    for rows, answer, k in parts:
        if "person" in answer.column_names:
            answer = persons.globalised(answer, k)
        if "error" in answer.column_names and first_row is not None:
            answer = _renumbered(answer, rows, first_row)
        tables.append(answer)
    merged = pa.concat_tables(tables).unify_dictionaries()
    # The answers hold the caller's rows shard by shard; put each back where it came from
    # (the rows are a permutation of the caller's: inverted by one scatter, not a sort).
    order = np.concatenate([rows for rows, _, _ in parts])
    back = np.empty(len(order), np.int64)
    back[order] = np.arange(len(order))
    return merged.take(pa.array(back)).combine_chunks()


def _array(keys: Any) -> pa.Array:
    """Keys as one Arrow array (a list, an array or a chunked one)."""
    if isinstance(keys, pa.ChunkedArray):
        return keys.combine_chunks()
    return keys if isinstance(keys, pa.Array) else pa.array(keys)


def _merged_search(answers: list[pa.Table], persons: PersonIds, claims: int) -> pa.Table:
    """Every shard's search answers as one registry's (see `ShardedRegistry.search`)."""
    merged = pa.concat_tables(
        [persons.globalised(a, k) for k, a in enumerate(answers)]
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
