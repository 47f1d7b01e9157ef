"""What one audit record holds: its outcomes and modes, its schema on disk and as read, and how
appended records become one record batch.

Columns a batch shares (agency, operator, …) are one-entry dictionaries, so a million-record batch
stores each once; the stream writer re-sends a dictionary only when it differs from the previous
batch's (a replacement dictionary, which the stream format allows and pyarrow and Polars read;
Polars cannot read run-end encoded columns, the other compact choice).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from juki_engine._core import JukiError
from juki_engine.names import LEVELS

if TYPE_CHECKING:
    from juki_engine.audit.writer import Commit

OUTCOMES = (
    "disclosed",
    "not_found",
    "invalid_key",
    "denied",
    "quota_exhausted",
    "invalid_request",
    "unavailable",
    "failed",
    "applied",
    "duplicate",
    "rejected",
    "redelivered",
)
"""What happened to one record of a request: disclosed, or why not. `disclosed`, `not_found` and
`invalid_key` are answers (the reply says so, row by row); `denied` (policy or identity),
`quota_exhausted`, `invalid_request` (the request itself is malformed), `unavailable` (the
server could not answer safely: its audit trail or capacity) and `failed` (an internal error,
its id in `reason`) are refusals of the whole call. A municipality's submitted change is
`applied`, `duplicate` or `rejected` (its refusal code in `reason`). A change sent again to a
subscription that did not acknowledge it is `redelivered`: disclosed again, but not an answer
the daily quota counts a second time."""
ANSWERED = ("disclosed", "not_found", "invalid_key")
"""The outcomes of records the server answered: what daily quotas count."""
# Characters of a refusal's reason kept in its record.
REASON_CHARS = 256
MODES = (
    "verify",
    "retrieve",
    "verify+retrieve",
    "search",
    "list_affairs",
    "submit",
    "notice",
    "acknowledge",
    "watch",
    "subscribe",
    "checkpoint",
    "reload",
    "certify",
    "query",
    "export",
    "resident",
)
"""What the caller asked for: verify claims (照合), retrieve fields (提供), both, a 4情報 search
(its candidates' fields disclosed as a retrieve's), or the list of
its affairs (recorded only when refused: it discloses nothing of a resident). Verify above the
exact match level is recorded with its level: `verify@normalised`, `verify+retrieve@reading`.
A municipality submits changes (`submit`, the change's reason as the affair), is sent move-in
notices (`notice`, a disclosure of the resident who moved) and acknowledges them
(`acknowledge`, recorded only when refused). An agency registers a watch list (`watch`, one
record per call) and is sent its residents' changes (`subscribe`, one record per change).
Operators' own actions are recorded too (agency `operator`, the operator id naming who): a
signed checkpoint of the trail (`checkpoint`), a policy reload (`reload`), a certificate issued
(`certify`), an audit query or export (`query`, `export`). A resident reading their own record
or access history through the residents' service is `resident`."""

TIME = pa.timestamp("us", tz="UTC")
_CONTEXT_COLUMNS = ("agency", "operator", "request_id", "affair", "mode", "fields")
STORED_SCHEMA = pa.schema(
    [
        ("time", TIME),
        *((name, pa.dictionary(pa.int32(), pa.string())) for name in _CONTEXT_COLUMNS),
        ("subject", pa.string()),
        ("person", pa.uint32()),
        ("outcome", pa.dictionary(pa.int8(), pa.string())),
        ("reason", pa.dictionary(pa.int32(), pa.string())),
    ],
    metadata={"juki_engine.audit": "3"},
)
"""A record as stored. `subject` is the resident code the record concerned when it was made;
`person` the registry's immutable person id (null where no resident was found): what a
resident's history follows through a new resident code or My Number."""
# Segments written before records carried a person id (version 2), or a reason (version 1):
# read with null ones. A version-2 record's resident can still be found by its subject.
STORED_SCHEMA_V2 = pa.schema(
    STORED_SCHEMA.remove(STORED_SCHEMA.get_field_index("person")),
    metadata={"juki_engine.audit": "2"},
)
STORED_SCHEMA_V1 = pa.schema(
    STORED_SCHEMA_V2.remove(STORED_SCHEMA_V2.get_field_index("reason")),
    metadata={"juki_engine.audit": "1"},
)
SCHEMA = pa.schema(
    [
        (name, {"time": TIME, "person": pa.uint32()}.get(name, pa.string()))
        for name in STORED_SCHEMA.names
    ]
)
"""The schema `read` returns (plain string columns; `fields` is comma-joined)."""

# One dictionary for every batch: codes are positions in OUTCOMES.
_OUTCOME_VALUES = pa.array(OUTCOMES, pa.string())
_OUTCOME_CODES = pa.array(range(len(OUTCOMES)), pa.int8())
OPERATOR = "operator"
"""The agency column of records of operators' own actions (checkpoints, policy reloads,
certificate issuance, audit queries): the operator id names who."""
RESIDENT = "resident"
"""The agency column of a resident's reads of their own record and history."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_US = 86_400_000_000


class AuditUnavailable(JukiError):
    """The audit trail cannot record: nothing may be disclosed."""


def clock() -> int:
    """Now, in microseconds since the epoch (UTC); tests replace it to move through time."""
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class AuditContext:
    """What every record of one request batch shares."""

    agency: str
    """Agency code, from its client certificate (never from the request)."""
    operator: str
    """Operator id, as the client gives it."""
    request_id: str
    affair: str
    """Affair (事務) code, e.g. the 住基法 別表 entry the agency acts under."""
    mode: str
    """One of `MODES`, with `@<level>` where claims were verified above the exact match level
    (`verify@normalised`)."""
    fields: tuple[str, ...]
    """Fields disclosed: the claimed fields verified and the fields retrieved."""

    def __post_init__(self) -> None:
        mode, _, level = self.mode.partition("@")
        if mode not in MODES or (level and level not in LEVELS[1:]):
            raise ValueError(
                f"audit mode must be one of {MODES}, with @normalised or @reading above the "
                f"exact match level, not {self.mode!r}"
            )
        for field in self.fields:
            if "," in field:
                # Stored comma-joined: a comma inside a name would split it on reading.
                raise ValueError(f"audit field names cannot contain ',': {field!r}")


@dataclass(slots=True)
class Entry:
    """One append waiting for the writer."""

    time_us: int
    context: AuditContext
    subjects: pa.Array
    outcomes: pa.Array | int  # int8 codes into OUTCOMES, or one code for every row
    commit: Commit
    reason: str | None
    persons: pa.Array | None  # uint32 person ids, one per subject; None: unknown for all
    appended: float = 0.0  # time.monotonic() at append: what commit latency is measured from


def subject_array(subjects: Any) -> pa.Array:
    if isinstance(subjects, pa.ChunkedArray):
        subjects = subjects.combine_chunks()
    if not isinstance(subjects, pa.Array):
        raise ValueError(f"subjects must be a pyarrow string array, not {type(subjects).__name__}")
    if pa.types.is_string(subjects.type):
        return subjects
    if pa.types.is_large_string(subjects.type) or pa.types.is_string_view(subjects.type):
        return subjects.cast(pa.string())
    if pa.types.is_null(subjects.type):
        return pa.nulls(len(subjects), pa.string())
    raise ValueError(f"subjects must be resident codes as strings, not {subjects.type}")


def person_array(persons: Any, rows: int) -> pa.Array | None:
    """`persons` as uint32 person ids, one per subject (None: unknown for every record)."""
    if persons is None:
        return None
    if isinstance(persons, pa.ChunkedArray):
        persons = persons.combine_chunks()
    if not isinstance(persons, pa.Array) or not (
        pa.types.is_integer(persons.type) or pa.types.is_null(persons.type)
    ):
        raise ValueError(f"persons must be a pyarrow array of person ids, not {persons!r:.80}")
    if len(persons) != rows:
        raise ValueError(f"persons has {len(persons)} rows but subjects has {rows}")
    try:
        return persons.cast(pa.uint32())  # checked: a negative or too large id raises
    except pa.ArrowInvalid as error:
        raise ValueError(f"persons must be person ids (0 to 2^32-1): {error}") from None


def outcome_codes(outcomes: Any, rows: int) -> pa.Array | int:
    """Check `outcomes` against OUTCOMES; give int8 codes into OUTCOMES (or one code for all)."""
    if isinstance(outcomes, str):
        if outcomes not in OUTCOMES:
            raise ValueError(f"unknown audit outcome {outcomes!r}; expected one of {OUTCOMES}")
        return OUTCOMES.index(outcomes)
    if isinstance(outcomes, pa.ChunkedArray):
        outcomes = outcomes.combine_chunks()
    if not isinstance(outcomes, pa.Array):
        raise ValueError(
            f"outcomes must be a str or a pyarrow array, not {type(outcomes).__name__}"
        )
    if len(outcomes) != rows:
        raise ValueError(f"outcomes has {len(outcomes)} rows but subjects has {rows}")
    if outcomes.null_count:
        raise ValueError(f"audit outcome missing (null) at row {_first(outcomes.is_null())}")
    if pa.types.is_dictionary(outcomes.type):
        values, indices = outcomes.dictionary, outcomes.indices
    else:
        values, indices = outcomes, None
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise ValueError(f"outcomes must be strings from {OUTCOMES}, not {outcomes.type}")
    mapping = pc.index_in(values, value_set=_OUTCOME_VALUES)
    if mapping.null_count:
        unknown = mapping.is_null()
        if indices is not None:  # a dictionary may carry values no row uses
            unknown = pc.is_in(indices, value_set=pc.indices_nonzero(unknown).cast(indices.type))
        if pc.any(unknown).as_py():
            row = _first(unknown)
            bad = values[row if indices is None else indices[row].as_py()]
            raise ValueError(f"unknown audit outcome {bad.as_py()!r}; expected one of {OUTCOMES}")
    codes = mapping.cast(pa.int8())
    if indices is None:
        return codes
    if indices.type == pa.int8() and codes.equals(_OUTCOME_CODES[: len(codes)]):
        return indices  # already our dictionary's codes: no copy
    return pc.take(codes, indices)


def _first(mask: pa.Array) -> int:
    return int(pc.index(mask, True).as_py())


def record_batch(entries: list[Entry]) -> pa.RecordBatch:
    """One record batch of the entries' records; single-valued columns share zero indices."""
    lengths = np.array([len(entry.subjects) for entry in entries])
    rows = int(lengths.sum())
    zeros: pa.Array | None = None

    def label(values: list[str]) -> pa.DictionaryArray:
        nonlocal zeros
        unique = list(dict.fromkeys(values))
        if len(unique) == 1:
            if zeros is None:
                zeros = pa.array(np.zeros(rows, np.int32))
            indices = zeros
        else:
            position = {value: index for index, value in enumerate(unique)}
            codes = np.array([position[value] for value in values], np.int32)
            indices = pa.array(np.repeat(codes, lengths))
        return pa.DictionaryArray.from_arrays(indices, pa.array(unique, pa.string()), safe=False)

    def reasons() -> pa.DictionaryArray:
        values = [entry.reason for entry in entries]
        if all(value is None for value in values):
            return pa.DictionaryArray.from_arrays(
                pa.nulls(rows, pa.int32()), pa.array([], pa.string())
            )
        unique = list(dict.fromkeys(v for v in values if v is not None))
        position = {value: index for index, value in enumerate(unique)}
        per_entry = [-1 if v is None else position[v] for v in values]
        codes = pa.array(np.repeat(per_entry, lengths), pa.int32())
        indices = pc.if_else(pc.equal(codes, -1), pa.scalar(None, pa.int32()), codes)
        return pa.DictionaryArray.from_arrays(indices, pa.array(unique, pa.string()))

    contexts = [entry.context for entry in entries]
    times = np.repeat(np.array([entry.time_us for entry in entries], np.int64), lengths)
    if len(entries) == 1:
        subjects = entries[0].subjects
    else:
        subjects = pa.concat_arrays([entry.subjects for entry in entries])
    if all(entry.persons is None for entry in entries):
        persons = pa.nulls(rows, pa.uint32())
    else:
        persons = pa.concat_arrays(
            [
                pa.nulls(len(entry.subjects), pa.uint32())
                if entry.persons is None
                else entry.persons
                for entry in entries
            ]
        )
    outcomes = [entry.outcomes for entry in entries]
    if len(outcomes) == 1 and isinstance(outcomes[0], pa.Array):
        codes = outcomes[0]
    else:
        codes = pa.array(
            np.concatenate(
                [
                    np.full(length, code, np.int8) if isinstance(code, int) else code.to_numpy()
                    for code, length in zip(outcomes, lengths, strict=True)
                ]
            )
        )
    return pa.RecordBatch.from_arrays(
        [
            pa.Array.from_buffers(TIME, rows, [None, pa.py_buffer(times)]),
            label([context.agency for context in contexts]),
            label([context.operator for context in contexts]),
            label([context.request_id for context in contexts]),
            label([context.affair for context in contexts]),
            label([context.mode for context in contexts]),
            label([",".join(context.fields) for context in contexts]),
            subjects,
            persons,
            pa.DictionaryArray.from_arrays(codes, _OUTCOME_VALUES, safe=False),
            reasons(),
        ],
        schema=STORED_SCHEMA,
    )


def micros(moment: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)
