"""Identity-verification throughput: juki `lookup`/`verify` against DuckDB, Polars and the
random-gather limit, all in one process on the same registry and the same claims.

Every rate is the median of `--repeats` runs, in claims per second. The design states its
performance targets as ratios (DESIGN.md, Performance). A busy machine moves the rates, and the
ratios less, but not by nothing. Data building and format conversions are never timed.

    juki bench                                                     # 4 M residents, 4 M claims
    juki bench --population 128066211 --claims 40000000 \\
        --skip-baselines --json national.json                      # the nation (24 GiB machine)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from juki_engine import Registry

FIELDS = ["family_name", "given_name", "birth_date"]
CLAIM_COLUMNS = ["my_number", *FIELDS]
MY_NUMBER_DIGITS = 12
# My Number check digit (総務省令第85号 第5条): weights over the 11 base digits, left to right.
MY_NUMBER_WEIGHTS = (6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
ASCII_ZERO = ord("0")

START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f}s] {message}", file=sys.stderr, flush=True)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def gib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def measure(fn: Callable[[], Any], items: int, repeats: int) -> dict[str, Any]:
    """Median rate of `fn` over `repeats` runs; each result is dropped before the next run."""
    seconds, cpu_seconds = [], []
    for _ in range(repeats):
        gc.collect()
        cpu0 = cpu_seconds_used()
        t0 = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - t0)
        cpu_seconds.append(cpu_seconds_used() - cpu0)
        del result
    median = statistics.median(seconds)
    return {
        "items": items,
        "seconds": seconds,
        "median_s": median,
        "rate_per_s": items / median,
        # CPU time over wall time: how many cores the call kept busy (all threads of the process).
        "cpu_per_wall": sum(cpu_seconds) / sum(seconds),
        "cpu_seconds": cpu_seconds,
    }


def cpu_seconds_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------------
# Claims, built vectorised.


def digit_matrix(my_numbers: pa.Array) -> np.ndarray:
    """The My Numbers as an (n, 12) uint8 matrix of ASCII digits, zero-copy where possible."""
    n = len(my_numbers)
    buffers = my_numbers.buffers()
    if (
        pa.types.is_string_view(my_numbers.type)
        and my_numbers.null_count == 0
        and len(buffers) == 2  # no data buffers: every value is inline in its 16-byte view
    ):
        views = np.frombuffer(buffers[1], dtype=np.uint8).reshape(-1, 16)
        views = views[my_numbers.offset : my_numbers.offset + n]
        lengths = np.frombuffer(buffers[1], dtype=np.int32).reshape(-1, 4)[:, 0]
        lengths = lengths[my_numbers.offset : my_numbers.offset + n]
        if bool((lengths == MY_NUMBER_DIGITS).all()):
            return views[:, 4:16]
    plain = my_numbers.cast(pa.large_string())
    if plain.null_count:
        raise ValueError("the registry holds null My Numbers")
    offsets = np.frombuffer(plain.buffers()[1], dtype=np.int64)[plain.offset : plain.offset + n + 1]
    if not bool((np.diff(offsets) == MY_NUMBER_DIGITS).all()):
        raise ValueError("the registry holds My Numbers that are not 12 characters")
    data = np.frombuffer(plain.buffers()[2], dtype=np.uint8)
    return data[offsets[0] : offsets[-1]].reshape(n, MY_NUMBER_DIGITS)


def strings_from_digits(digits: np.ndarray) -> pa.Array:
    """An Arrow string array from an (n, 12) matrix of ASCII digits, without Python objects."""
    n = len(digits)
    data = np.ascontiguousarray(digits)
    large = data.size >= 2**31
    offsets = np.arange(0, MY_NUMBER_DIGITS * (n + 1), MY_NUMBER_DIGITS, dtype=np.int64)
    arrow_type = pa.large_string() if large else pa.string()
    if not large:
        offsets = offsets.astype(np.int32)
    return pa.Array.from_buffers(arrow_type, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def with_check_digit(base: np.ndarray) -> np.ndarray:
    """(n, 11) digit values 0–9 → (n, 12) ASCII My Numbers with the right check digit."""
    remainder = np.zeros(len(base), dtype=np.int32)
    for column, weight in enumerate(MY_NUMBER_WEIGHTS):
        remainder += base[:, column].astype(np.int32) * weight
    remainder %= 11
    check = np.where(remainder <= 1, 0, 11 - remainder).astype(np.uint8)
    digits = np.empty((len(base), MY_NUMBER_DIGITS), dtype=np.uint8)
    digits[:, :11] = base + ASCII_ZERO
    digits[:, 11] = check + ASCII_ZERO
    return digits


def absent_my_numbers(registry: Registry, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` valid My Numbers (right check digit) that are not in the registry."""
    digits = with_check_digit(rng.integers(0, 10, size=(count, 11), dtype=np.uint8))
    for _ in range(100):
        probe = registry.lookup(strings_from_digits(digits), columns=[])
        if probe["error"].null_count != count:
            raise AssertionError("generated My Numbers were rejected: check-digit bug")
        present = np.asarray(probe["found"].combine_chunks().to_numpy(zero_copy_only=False))
        if not present.any():
            return digits
        redraw = rng.integers(0, 10, size=(int(present.sum()), 11), dtype=np.uint8)
        digits[present] = with_check_digit(redraw)
    raise AssertionError("could not draw absent My Numbers")


