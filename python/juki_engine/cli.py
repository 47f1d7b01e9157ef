"""The `juki` command line: generate, inspect and query registries, run bulk verification jobs.

`juki demo` is the README's first command: it generates the Toyama demo registry if there is
none, opens it and answers a sample lookup and verification.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from juki_engine import JukiError, Registry
from juki_engine.synthetic import TOYAMA

console = Console()
DEMO_PATH = Path(os.environ.get("JUKI_DEMO_PATH", "data/demo/toyama"))


def _spinner(what: str) -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn(what), TimeElapsedColumn(), console=console, transient=True
    )


def _generate(population: int | None, prefecture: str | None, seed: int) -> Registry:
    area = prefecture or "the nation"
    with _spinner(f"generating {area} (seed {seed})") as progress:
        progress.add_task("generate")
        started = time.perf_counter()
        registry = Registry.generate(population, seed=seed, prefecture=prefecture)
    console.print(
        f"generated {len(registry):,} residents of {area} in {time.perf_counter() - started:.1f} s"
    )
    return registry


def _open(path: Path, mmap: bool = False) -> Registry:
    with _spinner(f"opening {path}") as progress:
        progress.add_task("open")
        started = time.perf_counter()
        registry = Registry.open(path, mmap=mmap)
    console.print(
        f"opened {path}: {len(registry):,} residents in {time.perf_counter() - started:.1f} s"
    )
    return registry


def cmd_generate(args: argparse.Namespace) -> int:
    prefecture = None if args.nation else args.prefecture
    registry = _generate(args.population, prefecture, args.seed)
    with _spinner(f"saving to {args.out}") as progress:
        progress.add_task("save")
        registry.save(args.out)
    console.print(f"saved snapshot to {args.out} ({registry.memory_bytes / 2**30:.2f} GiB)")
    return 0


def _print_table(table: pa.Table, title: str) -> None:
    out = Table(title=title)
    for name in table.column_names:
        out.add_column(name)
    for row in table.to_pylist():
        out.add_row(*("" if v is None else str(v) for v in row.values()))
    console.print(out)


def cmd_stats(args: argparse.Namespace) -> int:
    registry = _open(Path(args.snapshot), args.mmap)
    table = registry.to_arrow(["municipality_code", "municipality_name", "card_state", "status"])
    plain = pa.table({name: pc.cast(table[name], pa.string()) for name in table.column_names})
    counts = plain.group_by(["municipality_code", "municipality_name", "card_state"]).aggregate(
        [("status", "count")]
    )
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for r in counts.to_pylist():
        rows.setdefault((r["municipality_code"], r["municipality_name"]), {})[r["card_state"]] = r[
            "status_count"
        ]
    out = Table(title="My Number card issuance per municipality (個人番号カード交付状況)")
    for col in ("code", "municipality", "residents", "applied", "issued", "issued %"):
        out.add_column(col, justify="right" if col not in ("municipality",) else "left")
    for (code, name), c in sorted(rows.items())[: args.limit]:
        total = sum(c.values())
        issued = c.get("issued", 0)
        applied = c.get("applied", 0) + issued
        out.add_row(
            code, name, f"{total:,}", f"{applied:,}", f"{issued:,}", f"{100 * issued / total:.2f}"
        )
    console.print(out)
    statuses = plain.group_by("status").aggregate([("status", "count")]).to_pylist()
    console.print(
        "statuses: " + ", ".join(f"{s['status']} {s['status_count']:,}" for s in statuses)
    )
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    registry = _open(Path(args.snapshot), args.mmap)
    result = registry.lookup(list(args.keys), by=args.by, columns=args.columns)
    _print_table(result, f"lookup by {args.by}")
    return 0


def _claim_batches(path: Path, batch_size: int) -> tuple[int, Iterator[pa.RecordBatch]]:
    """Stream the claims file: (row count if known, else -1; its record batches)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        # Identifiers stay strings: leading zeros matter.
        convert = pacsv.ConvertOptions(
            column_types={
                "my_number": pa.string(),
                "resident_code": pa.string(),
                "municipality_code": pa.string(),
            }
        )
        reader = pacsv.open_csv(path, convert_options=convert)
        return -1, iter(reader)
    if suffix in (".parquet", ".pq"):
        parquet = pq.ParquetFile(path)
        return parquet.metadata.num_rows, parquet.iter_batches(batch_size=batch_size)
    raise JukiError(f"input {path}: expected a .parquet or .csv file")


