"""Tables written to files, in the format the file's extension names.

`.parquet` (Parquet), `.csv` (CSV with a header row), `.arrow` / `.ipc` (the Arrow IPC file
format) and `.arrows` (the Arrow IPC stream format); any other extension is refused rather than
guessed. The CLI refuses to replace an existing file without `--force`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from juki_engine._core import JukiError

FORMATS = {
    ".parquet": "Parquet",
    ".csv": "CSV",
    ".arrow": "Arrow IPC file",
    ".ipc": "Arrow IPC file",
    ".arrows": "Arrow IPC stream",
}
"""Output formats by file extension."""


def output_format(path: str | Path) -> str:
    """The format of an output file, by its extension; anything else is refused."""
    kind = FORMATS.get(Path(path).suffix.lower())
    if kind is None:
        raise JukiError(
            f"{path}: cannot tell the output format from the extension "
            f"(use one of {', '.join(FORMATS)})"
        )
    return kind


def check_writable(path: str | Path, force: bool) -> None:
    """Refuse to replace an existing file or directory unless `force`."""
    if Path(path).exists() and not force:
        raise JukiError(f"{path} exists; pass --force to replace it")


def _plain(schema: pa.Schema) -> pa.Schema:
    """`schema` with dictionary columns as their values' type: CSV has no dictionaries, and an
    Arrow IPC file cannot replace a dictionary between batches (a job's replies do)."""
    return pa.schema(
        [f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in schema]
    )


class TableWriter:
    """Writes tables of one schema to `path`, in the format its extension names."""

    def __init__(self, path: str | Path, schema: pa.Schema) -> None:
        self.path = Path(path)
        self.kind = output_format(path)
        self._schema = schema if self.kind in ("Parquet", "Arrow IPC stream") else _plain(schema)
        self._sink: Any
        if self.kind == "Parquet":
            self._sink = pq.ParquetWriter(self.path, self._schema)
        elif self.kind == "CSV":
            self._sink = pacsv.CSVWriter(self.path, self._schema)
        elif self.kind == "Arrow IPC stream":
            self._sink = pa.ipc.new_stream(self.path, self._schema)
        else:
            self._sink = pa.ipc.new_file(self.path, self._schema)

    def write(self, table: pa.Table) -> None:
        self._sink.write_table(table.cast(self._schema))

    def close(self) -> None:
        self._sink.close()


@contextmanager
def table_writer(path: str | Path, schema: pa.Schema) -> Iterator[TableWriter]:
    writer = TableWriter(path, schema)
    try:
        yield writer
    finally:
        writer.close()


def write_table(table: pa.Table, path: str | Path) -> str:
    """Write `table` to `path` in the format its extension names; returns that format."""
    with table_writer(path, table.schema) as writer:
        writer.write(table)
    return writer.kind