def digits_to_uint64(digits: np.ndarray) -> np.ndarray:
    value = np.zeros(len(digits), dtype=np.uint64)
    for column in range(digits.shape[1]):
        value *= np.uint64(10)
        value += (digits[:, column] - ASCII_ZERO).astype(np.uint64)
    return value


def build_claims(
    registry: Registry,
    claims: int,
    absent_fraction: float,
    wrong_name_fraction: float,
    wrong_date_fraction: float,
    rng: np.random.Generator,
) -> tuple[pa.Table, np.ndarray, dict[str, int]]:
    """Claims table (my_number, family_name, given_name: string; birth_date: date32), the same
    My Numbers as uint64, and how many claims of each kind were built."""
    population = len(registry)
    source = registry.to_arrow(columns=CLAIM_COLUMNS)
    rows = rng.integers(0, population, size=claims, dtype=np.int64)
    absent = rng.random(claims) < absent_fraction
    hit = ~absent

    digits = digit_matrix(source["my_number"].combine_chunks())[rows]
    digits[absent] = absent_my_numbers(registry, int(absent.sum()), rng)
    my_number = strings_from_digits(digits)
    my_number_u64 = digits_to_uint64(digits)
    del digits

    # Names: gather dictionary codes, move a share of hits to another name, then decode.
    names: dict[str, pa.Array] = {}
    wrong_name = hit & (rng.random(claims) < wrong_name_fraction)
    for field in ("family_name", "given_name"):
        column = source[field].combine_chunks()
        if not pa.types.is_dictionary(column.type):
            column = column.dictionary_encode()
        codes = np.asarray(column.indices.to_numpy(zero_copy_only=False)).astype(np.int64)[rows]
        if field == "family_name":
            size = len(column.dictionary)
            codes[wrong_name] = (codes[wrong_name] + rng.integers(1, size, wrong_name.sum())) % size
        names[field] = column.dictionary.take(pa.array(codes)).cast(pa.string())
        del codes, column

    birth = source["birth_date"].combine_chunks()
    if birth.null_count:
        raise ValueError("the registry holds null birth dates")
    days = np.asarray(birth.view(pa.int32()).to_numpy())[rows]
    wrong_date = hit & (rng.random(claims) < wrong_date_fraction)
    days[wrong_date] += rng.choice(np.array([-1, 1], dtype=np.int32), wrong_date.sum())
    birth_date = pa.array(days, type=pa.int32()).view(pa.date32())
    del source, birth, days, rows

    table = pa.table(
        {
            "my_number": my_number,
            "family_name": names["family_name"],
            "given_name": names["given_name"],
            "birth_date": birth_date,
        }
    )
    counts = {
        "claims": claims,
        "hits": int(hit.sum()),
        "absent": int(absent.sum()),
        "wrong_family_name": int(wrong_name.sum()),
        "wrong_birth_date": int(wrong_date.sum()),
    }
    return table, my_number_u64, counts


