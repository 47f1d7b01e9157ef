"""The audit trail (アクセスログ): who looked at whose record, when, for what, with what outcome.

This module owns the trail's files and their format. Every disclosure and every refusal is
appended here, and the server replies only after `Commit.wait` says the record is on disk.
Residents' question "who looked at me" (いつ、誰が、誰の情報を閲覧したか) is answered by `read`.

On disk: one directory of append-only segments, each an Arrow IPC stream with zstd-compressed
buffers (`audit-<first record time>Z-<sequence>.arrows`, so names sort by time). One writer thread
does group commit: everything appended since its last pass is written, then one fsync completes
all of it. The columns a batch shares (agency, operator, …) are one-entry dictionaries, so a
million-record batch stores each once, and the stream writer re-sends a dictionary only when it
differs from the previous batch's (a replacement dictionary, which the stream format allows and
pyarrow and Polars read; Polars cannot read run-end encoded columns, the other compact choice).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from juki_engine._core import JukiError
from juki_engine.names import LEVELS

__all__ = [
    "ANSWERED",
    "MODES",
    "OUTCOMES",
    "SCHEMA",
    "AuditContext",
    "AuditTrail",
    "AuditUnavailable",
    "Commit",
    "counts_since",
    "read",
]

OUTCOMES = (
    "disclosed",
    "not_found",
    "invalid_key",
    "denied",
    "quota_exhausted",
    "invalid_request",
    "unavailable",
    "failed",
    "applied",
    "duplicate",
    "rejected",
    "redelivered",
)
"""What happened to one record of a request: disclosed, or why not. `disclosed`, `not_found` and
`invalid_key` are answers (the reply says so, row by row); `denied` (policy or identity),
`quota_exhausted`, `invalid_request` (the request itself is malformed), `unavailable` (the
server could not answer safely: its audit trail or capacity) and `failed` (an internal error,
its id in `reason`) are refusals of the whole call. A municipality's submitted change is
`applied`, `duplicate` or `rejected` (its refusal code in `reason`). A change sent again to a
subscription that did not acknowledge it is `redelivered`: disclosed again, but not an answer
the daily quota counts a second time."""
ANSWERED = ("disclosed", "not_found", "invalid_key")
"""The outcomes of records the server answered: what daily quotas count."""
# Characters of a refusal's reason kept in its record.
_REASON_CHARS = 256
MODES = (
    "verify",
    "retrieve",
    "verify+retrieve",
    "search",
    "list_affairs",
    "submit",
    "notice",
    "acknowledge",
    "watch",
    "subscribe",
)
"""What the caller asked for: verify claims (照合), retrieve fields (提供), both, a 4情報 search
(its candidates' fields disclosed as a retrieve's), or the list of
its affairs (recorded only when refused: it discloses nothing of a resident). Verify above the
exact match level is recorded with its level: `verify@normalised`, `verify+retrieve@reading`.
A municipality submits changes (`submit`, the change's reason as the affair), is sent move-in
notices (`notice`, a disclosure of the resident who moved) and acknowledges them
(`acknowledge`, recorded only when refused). An agency registers a watch list (`watch`, one
record per call) and is sent its residents' changes (`subscribe`, one record per change)."""

_TIME = pa.timestamp("us", tz="UTC")
_CONTEXT_COLUMNS = ("agency", "operator", "request_id", "affair", "mode", "fields")
_STORED_SCHEMA = pa.schema(
    [
        ("time", _TIME),
        *((name, pa.dictionary(pa.int32(), pa.string())) for name in _CONTEXT_COLUMNS),
        ("subject", pa.string()),
        ("outcome", pa.dictionary(pa.int8(), pa.string())),
        ("reason", pa.dictionary(pa.int32(), pa.string())),
    ],
    metadata={"juki_engine.audit": "2"},
)
# Segments written before records carried a reason: read with a null one.
_STORED_SCHEMA_V1 = pa.schema(
    _STORED_SCHEMA.remove(_STORED_SCHEMA.get_field_index("reason")),
    metadata={"juki_engine.audit": "1"},
)
SCHEMA = pa.schema(
    [(name, _TIME if name == "time" else pa.string()) for name in _STORED_SCHEMA.names]
)
"""The schema `read` returns (plain string columns; `fields` is comma-joined)."""

# One dictionary for every batch: codes are positions in OUTCOMES.
_OUTCOME_VALUES = pa.array(OUTCOMES, pa.string())
_OUTCOME_CODES = pa.array(range(len(OUTCOMES)), pa.int8())
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")
_SEGMENT_NAME = re.compile(r"audit-(\d{8}T\d{6}\.\d{6})Z-(\d+)\.arrows")
_NAME_TIME = "%Y%m%dT%H%M%S.%f"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_US = 86_400_000_000
_CONTINUATION = 0xFFFFFFFF
_RECORD_BATCH = 3  # MessageHeader.RecordBatch in Arrow's Message.fbs
_LOCK_NAME = "audit.lock"
# Appends smaller than this share one record batch per writer pass: a batch costs ~0.3 ms to
# build and compress whatever its size, which would cap one-record appends at ~3,000/s.
_SMALL_APPEND = 4096
# How long the writer waits for more small appends before a write and fsync.
_COMMIT_DELAY_S = 0.001


class AuditUnavailable(JukiError):
    """The audit trail cannot record: nothing may be disclosed."""


def _clock() -> int:
    """Now, in microseconds since the epoch (UTC); tests replace it to move through time."""
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class AuditContext:
    """What every record of one request batch shares."""

    agency: str
    """Agency code, from its client certificate (never from the request)."""
    operator: str
    """Operator id, as the client gives it."""
    request_id: str
    affair: str
    """Affair (事務) code, e.g. the 住基法 別表 entry the agency acts under."""
    mode: str
    """One of `MODES`, with `@<level>` where claims were verified above the exact match level
    (`verify@normalised`)."""
    fields: tuple[str, ...]
    """Fields disclosed: the claimed fields verified and the fields retrieved."""

    def __post_init__(self) -> None:
        mode, _, level = self.mode.partition("@")
        if mode not in MODES or (level and level not in LEVELS[1:]):
            raise ValueError(
                f"audit mode must be one of {MODES}, with @normalised or @reading above the "
                f"exact match level, not {self.mode!r}"
            )
        for field in self.fields:
            if "," in field:
                # Stored comma-joined: a comma inside a name would split it on reading.
                raise ValueError(f"audit field names cannot contain ',': {field!r}")


class Commit:
    """The promise of one `append`: `wait` returns once its records are fsync'd."""

    __slots__ = ("_done", "_failure", "entry")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._failure: AuditUnavailable | None = None
        self.entry: _Entry | None = None

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


@dataclass(slots=True)
class _Entry:
    """One append waiting for the writer."""

    time_us: int
    context: AuditContext
    subjects: pa.Array
    outcomes: pa.Array | int  # int8 codes into OUTCOMES, or one code for every row
    commit: Commit
    reason: str | None


class _Segment:
    """The segment being written: a new file, never one left by an earlier trail."""

    __slots__ = ("day", "path", "sink", "writer")

    def __init__(self, directory: Path, start_us: int, sequence: int) -> None:
        self.path = directory / _segment_name(start_us, sequence)
        self.day = start_us // _DAY_US
        # O_EXCL: never append to (or truncate) a segment whose tail may be torn.
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
        fsync_directory(directory)
        self.sink = pa.OSFile(str(self.path), "a")
        self.writer = pa.ipc.new_stream(self.sink, _STORED_SCHEMA, options=_WRITE_OPTIONS)

    def size(self) -> int:
        return int(self.sink.tell())

    def sync(self) -> None:
        os.fsync(self.sink.fileno())

    def close(self) -> None:
        self.writer.close()  # writes the end-of-stream marker
        self.sync()
        self.sink.close()

    def abandon(self) -> None:
        """Close after a failure, without the end-of-stream marker (readers accept either)."""
        with contextlib.suppress(OSError):  # already failed; the first error is the one reported
            self.sink.close()


class AuditTrail:
    """The append side of the audit trail: one per directory, shared by every server thread.

    `append` returns at once with a `Commit`; a writer thread writes and fsyncs records in groups.
    If writing fails the trail fails closed: waiting Commits and every later `append` raise
    `AuditUnavailable`.
    """

    __slots__ = (
        "_closing",
        "_cond",
        "_directory",
        "_failure",
        "_last_us",
        "_lock_fd",
        "_pending",
        "_retention_days",
        "_segment",
        "_segment_bytes",
        "_sequence",
        "_thread",
    )

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        retention_days: int = 7 * 366,
        segment_bytes: int = 64 << 20,
    ) -> None:
        if retention_days <= 0:
            raise ValueError(f"retention_days must be positive, not {retention_days}")
        if segment_bytes <= 0:
            raise ValueError(f"segment_bytes must be positive, not {segment_bytes}")
        self._directory = Path(directory)
        self._retention_days = retention_days
        self._segment_bytes = segment_bytes
        self._cond = threading.Condition()
        self._pending: list[_Entry] = []
        self._closing = False
        self._failure: AuditUnavailable | None = None
        self._segment: _Segment | None = None
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd: int | None = _lock(self._directory)
            try:
                existing = _list_segments(self._directory)
                self._sequence = max((s.sequence for s in existing), default=0) + 1
                # Record times never go back past the newest segment's name: names stay in time
                # order even if the clock is set back.
                self._last_us = max((s.start_us for s in existing), default=0)
                _expire(self._directory, retention_days, keep=None)
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

    def append(
        self,
        context: AuditContext,
        subjects: pa.Array,
        outcomes: str | pa.Array,
        reason: str | None = None,
    ) -> Commit:
        """Queue one record per subject; durable once the returned Commit's `wait` returns.

        `subjects` are resident codes (null where a record has no subject); `outcomes` is one of
        `OUTCOMES` for every row, or a string or dictionary array of them, one per row; `reason`
        says why a call was refused (cut to a few hundred characters).
        """
        subject_array = _subject_array(subjects)
        codes = _outcome_codes(outcomes, len(subject_array))
        if reason is not None and len(reason) > _REASON_CHARS:
            reason = reason[:_REASON_CHARS] + "…"
        commit = Commit()
        with self._cond:
            if self._failure is not None:
                raise AuditUnavailable(str(self._failure)) from self._failure
            if self._closing:
                raise AuditUnavailable(f"the audit trail in {self._directory} is closed")
            # Stamped under the lock, so file order is time order even with many appenders.
            self._last_us = max(_clock(), self._last_us)
            if len(subject_array) == 0:
                commit._settle(None)  # nothing to record
                return commit
            commit.entry = _Entry(self._last_us, context, subject_array, codes, commit, reason)
            self._pending.append(commit.entry)
            # Wake the writer for the first entry of a pass, or one too large to wait; a wake per
            # small append would cut short the writer's group-commit wait below.
            if len(self._pending) == 1 or len(subject_array) >= _SMALL_APPEND:
                self._cond.notify()
        return commit

    def record(
        self,
        context: AuditContext,
        subjects: pa.Array,
        outcomes: str | pa.Array,
        reason: str | None = None,
    ) -> None:
        """`append`, then wait until the records are durable."""
        self.append(context, subjects, outcomes, reason).wait()

    def withdraw(self, commit: Commit, outcome: str, reason: str) -> bool:
        """Rewrite a commit's records to `outcome` (every row) and `reason` if the writer has not
        taken them yet: for a reply that will not leave after all (its commit timed out), so the
        trail does not claim a disclosure. False if they are already being written."""
        codes = _outcome_codes(outcome, 0)
        with self._cond:
            entry = commit.entry
            if entry is None or not any(e is entry for e in self._pending):
                return False
            entry.outcomes, entry.reason = codes, reason[:_REASON_CHARS]
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
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._closing and all(
                    len(e.subjects) < _SMALL_APPEND for e in self._pending
                ):
                    # Group commit for single-record calls: a moment's wait lets the calls in
                    # flight share one batch and one fsync instead of one each (a pass costs
                    # ~0.5 ms of CPU, most of a typed call's budget).
                    self._cond.wait(_COMMIT_DELAY_S)
                entries, self._pending = self._pending, []
            if not entries:  # closing, and everything is written
                break
            try:
                self._write(entries)
            except Exception as error:
                self._fail(error, entries)
                return
            for entry in entries:
                entry.commit._settle(None)
        if self._segment is not None:
            try:
                self._segment.close()
            except Exception as error:
                self._fail(error, [])

    def _write(self, entries: list[_Entry]) -> None:
        for group in _batch_groups(entries):
            start_us = group[0].time_us
            segment = self._segment
            if (
                segment is None
                or start_us // _DAY_US != segment.day
                or segment.size() >= self._segment_bytes
            ):
                segment = self._rotate(start_us)
            segment.writer.write_batch(_record_batch(group))
        assert self._segment is not None
        self._segment.sync()

    def _rotate(self, start_us: int) -> _Segment:
        if self._segment is not None:
            self._segment.close()
            self._segment = None
        self._segment = _Segment(self._directory, start_us, self._sequence)
        self._sequence += 1
        _expire(self._directory, self._retention_days, keep=self._segment.path)
        return self._segment

    def _fail(self, error: Exception, in_flight: list[_Entry]) -> None:
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


