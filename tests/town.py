"""A registry of its own for change tests: change rows of the documented schema, a resident to
change, another municipality, and the next sequence number of each municipality."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa

from juki_engine import Registry
from juki_engine.synthetic.changes import CHANGE_SCHEMA

D = dt.date
TODAY = D(2025, 6, 30)

SCHEMA = CHANGE_SCHEMA


def table(*rows: dict[str, Any]) -> pa.Table:
    """A change table of the documented schema; a row's unnamed columns are null, and a row
    without dates is effective and reported on 2025-03-01."""
    full = [
        {"effective_date": D(2025, 3, 1), "reported_date": D(2025, 3, 1)} | dict(r) for r in rows
    ]
    return pa.Table.from_pylist(full, schema=SCHEMA)


class Town:
    """A registry of its own, with helpers to name residents and municipalities."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.rows = registry.to_arrow().to_pylist()
        self.sequence: dict[str, int] = {}

    def resident(self, i: int = 0, *, status: str = "resident") -> dict[str, Any]:
        """The i-th resident with `status` whose birth date lies before 2025."""
        found = [r for r in self.rows if r["status"] == status and r["birth_date"] < D(2000, 1, 1)]
        return found[i]

    def elsewhere(self, code: str) -> str:
        """Another municipality of the registry."""
        return next(r["municipality_code"] for r in self.rows if r["municipality_code"] != code)

    def next_sequence(self, municipality: str) -> int:
        self.sequence[municipality] = self.sequence.get(municipality, 0) + 1
        return self.sequence[municipality]

    def change(self, reason: str, municipality: str, **fields: Any) -> dict[str, Any]:
        """A change row with the municipality's next sequence number."""
        return {
            "municipality": municipality,
            "sequence": self.next_sequence(municipality),
            "reason": reason,
            **fields,
        }

    def apply(self, *rows: dict[str, Any]) -> list[dict[str, Any]]:
        return self.registry.apply(table(*rows), today=TODAY).to_pylist()

    def now(self, key: str, by: str = "resident_code", **kw: Any) -> dict[str, Any]:
        row: dict[str, Any] = self.registry.lookup([key], by=by, **kw).to_pylist()[0]
        return row


def stranger_to(town: Town, municipality: str) -> str:
    """The resident code of a resident another municipality holds."""
    return next(
        r["resident_code"]
        for r in town.rows
        if r["municipality_code"] != municipality and r["status"] == "resident"
    )
