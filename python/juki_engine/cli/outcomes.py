"""The CLI's side of the outcomes' one vocabulary (docs/outcomes.md): exit statuses and the
summary every job and lookup prints.

Exit statuses, as ripgrep and diff have them:

- 0: the command did what it was asked; every key was a valid identifier (found or not_found);
- 1: it ran to the end, but some rows were `invalid_key` (their reasons in the `error` column);
- 2: it could not run or was refused: a usage mistake, an unreadable input, a refused call.
"""

from __future__ import annotations

import pyarrow as pa
from rich.table import Table

from juki_engine.cli.output import console
from juki_engine.client import JobSummary

EXIT_OK = 0
EXIT_ROWS_REJECTED = 1
EXIT_PROBLEMS_FOUND = 1
"""`juki audit verify`: it checked everything, and something was altered or missing."""
EXIT_ERROR = 2


def row_summary(results: pa.Table) -> JobSummary:
    summary = JobSummary()
    summary.add(results)
    return summary


def exit_status(summary: JobSummary) -> int:
    return EXIT_ROWS_REJECTED if summary.invalid_key else EXIT_OK


def print_summary(summary: JobSummary, out: str) -> None:
    """A job's counts in the vocabulary's words, and where its per-row results are."""
    table = Table(title="job summary")
    table.add_column("outcome")
    table.add_column("records", justify="right")
    table.add_row("claims", f"{summary.records:,}")
    table.add_row("found", f"{summary.found:,}")
    table.add_row("not_found", f"{summary.not_found:,}")
    table.add_row("invalid_key", f"{summary.invalid_key:,}")
    for status, n in sorted(summary.statuses.items()):
        table.add_row(f"status {status}", f"{n:,}")
    for field, n in sorted(summary.mismatches.items()):
        table.add_row(f"{field} differs", f"{n:,}")
    console.print(table)
    where = f"per-row results in {out}"
    if summary.invalid_key:
        where += "; each invalid_key's reason is in its error column"
    console.print(where)
