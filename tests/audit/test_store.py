"""The store: closed days compacted into Parquet by person bucket, months merged, retention by
whole files; every read answers as before, and verification tells it all from tampering."""

from __future__ import annotations

import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from auditing import Clock, context, segments
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from juki_engine import audit
from juki_engine.audit import AuditTrail, integrity, store
from juki_engine.audit.query import history

KEY = Ed25519PrivateKey.generate()
START = datetime(2025, 5, 29, 9, 0, tzinfo=UTC)


def codes(persons: list[int | None]) -> pa.Array:
    return pa.array([None if p is None else f"{p:011d}" for p in persons], pa.string())


def fill(directory: Path, clock: Clock, days: int, start: datetime = START) -> None:
    """Records on `days` consecutive UTC days: a bulk batch, typed calls and a refusal a day."""
    with AuditTrail(directory, signing_key=KEY, retention_days=100 * 366) as trail:
        for day in range(days):
            clock.now = start + timedelta(days=day)
            bulk = [(day * 7 + i) % 600 for i in range(1000)]
            trail.record(
                context(request_id=f"bulk-{day}"),
                codes(bulk),
                "disclosed",
                persons=pa.array(bulk, pa.uint32()),
            )
            for person in (3, 259, 515):  # one bucket (3 mod 256), three persons
                clock.now += timedelta(minutes=5)
                trail.record(
                    context(agency="MOJ", affair="12", mode="verify", request_id=f"t-{day}"),
                    codes([person]),
                    "disclosed",
                    persons=pa.array([person], pa.uint32()),
                )
            clock.now += timedelta(minutes=5)
            trail.record(context(request_id=f"no-{day}"), codes([None]), "denied", "no")


def everything(directory: Path) -> pa.Table:
    table = audit.read(directory)
    keys = [(name, "ascending") for name in ("time", "request_id", "subject", "outcome")]
    return table.take(pc.sort_indices(table, keys)).combine_chunks()


def sorted_history(directory: Path, person: int) -> pa.Table:
    table = history(directory, person)
    keys = [(name, "descending") for name in ("time", "request_id")]
    return table.take(pc.sort_indices(table, keys)).combine_chunks()


def test_compaction_answers_every_read_as_before(tmp_path: Path, clock: Clock) -> None:
    directory = tmp_path / "audit"
    fill(directory, clock, days=4)
    before = everything(directory)
    person_before = sorted_history(directory, 259)
    counts_before = audit.counts_since(directory, START + timedelta(days=1))
    clock.now = START + timedelta(days=3, hours=12)  # the fourth day is today: not compacted
    done = store.compact(directory, signing_key=KEY, months=False)
    assert (done.days, done.records) == (3, 3 * 1004)
    days = sorted(p.name for p in (directory / "store" / "day").iterdir())
    assert days == ["2025-05-29", "2025-05-30", "2025-05-31"]
    assert len(segments(directory)) == 1  # today's
    assert everything(directory).equals(before)
    assert sorted_history(directory, 259).equals(person_before)
    bulk = sum([(day * 7 + i) % 600 for i in range(1000)].count(259) for day in range(4))
    assert len(person_before) == 4 + bulk  # one typed call a day, and the bulk records
    assert audit.counts_since(directory, START + timedelta(days=1)) == counts_before
    # One bucket file per person bucket and one of no person; each sorted by person.
    files = list((directory / "store" / "day" / "2025-05-30").iterdir())
    assert {f.name for f in files} >= {"003.parquet", "none.parquet"}
    three = pl.read_parquet(directory / "store" / "day" / "2025-05-30" / "003.parquet")
    assert three["person"].to_list() == sorted(three["person"].to_list())
    assert set(three["person"].to_list()) <= {3, 259, 515}
    # Standard tools read the store as it is.
    every = pl.scan_parquet(str(directory / "store" / "**" / "*.parquet")).collect()
    assert every.height == 3 * 1004
    report = integrity.verify(directory, KEY.public_key())
    assert report.intact, report.problems


