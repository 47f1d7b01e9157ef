"""Change commands (異動): `changes generate`, a realistic year of what municipalities report,
written as a change file that `Registry.apply` takes (docs/changes.md)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from juki_engine.cli.defaults import DEMO_PATH
from juki_engine.cli.outcomes import EXIT_OK
from juki_engine.cli.output import add_format_option, print_records, spinner
from juki_engine.cli.serving import registry_at
from juki_engine.files import check_writable, output_format, write_table
from juki_engine.synthetic.changes import NATIONAL_VOLUMES, REASON_NAMES, generate_changes


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


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