def _subject_array(subjects: Any) -> pa.Array:
    if isinstance(subjects, pa.ChunkedArray):
        subjects = subjects.combine_chunks()
    if not isinstance(subjects, pa.Array):
        raise ValueError(f"subjects must be a pyarrow string array, not {type(subjects).__name__}")
    if pa.types.is_string(subjects.type):
        return subjects
    if pa.types.is_large_string(subjects.type) or pa.types.is_string_view(subjects.type):
        return subjects.cast(pa.string())
    if pa.types.is_null(subjects.type):
        return pa.nulls(len(subjects), pa.string())
    raise ValueError(f"subjects must be resident codes as strings, not {subjects.type}")


def _outcome_codes(outcomes: Any, rows: int) -> pa.Array | int:
    """Check `outcomes` against OUTCOMES; give int8 codes into OUTCOMES (or one code for all)."""
    if isinstance(outcomes, str):
        if outcomes not in OUTCOMES:
            raise ValueError(f"unknown audit outcome {outcomes!r}; expected one of {OUTCOMES}")
        return OUTCOMES.index(outcomes)
    if isinstance(outcomes, pa.ChunkedArray):
        outcomes = outcomes.combine_chunks()
    if not isinstance(outcomes, pa.Array):
        raise ValueError(
            f"outcomes must be a str or a pyarrow array, not {type(outcomes).__name__}"
        )
    if len(outcomes) != rows:
        raise ValueError(f"outcomes has {len(outcomes)} rows but subjects has {rows}")
    if outcomes.null_count:
        raise ValueError(f"audit outcome missing (null) at row {_first(outcomes.is_null())}")
    if pa.types.is_dictionary(outcomes.type):
        values, indices = outcomes.dictionary, outcomes.indices
    else:
        values, indices = outcomes, None
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise ValueError(f"outcomes must be strings from {OUTCOMES}, not {outcomes.type}")
    mapping = pc.index_in(values, value_set=_OUTCOME_VALUES)
    if mapping.null_count:
        unknown = mapping.is_null()
        if indices is not None:  # a dictionary may carry values no row uses
            unknown = pc.is_in(indices, value_set=pc.indices_nonzero(unknown).cast(indices.type))
        if pc.any(unknown).as_py():
            row = _first(unknown)
            bad = values[row if indices is None else indices[row].as_py()]
            raise ValueError(f"unknown audit outcome {bad.as_py()!r}; expected one of {OUTCOMES}")
    codes = mapping.cast(pa.int8())
    if indices is None:
        return codes
    if indices.type == pa.int8() and codes.equals(_OUTCOME_CODES[: len(codes)]):
        return indices  # already our dictionary's codes: no copy
    return pc.take(codes, indices)


