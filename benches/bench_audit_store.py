"""The audit store at national volume: a synthetic year of the trail, its compaction, and a
resident's history read from it, each against a baseline timed in the same run.

- Build: one year of records written through `AuditTrail` (the server's path) with its clock
  moved day by day: ~580 million records by default, the design's volume, in a realistic mix:
  the 40-million-pensioner status check (日本年金機構) on one day, bulk jobs of a long tail of
  other affairs (Zipf over 120 agency × affair pairs) every day, typed calls, ~1 % of records
  with no resident found. Reported: records/s and bytes per record of the segments.
- The hand-written path: one resident's history by scanning the segments (what `juki audit
  --subject` did before the store), timed on a few residents before compaction.
- Compaction: `juki audit compact` in a child process (as `juki serve` runs it): records/s,
  peak RSS (budget ≤ 2 GiB), bytes per record of the store.
- History reads: p50 and p99 over `--queries` random residents, the store's pages dropped from
  the page cache first (posix_fadvise DONTNEED on every file); the first 100 reads (nothing
  warm but what they touched) reported apart. Measured at two sizes of the store (the first
  half-year, then the whole year) for the seven-year model.
- Writes beside compaction: 1,000,000-record appends (a bulk job's messages) for a few seconds,
  alone and while a compaction runs in a child process: the ratio.
- Design B (`--rocksdb N`): the same history read from RocksDB (rocksdict; key = person, time,
  sequence; value = the record) loaded with the first N records: load rate, bytes per record,
  p50/p99 — the LSM store the issue names, against the Parquet store at equal records.

    .venv/bin/python benches/bench_audit_store.py --records 580000000 --dir /tmp/audit_year

Peak RSS of this process and of the compaction child are printed; the trail's directory is kept
for a rerun of the reads (`--reuse`).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from juki_engine import audit
from juki_engine.audit import AuditContext, AuditTrail, records
from juki_engine.audit.query import history
from juki_engine.audit.store import periods

RESIDENTS = 128_000_000
PENSIONERS = 40_000_000
START = datetime(2025, 1, 1, tzinfo=UTC)
BULK = 1_000_000  # records per bulk append: one message of a bulk job
GIB = 2**30


def peak_rss_gib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 2**20


class Clock:
    def __init__(self) -> None:
        self.now = START

    def micros(self) -> int:
        return (self.now - records.EPOCH) // timedelta(microseconds=1)


def affairs(rng: np.random.Generator) -> list[AuditContext]:
    """120 agency × affair pairs, a long tail: each a bulk job's context."""
    out = []
    for i in range(120):
        out.append(
            AuditContext(
                f"agency-{i // 4:02d}",
                f"op-{i:03d}",
                f"job-{i}",
                f"affair-{i:03d}",
                ["verify", "retrieve", "verify+retrieve"][i % 3],
                ("family_name", "birth_date", "status")[: 1 + i % 3],
            )
        )
    return out