def bench_juki(
    registry: Registry, claims: pa.Table, keys_u64: np.ndarray, repeats: int
) -> dict[str, dict[str, Any]]:
    keys = claims["my_number"].chunk(0)
    n = claims.num_rows
    rates = {}
    log("juki lookup, key only")
    rates["juki_lookup_key_only"] = measure(lambda: registry.lookup(keys, columns=[]), n, repeats)
    log("juki lookup, key only, uint64 keys")
    rates["juki_lookup_key_only_uint64"] = measure(
        lambda: registry.lookup(keys_u64, columns=[]), n, repeats
    )
    log("juki lookup, 3 columns")
    rates["juki_lookup_3_columns"] = measure(
        lambda: registry.lookup(keys, columns=FIELDS), n, repeats
    )
    log("juki verify, 3 fields")
    rates["juki_verify"] = measure(lambda: registry.verify(claims), n, repeats)
    log("juki verify, 3 fields, normalised match level (folded dictionaries built first)")
    registry.verify(claims.slice(0, 1), match="normalised")
    rates["juki_verify_normalised"] = measure(
        lambda: registry.verify(claims, match="normalised"), n, repeats
    )
    return rates


# ---------------------------------------------------------------------------------------------
# Baselines.


def plain_registry_columns(registry: Registry) -> pa.Table:
    """The registry's verify columns with dictionaries and string views cast to plain strings."""
    source = registry.to_arrow(columns=CLAIM_COLUMNS)
    columns = {}
    for name in CLAIM_COLUMNS:
        column = source[name]
        if name != "birth_date":
            column = column.cast(pa.string())
        columns[name] = column.combine_chunks()
    return pa.table(columns)


def verify_counts(result: Any) -> dict[str, int]:
    """How many claims were found and how many matched per field (the cross-check)."""
    table = result if isinstance(result, pa.Table) else result.to_arrow()
    counts = {"found": int(pc.sum(table["found"]).as_py() or 0)}
    for field in FIELDS:
        counts[f"{field}_match"] = int(pc.sum(table[f"{field}_match"]).as_py() or 0)
    return counts


DUCKDB_VERIFY = """
SELECT r.my_number IS NOT NULL          AS found,
       c.family_name = r.family_name    AS family_name_match,
       c.given_name  = r.given_name     AS given_name_match,
       c.birth_date  = r.birth_date     AS birth_date_match
FROM claims AS c
LEFT JOIN registry AS r ON c.my_number = r.my_number
"""


def bench_duckdb(
    registry: Registry, claims: pa.Table, repeats: int, memory_limit: str | None, native: bool
) -> tuple[dict[str, Any], dict[str, int]]:
    import duckdb

    config: dict[str, str | bool | int | float | list[str]] = (
        {"memory_limit": memory_limit} if memory_limit else {}
    )
    con = duckdb.connect(config=config)
    plain = plain_registry_columns(registry)
    if native:
        con.register("registry_arrow", plain)
        con.execute("CREATE TABLE registry AS SELECT * FROM registry_arrow")
        con.unregister("registry_arrow")
        del plain
    else:
        con.register("registry", plain)
    con.register("claims", claims)

    def run() -> pa.Table:
        return con.sql(DUCKDB_VERIFY).to_arrow_table()

    first = run()
    if first.num_rows != claims.num_rows:
        raise AssertionError(f"DuckDB gave {first.num_rows} rows for {claims.num_rows} claims")
    counts = verify_counts(first)
    del first
    stats = measure(run, claims.num_rows, repeats)
    con.close()
    return stats, counts


