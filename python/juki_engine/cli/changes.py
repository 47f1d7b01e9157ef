"""Change commands (異動): `changes generate`, a realistic year of what municipalities report,
written as a change file that `Registry.apply` takes (docs/changes.md); `apply`, which applies a
change file to a snapshot (durable in its change log); `history`, a resident's changes."""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from juki_engine import JukiError, Registry
from juki_engine.cli.defaults import DEMO_PATH
from juki_engine.cli.outcomes import EXIT_OK, EXIT_ROWS_REJECTED
from juki_engine.cli.output import add_format_option, console, print_records, spinner
from juki_engine.cli.registry import KEY_KINDS, open_snapshot
from juki_engine.cli.serving import registry_at
from juki_engine.distributed import ShardedRegistry
from juki_engine.distributed.shards import MANIFEST
from juki_engine.files import check_writable, output_format, write_table
from juki_engine.synthetic.changes import (
    CHANGE_SCHEMA,
    NATIONAL_VOLUMES,
    REASON_NAMES,
    generate_changes,
)


def summary(table: pa.Table) -> pa.Table:
    """Changes per reason, in REASON_NAMES order, beside the year's national figure, and the
    total."""
    counted = pc.value_counts(table["reason"]).to_pylist()
    counts = {c["values"]: c["counts"] for c in counted}
    national = {**NATIONAL_VOLUMES, "move_in": NATIONAL_VOLUMES["move_out"]}
    rows = [
        {
            "reason": reason,
            "異動事由": name,
            "changes": counts.get(reason, 0),
            "nation": national[reason],
        }
        for reason, name in REASON_NAMES.items()
    ]
    total = {
        "reason": "total",
        "異動事由": "",
        "changes": table.num_rows,
        "nation": sum(national.values()),
    }
    return pa.Table.from_pylist([*rows, total])


def cmd_generate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    output_format(out)
    check_writable(out, args.force)
    snapshot = Path(args.registry)
    registry = registry_at(snapshot, snapshot == DEMO_PATH)
    area = args.prefecture or "the registry"
    with spinner(f"drawing the changes of {args.year} in {area} (seed {args.seed})") as progress:
        progress.add_task("changes")
        started = time.perf_counter()
        table = generate_changes(registry, args.year, prefecture=args.prefecture, seed=args.seed)
        drawn = time.perf_counter() - started
    with spinner(f"writing {out}") as progress:
        progress.add_task("write")
        kind = write_table(table, out)
    print_records(
        summary(table),
        f"changes (異動) of {args.year} in {area}",
        args.format,
        f"{table.num_rows:,} changes drawn in {drawn:.1f} s, written to {out} ({kind}); "
        "nation: a year's figure for 128,066,211 residents",
    )
    return EXIT_OK


def change_batches(path: Path, size: int) -> tuple[int, Iterator[pa.RecordBatch]]:
    """A change file's rows (Parquet or CSV, by extension) and its batches of `size` rows; CSV
    columns are read as the change record's types."""
    kind = output_format(path)
    if not path.is_file():
        raise JukiError(f"change file {path} does not exist")
    if kind == "Parquet":
        file = pq.ParquetFile(path)
        return file.metadata.num_rows, file.iter_batches(batch_size=size)
    if kind != "CSV":
        raise JukiError(f"change file {path}: read Parquet (.parquet) or CSV (.csv), not {kind}")
    table = pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types={f.name: f.type for f in CHANGE_SCHEMA}, strings_can_be_null=True
        ),
    )
    return table.num_rows, iter(table.to_batches(max_chunksize=size))


def _error_kind(error: str) -> str:
    """An error message without its row, dates and identifiers: what kind of error it is."""
    text = error.split(": ", 1)[-1]
    return re.sub(r"\d{4}-\d{2}-\d{2}|\d{5,}", "…", text)


class ChangeTally:
    """Per reason, how many changes were applied, duplicate or rejected, and the rejections by
    kind of error: what `juki apply` and `juki submit` print."""

    def __init__(self) -> None:
        self.outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()

    def add(self, reasons: list[str], results: pa.Table) -> None:
        for reason, outcome, error in zip(
            reasons, results["outcome"].to_pylist(), results["error"].to_pylist(), strict=True
        ):
            self.outcomes[(str(reason), outcome)] += 1
            if outcome == "rejected" and error:
                self.errors[_error_kind(error)] += 1

    def print(self, title: str, footer: str, args: argparse.Namespace) -> int:
        """Print the tallies; the exit status (rows rejected: 1)."""
        table = pa.Table.from_pylist(
            [
                {
                    "reason": r,
                    **{o: self.outcomes[(r, o)] for o in ("applied", "duplicate", "rejected")},
                }
                for r in sorted({r for r, _ in self.outcomes})
            ]
        )
        print_records(table, title, args.format, footer)
        if self.errors:
            print_records(
                pa.Table.from_pylist(
                    [{"error": e, "rows": n} for e, n in self.errors.most_common(args.errors)]
                ),
                "rejected rows, by error",
                args.format,
            )
        return EXIT_ROWS_REJECTED if self.errors else EXIT_OK


def progress_bar() -> Progress:
    columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*Progress.get_default_columns()[:1], *columns, console=console)