def cmd_verify(args: argparse.Namespace) -> int:
    registry = _open(Path(args.registry), args.mmap)
    total, batches = _claim_batches(Path(args.input), args.batch_size)
    started = time.perf_counter()
    writer: pq.ParquetWriter | None = None
    done = found = 0
    with Progress(
        TextColumn("verifying"),
        BarColumn(),
        TextColumn("{task.completed:,} claims"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("verify", total=total if total >= 0 else None, rate="")
        for batch in batches:
            result = registry.verify(batch, by=args.by, first_row=done)
            found += pc.sum(result["found"]).as_py() or 0
            if writer is None:
                writer = pq.ParquetWriter(args.out, result.schema)
            writer.write_table(result)
            done += batch.num_rows
            rate = done / max(time.perf_counter() - started, 1e-9)
            progress.update(task, completed=done, rate=f"{rate / 1e6:.1f} M/s")
    if writer is not None:
        writer.close()
    elapsed = time.perf_counter() - started
    console.print(
        f"verified {done:,} claims in {elapsed:.2f} s: {found:,} found, "
        f"{done - found:,} not found → {args.out}"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if (path / "CURRENT").exists():
        registry = _open(path)
    else:
        registry = _generate(None, TOYAMA, 0)
        registry.save(path)
        console.print(f"saved the demo registry to {path}")
    sample = registry.to_arrow(["my_number", "family_name", "given_name", "birth_date"]).slice(0, 3)
    keys = [*sample["my_number"].to_pylist(), "123456789018", "123456789010"]
    result = registry.lookup(
        keys, columns=["my_number", "family_name", "given_name", "municipality_name", "status"]
    )
    _print_table(result, "sample lookup by My Number (the last two: absent, wrong check digit)")
    claims = pa.table(
        {
            "my_number": keys[:3],
            "family_name": [*sample["family_name"].to_pylist()[:2], "山田"],
            "birth_date": sample["birth_date"],
        }
    )
    _print_table(registry.verify(claims), "sample verification (本人確認): third name is wrong")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from juki_engine import bench

    return bench.main(list(args.bench_args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="juki", description="National resident registry identity verification engine."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="generate a synthetic registry snapshot")
    p.add_argument("--out", required=True, help="snapshot directory to write")
    area = p.add_mutually_exclusive_group()
    area.add_argument("--prefecture", default=TOYAMA, help=f"prefecture (default {TOYAMA})")
    area.add_argument("--nation", action="store_true", help="the whole nation")
    p.add_argument("--population", type=int, help="residents (default: the area's real figure)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("stats", help="card issuance and status statistics of a snapshot")
    p.add_argument("snapshot")
    p.add_argument("--limit", type=int, default=60, help="municipalities to show")
    p.add_argument("--mmap", action="store_true", help="map the snapshot instead of loading it")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("lookup", help="look residents up in a snapshot")
    p.add_argument("snapshot")
    p.add_argument("keys", nargs="+")
    p.add_argument("--by", default="my_number", choices=["my_number", "resident_code"])
    p.add_argument("--columns", nargs="*", help="columns to show (default: all)")
    p.add_argument("--mmap", action="store_true")
    p.set_defaults(func=cmd_lookup)

    p = sub.add_parser("verify", help="bulk verification job: Parquet/CSV in, Parquet out")
    p.add_argument("--registry", required=True, help="snapshot directory")
    p.add_argument("--input", required=True, help="claims (.parquet or .csv)")
    p.add_argument("--out", required=True, help="results (.parquet)")
    p.add_argument("--by", default="my_number", choices=["my_number", "resident_code"])
    p.add_argument("--batch-size", type=int, default=1_000_000)
    p.add_argument("--mmap", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("demo", help="generate the Toyama demo if needed and answer a sample")
    p.add_argument("--path", default=str(DEMO_PATH), help=f"demo snapshot (default {DEMO_PATH})")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="lookup/verify benchmark against DuckDB, Polars, numpy")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # The benchmark owns its options (`juki bench --help` lists them).
        return cmd_bench(argparse.Namespace(bench_args=argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (JukiError, ValueError, OSError) as e:
        console.print(f"[red]error:[/red] {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
