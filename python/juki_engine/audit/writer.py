"""The append side of the trail: one writer thread per directory doing group commit.

Everything appended since the writer's last pass is written, then one fsync completes all of it;
the server replies only after `Commit.wait` says its records are on disk.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Self

import pyarrow as pa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from juki_engine.audit import records
from juki_engine.audit.integrity import MANIFEST_HEAD, PREVIOUS, Manifest, digest, link, now_text
from juki_engine.audit.records import (
    DAY_US,
    OPERATOR,
    REASON_CHARS,
    AuditContext,
    AuditUnavailable,
    Entry,
    outcome_codes,
    person_array,
    record_batch,
    subject_array,
)
from juki_engine.audit.segments import OpenSegment, list_segments
from juki_engine.audit.store import expire

_LOCK_NAME = "audit.lock"

# Appends smaller than this share one record batch per writer pass: a batch costs ~0.3 ms to
# build and compress whatever its size, which would cap one-record appends at ~3,000/s.
_SMALL_APPEND = 4096
# How long the writer waits for more small appends before a write and fsync.
_COMMIT_DELAY_S = 0.001


class Commit:
    """The promise of one `append`: `wait` returns once its records are fsync'd."""

    __slots__ = ("_done", "_failure", "entry")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._failure: AuditUnavailable | None = None
        self.entry: Entry | None = None

    def _settle(self, failure: AuditUnavailable | None) -> None:
        self._failure = failure
        self._done.set()

    def wait(self, timeout: float | None = None) -> None:
        """Return once the records are durable; raise `AuditUnavailable` if they never will be,
        or are not within `timeout` seconds (see `AuditTrail.withdraw`)."""
        if not self._done.wait(timeout):
            raise AuditUnavailable(f"audit records not durable after {timeout} s")
        if self._failure is not None:
            raise AuditUnavailable(str(self._failure)) from self._failure


