"""Tests for the audit trail: durability, group commit, segments, crashes, reading."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from auditing import EPOCH, T0, Clock, context, legacy_segment, residents, segments

from juki_engine import JukiError, audit
from juki_engine.audit import AuditTrail, AuditUnavailable

# --- recording and reading ---------------------------------------------------------------------


def test_round_trip_with_filters(tmp_path: Path, clock: Clock) -> None:
    directory = tmp_path / "audit"
    times = [T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)]
    with AuditTrail(directory) as trail:
        clock.now = times[0]
        trail.record(context(request_id="a"), residents(3), "disclosed")
        clock.now = times[1]
        trail.record(
            context(agency="MOJ", request_id="b", affair="12", mode="verify", fields=()),
            pa.array(["00000000001", None]),
            pa.array(["disclosed", "invalid_key"]),
            persons=pa.array([7, None], pa.int64()),
        )
        clock.now = times[2]
        trail.record(context(request_id="c", operator="op-2"), residents(1, first=1), "denied")

    table = audit.read(directory)
    assert table.schema == audit.SCHEMA
    assert table.column("time").to_pylist() == [times[0]] * 3 + [times[1]] * 2 + [times[2]]
    assert table.column("request_id").to_pylist() == ["a"] * 3 + ["b"] * 2 + ["c"]
    assert table.slice(3, 1).to_pylist() == [
        {
            "time": times[1],
            "agency": "MOJ",
            "operator": "op-17",
            "request_id": "b",
            "affair": "12",
            "mode": "verify",
            "fields": "",
            "subject": "00000000001",
            "person": 7,
            "outcome": "disclosed",
            "reason": None,
        }
    ]
    assert table.column("person").to_pylist() == [None] * 3 + [7, None, None]
    assert table.column("fields")[0].as_py() == "family_name,birth_date"
    assert table.column("subject")[4].as_py() is None

    def ids(**filters: Any) -> list[str]:
        table = audit.read(directory, columns=["request_id"], **filters)
        return [str(request_id) for request_id in table.column(0).to_pylist()]

    assert ids(subject="00000000001") == ["a", "b", "c"]
    assert ids(subject="00000000002") == ["a"]
    assert ids(subject="99999999999") == []
    assert ids(person=7) == ["b"]
    assert ids(person=8) == []
    assert ids(agency="MOJ") == ["b", "b"]
    assert ids(affair="77") == ["a", "a", "a", "c"]
    assert ids(agency="JPN-PENSION", subject="00000000001") == ["a", "c"]
    assert ids(since=times[1]) == ["b", "b", "c"]  # inclusive
    assert ids(until=times[1]) == ["a", "a", "a"]  # exclusive
    assert ids(since=times[1], until=times[2]) == ["b", "b"]
    assert ids(since=times[1].replace(tzinfo=None)) == ["b", "b", "c"]  # naive is UTC
    jst = timezone(timedelta(hours=9))
    assert ids(until=times[1].astimezone(jst)) == ["a", "a", "a"]

    narrow = audit.read(directory, agency="MOJ", columns=["outcome", "subject"])
    assert narrow.schema.names == ["outcome", "subject"]
    assert narrow.to_pylist() == [
        {"outcome": "disclosed", "subject": "00000000001"},
        {"outcome": "invalid_key", "subject": None},
    ]
    with pytest.raises(ValueError, match="'secret'"):
        audit.read(directory, columns=["subject", "secret"])


def test_segments_store_shared_columns_once(trail: AuditTrail) -> None:
    """Segments are plain Arrow IPC streams; a batch's shared columns are one-entry dictionaries."""
    trail.record(context(request_id="a"), residents(1000), "disclosed")
    trail.record(context(request_id="b"), residents(10), "not_found")
    trail.close()
    (segment,) = segments(trail.directory)
    batches = list(pa.ipc.open_stream(segment.read_bytes()))
    assert [batch.num_rows for batch in batches] == [1000, 10]
    for batch, request_id in zip(batches, ["a", "b"], strict=True):
        for name in ("agency", "operator", "request_id", "affair", "mode", "fields"):
            column = batch.column(name)
            assert pa.types.is_dictionary(column.type)
            assert len(column.dictionary) == 1
        assert batch.column("request_id").dictionary.to_pylist() == [request_id]