def bench_polars(
    registry: Registry, claims: pa.Table, repeats: int
) -> tuple[dict[str, Any], dict[str, int]]:
    import polars as pl

    # Polars' natural input: its own String columns, converted from Arrow without timing.
    source = registry.to_arrow(columns=CLAIM_COLUMNS)
    frame = pl.from_arrow(source)
    assert isinstance(frame, pl.DataFrame)
    del source
    frame = frame.with_columns(pl.col("family_name", "given_name").cast(pl.String)).rechunk()
    claim_frame = pl.from_arrow(claims)
    assert isinstance(claim_frame, pl.DataFrame)

    def run() -> pl.DataFrame:
        return (
            claim_frame.lazy()
            .join(frame.lazy(), on="my_number", how="left", suffix="_r", coalesce=False)
            .select(
                found=pl.col("my_number_r").is_not_null(),
                **{f"{f}_match": pl.col(f) == pl.col(f"{f}_r") for f in FIELDS},
            )
            .collect()
        )

    first = run()
    if first.height != claims.num_rows:
        raise AssertionError(f"Polars gave {first.height} rows for {claims.num_rows} claims")
    counts = verify_counts(first)
    del first
    return measure(run, claims.num_rows, repeats), counts


def bench_gather(
    population: int, claims: int, repeats: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Random gathers from a registry-sized uint64 array: the memory system's limit."""
    values = rng.integers(0, 2**63, size=population, dtype=np.uint64)
    rows = rng.integers(0, population, size=claims, dtype=np.int64)
    out = np.empty(claims, dtype=np.uint64)
    # mode="clip": with the default mode="raise", numpy buffers `out` (a second pass).
    stats = measure(lambda: np.take(values, rows, out=out, mode="clip"), claims, repeats)
    allocating = measure(lambda: np.take(values, rows), claims, repeats)
    # The fair limit for a kernel that uses both cores: each thread gathers half the rows
    # (numpy's take releases the GIL), into its half of the buffer.
    half = claims // 2
    halves = [(rows[:half], out[:half]), (rows[half:], out[half:])]
    with ThreadPoolExecutor(2) as pool:

        def both() -> None:
            list(pool.map(lambda h: np.take(values, h[0], out=h[1], mode="clip"), halves))

        two_threads = measure(both, claims, repeats)
    return {"into_buffer": stats, "allocating": allocating, "two_threads": two_threads}


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--population", type=int, default=4_000_000)
    parser.add_argument(
        "--registry", help="open this snapshot instead of generating (its time is then the open)"
    )
    parser.add_argument("--claims", type=int, default=4_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="registry and claims seed")
    parser.add_argument("--absent-fraction", type=float, default=0.10)
    parser.add_argument("--wrong-name-fraction", type=float, default=0.05)
    parser.add_argument("--wrong-date-fraction", type=float, default=0.05)
    parser.add_argument(
        "--skip-baselines", action="store_true", help="skip DuckDB and Polars (memory)"
    )
    parser.add_argument(
        "--skip-polars", action="store_true", help="skip Polars only (the hungrier baseline)"
    )
    parser.add_argument(
        "--duckdb-registry",
        choices=["arrow", "table"],
        default="arrow",
        help="DuckDB reads the registry as a registered Arrow table, or a native table copy",
    )
    parser.add_argument("--duckdb-memory-limit", help="e.g. 8GB (DuckDB's default: 80%% of RAM)")
    parser.add_argument("--json", type=str, help="write every number to this path")
    # Internal: run only the baselines, in a child process, and write their results here.
    parser.add_argument("--baselines-to", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def baselines_in_child(argv: list[str], out: str) -> dict[str, Any]:
    """Run the DuckDB (and Polars) baselines in a child process that opens the same snapshot
    (mapped) and builds the same claims from the same seed: a baseline that would not fit
    beside the engine runs first, alone, and the engine loads after it has exited."""
    import subprocess

    command = [sys.executable, "-m", "juki_engine.bench", *argv, "--baselines-to", out]
    subprocess.run(command, check=True)
    with open(out) as file:
        child: dict[str, Any] = json.load(file)
    return child


def run_baselines(
    args: argparse.Namespace, registry: Registry, claims: pa.Table
) -> tuple[dict[str, Any], dict[str, Any]]:
    """{name: rate} and {name: verify counts} of the baselines, in this process."""
    rates: dict[str, Any] = {}
    checks: dict[str, Any] = {}
    log(f"DuckDB left join (registry as {args.duckdb_registry})")
    rates["duckdb_verify"], checks["duckdb"] = bench_duckdb(
        registry,
        claims,
        args.repeats,
        args.duckdb_memory_limit,
        native=args.duckdb_registry == "table",
    )
    gc.collect()
    if not args.skip_polars:
        log("Polars left join")
        rates["polars_verify"], checks["polars"] = bench_polars(registry, claims, args.repeats)
        gc.collect()
    return rates, checks


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    child: dict[str, Any] | None = None
    if args.registry and not args.skip_baselines and not args.baselines_to:
        with tempfile.TemporaryDirectory(prefix="juki-baselines-") as tmp:
            child = baselines_in_child(argv, os.path.join(tmp, "baselines.json"))
    results: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pyarrow": pa.__version__,
        },
        "rates": {},
        # ru_maxrss only grows: where it rises says which phase set the peak.
        "peak_rss_after": {},
    }
    rates: dict[str, dict[str, Any]] = results["rates"]
    peaks: dict[str, int] = results["peak_rss_after"]

    t0 = time.perf_counter()
    if args.registry:
        log(f"opening the snapshot {args.registry}")
        # The baselines' child maps the snapshot: its pages are the page cache's, not its own.
        registry = Registry.open(args.registry, mmap=bool(args.baselines_to))
    else:
        log(f"generating a registry of {args.population:,} residents")
        registry = Registry.generate(population=args.population, seed=args.seed)
    results["generation"] = {
        "source": args.registry or "generated",
        "seconds": time.perf_counter() - t0,
        "residents": len(registry),
        "memory_bytes": registry.memory_bytes,
        "peak_rss_bytes": peak_rss_bytes(),
        "rss_bytes": current_rss_bytes(),
    }
    peaks["generation"] = peak_rss_bytes()
    log(f"generated in {results['generation']['seconds']:.1f} s")

    rng = np.random.default_rng(args.seed)
    log(f"building {args.claims:,} claims")
    t0 = time.perf_counter()
    claims, keys_u64, counts = build_claims(
        registry,
        args.claims,
        args.absent_fraction,
        args.wrong_name_fraction,
        args.wrong_date_fraction,
        rng,
    )
    gc.collect()
    results["claims"] = {**counts, "build_seconds": time.perf_counter() - t0}
    peaks["claims"] = peak_rss_bytes()
    log(f"built in {results['claims']['build_seconds']:.1f} s: {counts}")

    n, repeats = claims.num_rows, args.repeats
    if args.baselines_to:
        child_rates, child_checks = run_baselines(args, registry, claims)
        with open(args.baselines_to, "w") as out:
            json.dump({"rates": child_rates, "checks": child_checks, "peak": peak_rss_bytes()}, out)
        return 0
    rates.update(bench_juki(registry, claims, keys_u64, repeats))
    checks = {"juki": verify_counts(registry.verify(claims))}
    if checks["juki"]["found"] != counts["hits"]:
        raise AssertionError(f"juki found {checks['juki']['found']} of {counts['hits']} hits")
    del keys_u64
    gc.collect()
    peaks["juki"] = peak_rss_bytes()

    if child is not None:
        rates.update(child["rates"])
        checks.update(child["checks"])
        peaks["baselines_child"] = child["peak"]
    elif not args.skip_baselines:
        baseline_rates, baseline_checks = run_baselines(args, registry, claims)
        rates.update(baseline_rates)
        checks.update(baseline_checks)
        peaks["baselines"] = peak_rss_bytes()
    for name, found in checks.items():
        if found != checks["juki"]:
            raise AssertionError(f"{name} disagrees with juki: {found} vs {checks['juki']}")
    results["cross_check"] = checks

    log("random-gather limit")
    # Each gather takes milliseconds, so one preemption skews it: take the median of more runs.
    gather = bench_gather(len(registry), n, repeats * 5, rng)
    rates["gather_limit"] = gather["into_buffer"]
    rates["gather_allocating"] = gather["allocating"]
    rates["gather_two_threads"] = gather["two_threads"]
    peaks["gather"] = peak_rss_bytes()

    def ratio(a: str, b: str) -> float | None:
        if a not in rates or b not in rates:
            return None
        return float(rates[a]["rate_per_s"] / rates[b]["rate_per_s"])

    results["ratios"] = {
        "verify/duckdb": ratio("juki_verify", "duckdb_verify"),
        # docs/matching.md: goal ≥ 0.6×.
        "verify_normalised/verify": ratio("juki_verify_normalised", "juki_verify"),
        "verify/polars": ratio("juki_verify", "polars_verify"),
        "lookup_key_only/gather_limit": ratio("juki_lookup_key_only", "gather_limit"),
        "lookup_key_only_uint64/gather_limit": ratio("juki_lookup_key_only_uint64", "gather_limit"),
        "lookup_3_columns/gather_limit": ratio("juki_lookup_3_columns", "gather_limit"),
        # Against the two-core gather: the fair limit for a kernel that uses both cores.
        "lookup_key_only/gather_two_threads": ratio("juki_lookup_key_only", "gather_two_threads"),
        "verify/gather_two_threads": ratio("juki_verify", "gather_two_threads"),
        # The same against plain `np.take` (allocating its output, as a user would write it).
        "lookup_key_only/np_take": ratio("juki_lookup_key_only", "gather_allocating"),
        "lookup_key_only_uint64/np_take": ratio("juki_lookup_key_only_uint64", "gather_allocating"),
    }
    results["peak_rss_bytes"] = peak_rss_bytes()
    report(results)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
            out.write("\n")
        log(f"wrote {args.json}")
    return 0