def _first(mask: pa.Array) -> int:
    return int(pc.index(mask, True).as_py())


def _batch_groups(entries: list[_Entry]) -> Iterator[list[_Entry]]:
    """Entries in order, small consecutive ones of one UTC day grouped into one batch."""
    group: list[_Entry] = []
    for entry in entries:
        small = len(entry.subjects) < _SMALL_APPEND
        if group and not (small and entry.time_us // _DAY_US == group[0].time_us // _DAY_US):
            yield group
            group = []
        group.append(entry)
        if not small or len(group) >= _SMALL_APPEND:
            yield group
            group = []
    if group:
        yield group


def _record_batch(entries: list[_Entry]) -> pa.RecordBatch:
    """One record batch of the entries' records; single-valued columns share zero indices."""
    lengths = np.array([len(entry.subjects) for entry in entries])
    rows = int(lengths.sum())
    zeros: pa.Array | None = None

    def label(values: list[str]) -> pa.DictionaryArray:
        nonlocal zeros
        unique = list(dict.fromkeys(values))
        if len(unique) == 1:
            if zeros is None:
                zeros = pa.array(np.zeros(rows, np.int32))
            indices = zeros
        else:
            position = {value: index for index, value in enumerate(unique)}
            codes = np.array([position[value] for value in values], np.int32)
            indices = pa.array(np.repeat(codes, lengths))
        return pa.DictionaryArray.from_arrays(indices, pa.array(unique, pa.string()), safe=False)

    def reasons() -> pa.DictionaryArray:
        values = [entry.reason for entry in entries]
        if all(value is None for value in values):
            return pa.DictionaryArray.from_arrays(
                pa.nulls(rows, pa.int32()), pa.array([], pa.string())
            )
        unique = list(dict.fromkeys(v for v in values if v is not None))
        position = {value: index for index, value in enumerate(unique)}
        per_entry = [-1 if v is None else position[v] for v in values]
        codes = pa.array(np.repeat(per_entry, lengths), pa.int32())
        indices = pc.if_else(pc.equal(codes, -1), pa.scalar(None, pa.int32()), codes)
        return pa.DictionaryArray.from_arrays(indices, pa.array(unique, pa.string()))

    contexts = [entry.context for entry in entries]
    times = np.repeat(np.array([entry.time_us for entry in entries], np.int64), lengths)
    if len(entries) == 1:
        subjects = entries[0].subjects
    else:
        subjects = pa.concat_arrays([entry.subjects for entry in entries])
    outcomes = [entry.outcomes for entry in entries]
    if len(outcomes) == 1 and isinstance(outcomes[0], pa.Array):
        codes = outcomes[0]
    else:
        codes = pa.array(
            np.concatenate(
                [
                    np.full(length, code, np.int8) if isinstance(code, int) else code.to_numpy()
                    for code, length in zip(outcomes, lengths, strict=True)
                ]
            )
        )
    return pa.RecordBatch.from_arrays(
        [
            pa.Array.from_buffers(_TIME, rows, [None, pa.py_buffer(times)]),
            label([context.agency for context in contexts]),
            label([context.operator for context in contexts]),
            label([context.request_id for context in contexts]),
            label([context.affair for context in contexts]),
            label([context.mode for context in contexts]),
            label([",".join(context.fields) for context in contexts]),
            subjects,
            pa.DictionaryArray.from_arrays(codes, _OUTCOME_VALUES, safe=False),
            reasons(),
        ],
        schema=_STORED_SCHEMA,
    )


# --- segment files ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SegmentFile:
    path: Path
    start_us: int
    sequence: int
    mtime_us: int


def _segment_name(start_us: int, sequence: int) -> str:
    start = _EPOCH + timedelta(microseconds=start_us)
    return f"audit-{start.strftime(_NAME_TIME)}Z-{sequence:06d}.arrows"


def _micros(moment: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _list_segments(directory: Path) -> list[_SegmentFile]:
    """The directory's segments in time order."""
    segments = []
    with os.scandir(directory) as entries:
        for entry in entries:
            match = _SEGMENT_NAME.fullmatch(entry.name)
            if match is None:
                continue
            try:
                mtime_us = entry.stat().st_mtime_ns // 1000
            except FileNotFoundError:
                continue  # expired by the writer's retention while we listed
            try:
                start = datetime.strptime(match[1], _NAME_TIME).replace(tzinfo=UTC)
            except ValueError:
                raise AuditUnavailable(f"audit segment {entry.path} has no valid time") from None
            segments.append(_SegmentFile(Path(entry.path), _micros(start), int(match[2]), mtime_us))
    segments.sort(key=lambda s: (s.start_us, s.sequence))
    return segments


def _expire(directory: Path, retention_days: int, keep: Path | None) -> None:
    """Delete the segments all of whose records are older than the retention period."""
    cutoff = _clock() - retention_days * _DAY_US
    segments = _list_segments(directory)
    removed = False
    for index, segment in enumerate(segments):
        # Its last record is no later than the file's mtime, nor than the next segment's first.
        end = segment.mtime_us
        if index + 1 < len(segments):
            end = min(end, segments[index + 1].start_us)
        if end < cutoff and segment.path != keep:
            segment.path.unlink(missing_ok=True)
            removed = True
    if removed:
        fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Make a directory's entries durable (a file created, renamed or removed in it)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _batch_ends(data: memoryview, path: Path) -> list[int]:
    """Where each complete record batch message of the stream ends.

    A crash can cut the last message anywhere (kill -9 mid-write), or leave zeros where it was
    (power loss before its blocks reached the disk): the torn tail is left out. Anything else
    that does not frame as Arrow IPC messages is damage, reported as such.
    """
    size, position, ends = len(data), 0, []
    while position < size:
        rest = data[position:]
        if len(rest) < 8 or struct.unpack_from("<I", rest)[0] != _CONTINUATION:
            # Part of the continuation marker, then nothing (cut) or zeros (power loss).
            marker = bytes(rest[:4]).rstrip(b"\0")
            if marker.strip(b"\xff") or not (len(rest) < 8 or _zeros(rest[4:])):
                raise _damaged(path, position)
            break
        metadata_length = struct.unpack_from("<i", rest, 4)[0]
        if metadata_length == 0:  # the end-of-stream marker
            if not _zeros(rest[8:]):
                raise _damaged(path, position + 8)
            break
        if metadata_length < 0:
            raise _damaged(path, position)
        if 8 + metadata_length > len(rest):
            break  # torn inside the metadata
        try:
            header, body = _message_header(rest[8 : 8 + metadata_length], path, position)
        except AuditUnavailable:
            if _written(rest) < 8 + metadata_length:
                break  # zeros from inside the metadata on: never written
            raise
        if 8 + metadata_length + body > len(rest):
            break  # torn inside the body
        position += 8 + metadata_length + body
        if header == _RECORD_BATCH:
            ends.append(position)
    return ends


def _zeros(data: memoryview) -> bool:
    return not np.frombuffer(data, np.uint8).any()


def _written(data: memoryview) -> int:
    """The length of `data` without its zero tail."""
    nonzero = np.flatnonzero(np.frombuffer(data, np.uint8))
    return int(nonzero[-1]) + 1 if nonzero.size else 0


def _message_header(metadata: memoryview, path: Path, position: int) -> tuple[int, int]:
    """The header type and body length of an IPC message, read from its flatbuffer.

    `Message` fields: 0 version, 1 header type, 2 header, 3 body length; all bounds-checked.
    """

    def read(fmt: str, offset: int) -> int:
        if not 0 <= offset <= len(metadata) - struct.calcsize(fmt):
            raise _damaged(path, position)
        return int(struct.unpack_from(fmt, metadata, offset)[0])

    table = read("<I", 0)
    vtable = table - read("<i", table)
    vtable_size = read("<H", vtable)
    if table < 4 or vtable_size < 4 or vtable_size % 2:
        raise _damaged(path, position)

    def field(index: int, fmt: str) -> int:
        slot = 4 + 2 * index  # after the vtable's two sizes, one uint16 offset per field
        offset = read("<H", vtable + slot) if slot < vtable_size else 0
        return read(fmt, table + offset) if offset else 0

    header, body = field(1, "<B"), field(3, "<q")
    if body < 0 or body % 8:
        raise _damaged(path, position)
    return header, body


def _damaged(path: Path, position: int) -> AuditUnavailable:
    return AuditUnavailable(f"audit segment {path} is damaged at byte {position}")


def _read_segment(path: Path) -> list[pa.RecordBatch]:
    """Every complete record batch of one segment."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []  # expired by the writer's retention since we listed it
    except OSError as error:
        raise AuditUnavailable(f"cannot read audit segment {path}: {error}") from error
    view = memoryview(data)
    ends = _batch_ends(view, path)
    if not ends:
        return []
    try:
        return _decode(data, ends[-1], path)
    except AuditUnavailable:
        # Zeros from inside the last batch's messages to the end of the file: power loss left
        # its lengths on disk but not its contents. It was never acknowledged.
        previous = ends[-2] if len(ends) > 1 else 0
        if previous + _written(view[previous:]) < ends[-1]:
            return _decode(data, previous, path)
        raise


def _decode(data: bytes, end: int, path: Path) -> list[pa.RecordBatch]:
    """The record batches of the stream's first `end` bytes, which hold complete messages."""
    if end == 0:
        return []
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data)[:end])
        if reader.schema.equals(_STORED_SCHEMA_V1):
            reason = _STORED_SCHEMA.field("reason").type
            return [
                pa.RecordBatch.from_arrays(
                    [*batch.columns, pa.nulls(batch.num_rows, reason)], schema=_STORED_SCHEMA
                )
                for batch in reader
            ]
        if not reader.schema.equals(_STORED_SCHEMA):
            raise AuditUnavailable(f"{path} is not an audit segment (schema {reader.schema})")
        return list(reader)
    except (pa.ArrowException, OSError) as error:  # pyarrow raises OSError for bad messages
        raise AuditUnavailable(f"audit segment {path} is damaged: {error}") from error