def test_per_row_outcomes(trail: AuditTrail) -> None:
    expected = ["disclosed", "not_found", "invalid_key", "denied", "quota_exhausted", "disclosed"]
    shuffled = ["denied", "quota_exhausted", "disclosed", "invalid_key", "not_found"]
    as_strings = pa.array(expected)
    as_dictionary = pa.DictionaryArray.from_arrays(
        pa.array([shuffled.index(value) for value in expected], pa.int32()), pa.array(shuffled)
    )
    # A dictionary may hold values no row uses; only the rows' values must be outcomes.
    with_unused = pa.DictionaryArray.from_arrays(
        pa.array([0, 0, 2], pa.int8()), pa.array(["disclosed", "leaked", "denied"])
    )
    trail.record(context(request_id="strings"), residents(6), as_strings)
    trail.record(context(request_id="dictionary"), residents(6), as_dictionary)
    trail.record(context(request_id="chunked"), residents(6), pa.chunked_array([as_strings]))
    trail.record(context(request_id="unused"), residents(3), with_unused)

    def outcomes(request_id: str) -> list[str]:
        rows = audit.read(trail.directory, columns=["request_id", "outcome"]).to_pylist()
        return [row["outcome"] for row in rows if row["request_id"] == request_id]

    assert outcomes("strings") == expected
    assert outcomes("dictionary") == expected
    assert outcomes("chunked") == expected
    assert outcomes("unused") == ["disclosed", "disclosed", "denied"]