def test_months_merge_once_over_and_a_small_budget_spills(tmp_path: Path, clock: Clock) -> None:
    directory = tmp_path / "audit"
    fill(directory, clock, days=5)  # 29, 30, 31 May, 1, 2 June
    before = everything(directory)
    clock.now = datetime(2025, 6, 3, 1, tzinfo=UTC)
    done = store.compact(directory, signing_key=KEY, memory_budget=4096)
    assert (done.days, done.months) == (5, 1)
    assert [p.name for p in (directory / "store" / "month").iterdir()] == ["2025-05"]
    assert sorted(p.name for p in (directory / "store" / "day").iterdir()) == [
        "2025-06-01",
        "2025-06-02",
    ]
    assert everything(directory).equals(before)
    assert [r["request_id"] for r in history(directory, 515).to_pylist()][:2] == ["t-4", "bulk-4"]
    report = integrity.verify(directory, KEY.public_key())
    assert report.intact, report.problems
    assert not list(directory.glob("store/**/.spill-*"))


def test_tampering_with_the_store_is_named(tmp_path: Path, clock: Clock) -> None:
    directory = tmp_path / "audit"
    fill(directory, clock, days=3)
    clock.now = START + timedelta(days=2, hours=12)
    store.compact(directory, signing_key=KEY)
    root = directory / "store" / "day"
    one, two = root / "2025-05-29" / "003.parquet", root / "2025-05-30" / "003.parquet"
    name = "store/day/2025-05-29/003.parquet"

    saved = one.read_bytes()
    one.write_bytes(saved[:100] + bytes([saved[100] ^ 1]) + saved[101:])
    assert integrity.verify(directory, KEY.public_key()).problems == [
        f"{name} was altered (its hash differs from its compaction's)"
    ]
    one.write_bytes(two.read_bytes())  # swapped in from another day
    assert f"{name} was altered" in integrity.verify(directory, KEY.public_key()).problems[0]
    one.unlink()
    assert integrity.verify(directory, KEY.public_key()).problems == [
        f"{name} was removed outside retention (compacted)"
    ]
    one.write_bytes(saved)
    assert integrity.verify(directory, KEY.public_key()).intact
    shutil.copy(one, root / "2025-05-29" / "777.parquet")
    assert integrity.verify(directory, KEY.public_key()).problems == [
        "store/day/2025-05-29/777.parquet was written by no recorded compaction (inserted)"
    ]


def test_retention_removes_whole_periods_and_is_recorded(tmp_path: Path, clock: Clock) -> None:
    directory = tmp_path / "audit"
    fill(directory, clock, days=3)
    clock.now = START + timedelta(days=2, hours=12)
    store.compact(directory, signing_key=KEY, months=False)
    # The day before the first day's records all pass the period: still there.
    first_end = datetime(2025, 5, 30, tzinfo=UTC)
    clock.now = first_end + timedelta(days=30) - timedelta(seconds=1)
    assert store.compact(directory, signing_key=KEY, months=False, retention_days=30).expired == 0
    assert (directory / "store" / "day" / "2025-05-29").exists()
    clock.now = first_end + timedelta(days=30)
    done = store.compact(directory, signing_key=KEY, months=False, retention_days=30)
    assert done.expired > 0
    assert not (directory / "store" / "day" / "2025-05-29").exists()
    assert "bulk-0" not in audit.read(directory)["request_id"].to_pylist()
    report = integrity.verify(directory, KEY.public_key())
    assert report.intact, report.problems