def cmd_apply(args: argparse.Namespace) -> int:
    snapshot = Path(args.snapshot)
    registry: Registry | ShardedRegistry
    if (snapshot / MANIFEST).is_file():  # a shard directory: each change to its shard
        registry = ShardedRegistry.start(snapshot, address=args.ray)
        logs = f"each shard's change log under {snapshot}"
    else:
        registry = open_snapshot(snapshot)
        logs = str(snapshot / "changes.log")
    rows, batches = change_batches(Path(args.changes), args.batch_size)
    today = dt.date.fromisoformat(args.today) if args.today else None
    tally = ChangeTally()
    started = time.perf_counter()
    with progress_bar() as progress:
        task = progress.add_task(f"applying {args.changes}", total=rows)
        for batch in batches:
            result = registry.apply(pa.Table.from_batches([batch]), today=today)
            tally.add(batch.column("reason").to_pylist(), result)
            progress.advance(task, batch.num_rows)
    elapsed = time.perf_counter() - started
    if isinstance(registry, ShardedRegistry):
        registry.stop()
    return tally.print(
        f"changes applied to {snapshot}",
        f"{rows:,} changes in {elapsed:.1f} s ({rows / max(elapsed, 1e-9):,.0f}/s), durable in "
        f"{logs}",
        args,
    )


def cmd_history(args: argparse.Namespace) -> int:
    registry = open_snapshot(Path(args.snapshot))
    found = registry.history(list(args.keys), by=args.by)
    rows = [
        {
            args.by: r[args.by],
            "reason": r["reason"],
            "effective": r["effective_date"],
            "reported": r["reported_date"],
            "by": f"{r['municipality']} #{r['sequence']}",
            "cancelled": r["cancelled"],
            "changes": "; ".join(
                f"{c['field']}: {c['old'] or '–'} → {c['new'] or '–'}" for c in r["changes"]
            ),
        }
        for r in found.to_pylist()
    ]
    shown = pa.Table.from_pylist(rows) if rows else pa.table({args.by: pa.array([], pa.string())})
    print_records(shown, f"history by {args.by}", args.format, f"{len(rows)} changes")
    return EXIT_OK


def cmd_checkpoint(args: argparse.Namespace) -> int:
    snapshot = Path(args.snapshot)
    registry: Registry | ShardedRegistry
    if (snapshot / MANIFEST).is_file():  # a shard directory: each shard, every replica's log
        registry = ShardedRegistry.start(snapshot, address=args.ray, replicas=args.replicas)
    else:
        registry = open_snapshot(snapshot)
    pending = registry.applied_changes
    with spinner(f"writing a snapshot of {snapshot} with {pending:,} changes folded in") as p:
        p.add_task("checkpoint")
        started = time.perf_counter()
        try:
            entries = registry.checkpoint()
        finally:
            if isinstance(registry, ShardedRegistry):
                registry.stop()
    console.print(
        f"checkpoint: {snapshot} now holds {pending:,} more changes ({entries:,} history "
        f"entries) in {time.perf_counter() - started:.1f} s; its change logs are empty"
    )
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser(
        "apply",
        help="apply a change file (異動) to a snapshot or its shards: durable in a change log",
        description="Applies the changes of a Parquet or CSV file (docs/changes.md) in batches; "
        "each batch is durable in the snapshot's change log (a shard directory's: each shard's, "
        "docs/sharding.md) before the next. Prints a summary "
        "per reason and per error; a change already applied (same municipality and sequence) "
        "is a duplicate and changes nothing.",
    )
    a.add_argument("snapshot", help="snapshot directory, or a shard directory (juki shard)")
    a.add_argument("changes", help="change file (.parquet or .csv)")
    a.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="for a shard directory: the Ray cluster its actors run on (default: a local one)",
    )
    a.add_argument("--batch-size", type=int, default=10_000, help="changes per batch")
    a.add_argument("--today", help="the date no effective or reported date may pass (ISO)")
    a.add_argument("--errors", type=int, default=10, help="how many kinds of error to list")
    add_format_option(a)
    a.set_defaults(func=cmd_apply)
    h = sub.add_parser(
        "history",
        help="a resident's changes, oldest first, with old and new values",
    )
    h.add_argument("snapshot", help="snapshot directory")
    h.add_argument("keys", nargs="+", help="identifiers (current or former)")
    h.add_argument("--by", default="my_number", choices=KEY_KINDS)
    add_format_option(h)
    h.set_defaults(func=cmd_history)
    c = sub.add_parser(
        "checkpoint",
        help="fold a snapshot's change log into a new snapshot (history kept), empty the log",
    )
    c.add_argument("snapshot", help="snapshot directory, or a shard directory (juki shard)")
    c.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="for a shard directory: the Ray cluster its actors run on (default: a local one)",
    )
    c.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="for a shard directory: the replicas a shard is served with (their logs are "
        "brought in step, then emptied)",
    )
    c.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser("changes", help="changes (異動): generate a year of them")
    changes_sub = p.add_subparsers(dest="changes_command", required=True)
    g = changes_sub.add_parser(
        "generate",
        help="a realistic year of changes to a registry, deterministic from a seed",
        description="Births, deaths, moves, name changes, card applications and issuances … "
        "at a year's national rates scaled to the registry (or the prefecture), as a change "
        "file of docs/changes.md in the order they would be applied.",
    )
    g.add_argument(
        "registry",
        nargs="?",
        default=str(DEMO_PATH),
        help=f"snapshot directory (default: the Toyama demo {DEMO_PATH}, generated if missing)",
    )
    g.add_argument("--year", type=int, required=True, help="the year of the changes, e.g. 2017")
    g.add_argument("--prefecture", help="only this prefecture's residents, e.g. 富山県")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", required=True, help="change file to write (.parquet, .csv …)")
    g.add_argument("--force", action="store_true", help="replace --out if it exists")
    add_format_option(g)
    g.set_defaults(func=cmd_generate)