LABELS = {
    "juki_lookup_key_only": "juki lookup, key only",
    "juki_lookup_key_only_uint64": "juki lookup, key only, u64 keys",
    "juki_lookup_3_columns": "juki lookup, 3 columns",
    "juki_verify": "juki verify, 3 fields",
    "juki_verify_normalised": "juki verify, 3 fields, normalised",
    "duckdb_verify": "DuckDB left join → Arrow",
    "polars_verify": "Polars left join",
    "gather_limit": "gather limit (np.take, out=, clip)",
    "gather_allocating": "np.take, allocating",
    "gather_two_threads": "gather limit, 2 threads (np.take, out=, clip)",
}


def report(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output (a log file) would wrap at 80 columns and split the table's rows.
    console = Console() if sys.stdout.isatty() else Console(width=110)
    generation, claims = results["generation"], results["claims"]
    console.print(
        f"registry: {generation['residents']:,} residents, generated in "
        f"{generation['seconds']:.1f} s; memory_bytes {gib(generation['memory_bytes'])}; "
        f"peak RSS after generation {gib(generation['peak_rss_bytes'])}"
    )
    console.print(
        f"claims: {claims['claims']:,} ({claims['hits']:,} hits, {claims['absent']:,} absent; "
        f"{claims['wrong_family_name']:,} wrong family name, "
        f"{claims['wrong_birth_date']:,} wrong birth date); "
        f"load average at start {results['machine']['load_average_at_start']}"
    )
    rates = Table(title="Throughput (median of repeats)")
    rates.add_column("measure")
    rates.add_column("M claims/s", justify="right")
    rates.add_column("median s", justify="right")
    rates.add_column("min–max s", justify="right")
    rates.add_column("CPU/wall", justify="right")
    for key, label in LABELS.items():
        if key not in results["rates"]:
            continue
        stats = results["rates"][key]
        rates.add_row(
            label,
            f"{stats['rate_per_s'] / 1e6:.2f}",
            f"{stats['median_s']:.3f}",
            f"{min(stats['seconds']):.3f}–{max(stats['seconds']):.3f}",
            f"{stats['cpu_per_wall']:.2f}",
        )
    console.print(rates)
    ratios = Table(title="Ratios (same run)")
    ratios.add_column("ratio")
    ratios.add_column("value", justify="right")
    for name, value in results["ratios"].items():
        ratios.add_row(name, "skipped" if value is None else f"{value:.2f}×")
    ratios.add_row("peak RSS (whole run)", gib(results["peak_rss_bytes"]))
    console.print(ratios)
    console.print(
        "peak RSS after: "
        + ", ".join(f"{phase} {gib(b)}" for phase, b in results["peak_rss_after"].items())
    )


if __name__ == "__main__":
    sys.exit(main())