@pytest.mark.parametrize(
    ("subjects", "outcomes", "message"),
    [
        (residents(2), "leaked", "'leaked'"),
        (residents(2), pa.array(["disclosed", "Disclosed"]), "'Disclosed'"),
        (
            residents(3),
            pa.DictionaryArray.from_arrays(
                pa.array([0, 1, 0], pa.int8()), pa.array(["disclosed", "shown"])
            ),
            "'shown'",
        ),
        (residents(2), pa.array(["disclosed", None]), "null"),
        (residents(2), pa.array(["disclosed"]), "1 rows but subjects has 2"),
        (residents(1), pa.array([1]), "int64"),
        (pa.array([12345678901]), "disclosed", "int64"),
    ],
    ids=["str", "string-array", "dictionary", "null", "length", "outcome-type", "subject-type"],
)
def test_invalid_input_is_rejected_before_recording(
    trail: AuditTrail, subjects: pa.Array, outcomes: str | pa.Array, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        trail.append(context(), subjects, outcomes)
    trail.record(context(request_id="after"), residents(1), "disclosed")
    assert audit.read(trail.directory).column("request_id").to_pylist() == ["after"]


@pytest.mark.parametrize(
    ("persons", "message"),
    [
        (pa.array([1, 2]), "persons has 2 rows"),
        (pa.array(["1"]), "person ids"),
        (pa.array([-1]), "person ids \\(0 to 2\\^32-1\\)"),
        ([1], "person ids"),
    ],
    ids=["length", "type", "negative", "list"],
)
def test_invalid_persons_are_rejected_before_recording(
    trail: AuditTrail, persons: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        trail.append(context(), residents(1), "disclosed", persons=persons)
    assert audit.read(trail.directory).num_rows == 0


def test_context_is_checked() -> None:
    with pytest.raises(ValueError, match="'browse'"):
        context(mode="browse")
    with pytest.raises(ValueError, match="'name,kana'"):
        context(fields=("name,kana",))


def test_empty_append_records_nothing(trail: AuditTrail) -> None:
    trail.record(context(), residents(0), "disclosed")
    assert audit.read(trail.directory).num_rows == 0


# --- concurrency and group commit ----------------------------------------------------------------


def test_concurrent_appenders_are_all_durable(trail: AuditTrail) -> None:
    threads, appends = 16, 40
    start = threading.Barrier(threads)

    def appender(thread: int) -> None:
        start.wait()
        for index in range(appends):
            request_id = f"{thread}-{index}"
            trail.record(context(request_id=request_id), residents(thread + 1), "disclosed")

    workers = [threading.Thread(target=appender, args=(thread,)) for thread in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    # Readable before close: every waited Commit is on disk.
    table = audit.read(trail.directory, columns=["time", "request_id"])
    rows_per_request: dict[str, int] = {}
    for request_id in table.column("request_id").to_pylist():
        rows_per_request[request_id] = rows_per_request.get(request_id, 0) + 1
    assert rows_per_request == {
        f"{thread}-{index}": thread + 1 for thread in range(threads) for index in range(appends)
    }
    times = table.column("time").to_pylist()
    assert times == sorted(times)


def fsync_gate(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[threading.Event, threading.Event, list[int]]:
    """Replace os.fsync: the first call blocks until released; every call is counted."""
    entered, release, calls = threading.Event(), threading.Event(), []
    real_fsync = os.fsync

    def gated_fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            entered.set()
            release.wait()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", gated_fsync)
    return entered, release, calls


def test_group_commit_one_fsync_for_everything_pending(
    trail: AuditTrail, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release, calls = fsync_gate(monkeypatch)
    first = trail.append(context(request_id="first"), residents(1), "disclosed")
    entered.wait()  # the writer is inside its first pass
    with pytest.raises(AuditUnavailable, match="not durable after 0 s"):
        first.wait(timeout=0)
    queued = [
        trail.append(
            context(agency=f"A{i % 2}", affair=f"{i % 3}", request_id=f"queued-{i}"),
            residents(5, first=i),
            pa.array(["disclosed", "denied", "disclosed", "not_found", "disclosed"]),
        )
        for i in range(10)
    ]
    release.set()
    for commit in [first, *queued]:
        commit.wait()
    # The new segment's directory, the first pass, then one fsync for all ten queued appends.
    assert len(calls) == 3
    # Small appends of one pass share a record batch; their shared columns are dictionaries.
    (segment,) = segments(trail.directory)
    assert [batch.num_rows for batch in pa.ipc.open_stream(segment.read_bytes())] == [1, 50]

    table = audit.read(trail.directory, agency="A1", affair="0", subject=f"{4:011d}")
    assert table.column("request_id").to_pylist() == ["queued-3"]
    assert table.column("outcome").to_pylist() == ["denied"]  # its second row
    assert audit.read(trail.directory, agency="A0").num_rows == 5 * 5
    expected = {("JPN-PENSION", "77"): 1}
    for i in range(10):
        key = (f"A{i % 2}", f"{i % 3}")
        expected[key] = expected.get(key, 0) + 4  # every answer: disclosed or not found
    assert audit.counts_since(trail.directory, EPOCH) == expected


def test_close_flushes_pending_and_is_idempotent(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / "audit")
    commits = [
        trail.append(context(request_id=str(i)), residents(2), "disclosed") for i in range(5)
    ]
    trail.close()
    for commit in commits:
        commit.wait()
    trail.close()
    with pytest.raises(AuditUnavailable, match="closed"):
        trail.append(context(), residents(1), "disclosed")
    assert audit.read(tmp_path / "audit").num_rows == 10


# --- segments ------------------------------------------------------------------------------------


def test_rotation_by_size_keeps_every_record_in_order(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    with AuditTrail(directory, segment_bytes=4096) as trail:
        for index in range(12):
            trail.record(context(request_id=str(index)), residents(200, first=index), "disclosed")
    assert len(segments(directory)) > 3
    table = audit.read(directory, columns=["time", "request_id"])
    expected = [str(index) for index in range(12) for _ in range(200)]
    assert table.column("request_id").to_pylist() == expected
    assert audit.read(directory, subject=f"{11:011d}").column("request_id").to_pylist() == [
        str(index) for index in range(12)
    ]


def test_rotation_at_utc_midnight(tmp_path: Path, clock: Clock) -> None:
    directory = tmp_path / "audit"
    clock.now = datetime(2025, 8, 31, 23, 59, 59, tzinfo=UTC)
    with AuditTrail(directory) as trail:
        trail.record(context(request_id="before"), residents(1), "disclosed")
        clock.now += timedelta(seconds=2)
        trail.record(context(request_id="after"), residents(1), "disclosed")
    names = [path.name for path in segments(directory)]
    assert [name[:14] for name in names] == ["audit-20250831", "audit-20250901"]
    since = datetime(2025, 9, 1, tzinfo=UTC)
    assert audit.read(directory, since=since).column("request_id").to_pylist() == ["after"]


def test_reopen_starts_a_new_segment(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    with AuditTrail(directory) as trail:
        trail.record(context(request_id="first"), residents(3), "disclosed")
        with pytest.raises(AuditUnavailable, match="another audit trail"):
            AuditTrail(directory)
    (first,) = segments(directory)
    before = first.read_bytes()
    with AuditTrail(directory) as trail:
        trail.record(context(request_id="second"), residents(2), "denied")
    assert len(segments(directory)) == 2
    assert first.read_bytes() == before
    table = audit.read(directory)
    assert table.column("request_id").to_pylist() == ["first"] * 3 + ["second"] * 2


def test_retention_deletes_only_expired_segments(tmp_path: Path, clock: Clock) -> None:
    directory = tmp_path / "audit"
    now = datetime.now(UTC)
    for request_id, age in (("ten", 3653), ("nine", 3288), ("yesterday", 1)):
        clock.now = now - timedelta(days=age)
        with AuditTrail(directory, retention_days=100 * 366) as trail:
            trail.record(context(request_id=request_id), residents(1), "disclosed")
    ten, nine, yesterday = segments(directory)

    clock.now = now
    AuditTrail(directory).close()
    # "nine" may hold records up to "yesterday"'s start, and its mtime is recent: both bound it.
    assert not ten.exists()
    assert segments(directory) == [nine, yesterday]

    nine_years_ago = (now - timedelta(days=3288)).timestamp()
    os.utime(nine, (nine_years_ago, nine_years_ago))
    AuditTrail(directory).close()
    assert segments(directory) == [yesterday]
    assert audit.read(directory).column("request_id").to_pylist() == ["yesterday"]


def test_retention_runs_at_rotation(tmp_path: Path, clock: Clock) -> None:
    directory = tmp_path / "audit"
    clock.now = datetime.now(UTC)
    with AuditTrail(directory, retention_days=30) as trail:
        trail.record(context(request_id="old"), residents(1), "disclosed")
        clock.now += timedelta(days=31)  # the UTC date changes: a new segment, and retention
        trail.record(context(request_id="new"), residents(1), "disclosed")
        assert len(segments(directory)) == 1
    assert audit.read(directory).column("request_id").to_pylist() == ["new"]


# --- crashes and damage --------------------------------------------------------------------------


def record_three(directory: Path) -> tuple[Path, list[int]]:
    """Three single-batch appends; the segment's size after each (durable) and after close."""
    sizes = []
    with AuditTrail(directory) as trail:
        for index in range(3):
            trail.record(context(request_id=str(index)), residents(50, first=index), "disclosed")
            (segment,) = segments(directory)
            sizes.append(segment.stat().st_size)
    sizes.append(segment.stat().st_size)  # plus the end-of-stream marker
    return segment, sizes


def test_torn_tail_reads_every_complete_batch(tmp_path: Path) -> None:
    segment, sizes = record_three(tmp_path / "audit")
    data = segment.read_bytes()
    assert sizes[3] == len(data)
    cuts = set(range(0, len(data) + 1, 13))
    for size in sizes:
        cuts |= {size - 1, size, size + 1, size + 4, size + 8, size + 9}
    torn = tmp_path / "torn"
    torn.mkdir()
    for cut in sorted(cut for cut in cuts if 0 <= cut <= len(data)):
        # Killed mid-write: the file ends at the cut. Power loss: zeros where the tail was.
        for kind, damaged in (("cut", data[:cut]), ("zeros", data[:cut] + bytes(len(data) - cut))):
            # A batch is complete when its bytes are intact (zeroing its zero padding is not harm).
            expected = sum(damaged[:size] == data[:size] for size in sizes[:3])
            (torn / segment.name).write_bytes(damaged)
            ids = audit.read(torn).column("request_id").unique().to_pylist()
            assert ids == [str(index) for index in range(expected)], f"{kind} at byte {cut}"


def test_reopen_after_torn_tail(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    segment, sizes = record_three(directory)
    with open(segment, "r+b") as file:
        file.truncate(sizes[2] - 10)
    with AuditTrail(directory) as trail:
        trail.record(context(request_id="3"), residents(1), "disclosed")
    assert audit.read(directory).column("request_id").unique().to_pylist() == ["0", "1", "3"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"this is not an audit segment",
        lambda data: data[:200] + b"\x00\x01" + data[202:],
        lambda data: data + b"more after the end",
    ],
    ids=["garbage", "middle", "after-end"],
)
def test_damage_is_reported_naming_the_file(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    segment, _ = record_three(tmp_path / "audit")
    segment.write_bytes(damage(segment.read_bytes()))
    with pytest.raises(AuditUnavailable, match=segment.name):
        audit.read(tmp_path / "audit")
    assert issubclass(AuditUnavailable, JukiError)


def test_missing_directory_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(AuditUnavailable, match="nowhere"):
        audit.read(tmp_path / "nowhere")


CRASHING_APPENDER = """
import sys
import pyarrow as pa
from juki_engine import audit

trail = audit.AuditTrail(sys.argv[1], segment_bytes=64 << 10)
subjects = pa.array([f"{i:011d}" for i in range(2000)])
for index in range(1_000_000):
    context = audit.AuditContext("A", "op", str(index), "77", "retrieve", ("address",))
    trail.append(context, subjects, "disclosed").wait()
    print(index, flush=True)
"""


def test_kill_9_loses_no_committed_batch(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    with subprocess.Popen(
        [sys.executable, "-c", CRASHING_APPENDER, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
    ) as appender:
        assert appender.stdout is not None
        reported = [appender.stdout.readline() for _ in range(40)]
        os.kill(appender.pid, signal.SIGKILL)
        reported += appender.stdout.readlines()
        assert appender.wait() == -signal.SIGKILL
    committed = {line.strip() for line in reported}
    assert len(committed) >= 40
    assert len(segments(directory)) > 1  # it rotated on the way

    table = audit.read(directory, columns=["request_id", "subject"])
    rows: dict[str, int] = {}
    for request_id in table.column("request_id").to_pylist():
        rows[request_id] = rows.get(request_id, 0) + 1
    assert committed <= rows.keys()
    assert set(rows.values()) == {2000}

    with AuditTrail(directory) as trail:
        trail.record(context(request_id="after-crash"), residents(1), "disclosed")
    assert audit.read(directory, agency="JPN-PENSION").column("request_id").to_pylist() == [
        "after-crash"
    ]


# --- failing closed ------------------------------------------------------------------------------


def test_fsync_failure_fails_closed(trail: AuditTrail, monkeypatch: pytest.MonkeyPatch) -> None:
    trail.record(context(request_id="kept"), residents(1), "disclosed")

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    commit = trail.append(context(request_id="lost"), residents(1), "disclosed")
    with pytest.raises(AuditUnavailable, match="No space left"):
        commit.wait()
    with pytest.raises(AuditUnavailable, match="No space left"):
        trail.append(context(), residents(1), "disclosed")
    with pytest.raises(AuditUnavailable):
        trail.record(context(), residents(1), "denied")
    trail.close()
    assert "kept" in audit.read(trail.directory).column("request_id").to_pylist()


def test_removed_directory_fails_closed(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    with AuditTrail(directory, segment_bytes=1) as trail:
        trail.record(context(request_id="first"), residents(1), "disclosed")
        shutil.rmtree(directory)
        commit = trail.append(context(request_id="second"), residents(1), "disclosed")
        with pytest.raises(AuditUnavailable, match="audit"):
            commit.wait()
        with pytest.raises(AuditUnavailable):
            trail.append(context(), residents(1), "disclosed")


# --- quotas --------------------------------------------------------------------------------------


def test_counts_since_counts_answers_only(tmp_path: Path, clock: Clock) -> None:
    directory = tmp_path / "audit"
    midnight = datetime(2025, 6, 2, tzinfo=UTC)
    with AuditTrail(directory) as trail:
        clock.now = midnight - timedelta(microseconds=1)
        trail.record(context(affair="77"), residents(7), "disclosed")  # yesterday
        clock.now = midnight
        mixed = pa.array(["disclosed", "not_found", "disclosed", "denied", "disclosed"])
        trail.record(context(affair="77"), residents(5), mixed)
        clock.now = midnight + timedelta(hours=3)
        trail.record(context(affair="12"), residents(4), "disclosed")
        trail.record(context(agency="MOJ", affair="77"), residents(6), "quota_exhausted")
        trail.record(context(agency="MOJ", affair="77"), residents(2), "disclosed")
    # Answers count (disclosed, not found, invalid key), refusals do not: as the live quota.
    assert audit.counts_since(directory, midnight) == {
        ("JPN-PENSION", "77"): 4,
        ("JPN-PENSION", "12"): 4,
        ("MOJ", "77"): 2,
    }
    assert audit.counts_since(directory, midnight + timedelta(days=1)) == {}
    assert audit.counts_since(directory, midnight - timedelta(days=1))[("JPN-PENSION", "77")] == 11


def test_refusals_carry_their_reason(trail: AuditTrail) -> None:
    trail.record(context(request_id="r"), residents(2), "denied", "affair '77' is not granted")
    trail.record(context(request_id="ok"), residents(1), "disclosed")
    trail.record(context(request_id="long"), residents(1), "failed", "x" * 10_000)
    rows = audit.read(trail.directory, columns=["request_id", "reason"]).to_pylist()
    reasons = {row["request_id"]: row["reason"] for row in rows}
    assert reasons["r"] == "affair '77' is not granted" and reasons["ok"] is None
    assert len(reasons["long"]) == 257  # cut, then "…"


def test_a_pending_commit_is_withdrawn_truthfully(
    trail: AuditTrail, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, gate = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def held(fd: int) -> None:
        entered.set()
        assert gate.wait(10)
        real_fsync(fd)

    trail.record(context(request_id="open"), residents(1), "disclosed")
    monkeypatch.setattr(os, "fsync", held)
    in_flight = trail.append(context(request_id="in-flight"), residents(1), "disclosed")
    assert entered.wait(5)
    assert not trail.withdraw(in_flight, "unavailable", "x")  # being written: too late
    pending = trail.append(context(request_id="pending"), residents(1), "disclosed")
    with pytest.raises(audit.AuditUnavailable, match=r"not durable after 0\.2 s"):
        pending.wait(0.2)
    assert trail.withdraw(pending, "unavailable", "reply not sent: audit commit timed out")
    gate.set()
    pending.wait(5)
    rows = audit.read(trail.directory, columns=["request_id", "outcome", "reason"]).to_pylist()
    (row,) = [r for r in rows if r["request_id"] == "pending"]
    assert row == {
        "request_id": "pending",
        "outcome": "unavailable",
        "reason": "reply not sent: audit commit timed out",
    }


def test_segments_written_before_reasons_read_with_none(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    legacy_segment(directory, "audit-19700101T000000.000000Z-000001.arrows", 1)
    (row,) = audit.read(directory).to_pylist()
    assert (row["outcome"], row["reason"], row["person"]) == ("disclosed", None, None)
