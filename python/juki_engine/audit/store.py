"""The store: the trail's closed segments compacted into Parquet files partitioned by person and
sorted by (person, time), so one resident's history is a few small reads; and retention, which
removes whole files only.

Layout, under the trail's directory::

    store/day/2026-11-29/017.parquet     one UTC day's records of persons ≡ 17 (mod 256)
    store/day/2026-11-29/none.parquet    the day's records of no person (refusals, operators)
    store/month/2026-10/017.parquet      a month's, merged from its days once it is over

A day's or a month's files appear together: they are written into a `.tmp` directory which is
then renamed into place, so a reader sees a day either in the store or in its segments, never
both or half. Readers take a day from the store where it is there, and skip its segments (a
compaction removes them right after). Every file is ordinary Parquet (zstd, row groups of
`ROW_GROUP` rows with statistics on `person` and `time`): `duckdb -c "select * from
'audit/store/**/*.parquet'"` reads them, as does Polars.

Compaction (`compact`) runs beside the server, in a process of its own at low priority, and holds
at most `memory_budget` bytes of records at once whatever the store's size: a day's records are
split by person bucket as they are read and spilled to temporary files past the budget, then
each bucket is sorted alone; a month merges one bucket at a time. Each step is recorded in the
signed manifest (which files it read, with their hashes, and which it wrote) before its sources
are removed, so `juki audit verify` tells compaction and retention from tampering.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from juki_engine.audit import records
from juki_engine.audit.integrity import Manifest, compacted_sources, digest, now_text
from juki_engine.audit.records import DAY_US, EPOCH, SCHEMA, STORED_SCHEMA, AuditUnavailable
from juki_engine.audit.segments import (
    SegmentFile,
    fsync_directory,
    list_segments,
    read_segment,
    sealed,
)

STORE = "store"
BUCKETS = 256
"""Person buckets: a person's records are in bucket `person % BUCKETS` of each period."""
ROW_GROUP = 4096
"""Rows per row group: a history read decodes the person column of one or two of them per file,
and the rest of the row group only where the person is there (BENCHMARKS.md: 4096 rows cost
about half of 16,384 per file read, with a footer of a few tens of KiB)."""
MEMORY_BUDGET = 512 << 20
_DAY = "day"
_MONTH = "month"
_NONE = "none"
_LOCK = "compaction.lock"
_FILE = re.compile(r"(\d{3}|none)\.parquet")


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """A day or a month of the store: its files and the time span they hold."""

    path: Path
    start_us: int
    end_us: int

    def file(self, bucket: int | None) -> Path:
        return self.path / _file_name(bucket)

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if _FILE.fullmatch(p.name))


def periods(directory: Path) -> list[Period]:
    """The store's days and months, in time order; a day a month holds is left out."""
    root = directory / STORE
    months = [
        Period(root / _MONTH / name, _micros(first), _micros(_next_month(first)))
        for name, first in _dated(root / _MONTH, "%Y-%m")
    ]
    covered = {(m.start_us, m.end_us) for m in months}
    days = []
    for name, first in _dated(root / _DAY, "%Y-%m-%d"):
        start = _micros(first)
        if not any(lo <= start < hi for lo, hi in covered):
            days.append(Period(root / _DAY / name, start, start + DAY_US))
    return sorted(months + days, key=lambda p: p.start_us)


class Vanished(AuditUnavailable):
    """A file a read listed was removed while it read (a compaction put its records into
    another file, or retention expired it): the read starts again from a new listing."""