class AuditTrail:
    """The append side of the audit trail: one per directory, shared by every server thread.

    `append` returns at once with a `Commit`; a writer thread writes and fsyncs records in groups.
    If writing fails the trail fails closed: waiting Commits and every later `append` raise
    `AuditUnavailable`.
    """

    __slots__ = (
        "_checkpoint_due_us",
        "_checkpoint_every_us",
        "_checkpoints",
        "_closing",
        "_cond",
        "_directory",
        "_failure",
        "_last_us",
        "_lock_fd",
        "_manifest",
        "_pending",
        "_previous",
        "_retention_days",
        "_segment",
        "_segment_bytes",
        "_sequence",
        "_thread",
        "on_durable",
    )

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        retention_days: int = 7 * 366,
        segment_bytes: int = 64 << 20,
        signing_key: Ed25519PrivateKey | None = None,
        checkpoint_every_s: float = 86_400.0,
    ) -> None:
        """`signing_key` signs the manifest's entries: checkpoints of the chain head (one per
        `checkpoint_every_s`, one on demand, one at close), expiries and compactions. Without
        one they are recorded unsigned (the chain is still checked)."""
        if retention_days <= 0:
            raise ValueError(f"retention_days must be positive, not {retention_days}")
        if segment_bytes <= 0:
            raise ValueError(f"segment_bytes must be positive, not {segment_bytes}")
        self._directory = Path(directory)
        self._retention_days = retention_days
        self._segment_bytes = segment_bytes
        self._cond = threading.Condition()
        self._pending: list[Entry] = []
        self._closing = False
        self._failure: AuditUnavailable | None = None
        self._segment: OpenSegment | None = None
        self._checkpoints: list[tuple[str, Commit]] = []
        self.on_durable: Callable[[float], None] | None = None
        """Called by the writer with each append's seconds from append to fsync (metrics)."""
        self._checkpoint_every_us = int(checkpoint_every_s * 1e6)
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd: int | None = _lock(self._directory)
            try:
                existing = list_segments(self._directory)
                self._sequence = max((s.sequence for s in existing), default=0) + 1
                # Record times never go back past the newest segment's name: names stay in time
                # order even if the clock is set back.
                self._last_us = max((s.start_us for s in existing), default=0)
                self._manifest = Manifest(self._directory, signing_key)
                expire(self._directory, retention_days, None, self._manifest)
                existing = list_segments(self._directory)
                # The next segment names the newest one left, torn tail and all (never
                # appended to again, so its hash stays what the successor records).
                self._previous = link(existing[-1].path) if existing else ""
                self._checkpoint_due_us = records.clock() + self._checkpoint_every_us
            except BaseException:
                os.close(self._lock_fd)
                raise
        except OSError as error:
            raise AuditUnavailable(
                f"cannot open the audit trail in {directory}: {error}"
            ) from error
        self._thread = threading.Thread(target=self._run, name="juki-audit-writer", daemon=True)
        self._thread.start()

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def failed(self) -> bool:
        """Whether the trail failed closed (nothing may be disclosed any more)."""
        return self._failure is not None

    def append(
        self,
        context: AuditContext,
        subjects: pa.Array,
        outcomes: str | pa.Array,
        reason: str | None = None,
        persons: pa.Array | None = None,
    ) -> Commit:
        """Queue one record per subject; durable once the returned Commit's `wait` returns.

        `subjects` are resident codes (null where a record has no subject); `outcomes` is one of
        `OUTCOMES` for every row, or a string or dictionary array of them, one per row; `reason`
        says why a call was refused (cut to a few hundred characters); `persons` are the
        subjects' person ids (null where none), the key of a resident's own history.
        """
        subject_values = subject_array(subjects)
        codes = outcome_codes(outcomes, len(subject_values))
        person_values = person_array(persons, len(subject_values))
        if reason is not None and len(reason) > REASON_CHARS:
            reason = reason[:REASON_CHARS] + "…"
        commit = Commit()
        with self._cond:
            if self._failure is not None:
                raise AuditUnavailable(str(self._failure)) from self._failure
            if self._closing:
                raise AuditUnavailable(f"the audit trail in {self._directory} is closed")
            # Stamped under the lock, so file order is time order even with many appenders.
            self._last_us = max(records.clock(), self._last_us)
            if len(subject_values) == 0:
                commit._settle(None)  # nothing to record
                return commit
            commit.entry = Entry(
                self._last_us,
                context,
                subject_values,
                codes,
                commit,
                reason,
                person_values,
                time.monotonic(),
            )
            self._pending.append(commit.entry)
            # Wake the writer for the first entry of a pass, or one too large to wait; a wake per
            # small append would cut short the writer's group-commit wait below.
            if len(self._pending) == 1 or len(subject_values) >= _SMALL_APPEND:
                self._cond.notify()
        return commit

    def record(
        self,
        context: AuditContext,
        subjects: pa.Array,
        outcomes: str | pa.Array,
        reason: str | None = None,
        persons: pa.Array | None = None,
    ) -> None:
        """`append`, then wait until the records are durable."""
        self.append(context, subjects, outcomes, reason, persons).wait()

    def withdraw(self, commit: Commit, outcome: str, reason: str) -> bool:
        """Rewrite a commit's records to `outcome` (every row) and `reason` if the writer has not
        taken them yet: for a reply that will not leave after all (its commit timed out), so the
        trail does not claim a disclosure. False if they are already being written."""
        codes = outcome_codes(outcome, 0)
        with self._cond:
            entry = commit.entry
            if entry is None or not any(e is entry for e in self._pending):
                return False
            entry.outcomes, entry.reason = codes, reason[:REASON_CHARS]
            return True

    def close(self) -> None:
        """Write what is pending, fsync, stop the writer. Idempotent.

        A failure while flushing is reported by the pending Commits, not here.
        """
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        with self._cond:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> None:
        """The writer thread: group commit until closed or failed."""
        while True:
            with self._cond:
                while not self._pending and not self._closing and not self._checkpoints:
                    self._cond.wait(self._until_checkpoint_s())
                    if self._until_checkpoint_s() == 0:
                        break
                if not self._closing and all(
                    len(e.subjects) < _SMALL_APPEND for e in self._pending
                ):
                    # Group commit for single-record calls: a moment's wait lets the calls in
                    # flight share one batch and one fsync instead of one each (a pass costs
                    # ~0.5 ms of CPU, most of a typed call's budget).
                    self._cond.wait(_COMMIT_DELAY_S)
                entries, self._pending = self._pending, []
                wanted, self._checkpoints = self._checkpoints, []
            if not entries and not wanted and self._closing:  # everything is written
                break
            try:
                if entries:
                    self._write(entries)
                if wanted or self._until_checkpoint_s() == 0:
                    self._checkpoint()
            except Exception as error:
                self._fail(error, entries, [commit for _, commit in wanted])
                return
            durable = time.monotonic()
            for entry in entries:
                entry.commit._settle(None)
                if self.on_durable is not None:
                    self.on_durable(durable - entry.appended)
            for _, commit in wanted:
                commit._settle(None)
        if self._segment is not None:
            try:
                self._segment.close()
                self._checkpoint()  # the closed segment's whole length, signed
            except Exception as error:
                self._fail(error, [])

    def checkpoint(self, by: str) -> None:
        """Sign a checkpoint of the chain head now, recorded in the trail as done `by` an
        operator (or the server); returns once both are durable."""
        context = AuditContext(OPERATOR, by, "", "audit_trail", "checkpoint", ())
        commit = self.append(context, pa.nulls(1, pa.string()), "applied")
        done = Commit()
        with self._cond:
            self._checkpoints.append((by, done))
            self._cond.notify()
        commit.wait()
        done.wait()

    def _until_checkpoint_s(self) -> float:
        return max(0.0, (self._checkpoint_due_us - records.clock()) / 1e6)

    def _checkpoint(self) -> None:
        """Sign the head: the segment written last, its length and the hash of that much."""
        self._checkpoint_due_us = records.clock() + self._checkpoint_every_us
        segment = self._segment.path if self._segment is not None else None
        if segment is None:
            existing = list_segments(self._directory)
            if not existing:
                return
            segment = existing[-1].path
        length = segment.stat().st_size
        self._manifest.append(
            {
                "kind": "checkpoint",
                "time": now_text(),
                "segment": segment.name,
                "bytes": length,
                "sha256": digest(segment, length),
            }
        )

    def _write(self, entries: list[Entry]) -> None:
        for group in _batch_groups(entries):
            start_us = group[0].time_us
            segment = self._segment
            if (
                segment is None
                or start_us // DAY_US != segment.day
                or segment.size() >= self._segment_bytes
            ):
                segment = self._rotate(start_us)
            segment.writer.write_batch(record_batch(group))
        assert self._segment is not None
        self._segment.sync()

    def _rotate(self, start_us: int) -> OpenSegment:
        if self._segment is not None:
            self._segment.close()
            self._previous = link(self._segment.path)
            self._segment = None
        chain = {PREVIOUS: self._previous, MANIFEST_HEAD: self._manifest.head}
        self._segment = OpenSegment(self._directory, start_us, self._sequence, chain)
        self._sequence += 1
        expire(self._directory, self._retention_days, self._segment.path, self._manifest)
        return self._segment

    def _fail(
        self, error: Exception, in_flight: list[Entry], commits: Sequence[Commit] = ()
    ) -> None:
        failure = AuditUnavailable(f"the audit trail in {self._directory} failed: {error}")
        failure.__cause__ = error
        if self._segment is not None:
            self._segment.abandon()
            self._segment = None
        with self._cond:
            self._failure = failure
            stranded, self._pending = self._pending, []
        for entry in in_flight + stranded:
            entry.commit._settle(failure)
        for commit in commits:
            commit._settle(failure)


