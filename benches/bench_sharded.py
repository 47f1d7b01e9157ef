"""The Ray path's overhead: verify through a sharded registry against the single engine, at equal
work, in one run.

A child process generates the registry (or opens a snapshot), splits it into `--shards` shards
(`juki shard`), draws the claims and times the single engine's verify of them: the baseline,
first, in a process of its own, since at the nation's size it does not fit beside the shards.
Then this process serves the shards from Ray actors on a local cluster it starts (object store
capped at `--object-store-gib`) and times the same claims through them; medians. Also printed:
what the claims and the answers weigh in Arrow (bytes a claim, the Ray path's traffic), and the
RSS of every process (the front end here, each shard's actor), for the capacity model in
docs/sharding.md.

    python benches/bench_sharded.py --population 2000000 --shards 2 --claims 2000000
    python benches/bench_sharded.py --snapshot /tmp/nation_snap --shards 4 --claims 4000000
    python benches/bench_sharded.py --prefecture 富山県 --shards 2 --replicas 2
    python benches/bench_sharded.py --population 2000000 --shards 2 --changes 200000
    python benches/bench_sharded.py --population 2000000 --shards 2 --living

With `--changes N`, the first N changes of a generated year (`generate_changes`) are applied
too, in batches of `--batch` rows, by the single engine (after its verify, in the child, with
its change log in the scratch directory) and through the shards (each shard's log in its own
directory): changes/s and the ratio. With `--living`, the registry first takes a generated year
of changes and a checkpoint, and is then split with its history (`juki shard` of a living
registry): the split's time against the same registry's split before the year; the verify
through the shards is then of the living registry's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from juki_engine import Registry
from juki_engine.distributed import ShardedRegistry, shard
from juki_engine.synthetic.changes import generate_changes

GIB = 2**30
TODAY = dt.date(2026, 1, 1)


def rss(pid: int | None = None) -> int:
    with open(f"/proc/{pid or 'self'}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def arrow_bytes(table: pa.Table) -> int:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().size


def prepare(args: argparse.Namespace, scratch: Path) -> dict[str, float]:
    """In a child process (the single engine does not fit beside the shards at the nation's
    size): open or generate the registry, shard it, draw the claims (saved for the parent) and
    time the single engine's verify of them; returns its rate and memory."""
    if args.snapshot and args.changes:
        # Changes write a log beside the snapshot: apply them to a hard-linked copy.
        subprocess.run(["cp", "-al", str(args.snapshot), str(scratch / "one")], check=True)
        registry = Registry.open(scratch / "one")
    elif args.snapshot:
        registry = Registry.open(args.snapshot)
    elif args.prefecture:
        registry = Registry.generate(prefecture=args.prefecture, seed=1)
    else:
        registry = Registry.generate(args.population, seed=1)
    plain_in, year = 0.0, 0
    if args.living:
        started = time.perf_counter()
        shard(registry, args.shards, scratch / "plain-shards")
        plain_in = time.perf_counter() - started
        shutil.rmtree(scratch / "plain-shards")
        registry, year = lived_a_year(registry, scratch / "living")
    started = time.perf_counter()
    shard(registry, args.shards, scratch / "shards")
    sharded_in = time.perf_counter() - started
    rng = np.random.default_rng(7)
    rows = pa.array(rng.integers(0, len(registry), args.claims))
    claims = registry.to_arrow(["my_number", "family_name", "birth_date"]).take(rows)
    claims = claims.set_column(1, "family_name", claims["family_name"].cast(pa.string()))
    pq.write_table(claims, scratch / "claims.parquet")
    times = []
    for _ in range(args.rounds):
        t = time.perf_counter()
        one = registry.verify(claims, by="my_number")
        times.append(time.perf_counter() - t)
    pq.write_table(one.slice(0, 1000), scratch / "expected.parquet")
    changes_rate = 0.0
    if args.changes:
        if not args.snapshot:
            registry.save(scratch / "one")
            registry = Registry.open(scratch / "one")
        changes = generate_changes(registry, 2025, seed=1).slice(0, args.changes)
        pq.write_table(changes, scratch / "changes.parquet")
        changes_rate = args.changes / apply_all(registry, changes, args.batch)
    return {
        "plain_s": plain_in,
        "year": year,
        "changes_rate": changes_rate,
        "residents": len(registry),
        "sharded_s": sharded_in,
        "rate": args.claims / statistics.median(times),
        "rss": rss(),
        "registry": registry.memory_bytes,
    }