def days_of(listed: list[Period]) -> set[int]:
    """The UTC days (days since the epoch) these periods hold: their segments are not read."""
    return {
        day
        for period in listed
        for day in range(period.start_us // DAY_US, period.end_us // DAY_US)
    }


def stored_days(directory: Path) -> set[int]:
    """The UTC days the store holds now."""
    return days_of(periods(directory))


def person_records(
    listed: list[Period], person: int, since_us: int | None, until_us: int | None
) -> Iterator[pa.Table]:
    """The stored records of one person in [since, until): their bucket's file of each
    period, of which the row groups whose statistics span the person (found by bisection: the
    file is sorted by person) are read, their person column first and the rest only where the
    person is there. The files are read at once by a few threads: a cold read waits on the
    disk, and pyarrow waits without the GIL."""
    paths = [period.file(person % BUCKETS) for period in _overlapping(listed, since_us, until_us)]
    for found in _readers().map(lambda path: _person_file(path, person), paths):
        if found is not None:
            yield found


_READERS: ThreadPoolExecutor | None = None
_READERS_LOCK = threading.Lock()
# Files one history reads at once (a year is twelve months and the current month's days).
READ_THREADS = 8


def _readers() -> ThreadPoolExecutor:
    global _READERS
    with _READERS_LOCK:
        if _READERS is None:
            _READERS = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="juki-audit-read")
        return _READERS


def _person_file(path: Path, person: int) -> pa.Table | None:
    try:
        return _person_rows(pq.ParquetFile(path), person)
    except FileNotFoundError:
        if path.parent.exists():
            return None  # the person's bucket has no record that period
        raise Vanished(f"{path.parent} was removed while it was read") from None
    except (OSError, pa.ArrowException) as error:
        raise AuditUnavailable(f"audit store file {path} is unreadable: {error}") from error


_PERSON = SCHEMA.get_field_index("person")


def _person_rows(file: pq.ParquetFile, person: int) -> pa.Table | None:
    metadata = file.metadata
    if file.schema_arrow.names != SCHEMA.names:
        raise AuditUnavailable(f"audit store file schema {file.schema_arrow} is not the trail's")

    def bounds(group: int) -> tuple[int, int]:
        statistics = metadata.row_group(group).column(_PERSON).statistics
        if statistics is None or not statistics.has_min_max:  # all null (the none bucket)
            return (2**32, 2**32)
        return int(statistics.min), int(statistics.max)

    # The first row group whose largest person is ≥ the person; then on while they start ≤ it.
    low, high = 0, metadata.num_row_groups
    while low < high:
        middle = (low + high) // 2
        if bounds(middle)[1] < person:
            low = middle + 1
        else:
            high = middle
    pieces = []
    group = low
    while group < metadata.num_row_groups and bounds(group)[0] <= person:
        persons = file.read_row_group(group, columns=["person"])["person"].to_numpy(
            zero_copy_only=False
        )
        rows = np.flatnonzero(persons == person)
        if rows.size:
            pieces.append(file.read_row_group(group).take(pa.array(rows)))
        group += 1
    if not pieces:
        return None
    return pa.concat_tables(pieces).cast(SCHEMA)


def period_records(
    listed: list[Period], since_us: int | None, until_us: int | None
) -> Iterator[pa.Table]:
    """Every stored record of the periods overlapping [since, until), file by file."""
    for period in _overlapping(listed, since_us, until_us):
        try:
            files = period.files()
        except FileNotFoundError:
            raise Vanished(f"{period.path} was removed while it was read") from None
        for path in files:
            yield _read(path)


def _overlapping(
    listed: list[Period], since_us: int | None, until_us: int | None
) -> Iterator[Period]:
    for period in listed:
        if (since_us is None or period.end_us > since_us) and (
            until_us is None or period.start_us < until_us
        ):
            yield period


def _read(path: Path) -> pa.Table:
    """A store file's records as `SCHEMA` has them (plain strings)."""
    try:
        return pq.read_table(path).cast(SCHEMA)
    except FileNotFoundError:
        raise Vanished(f"{path} was removed while it was read") from None
    except (OSError, pa.ArrowException) as error:
        raise AuditUnavailable(f"audit store file {path} is unreadable: {error}") from error


# --- compaction -------------------------------------------------------------------------------


@dataclass
class Compacted:
    """What one `compact` run did."""

    days: int = 0
    months: int = 0
    records: int = 0
    expired: int = 0


