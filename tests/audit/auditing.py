"""Shared helpers of the audit trail's tests: a context, subjects, the segments of a trail, and a
clock the test sets."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from juki_engine.audit import AuditContext

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Well before the real now, so segments' real mtimes never precede their records' times.
T0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)


BASE = AuditContext(
    agency="JPN-PENSION",
    operator="op-17",
    request_id="req-1",
    affair="77",
    mode="verify+retrieve",
    fields=("family_name", "birth_date"),
)


def context(**changes: Any) -> AuditContext:
    return dataclasses.replace(BASE, **changes)


def residents(count: int, first: int = 0) -> pa.Array:
    return pa.array([f"{first + i:011d}" for i in range(count)], pa.string())


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("audit-*.arrows"))


class Clock:
    """The trail's clock, set by the test."""

    def __init__(self) -> None:
        self.now = T0

    def micros(self) -> int:
        return (self.now - EPOCH) // timedelta(microseconds=1)


def legacy_segment(directory: Path, name: str, version: int) -> Path:
    """A one-record segment as format `version` (1: no reason; 2: no person) wrote it, unchained."""
    from juki_engine.audit import records

    old = records.STORED_SCHEMA_V1 if version == 1 else records.STORED_SCHEMA_V2
    columns = [
        pa.array([0], records.TIME),
        *(
            pa.DictionaryArray.from_arrays(pa.array([0], pa.int32()), pa.array([value]))
            for value in ("A", "op", "r", "77", "verify", "")
        ),
        pa.array(["00000000001"]),
        pa.DictionaryArray.from_arrays(pa.array([0], pa.int8()), pa.array(["disclosed"])),
    ]
    if version == 2:
        columns.append(
            pa.DictionaryArray.from_arrays(pa.nulls(1, pa.int32()), pa.array([], pa.string()))
        )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, old) as writer:
        writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=old))
    return path
