"""Registry build, snapshot save and open: times and peak RSS (the national-scale memory budget).

    python benches/bench_build.py --population 128066211 --out /tmp/nation_snap

Generates the registry (the nation by default), saves it, drops it, reopens the snapshot (page
cache warm: the save just wrote it) and reports each step's wall time, `memory_bytes` and the
process's peak RSS. Repeat `--open-repeats` times for a median open time.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time

from juki_engine import Registry


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--population", type=int, default=None, help="default: the nation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="snapshot directory to write")
    parser.add_argument("--open-repeats", type=int, default=3)
    args = parser.parse_args(argv)

    t = time.perf_counter()
    registry = Registry.generate(args.population, seed=args.seed)
    generate_s = time.perf_counter() - t
    print(
        f"generate {len(registry):,} residents: {generate_s:.1f} s, memory_bytes "
        f"{registry.memory_bytes / 2**30:.2f} GiB, peak RSS {peak_rss_gib():.2f} GiB",
        flush=True,
    )
    t = time.perf_counter()
    registry.save(args.out)
    print(f"save: {time.perf_counter() - t:.1f} s", flush=True)
    del registry
    gc.collect()
    opens = []
    for _ in range(args.open_repeats):
        t = time.perf_counter()
        registry = Registry.open(args.out)
        opens.append(time.perf_counter() - t)
        serving = rss_gib()
        del registry
        gc.collect()
    print(
        f"open (warm page cache): median {statistics.median(opens):.1f} s of "
        f"{', '.join(f'{s:.1f}' for s in opens)}; serving RSS {serving:.2f} GiB; "
        f"peak RSS {peak_rss_gib():.2f} GiB",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