OPERATORS = "operators"
"""The sub-trail of operators' actions taken outside the server (`juki audit` queries and
exports, `juki certs`): a trail of its own, beside the server's, which holds the main one's lock
while it runs. `read` and `verify` read both."""
# How long an operator's command waits for another command holding the operators' trail.
_OPERATOR_WAIT_S = 10.0


def record_operator_action(
    directory: str | os.PathLike[str],
    context: AuditContext,
    outcome: str,
    reason: str,
    signing_key: Ed25519PrivateKey | None = None,
) -> None:
    """Record one action of an operator in the trail at `directory` (its operators' sub-trail),
    durably; waits a moment for another command recording at once."""
    deadline = time.monotonic() + _OPERATOR_WAIT_S
    while True:
        try:
            trail = AuditTrail(Path(directory) / OPERATORS, signing_key=signing_key)
            break
        except AuditUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with trail:
        trail.record(context, pa.nulls(1, pa.string()), outcome, reason)


def _lock(directory: Path) -> int:
    """Take the directory's writer lock: two writers would interleave sequence numbers."""
    fd = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AuditUnavailable(
            f"another audit trail is writing to {directory} (another juki process, such as a "
            "running `juki serve`, holds it): stop that process or give this one its own "
            "directory with --audit DIR"
        ) from None
    return fd


def _batch_groups(entries: list[Entry]) -> Iterator[list[Entry]]:
    """Entries in order, small consecutive ones of one UTC day grouped into one batch."""
    group: list[Entry] = []
    for entry in entries:
        small = len(entry.subjects) < _SMALL_APPEND
        if group and not (small and entry.time_us // DAY_US == group[0].time_us // DAY_US):
            yield group
            group = []
        group.append(entry)
        if not small or len(group) >= _SMALL_APPEND:
            yield group
            group = []
    if group:
        yield group
