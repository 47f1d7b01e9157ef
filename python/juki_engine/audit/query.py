"""Reading the trail: records by subject, person, agency, affair and time; one resident's
history; what quotas count. Records come from the store (compacted days and months) and from the
segments of the days not compacted yet; a day is read from one or the other, never both.

A read lists the store once and takes each day from where that listing says it is. A compaction
running beside it may move a day into the store, or merge days into a month, while it reads: a
file the read listed then vanishes, and the read starts again from a new listing (`Vanished`),
so it never counts a day twice nor misses one."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from juki_engine.audit.records import ANSWERED, DAY_US, SCHEMA, TIME, AuditUnavailable, micros
from juki_engine.audit.segments import list_segments, read_segment
from juki_engine.audit.store import (
    Period,
    Vanished,
    days_of,
    period_records,
    periods,
    person_records,
)
from juki_engine.audit.writer import OPERATORS

T = TypeVar("T")
# Reads started again because a compaction moved files under them, before giving up.
_ATTEMPTS = 5


def _consistent(read: Callable[[list[Period]], T], directory: Path) -> T:
    """`read` given a listing of the store, again from a new listing while files vanish."""
    for attempt in range(_ATTEMPTS):
        try:
            return read(periods(directory))
        except Vanished:
            if attempt + 1 == _ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _batches(
    directory: Path, listed: list[Period], since_us: int | None, until_us: int | None
) -> Iterator[pa.RecordBatch]:
    """The stored batches of segments that may hold records in [since, until), of the days
    `listed` does not hold: the server's, then those of operators' actions outside it
    (`OPERATORS`)."""
    try:
        stored = days_of(listed)
        trails = [[s for s in list_segments(directory) if s.start_us // DAY_US not in stored]]
        if (directory / OPERATORS).is_dir():
            trails.append(list_segments(directory / OPERATORS))
    except OSError as error:
        raise AuditUnavailable(f"cannot list the audit trail in {directory}: {error}") from error
    for segments in trails:
        for index, segment in enumerate(segments):
            # Skip a segment only if both bounds on its last record (its mtime, the next
            # segment's first record) say so: a missed audit record is worse than a slower read.
            if since_us is not None and index + 1 < len(segments):
                if max(segment.mtime_us, segments[index + 1].start_us) < since_us:
                    continue
            if until_us is not None and segment.start_us >= until_us:
                continue
            batches = read_segment(segment.path)
            if not batches and not segment.path.exists() and segments is trails[0]:
                # Expired by retention, or compacted into the store since the listing.
                raise Vanished(f"{segment.path} was removed while it was read")
            yield from batches


def _and(mask: pa.Array | None, other: pa.Array) -> pa.Array:
    return other if mask is None else pc.and_(mask, other)


def _matching(
    batch: pa.RecordBatch,
    *,
    subject: str | None = None,
    person: int | None = None,
    agency: str | None = None,
    affair: str | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
) -> pa.RecordBatch | None:
    """The batch's rows that pass every given filter; None if there are none."""
    mask: pa.Array | None = None
    for name, wanted in (("agency", agency), ("affair", affair)):
        if wanted is None:
            continue
        column = batch.column(name)
        values = column.dictionary.to_pylist()
        if wanted not in values:
            return None
        if len(values) > 1 or column.null_count:  # else one entry settles the whole batch
            codes = [code for code, value in enumerate(values) if value == wanted]
            mask = _and(mask, pc.is_in(column.indices, pa.array(codes, column.indices.type)))
    if since_us is not None or until_us is not None:
        times = batch.column("time").view(pa.int64())
        bounds = pc.min_max(times).as_py()
        low = since_us if since_us is not None else bounds["min"]
        high = until_us if until_us is not None else bounds["max"] + 1
        if bounds["max"] < low or bounds["min"] >= high:
            return None
        if bounds["min"] < low or bounds["max"] >= high:
            mask = _and(mask, pc.and_(pc.greater_equal(times, low), pc.less(times, high)))
    if subject is not None:
        mask = _and(mask, pc.equal(batch.column("subject"), subject))
    if person is not None:
        mask = _and(mask, pc.equal(batch.column("person"), pa.scalar(person, pa.uint32())))
    if mask is None:
        return batch
    selected = batch.filter(mask)
    return selected if selected.num_rows else None


def _plain(column: pa.Array) -> pa.Array:
    return column.dictionary_decode() if pa.types.is_dictionary(column.type) else column


