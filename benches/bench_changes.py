"""The living registry under load: durable ingest, verify beside it, as-of verify, memory.

One process, one registry, every ratio against a baseline timed in the same run:

- durable ingest through `Registry.apply` (each batch fsynced in the change log) in batches of
  1, 100 and 10,000 changes, on a year of synthetic changes (`juki changes generate`, drawn in a
  child process first so its memory is not counted here);
- 4情報 search of a quarter as many claims before and after the year's changes (the first call
  after them catches the search up on the changes: its time too);
- verify (3 claimed fields) of the same claims: read-only before the year's changes, after them
  (goal ≥ 0.9×), while changes arrive at 1,000 a second in another thread (goal ≥ 0.8× the
  read-only verify beside it), and as of a day a year back (goal ≥ 0.5× current);
- RSS added by the year's changes (goal ≤ 1.5 GiB at national scale), and peak RSS;
- opening the snapshot alone and with the change log's tail redone, each in a child process
  (goal: with the log ≤ without + 3 s for a 1-million-change tail).

    python benches/bench_changes.py --population 2000000            # a generated registry
    python benches/bench_changes.py --snapshot /tmp/nation_snap      # an existing snapshot

The snapshot's change log is removed before and after the run; a given snapshot is left as it
was unless --checkpoint (a generated one is always checkpointed: verify after the checkpoint,
reopened, and the checkpoint's time and peak RSS).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from juki_engine import Registry

GIB = 2**30


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak() -> int:
    """The process's peak RSS (VmHWM): since it started, or since `reset_peak`."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak() -> None:
    """Start the process's peak RSS (VmHWM, which `peak` reads) again from its RSS now."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def median_rate(f: object, n: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        f()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return n / statistics.median(times)


def open_seconds(snapshot: Path) -> float:
    """Open the snapshot (and redo its change log) in a child process; its own timing."""
    code = (
        "import time, sys; from juki_engine import Registry; t = time.perf_counter(); "
        "r = Registry.open(sys.argv[1]); print(time.perf_counter() - t, r.applied_changes)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(snapshot)], capture_output=True, text=True, check=True
    )
    return float(out.stdout.split()[0])


def measure(
    snapshot: Path, changes_file: Path, opened_alone: float, args: argparse.Namespace
) -> tuple[int, pa.Table, float]:
    """Everything timed on one open registry; returns how many changes it applied, the claims
    and the read-only verify rate before them."""
    registry = Registry.open(snapshot)
    base_rss = rss()
    n = len(registry)
    print(
        f"registry: {n:,} residents, RSS {base_rss / GIB:.2f} GiB, "
        f"opened in {opened_alone:.1f} s (child)"
    )
    rng = np.random.default_rng(1)
    sample = registry.to_arrow(["my_number", "family_name", "birth_date", "sex"])
    pick = pa.array(rng.integers(0, n, args.claims))
    claims = sample.take(pick)
    claims = claims.set_column(1, "family_name", claims["family_name"].cast(pa.string()))
    del sample
    # 4情報 claims of residents as the snapshot has them: their names and birth dates.
    searched = args.claims // 4
    facts = registry.to_arrow(["family_name", "given_name", "birth_date"]).take(
        pa.array(rng.integers(0, n, searched))
    )
    facts = pa.table(
        {
            "family_name": facts["family_name"].cast(pa.string()),
            "given_name": facts["given_name"].cast(pa.string()),
            "birth_date": facts["birth_date"],
        }
    )

    def search() -> None:
        registry.search(facts, match="normalised", columns=["resident_code"])

    started = time.perf_counter()
    search()
    print(
        f"4情報 search: first call {time.perf_counter() - started:.1f} s (its index read from the "
        "snapshot, or built where the snapshot has none)"
    )
    searched_before = median_rate(search, searched, args.rounds)

    def verify(**kw: object) -> None:
        registry.verify(claims, **kw)  # type: ignore[arg-type]

    before = median_rate(verify, args.claims, args.rounds)
    print(f"verify, read-only, before the changes: {before / 1e6:.2f} M claims/s")

    changes = pq.ParquetFile(changes_file)
    total = changes.metadata.num_rows
    batches = changes.iter_batches(batch_size=10_000)
    rows = pa.Table.from_batches([next(batches)])
    # Batches of 1 and of 100 from the first rows, then 10,000 a batch for the rest but the
    # last 5 % (kept for the concurrent phase).
    small = rows.slice(0, min(args.small_batches, rows.num_rows // 2))
    rest = rows.slice(small.num_rows)
    started = time.perf_counter()
    for i in range(small.num_rows):
        registry.apply(small.slice(i, 1))
    ones = small.num_rows / (time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(0, rest.num_rows, 100):
        registry.apply(rest.slice(i, 100))
    hundreds = rest.num_rows / (time.perf_counter() - started)
    tail_start = int(total * 0.95)
    applied = rows.num_rows
    held = []
    started = time.perf_counter()
    big = 0
    for b in batches:
        if applied >= tail_start:
            held.append(b)
            continue
        registry.apply(pa.Table.from_batches([b]))
        applied += b.num_rows
        big += b.num_rows
    tens = big / (time.perf_counter() - started)
    print(
        f"durable ingest: batches of 1: {ones:,.0f}/s, of 100: {hundreds:,.0f}/s, "
        f"of 10,000: {tens:,.0f}/s ({big:,} changes)"
    )

    after = median_rate(verify, args.claims, args.rounds)
    print(
        f"verify after {applied:,} changes: {after / 1e6:.2f} M claims/s = "
        f"{after / before:.2f}x before (goal >= 0.9)"
    )
    started = time.perf_counter()
    search()
    caught_up = time.perf_counter() - started
    searched_after = median_rate(search, searched, args.rounds)
    print(
        f"4情報 search ({searched:,} claims, normalised) after the changes: "
        f"{searched_after / 1e6:.2f} M claims/s = {searched_after / searched_before:.2f}x before "
        f"({searched_before / 1e6:.2f}); the first call, catching up on the changes: "
        f"{caught_up:.1f} s"
    )
    year_back = dt.date(args.year, 1, 1) - dt.timedelta(days=1)
    as_of = median_rate(lambda: verify(as_of=year_back), args.claims, args.rounds)
    print(
        f"verify as of {year_back}: {as_of / 1e6:.2f} M claims/s = {as_of / after:.2f}x "
        "current (goal >= 0.5)"
    )

    tail = pa.Table.from_batches(held) if held else rows.slice(0, 0)
    stop = threading.Event()
    fed = [0]

    def feed() -> None:
        # 1,000 changes a second: 100 every 0.1 s.
        next_at = time.perf_counter()
        for i in range(0, tail.num_rows, 100):
            if stop.is_set():
                return
            registry.apply(tail.slice(i, 100))
            fed[0] += min(100, tail.num_rows - i)
            next_at += 0.1
            time.sleep(max(0.0, next_at - time.perf_counter()))

    feeder = threading.Thread(target=feed)
    feeder.start()
    beside = median_rate(verify, args.claims, args.rounds)
    stop.set()
    feeder.join()
    quiet = median_rate(verify, args.claims, args.rounds)
    print(
        f"verify while changes arrive at 1,000/s ({fed[0]:,} fed): "
        f"{beside / 1e6:.2f} M claims/s = {beside / quiet:.2f}x read-only beside it "
        "(goal >= 0.8)"
    )
    added = rss() - base_rss
    print(
        f"RSS added by {registry.applied_changes:,} changes: {added / GIB:.2f} GiB "
        f"({added / max(registry.applied_changes, 1):.0f} bytes a change); "
        f"peak RSS {peak() / GIB:.2f} GiB"
    )
    if args.checkpoint:
        before_checkpoint = rss()
        reset_peak()
        started = time.perf_counter()
        entries = registry.checkpoint()
        print(
            f"checkpoint: {time.perf_counter() - started:.1f} s ({entries:,} history entries); "
            f"RSS {before_checkpoint / GIB:.2f} GiB before it, peak {peak() / GIB:.2f} GiB during "
            f"it (+{(peak() - before_checkpoint) / GIB:.2f} GiB)"
        )
    return applied + fed[0], claims, facts, before


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--snapshot", type=Path, help="an existing snapshot (default: generate one)")
    p.add_argument("--population", type=int, default=2_000_000)
    p.add_argument("--year", type=int, default=2025)
    p.add_argument("--claims", type=int, default=2_000_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--small-batches", type=int, default=2_000, help="changes applied one by one")
    p.add_argument(
        "--checkpoint",
        action="store_true",
        help="end with a checkpoint (writes a new version of --snapshot) and verify reopened",
    )
    args = p.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="juki-bench-changes-"))
    snapshot = args.snapshot
    try:
        if snapshot is None:
            snapshot = scratch / "registry"
            Registry.generate(args.population, seed=1).save(snapshot)
            args.checkpoint = True
        log = snapshot / "changes.log"
        if log.exists():
            log.unlink()
        changes_file = scratch / "changes.parquet"
        drawn = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "juki_engine.cli",
                "changes",
                "generate",
                str(snapshot),
                "--year",
                str(args.year),
                "--out",
                str(changes_file),
                "--format",
                "json",
            ],
            check=True,
            capture_output=True,
        )
        print(f"changes drawn in a child process in {time.perf_counter() - drawn:.0f} s")
        opened_alone = open_seconds(snapshot)
        applied, claims, facts, before = measure(snapshot, changes_file, opened_alone, args)
        reopened = open_seconds(snapshot)
        if args.checkpoint:
            print(f"open after the checkpoint (history loaded, log empty): {reopened:.1f} s")
            registry = Registry.open(snapshot)
            started = time.perf_counter()
            registry.search(facts, columns=["resident_code"])
            print(
                f"4情報 search after the checkpoint, reopened: first call "
                f"{time.perf_counter() - started:.1f} s (its index read from the snapshot)"
            )
            folded = median_rate(lambda: registry.verify(claims), args.claims, args.rounds)
            print(
                f"verify after the checkpoint, reopened: {folded / 1e6:.2f} M claims/s = "
                f"{folded / before:.2f}x before the changes"
            )
        else:
            print(
                f"open: snapshot alone {opened_alone:.1f} s, with {applied:,} changes "
                f"redone {reopened:.1f} s (+{reopened - opened_alone:.1f} s)"
            )
        return 0
    finally:
        if snapshot is not None and (snapshot / "changes.log").exists():
            (snapshot / "changes.log").unlink()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
