"""The Ray path's overhead: verify through a sharded registry against the single engine, at equal
work, in one run.

A registry is generated (or a snapshot opened), split into `--shards` shards (`juki shard`),
and served by Ray actors on a local cluster started here (object store capped at
`--object-store-gib`). The same claims are verified by the single engine in this process and by
the sharded registry, alternating round by round; medians. Also printed: what the claims and the
answers weigh in Arrow (bytes a claim, the Ray path's traffic), and the RSS of every process
(the front end here, each shard's actor), for the capacity model in docs/sharding.md.

    python benches/bench_sharded.py --population 2000000 --shards 2 --claims 2000000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from juki_engine import Registry
from juki_engine.distributed import ShardedRegistry, shard

GIB = 2**30


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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--snapshot", type=Path, help="an existing snapshot (default: generate one)")
    p.add_argument("--population", type=int, default=2_000_000)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--claims", type=int, default=2_000_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--object-store-gib", type=float, default=2.0)
    args = p.parse_args()
    import ray

    scratch = Path(tempfile.mkdtemp(prefix="juki-bench-sharded-"))
    try:
        registry = (
            Registry.open(args.snapshot, mmap=True)
            if args.snapshot
            else Registry.generate(args.population, seed=1)
        )
        started = time.perf_counter()
        shard(registry, args.shards, scratch / "shards")
        print(
            f"{len(registry):,} residents split into {args.shards} shards in "
            f"{time.perf_counter() - started:.1f} s"
        )
        rng = np.random.default_rng(7)
        rows = pa.array(rng.integers(0, len(registry), args.claims))
        claims = registry.to_arrow(["my_number", "family_name", "birth_date"]).take(rows)
        claims = claims.set_column(1, "family_name", claims["family_name"].cast(pa.string()))
        ray.init(
            num_cpus=os.cpu_count(),
            object_store_memory=int(args.object_store_gib * GIB),
            include_dashboard=False,
            log_to_driver=False,
        )
        sharded = ShardedRegistry.start(scratch / "shards")
        one_times, many_times = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            one = registry.verify(claims, by="my_number")
            one_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            many = sharded.verify(claims, by="my_number")
            many_times.append(time.perf_counter() - t)
        assert many.to_pylist()[:1000] == one.to_pylist()[:1000]
        one_rate = args.claims / statistics.median(one_times)
        many_rate = args.claims / statistics.median(many_times)
        print(f"verify, single engine: {one_rate / 1e6:.2f} M claims/s (median of {args.rounds})")
        print(
            f"verify, {args.shards} shards on Ray: {many_rate / 1e6:.2f} M claims/s = "
            f"{many_rate / one_rate:.2f}x the single engine"
        )
        sent, answered = arrow_bytes(claims), arrow_bytes(one)
        print(
            f"traffic a claim (Arrow IPC): {sent / args.claims:.1f} bytes out, "
            f"{answered / args.claims:.1f} bytes back"
        )
        pids = ray.get([a.pid.remote() for a in sharded.actors])
        actors = [rss(pid) for pid in pids]
        print(
            f"RSS: front end (this process, with the single engine and the claims) "
            f"{rss() / GIB:.2f} GiB; shard actors "
            + ", ".join(f"{r / GIB:.2f}" for r in actors)
            + f" GiB; the registry alone {registry.memory_bytes / GIB:.2f} GiB"
        )
        ray.shutdown()
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