def read(
    directory: str | os.PathLike[str],
    *,
    subject: str | None = None,
    person: int | None = None,
    agency: str | None = None,
    affair: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """All records that match every given filter, in time order, as a table of `SCHEMA`.

    `since` is inclusive and `until` exclusive; a naive datetime is taken as UTC. `columns`
    selects and orders the columns returned (filters may use columns not returned). Reading while
    a trail writes is safe: records still being written are left out.
    """
    names = list(SCHEMA.names if columns is None else columns)
    for name in names:
        if name not in SCHEMA.names:
            raise ValueError(f"unknown audit column {name!r}; the columns are {SCHEMA.names}")
    schema = pa.schema([SCHEMA.field(name) for name in names])
    since_us = None if since is None else micros(since)
    until_us = None if until is None else micros(until)
    expression = _expression(subject, person, agency, affair, since_us, until_us)
    filters = {"subject": subject, "person": person, "agency": agency, "affair": affair}

    def once(listed: list[Period]) -> pa.Table:
        return _read_once(
            Path(directory), listed, names, schema, filters, expression, since_us, until_us
        )

    return _consistent(once, Path(directory))


def _read_once(
    directory: Path,
    listed: list[Period],
    names: list[str],
    schema: pa.Schema,
    filters: dict[str, Any],
    expression: pc.Expression | None,
    since_us: int | None,
    until_us: int | None,
) -> pa.Table:
    pieces, times = [], []
    in_order, latest = True, None
    for batch in _batches(directory, listed, since_us, until_us):
        rows = _matching(batch, **filters, since_us=since_us, until_us=until_us)
        if rows is None:
            continue
        stamps = rows.column("time").view(pa.int64()).to_numpy()
        # Our batches come in time order, each in time order; only damage would break that.
        in_order &= (latest is None or latest <= stamps[0]) and bool(
            np.all(stamps[1:] >= stamps[:-1])
        )
        latest = stamps[-1] if latest is None else max(latest, int(stamps.max()))
        times.append(rows.column("time"))
        pieces.append(
            pa.RecordBatch.from_arrays([_plain(rows.column(name)) for name in names], schema=schema)
        )
    for part in _stored(listed, expression, filters["person"], since_us, until_us):
        if part.num_rows:
            in_order = False
            times.append(part["time"].combine_chunks())
            pieces.extend(part.select(names).to_batches())
    table = pa.Table.from_batches(pieces, schema=schema)
    if not in_order:
        # A stable sort: records of one time keep their file order.
        table = table.take(pc.sort_indices(pa.chunked_array(times, type=TIME)))
    return table


def _stored(
    listed: list[Period],
    expression: pc.Expression | None,
    person: int | None,
    since_us: int | None,
    until_us: int | None,
) -> Iterator[pa.Table]:
    """The store's records matching `expression`: a person's from their bucket only."""
    if person is not None:
        parts = person_records(listed, person, since_us, until_us)
    else:
        parts = period_records(listed, since_us, until_us)
    for part in parts:
        yield part if expression is None else part.filter(expression)


def _expression(
    subject: str | None,
    person: int | None,
    agency: str | None,
    affair: str | None,
    since_us: int | None,
    until_us: int | None,
) -> pc.Expression | None:
    terms = [
        pc.field(name) == value
        for name, value in (
            ("subject", subject),
            ("agency", agency),
            ("affair", affair),
        )
        if value is not None
    ]
    if person is not None:
        terms.append(pc.field("person") == pa.scalar(person, pa.uint32()))
    if since_us is not None:
        terms.append(pc.field("time") >= pa.scalar(since_us, pa.int64()).cast(TIME))
    if until_us is not None:
        terms.append(pc.field("time") < pa.scalar(until_us, pa.int64()).cast(TIME))
    if not terms:
        return None
    expression = terms[0]
    for term in terms[1:]:
        expression = expression & term
    return expression


def history(
    directory: str | os.PathLike[str],
    person: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> pa.Table:
    """One person's records, newest first (the residents' view): every record keyed on their
    person id, whatever resident code it was made under."""
    table = read(directory, person=person, since=since, until=until)
    return table.take(pa.array(np.arange(table.num_rows - 1, -1, -1)))


def counts_since(directory: str | os.PathLike[str], since: datetime) -> dict[tuple[str, str], int]:
    """{(agency, affair): records answered since `since`} (outcomes in `ANSWERED`): what the
    server's daily quotas count, live and when restored from the trail after a restart."""
    since_us = micros(since)
    return _consistent(
        lambda listed: _counts_once(Path(directory), listed, since_us), Path(directory)
    )


def _counts_once(
    directory: Path, listed: list[Period], since_us: int
) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for batch in _batches(directory, listed, since_us, None):
        rows = _matching(batch, since_us=since_us)
        if rows is None:
            continue
        outcome = rows.column("outcome")
        values = outcome.dictionary.to_pylist()
        answered = [code for code, value in enumerate(values) if value in ANSWERED]
        if not answered:
            continue
        mask = pc.is_in(outcome.indices, pa.array(answered, outcome.indices.type))
        agency, affair = rows.column("agency"), rows.column("affair")
        if len(agency.dictionary) == 1 and len(affair.dictionary) == 1:
            count = int(pc.sum(mask).as_py() or 0)
            if count:
                key = (agency.dictionary[0].as_py(), affair.dictionary[0].as_py())
                counts[key] = counts.get(key, 0) + count
            continue
        table = pa.table({"agency": _plain(agency), "affair": _plain(affair)}).filter(mask)
        _count(table, counts)
    answered = pc.field("outcome").isin(list(ANSWERED))
    since_expression = _expression(None, None, None, None, since_us, None)
    assert since_expression is not None
    for part in _stored(listed, since_expression & answered, None, since_us, None):
        _count(part.select(["agency", "affair"]), counts)
    return counts


def _count(table: pa.Table, counts: dict[tuple[str, str], int]) -> None:
    groups = table.group_by(["agency", "affair"]).aggregate([([], "count_all")])
    for group in groups.to_pylist():
        key = (group["agency"], group["affair"])
        counts[key] = counts.get(key, 0) + group["count_all"]