def lived_a_year(registry: Registry, path: Path) -> tuple[Registry, int]:
    """`registry` saved at `path`, a generated year of changes applied and checkpointed, and
    opened again (a registry that took changes, ready to be split); and the year's changes."""
    registry.save(path)
    registry = Registry.open(path)
    changes = generate_changes(registry, 2025, seed=1)
    apply_all(registry, changes, 100_000)
    registry.checkpoint()
    return Registry.open(path, mmap=True), changes.num_rows


def apply_all(registry: Registry | ShardedRegistry, changes: pa.Table, batch: int) -> float:
    """Seconds to apply `changes` in batches of `batch` rows, each durable before the next."""
    started = time.perf_counter()
    for start in range(0, changes.num_rows, batch):
        registry.apply(changes.slice(start, batch), today=TODAY, first_row=start)
    return time.perf_counter() - started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--snapshot", type=Path, help="an existing snapshot (default: generate one)")
    p.add_argument("--population", type=int, default=2_000_000)
    p.add_argument("--prefecture", help="generate this prefecture (e.g. 富山県) instead")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--replicas", type=int, default=1, help="actors a shard")
    p.add_argument("--claims", type=int, default=2_000_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--object-store-gib", type=float, default=2.0)
    p.add_argument("--changes", type=int, default=0, help="changes to apply both ways")
    p.add_argument("--batch", type=int, default=10_000, help="change rows a batch")
    p.add_argument(
        "--living", action="store_true", help="split the registry after a year of changes"
    )
    p.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)  # the child's
    args = p.parse_args()
    if args.scratch:
        print(json.dumps(prepare(args, args.scratch)))
        return 0
    import ray

    scratch = Path(tempfile.mkdtemp(prefix="juki-bench-sharded-"))
    try:
        child = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--scratch", str(scratch)],
            check=True,
            capture_output=True,
            text=True,
        )
        base = json.loads(child.stdout.strip().splitlines()[-1])
        if args.living:
            print(
                f"a registry with a year of {base['year']:,} changes (checkpointed) split in "
                f"{base['sharded_s']:.1f} s, against {base['plain_s']:.1f} s before the year: "
                f"{base['sharded_s'] / base['plain_s']:.2f}x"
            )
        print(
            f"{base['residents']:,} residents split into {args.shards} shards in "
            f"{base['sharded_s']:.1f} s (in a child, with the single engine's baseline: "
            f"{base['rate'] / 1e6:.2f} M claims/s, RSS {base['rss'] / GIB:.2f} GiB, registry "
            f"{base['registry'] / GIB:.2f} GiB)"
        )
        claims = pq.read_table(scratch / "claims.parquet")
        ray.init(
            num_cpus=os.cpu_count(),
            object_store_memory=int(args.object_store_gib * GIB),
            include_dashboard=False,
            log_to_driver=False,
        )
        started = time.perf_counter()
        sharded = ShardedRegistry.start(scratch / "shards", replicas=args.replicas)
        print(f"shards started in {time.perf_counter() - started:.1f} s (routing index built)")
        times = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            many = sharded.verify(claims, by="my_number")
            times.append(time.perf_counter() - t)
        expected = pq.read_table(scratch / "expected.parquet")
        assert many.slice(0, 1000).to_pylist() == expected.to_pylist()
        many_rate = args.claims / statistics.median(times)
        print(
            f"verify, {args.shards} shards × {args.replicas} on Ray: {many_rate / 1e6:.2f} M "
            "claims/s = "
            f"{many_rate / base['rate']:.2f}x the single engine (medians of {args.rounds})"
        )
        sent, answered = arrow_bytes(claims), arrow_bytes(many)
        print(
            f"traffic a claim (Arrow IPC): {sent / args.claims:.1f} bytes out, "
            f"{answered / args.claims:.1f} bytes back"
        )
        pids = ray.get([a.pid.remote() for r in sharded.replicas for a in r])
        actors = [rss(pid) for pid in pids]
        print(
            f"RSS: front end {rss() / GIB:.2f} GiB (routing index "
            f"{sharded.routes.router.memory_bytes / GIB:.2f} GiB, the claims and answers); shard "
            "actors " + ", ".join(f"{r / GIB:.2f}" for r in actors) + f" GiB; all together "
            f"{(rss() + sum(actors)) / GIB:.2f} GiB beside Ray's own processes"
        )
        if args.changes:
            changes = pq.read_table(scratch / "changes.parquet")
            rate = args.changes / apply_all(sharded, changes, args.batch)
            print(
                f"changes, {args.shards} shards on Ray: {rate:,.0f}/s against the single "
                f"engine's {base['changes_rate']:,.0f}/s = {rate / base['changes_rate']:.2f}x "
                f"({args.changes:,} changes in batches of {args.batch:,}, each durable)"
            )
        ray.shutdown()
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