def subjects(persons: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """Resident codes (a fixed function of the person, 11 digits) and person ids; ~1 % of
    records found no one (null both)."""
    found = (persons % 97) != 0
    ids = pa.array(persons.astype(np.uint32), mask=~found)
    codes = pc.utf8_lpad(pc.cast(pc.multiply(ids.cast(pa.uint64()), 7919), pa.string()), 11, "0")
    return pc.utf8_slice_codeunits(codes, 0, 11), ids


def build(directory: Path, total: int, days: int, seed: int) -> tuple[float, int]:
    """Write the year; (seconds, records)."""
    rng = np.random.default_rng(seed)
    jobs = affairs(rng)
    weights = 1.0 / np.arange(1, len(jobs) + 1)  # Zipf: a few affairs carry most records
    weights /= weights.sum()
    clock = Clock()
    records.clock = clock.micros  # type: ignore[assignment]
    pension_day = days // 2
    pension = min(PENSIONERS, total // 10)
    per_day = (total - pension) // days
    written = 0
    started = time.perf_counter()
    with AuditTrail(directory, retention_days=100 * 366) as trail:
        for day in range(days):
            clock.now = START + timedelta(days=day, hours=8)
            todo = per_day + (pension if day == pension_day else 0)
            pension_left = pension if day == pension_day else 0
            while todo > 0:
                n = min(BULK, todo)
                if pension_left > 0:
                    context = AuditContext(
                        "nenkin", "op-nenkin", f"genkyo-{day}", "pension-benefit",
                        "verify+retrieve", ("family_name", "birth_date", "status"),
                    )  # fmt: skip
                    pension_left -= n
                else:
                    context = jobs[int(rng.choice(len(jobs), p=weights))]
                codes, ids = subjects(rng.integers(0, RESIDENTS, n))
                trail.append(context, codes, "disclosed", persons=ids)
                todo -= n
                written += n
                clock.now += timedelta(seconds=30)
            # A few typed calls a day, which the store must find as well as bulk records.
            for person in rng.integers(0, RESIDENTS, 20):
                codes, ids = subjects(np.array([person]))
                trail.record(jobs[0], codes, "disclosed", persons=ids)
                written += 1
            if day % 30 == 0:
                print(f"  day {day}: {written:,} records, {time.perf_counter() - started:.0f} s")
    return time.perf_counter() - started, written


def size_of(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def drop_cache(directory: Path) -> None:
    """Evict every file of the trail from the page cache (clean pages; no root needed)."""
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def time_reads(directory: Path, persons: np.ndarray, until: datetime | None) -> list[float]:
    times = []
    for person in persons:
        t = time.perf_counter()
        history(directory, int(person), until=until)
        times.append(time.perf_counter() - t)
    return times


def quantiles(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms (n={len(ms):,})"


def compact_child(directory: Path, key: Path, memory_mib: int) -> tuple[float, float, str]:
    """`juki audit compact` in a child: (seconds, its peak RSS GiB, its summary line)."""
    before = peak_rss_gib(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [
            *(sys.executable, "-m", "juki_engine.cli", "audit", "compact"),
            *("--dir", str(directory), "--audit-key", str(key)),
            *("--memory-mib", str(memory_mib), "--retention-days", str(100 * 366)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - started
    return (
        seconds,
        max(before, peak_rss_gib(resource.RUSAGE_CHILDREN)),
        " ".join(done.stdout.split()),
    )


def writes_per_second(directory: Path, seconds: float, persons: bool = True) -> float:
    """1,000,000-record appends for `seconds`: records/s, each durable (without `persons`,
    records as format 2 wrote them: no person ids)."""
    rng = np.random.default_rng(5)
    codes, ids = subjects(rng.integers(0, RESIDENTS, BULK))
    context = affairs(rng)[1]
    written = 0
    with AuditTrail(directory) as trail:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            trail.record(context, codes, "disclosed", persons=ids if persons else None)
            written += BULK
        return written / (time.perf_counter() - started)


def person_cost(directory: Path, repeats: int) -> None:
    """What keying records on the person costs the writer: appends with and without person
    ids, alternated, medians of `repeats`."""
    with_ids, without = [], []
    for i in range(repeats):
        with_ids.append(writes_per_second(directory / f"with-{i}", 4.0))
        without.append(writes_per_second(directory / f"without-{i}", 4.0, persons=False))
    a, b = statistics.median(with_ids), statistics.median(without)
    print(
        f"appends with person ids {a:,.0f} records/s, without {b:,.0f} ({a / b:.2f}x): "
        f"{(1 / a - 1 / b) * 1e9:+.1f} ns a record"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=float, default=580e6)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--dir", default=None, help="where the trail is built (kept)")
    parser.add_argument("--reuse", action="store_true", help="the trail in --dir is built")
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--memory-mib", type=int, default=512)
    parser.add_argument("--rocksdb", type=float, default=0, help="records for design B")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--person-cost", type=int, default=0, help="only time appends with/without person ids"
    )
    args = parser.parse_args()
    directory = Path(args.dir or tempfile.mkdtemp(prefix="audit-year-")) / "audit"
    if args.person_cost:
        person_cost(directory.parent / "person-cost", args.person_cost)
        return
    key = directory.parent / "signing.key"
    rng = np.random.default_rng(args.seed + 1)
    if not args.reuse:
        if directory.exists():
            shutil.rmtree(directory)
        if key.exists():
            key.unlink()
            key.with_suffix(".pub").unlink()
        from juki_engine.audit.integrity import write_key_pair

        directory.mkdir(parents=True)
        write_key_pair(key)
        print(f"building {args.records:,.0f} records over {args.days} days in {directory}")
        seconds, written = build(directory, int(args.records), args.days, args.seed)
        segments = sorted(directory.glob("audit-*.arrows"))
        print(
            f"build: {written:,} records in {seconds:.0f} s ({written / seconds:,.0f}/s); "
            f"segments {size_of(segments) / GIB:.2f} GiB, "
            f"{size_of(segments) / written:.1f} B/record; peak RSS {peak_rss_gib():.2f} GiB"
        )
        # The hand-written path: scan every segment for one person.
        drop_cache(directory)
        scans = []
        for person in rng.integers(0, RESIDENTS, 3):
            t = time.perf_counter()
            audit.read(directory, person=int(person))
            scans.append(time.perf_counter() - t)
        print(f"history by scanning the segments (before the store): {quantiles(scans)}")

        # Writes alone, then beside a compaction of the first half-year.
        alone = writes_per_second(directory.parent / "writes-alone", 8.0)
        half = START + timedelta(days=args.days // 2)
        child = subprocess.Popen(
            [
                *(sys.executable, "-m", "juki_engine.cli", "audit", "compact", "--nice"),
                *("--dir", str(directory), "--audit-key", str(key)),
                *("--memory-mib", str(args.memory_mib), "--retention-days", str(100 * 366)),
                *("--until", half.date().isoformat()),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        t = time.perf_counter()
        beside = writes_per_second(directory.parent / "writes-beside", 8.0)
        out, _ = child.communicate()
        half_seconds = time.perf_counter() - t
        half_rss = peak_rss_gib(resource.RUSAGE_CHILDREN)
        print(
            f"writes: {alone:,.0f} records/s alone, {beside:,.0f} beside a compaction "
            f"({beside / alone:.2f}x); compaction of the first half-year: "
            f"{' '.join(out.split())} in {half_seconds:.0f} s, peak RSS {half_rss:.2f} GiB"
        )
        print(f"  store after half a year: {len(periods(directory))} periods")
        half_reads(directory, rng, args.queries, half)
        seconds, rss, summary = compact_child(directory, key, args.memory_mib)
        print(f"compaction of the rest: {summary}; {seconds:.0f} s, peak RSS {rss:.2f} GiB")
    else:
        half_reads(directory, rng, args.queries, START + timedelta(days=args.days // 2))
    stored = [p for p in (directory / "store").rglob("*.parquet")]
    total = sum(pq_rows(p) for p in stored)
    print(
        f"store: {len(stored):,} files, {size_of(stored) / GIB:.2f} GiB, "
        f"{size_of(stored) / max(total, 1):.1f} B/record over {total:,} records"
    )
    drop_cache(directory)
    persons = rng.integers(0, RESIDENTS, args.queries)
    times = time_reads(directory, persons, None)
    print(f"history, whole year (page cache dropped first; first 100): {quantiles(times[:100])}")
    print(f"history, whole year: {quantiles(times)}")
    if args.rocksdb:
        design_b(directory, int(args.rocksdb), rng, args.queries)
    print(f"peak RSS: this process {peak_rss_gib():.2f} GiB")


def half_reads(directory: Path, rng: np.random.Generator, queries: int, half: datetime) -> None:
    drop_cache(directory)
    persons = rng.integers(0, RESIDENTS, queries)
    times = time_reads(directory, persons, half)
    print(f"history, first half-year (page cache dropped first): {quantiles(times)}")


def pq_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def design_b(directory: Path, n: int, rng: np.random.Generator, queries: int) -> None:
    """RocksDB (rocksdict) keyed (person, time, sequence), loaded with the store's first n
    records; reads of one person's prefix."""
    import pyarrow.parquet as pq
    from rocksdict import Options, Rdict, WriteBatch

    path = directory.parent / "rocksdb"
    shutil.rmtree(path, ignore_errors=True)
    options = Options()
    options.set_compression_type(__import__("rocksdict").DBCompressionType.zstd())
    db = Rdict(str(path), options)
    loaded = 0
    started = time.perf_counter()
    columns = ["time", "agency", "affair", "mode", "fields", "subject", "person", "outcome"]
    for file in sorted((directory / "store").rglob("*.parquet")):
        table = pq.read_table(file, columns=columns).filter(pc.is_valid(pc.field("person")))
        batch = WriteBatch()
        persons = table["person"].to_numpy()
        times = table["time"].cast(pa.int64()).to_numpy()
        values = [
            "|".join(str(v) for v in row.values()).encode()
            for row in table.select([*columns[1:6], "outcome"]).to_pylist()
        ]
        for i in range(table.num_rows):
            key = int(persons[i]).to_bytes(4, "big") + int(times[i]).to_bytes(8, "big")
            batch.put(key + (loaded + i).to_bytes(8, "big"), values[i])
        db.write(batch)
        loaded += table.num_rows
        if loaded >= n:
            break
    db.flush()
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    print(
        f"design B (RocksDB): {loaded:,} records loaded in {seconds:.0f} s "
        f"({loaded / seconds:,.0f}/s), {size / loaded:.1f} B/record"
    )
    drop_cache(path)
    times = []
    for person in rng.integers(0, RESIDENTS, queries):
        prefix = int(person).to_bytes(4, "big")
        t = time.perf_counter()
        it = db.iter()
        it.seek(prefix)
        found = []
        while it.valid() and it.key()[:4] == prefix:
            found.append(it.value())
            it.next()
        times.append(time.perf_counter() - t)
    print(f"design B history: {quantiles(times)}")
    db.close()


if __name__ == "__main__":
    main()
