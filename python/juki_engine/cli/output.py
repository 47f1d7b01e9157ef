"""How the CLI shows things: readable at 80 columns by default, machine output on request.

Every command that prints records takes `--format table|json|csv`. `table` (the default) is a
table where every value fits the terminal, and otherwise one block per record, `column: value`
a line, so no value is ever cut; `json` is one array of objects; `csv` has a header row. Files a
command writes take their format from their extension (`juki_engine.files`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import sys
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
from rich.cells import cell_len
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(highlight=False)
"""Human output (tables, summaries, progress): stdout."""

FORMATS = ("table", "json", "csv")


def add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table (default: readable at any width), json (an array of objects) or csv",
    )


def spinner(what: str) -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn(what), TimeElapsedColumn(), console=console, transient=True
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def _fits(rows: list[list[str]], names: list[str], width: int) -> bool:
    """Whether a table of these cells fits `width` columns without cutting any (rich's table
    takes 3 columns a cell for its borders and padding, and one more at the edge)."""
    widest = [max([cell_len(n), *(cell_len(r[i]) for r in rows)]) for i, n in enumerate(names)]
    return sum(w + 3 for w in widest) + 1 <= width


def print_records(table: pa.Table, title: str, fmt: str = "table", note: str = "") -> None:
    """`table` as `fmt`: a table when it fits the terminal, else one block per record; JSON;
    CSV. The title and note go with the human format only (machine output stays parseable)."""
    if fmt == "json":
        rows = table.to_pylist()
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, default=_text, indent=1) + "\n")
        return
    if fmt == "csv":
        sink = io.BytesIO()
        pacsv.write_csv(table, sink)
        sys.stdout.write(sink.getvalue().decode())
        return
    names = table.column_names
    records = table.to_pylist()
    rows = [[_text(v) for v in row.values()] for row in records]
    if _fits(rows, names, console.width):
        out = Table(title=title)
        for name in names:
            out.add_column(name, no_wrap=True)
        for row in rows:
            out.add_row(*row)
        console.print(out)
    else:
        console.print(f"[bold]{title}[/bold] (one block per record; null fields left out)")
        for i, (record, row) in enumerate(zip(records, rows, strict=True), 1):
            console.rule(f"record {i}", align="left")
            block = Table.grid(padding=(0, 2))
            block.add_column(justify="right", no_wrap=True)
            block.add_column(overflow="fold")  # a long value wraps under itself, never cut
            for name, value in zip(names, row, strict=True):
                if record[name] is not None:
                    block.add_row(name, value)
            console.print(block)
    if note:
        console.print(note)