def compact(
    directory: str | os.PathLike[str],
    *,
    signing_key: Ed25519PrivateKey | None = None,
    memory_budget: int = MEMORY_BUDGET,
    retention_days: int = 7 * 366,
    months: bool = True,
    until: datetime | None = None,
) -> Compacted:
    """Compact every closed UTC day of the trail's segments into the store (those before
    `until` only, if given), merge every month that is over into one file per bucket (with
    `months`), and remove store files older than the retention period. Safe beside a writing
    server; one compaction at a time."""
    root = Path(directory)
    manifest = Manifest(root, signing_key)
    done = Compacted()
    with _compaction_lock(root):
        _finish_interrupted(root)
        today = records.clock() // DAY_US
        if until is not None:
            today = min(today, records.micros(until) // DAY_US)
        by_day: dict[int, list[SegmentFile]] = {}
        segments = list_segments(root)
        for segment in segments:
            by_day.setdefault(segment.start_us // DAY_US, []).append(segment)
        stored = stored_days(root)
        for day, group in sorted(by_day.items()):
            if day >= today or day in stored:
                continue
            newest = segments[-1]
            if any(s.path == newest.path and not sealed(s.path) for s in group):
                continue  # the writer may still append to it (no record since midnight yet)
            done.records += _compact_day(root, day, group, manifest, memory_budget)
            done.days += 1
        if months:
            done.months += _merge_months(root, manifest, today)
        done.expired += expire_store(root, retention_days, manifest)
    return done


@contextlib.contextmanager
def _compaction_lock(root: Path) -> Iterator[None]:
    (root / STORE).mkdir(parents=True, exist_ok=True)
    fd = os.open(root / STORE / _LOCK, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AuditUnavailable(f"another compaction of {root} is running") from None
        yield
    finally:
        os.close(fd)


def _finish_interrupted(root: Path) -> None:
    """Undo what a compaction that died left half-done: `.tmp` directories (never renamed into
    place, so never read); segments of a day the store holds (their removal was cut short:
    the manifest recorded it first)."""
    for kind in (_DAY, _MONTH):
        folder = root / STORE / kind
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.name.endswith(".tmp"):
                    shutil.rmtree(entry, ignore_errors=True)
    stored = stored_days(root)
    sources = compacted_sources(root)
    for segment in list_segments(root):
        if segment.start_us // DAY_US in stored and segment.path.name in sources:
            segment.path.unlink(missing_ok=True)
    for period in periods(root):
        if period.path.parent.name == _MONTH:
            for day in _dated(root / STORE / _DAY, "%Y-%m-%d"):
                start = _micros(day[1])
                if period.start_us <= start < period.end_us:
                    shutil.rmtree(root / STORE / _DAY / day[0], ignore_errors=True)


class _Buckets:
    """A day's records split by person bucket, held in memory up to a budget and spilled to
    one temporary Arrow file per bucket past it."""

    def __init__(self, spill: Path, budget: int) -> None:
        # Records stay as the segments hold them, their strings dictionary-encoded: splitting
        # and sorting move indices, never strings (BENCHMARKS.md).
        self.spill = spill
        self.budget = budget
        self.held: dict[int | None, list[pa.RecordBatch]] = {}
        self.bytes = 0
        self.writers: dict[int | None, pa.ipc.RecordBatchStreamWriter] = {}

    def add(self, batch: pa.RecordBatch) -> None:
        persons = batch.column("person")
        buckets = np.where(
            persons.is_null().to_numpy(zero_copy_only=False),
            -1,
            persons.fill_null(0).to_numpy().astype(np.int64) % BUCKETS,
        )
        order = np.argsort(buckets, kind="stable")
        sorted_buckets = buckets[order]
        starts = np.flatnonzero(np.r_[True, sorted_buckets[1:] != sorted_buckets[:-1]])
        ends = np.r_[starts[1:], len(order)]
        taken = batch.take(pa.array(order))
        for start, end in zip(starts, ends, strict=True):
            bucket = int(sorted_buckets[start])
            piece = taken.slice(start, end - start)
            self.held.setdefault(None if bucket < 0 else bucket, []).append(piece)
            self.bytes += piece.nbytes
        if self.bytes > self.budget:
            self._spill()

    def _spill(self) -> None:
        for bucket, pieces in self.held.items():
            writer = self.writers.get(bucket)
            if writer is None:
                sink = pa.OSFile(str(self.spill / f"{_file_name(bucket)}.arrows"), "wb")
                writer = pa.ipc.new_stream(sink, STORED_SCHEMA)
                self.writers[bucket] = writer
            for piece in pieces:
                writer.write_batch(piece)
        self.held, self.bytes = {}, 0

    def tables(self) -> Iterator[tuple[int | None, pa.Table]]:
        """Each bucket's records, one bucket in memory at a time."""
        for writer in self.writers.values():
            writer.close()
        buckets = set(self.held) | set(self.writers)
        for bucket in sorted(buckets, key=lambda b: -1 if b is None else b):
            pieces = list(self.held.pop(bucket, []))
            spilled = self.spill / f"{_file_name(bucket)}.arrows"
            if spilled.exists():
                with pa.OSFile(str(spilled), "rb") as source:
                    pieces = list(pa.ipc.open_stream(source)) + pieces
                spilled.unlink()
            yield bucket, pa.Table.from_batches(pieces, schema=STORED_SCHEMA)


def _compact_day(
    root: Path, day: int, segments: list[SegmentFile], manifest: Manifest, budget: int
) -> int:
    name = (EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")
    final = root / STORE / _DAY / name
    building = final.with_name(name + ".tmp")
    building.mkdir(parents=True)
    rows = 0
    with tempfile.TemporaryDirectory(dir=building.parent, prefix=".spill-") as spill:
        buckets = _Buckets(Path(spill), budget)
        for segment in segments:
            for batch in read_segment(segment.path):
                buckets.add(batch.replace_schema_metadata(STORED_SCHEMA.metadata))
                rows += batch.num_rows
        for bucket, table in buckets.tables():
            _write(building / _file_name(bucket), table)
    sources = [[s.path.name, digest(s.path)] for s in segments]
    _publish(root, building, final, sources, manifest, f"the UTC day {name}")
    for segment in segments:
        segment.path.unlink(missing_ok=True)
    fsync_directory(root)
    return rows


def _merge_months(root: Path, manifest: Manifest, today: int) -> int:
    """Merge the days of every month that is over (by the UTC date) into month files."""
    this_month = (EPOCH + timedelta(days=today)).date().replace(day=1)
    by_month: dict[date, list[tuple[str, date]]] = {}
    for name, first in _dated(root / STORE / _DAY, "%Y-%m-%d"):
        by_month.setdefault(first.date().replace(day=1), []).append((name, first.date()))
    merged = 0
    for month, days in sorted(by_month.items()):
        if month >= this_month or (root / STORE / _MONTH / month.strftime("%Y-%m")).exists():
            continue
        name = month.strftime("%Y-%m")
        final = root / STORE / _MONTH / name
        building = final.with_name(name + ".tmp")
        building.mkdir(parents=True)
        day_dirs = [root / STORE / _DAY / day_name for day_name, _ in sorted(days)]
        files = sorted({p.name for d in day_dirs for p in d.iterdir() if _FILE.fullmatch(p.name)})
        for file_name in files:  # one bucket in memory at a time
            parts = [pq.read_table(d / file_name) for d in day_dirs]
            _write(building / file_name, pa.concat_tables([p for p in parts if p.num_rows]))
        sources = [
            [f"{STORE}/{_DAY}/{d.name}/{p.name}", digest(p)]
            for d in day_dirs
            for p in sorted(d.iterdir())
            if _FILE.fullmatch(p.name)
        ]
        _publish(root, building, final, sources, manifest, f"the month {name}")
        for d in day_dirs:
            shutil.rmtree(d)
        fsync_directory(root / STORE / _DAY)
        merged += 1
    return merged


def _write(path: Path, table: pa.Table) -> None:
    """One bucket of a period, sorted by person then time, fsync'd; its strings stay
    dictionary-encoded (one dictionary a file)."""
    table = table.unify_dictionaries().combine_chunks()
    table = table.sort_by([("person", "ascending"), ("time", "ascending")])
    pq.write_table(
        table,
        path,
        row_group_size=ROW_GROUP,
        compression="zstd",
        write_statistics=["person", "time"],
        sorting_columns=[pq.SortingColumn(SCHEMA.get_field_index("person"))],
    )
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _publish(
    root: Path,
    building: Path,
    final: Path,
    sources: list[list[str]],
    manifest: Manifest,
    what: str,
) -> None:
    """Put a period's files in place (one rename) and record the compaction, signed, before
    its sources are removed."""
    fsync_directory(building)
    outputs = [
        [f"{final.parent.name}/{final.name}/{p.name}", digest(p)]
        for p in sorted(building.iterdir())
    ]
    building.rename(final)
    fsync_directory(final.parent)
    manifest.append(
        {
            "kind": "compacted",
            "time": now_text(),
            "what": what,
            "sources": sources,
            "outputs": [[f"{STORE}/{name}", sha] for name, sha in outputs],
        }
    )


# --- retention --------------------------------------------------------------------------------


def expire(directory: Path, retention_days: int, keep: Path | None, manifest: Manifest) -> None:
    """Delete the segments all of whose records are older than the retention period."""
    cutoff = records.clock() - retention_days * DAY_US
    segments = list_segments(directory)
    expired = []
    for index, segment in enumerate(segments):
        # Its last record is no later than the file's mtime, nor than the next segment's first.
        end = segment.mtime_us
        if index + 1 < len(segments):
            end = min(end, segments[index + 1].start_us)
        if end < cutoff and segment.path != keep:
            expired.append(segment.path)
    if expired:
        _record_expiry(manifest, [[p.name, digest(p)] for p in expired], retention_days, cutoff)
        for path in expired:
            path.unlink(missing_ok=True)
        fsync_directory(directory)


def expire_store(root: Path, retention_days: int, manifest: Manifest) -> int:
    """Delete the store's days and months whose every record is older than the retention
    period: whole files, never rewritten (a resident's records from seven years ago are still
    there the day before)."""
    cutoff = records.clock() - retention_days * DAY_US
    old = [p for p in periods(root) if p.end_us <= cutoff]
    if not old:
        return 0
    files = [
        [f"{STORE}/{p.path.parent.name}/{p.path.name}/{f.name}", digest(f)]
        for p in old
        for f in p.files()
    ]
    _record_expiry(manifest, files, retention_days, cutoff)
    for period in old:
        shutil.rmtree(period.path)
        fsync_directory(period.path.parent)
    return len(files)


def _record_expiry(
    manifest: Manifest, files: list[list[str]], retention_days: int, cutoff: int
) -> None:
    cutoff_text = datetime.fromtimestamp(cutoff / 1e6, UTC).isoformat(timespec="seconds")
    manifest.append(
        {
            "kind": "expired",
            "time": now_text(),
            "files": files,
            "why": f"every record older than the retention period ({retention_days} days, "
            f"before {cutoff_text})",
        }
    )


# --- names ------------------------------------------------------------------------------------


def store_files(root: Path) -> list[str]:
    """Every file of the store in place (not a compaction's `.tmp`), as `store/<kind>/<period>/
    <bucket>.parquet`: what the manifest names."""
    out = []
    for kind in (_DAY, _MONTH):
        for name, _ in _dated(root / STORE / kind, "%Y-%m-%d" if kind == _DAY else "%Y-%m"):
            for entry in sorted((root / STORE / kind / name).iterdir()):
                out.append(f"{STORE}/{kind}/{name}/{entry.name}")
    return out


def _file_name(bucket: int | None) -> str:
    return f"{_NONE}.parquet" if bucket is None else f"{bucket:03d}.parquet"


def _dated(folder: Path, fmt: str) -> list[tuple[str, datetime]]:
    """The entries of `folder` named by a date in `fmt` (`.tmp` and others left out)."""
    if not folder.is_dir():
        return []
    out = []
    for entry in folder.iterdir():
        try:
            out.append((entry.name, datetime.strptime(entry.name, fmt).replace(tzinfo=UTC)))
        except ValueError:
            continue
    return sorted(out, key=lambda item: item[1])


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def _next_month(first: datetime) -> datetime:
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1)
