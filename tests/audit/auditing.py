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