def _batches(
    directory: Path, since_us: int | None, until_us: int | None
) -> Iterator[pa.RecordBatch]:
    """The stored batches of segments that may hold records in [since, until)."""
    try:
        segments = _list_segments(directory)
    except OSError as error:
        raise AuditUnavailable(f"cannot list the audit trail in {directory}: {error}") from error
    for index, segment in enumerate(segments):
        # Skip a segment only if both bounds on its last record (its mtime, the next segment's
        # first record) say so: a missed audit record is worse than a slower read.
        if since_us is not None and index + 1 < len(segments):
            if max(segment.mtime_us, segments[index + 1].start_us) < since_us:
                continue
        if until_us is not None and segment.start_us >= until_us:
            continue
        yield from _read_segment(segment.path)


def _and(mask: pa.Array | None, other: pa.Array) -> pa.Array:
    return other if mask is None else pc.and_(mask, other)


def _matching(
    batch: pa.RecordBatch,
    *,
    subject: str | None = None,
    agency: str | None = None,
    affair: str | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
) -> pa.RecordBatch | None:
    """The batch's rows that pass every given filter; None if there are none."""
    mask: pa.Array | None = None
    for name, wanted in (("agency", agency), ("affair", affair)):
        if wanted is None:
            continue
        column = batch.column(name)
        values = column.dictionary.to_pylist()
        if wanted not in values:
            return None
        if len(values) > 1 or column.null_count:  # else one entry settles the whole batch
            codes = [code for code, value in enumerate(values) if value == wanted]
            mask = _and(mask, pc.is_in(column.indices, pa.array(codes, column.indices.type)))
    if since_us is not None or until_us is not None:
        times = batch.column("time").view(pa.int64())
        bounds = pc.min_max(times).as_py()
        low = since_us if since_us is not None else bounds["min"]
        high = until_us if until_us is not None else bounds["max"] + 1
        if bounds["max"] < low or bounds["min"] >= high:
            return None
        if bounds["min"] < low or bounds["max"] >= high:
            mask = _and(mask, pc.and_(pc.greater_equal(times, low), pc.less(times, high)))
    if subject is not None:
        mask = _and(mask, pc.equal(batch.column("subject"), subject))
    if mask is None:
        return batch
    selected = batch.filter(mask)
    return selected if selected.num_rows else None