def test_an_interrupted_compaction_is_finished_and_never_read_twice(
    tmp_path: Path, clock: Clock
) -> None:
    directory = tmp_path / "audit"
    fill(directory, clock, days=3)
    before = everything(directory)
    first_day = [s for s in segments(directory) if "20250529" in s.name]
    kept = {s: s.read_bytes() for s in first_day}
    clock.now = START + timedelta(days=2, hours=12)
    store.compact(directory, signing_key=KEY, months=False)
    # As if the compaction died after recording itself, before removing its sources, and
    # another left a half-built day behind.
    for path, data in kept.items():
        path.write_bytes(data)
    (directory / "store" / "day" / "2025-05-31.tmp").mkdir()
    assert everything(directory).equals(before)  # the day is read from the store only
    store.compact(directory, signing_key=KEY, months=False)
    assert not any(p.exists() for p in kept)
    assert not (directory / "store" / "day" / "2025-05-31.tmp").exists()
    assert everything(directory).equals(before)


def test_a_segment_the_writer_may_still_append_to_waits(tmp_path: Path, clock: Clock) -> None:
    directory = tmp_path / "audit"
    clock.now = START
    trail = AuditTrail(directory, signing_key=KEY)
    try:
        trail.record(context(), codes([1]), "disclosed", persons=pa.array([1], pa.uint32()))
        clock.now = START + timedelta(days=1)  # a new UTC day, but no record since midnight
        assert store.compact(directory, signing_key=KEY).days == 0
        trail.record(context(), codes([2]), "disclosed", persons=pa.array([2], pa.uint32()))
        assert store.compact(directory, signing_key=KEY).days == 1  # now sealed
        assert history(directory, 1).num_rows == 1 and history(directory, 2).num_rows == 1
    finally:
        trail.close()
    assert integrity.verify(directory, KEY.public_key()).intact


def test_one_compaction_at_a_time(tmp_path: Path, clock: Clock) -> None:
    directory = tmp_path / "audit"
    fill(directory, clock, days=1)
    with store._compaction_lock(directory), pytest.raises(audit.AuditUnavailable, match="another"):
        store.compact(directory, signing_key=KEY)


def test_a_damaged_store_file_is_named_never_read_as_records(tmp_path: Path, clock: Clock) -> None:
    directory = tmp_path / "audit"
    fill(directory, clock, days=2)
    clock.now = START + timedelta(days=1, hours=12)
    store.compact(directory, signing_key=KEY)
    path = directory / "store" / "day" / "2025-05-29" / "003.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")  # not Parquet any more
    with pytest.raises(audit.AuditUnavailable, match=r"003\.parquet is unreadable"):
        history(directory, 259)
    with pytest.raises(audit.AuditUnavailable, match=r"003\.parquet is unreadable"):
        audit.read(directory)
    # A Parquet file of another shape is not the trail's either.
    pl.DataFrame({"person": [259], "secret": ["x"]}).write_parquet(path)
    with pytest.raises(audit.AuditUnavailable, match="not the trail's"):
        history(directory, 259)


def test_a_read_beside_a_compaction_counts_every_day_once(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from juki_engine.audit import query

    directory = tmp_path / "audit"
    fill(directory, clock, days=3)
    before = everything(directory)
    person_before = sorted_history(directory, 259)
    clock.now = START + timedelta(days=2, hours=12)
    real, ran = query.read_segment, []

    def compacting(path: Path) -> list[pa.RecordBatch]:
        batches = real(path)
        if not ran:  # the compaction finishes while the read is under way
            ran.append(store.compact(directory, signing_key=KEY, months=False))
        return batches

    monkeypatch.setattr(query, "read_segment", compacting)
    assert everything(directory).equals(before)
    assert ran and ran[0].days == 2
    # And a month merged while a history reads the days it replaces.
    clock.now = datetime(2025, 7, 1, tzinfo=UTC)
    real_rows, merged, once = store._person_rows, [], threading.Lock()

    def merging(file: object, person: int) -> pa.Table | None:
        with once:  # the files are read by several threads
            if not merged:
                merged.append(store.compact(directory, signing_key=KEY))
        return real_rows(file, person)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "_person_rows", merging)
    assert sorted_history(directory, 259).equals(person_before)
    assert merged and merged[0].months == 1