def _plain(column: pa.Array) -> pa.Array:
    return column.dictionary_decode() if pa.types.is_dictionary(column.type) else column


def read(
    directory: str | os.PathLike[str],
    *,
    subject: str | None = None,
    agency: str | None = None,
    affair: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """All records that match every given filter, in time order, as a table of `SCHEMA`.

    `since` is inclusive and `until` exclusive; a naive datetime is taken as UTC. `columns`
    selects and orders the columns returned (filters may use columns not returned). Reading while
    a trail writes is safe: records still being written are left out.
    """
    names = list(SCHEMA.names if columns is None else columns)
    for name in names:
        if name not in SCHEMA.names:
            raise ValueError(f"unknown audit column {name!r}; the columns are {SCHEMA.names}")
    schema = pa.schema([SCHEMA.field(name) for name in names])
    since_us = None if since is None else _micros(since)
    until_us = None if until is None else _micros(until)
    pieces, times = [], []
    in_order, latest = True, None
    for batch in _batches(Path(directory), since_us, until_us):
        rows = _matching(
            batch,
            subject=subject,
            agency=agency,
            affair=affair,
            since_us=since_us,
            until_us=until_us,
        )
        if rows is None:
            continue
        micros = rows.column("time").view(pa.int64()).to_numpy()
        # Our batches come in time order, each in time order; only damage would break that.
        in_order &= (latest is None or latest <= micros[0]) and bool(
            np.all(micros[1:] >= micros[:-1])
        )
        latest = micros[-1] if latest is None else max(latest, int(micros.max()))
        times.append(rows.column("time"))
        pieces.append(
            pa.RecordBatch.from_arrays([_plain(rows.column(name)) for name in names], schema=schema)
        )
    table = pa.Table.from_batches(pieces, schema=schema)
    if not in_order:
        # A stable sort: records of one time keep their file order.
        table = table.take(pc.sort_indices(pa.chunked_array(times, type=_TIME)))
    return table


def counts_since(directory: str | os.PathLike[str], since: datetime) -> dict[tuple[str, str], int]:
    """{(agency, affair): records answered since `since`} (outcomes in `ANSWERED`): what the
    server's daily quotas count, live and when restored from the trail after a restart."""
    since_us = _micros(since)
    counts: dict[tuple[str, str], int] = {}
    for batch in _batches(Path(directory), since_us, None):
        rows = _matching(batch, since_us=since_us)
        if rows is None:
            continue
        outcome = rows.column("outcome")
        values = outcome.dictionary.to_pylist()
        answered = [code for code, value in enumerate(values) if value in ANSWERED]
        if not answered:
            continue
        mask = pc.is_in(outcome.indices, pa.array(answered, outcome.indices.type))
        agency, affair = rows.column("agency"), rows.column("affair")
        if len(agency.dictionary) == 1 and len(affair.dictionary) == 1:
            count = int(pc.sum(mask).as_py() or 0)
            if count:
                key = (agency.dictionary[0].as_py(), affair.dictionary[0].as_py())
                counts[key] = counts.get(key, 0) + count
            continue
        table = pa.table({"agency": _plain(agency), "affair": _plain(affair)}).filter(mask)
        groups = table.group_by(["agency", "affair"]).aggregate([([], "count_all")])
        for group in groups.to_pylist():
            key = (group["agency"], group["affair"])
            counts[key] = counts.get(key, 0) + group["count_all"]
    return counts
