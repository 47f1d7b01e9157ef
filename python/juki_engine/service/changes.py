"""`ChangeSubmissionService`: a municipality streams change records (typed, or Arrow IPC change
tables for bulk loads) and gets one result per record, sent once the changes are durable in the
registry's change log and their audit records are on disk.

The municipality is its client certificate; every record is submitted under its code (a table
row naming another municipality is refused, per row, and never reaches the registry). What a
municipality may change is the registry's rule (only residents it holds; a move-in only against
a pending move-out), which this service does not bypass: it forwards, the core decides.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from juki_engine._core import Claims, InvalidInput
from juki_engine._proto import changes_pb2 as cpb
from juki_engine._proto import changes_pb2_grpc as cpb_grpc
from juki_engine._proto import registry_pb2 as pb
from juki_engine.audit import AuditContext
from juki_engine.policy import Municipality
from juki_engine.service.bulk import JobSlots
from juki_engine.service.frontend import Call, Frontend, settle, until_cancelled
from juki_engine.service.wire import check_text, read_claims
from juki_engine.synthetic.changes import CHANGE_SCHEMA

# Records in one typed message: as many as a table message may hold rows is far more than a
# municipality sends at once; the bound keeps one message's work small.
MAX_TYPED_CHANGES = 10_000
# Sequence numbers the registry takes (0 ≤ n < 2^43).
_MAX_SEQUENCE = 1 << 43

REASONS: dict[int, str] = {
    value: name.removeprefix("CHANGE_REASON_").lower()
    for name, value in cpb.ChangeReason.items()
    if value != cpb.CHANGE_REASON_UNSPECIFIED
}
"""`ChangeReason` values and the reasons of the change table (docs/changes.md)."""
OUTCOMES = {
    "applied": cpb.CHANGE_OUTCOME_APPLIED,
    "duplicate": cpb.CHANGE_OUTCOME_DUPLICATE,
    "rejected": cpb.CHANGE_OUTCOME_REJECTED,
}
REFUSALS = {
    "invalid": cpb.REFUSAL_INVALID,
    "not_found": cpb.REFUSAL_NOT_FOUND,
    "not_permitted": cpb.REFUSAL_NOT_PERMITTED,
    "conflict": cpb.REFUSAL_CONFLICT,
}
_TEXT = (
    "family_name",
    "family_name_kana",
    "given_name",
    "given_name_kana",
    "address_town",
    "address_block",
    "moving_to",
)


# Submission streams one server takes at once; each holds a server thread for its life.
MAX_SUBMISSIONS = 4


class ChangeSubmissionService(cpb_grpc.ChangeSubmissionServiceServicer):
    def __init__(self, frontend: Frontend, max_streams: int = MAX_SUBMISSIONS) -> None:
        self.frontend = frontend
        self.slots = JobSlots(max_streams)

    def SubmitChanges(
        self,
        request_iterator: Iterator[cpb.SubmitChangesRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[cpb.SubmitChangesResponse]:
        f = self.frontend
        call = Call("submit")
        with f.guard(context, call), self.slots.held():
            messages = until_cancelled(request_iterator)
            first = next(messages, None)
            header = first.header if first is not None else cpb.SubmitChangesHeader()
            call.request = pb.RequestContext(
                operator_id=header.operator_id, request_id=header.request_id
            )
            f.identify_municipality(context, call)
            if first is None or first.WhichOneof("body") != "header":
                raise InvalidInput("message 0: a submission starts with a SubmitChangesHeader")
            check_text(header.operator_id, "header.operator_id")
            check_text(header.request_id, "header.request_id")
            row = 0
            for i, message in enumerate(messages, start=1):
                # Every message under the policy and trust in force when it arrives.
                municipality = f.municipality_of(call)
                body = message.WhichOneof("body")
                if body == "changes":
                    table, refused = typed_table(message.changes.changes, municipality, row)
                elif body == "table":
                    table, refused = bulk_table(read_claims(message.table, i), municipality, row)
                else:
                    raise InvalidInput(f"message {i}: a submission's later messages hold changes")
                yield self._submit(municipality, header, table, refused, row)
                row += table.num_rows

    def _submit(
        self,
        municipality: Municipality,
        header: cpb.SubmitChangesHeader,
        table: pa.Table,
        refused: dict[int, tuple[str, str]],
        first_row: int,
    ) -> cpb.SubmitChangesResponse:
        """Apply one message's changes (durable when `apply` returns), audit them, then answer.
        Rows in `refused` were refused here: their municipality is null, so the registry
        rejects them without remembering their sequence; their result says why."""
        f = self.frontend
        out = f.registry.apply(table, first_row=first_row)
        with f.changed:
            f.changed.notify_all()
        outcomes = out["outcome"].to_pylist()
        codes = out["code"].to_pylist()
        errors = out["error"].to_pylist()
        for i, (refusal, error) in refused.items():
            outcomes[i], codes[i], errors[i] = "rejected", refusal, error
        subjects = self._subjects(table, out, refused)
        # One audit append per (reason, outcome, refusal): the reason is the record's affair.
        groups: dict[tuple[str, str, str | None], list[int]] = {}
        for i, key in enumerate(zip(table["reason"].to_pylist(), outcomes, codes, strict=True)):
            groups.setdefault(key, []).append(i)
        commits = []
        for (reason, outcome, code), rows in groups.items():
            ctx = AuditContext(
                municipality.code,
                header.operator_id,
                header.request_id,
                str(reason or "unspecified"),
                "submit",
                (),
            )
            commits.append(f.audited(ctx, subjects.take(rows), outcome, code))
        for commit in commits:
            settle(f.audit, commit, f.audit_timeout)
        codes_out = out["resident_code"].to_pylist()
        numbers_out = out["my_number"].to_pylist()
        results = []
        for i, outcome in enumerate(outcomes):
            result = cpb.ChangeResult(row=first_row + i, outcome=OUTCOMES[outcome])
            if codes[i] is not None:
                result.refusal = REFUSALS[codes[i]]
                result.error = errors[i] or ""
            if outcome != "rejected" and codes_out[i] is not None:
                result.resident_code = codes_out[i]
                result.my_number = numbers_out[i]
            results.append(result)
        return cpb.SubmitChangesResponse(results=results)

    def _subjects(
        self, table: pa.Table, out: pa.Table, refused: dict[int, tuple[str, str]]
    ) -> pa.Array:
        """Whom each record was about: the resident's code after the change, or, for a
        rejected row, the resident its key names (never the My Number itself); null where none."""
        subjects = out["resident_code"].combine_chunks()
        missing = subjects.is_null()
        if not pc.any(missing).as_py():
            return subjects
        found = subjects
        for by in ("resident_code", "my_number"):
            if by not in table.column_names:
                continue
            keys = table[by].combine_chunks()
            named = self.frontend.subjects_of(by, pc.if_else(missing, keys, None))
            found = pc.coalesce(found, named)
        mask = np.zeros(len(found), dtype=bool)
        mask[list(refused)] = True
        # A row refused here names another municipality's change: no lookup on its behalf.
        return pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), found)


def typed_table(
    changes: Any, municipality: Municipality, first_row: int
) -> tuple[pa.Table, dict[int, tuple[str, str]]]:
    """Typed change records as a change table under the caller's municipality, and the rows
    refused here (a value that cannot be a column's): {row: (refusal code, error)}."""
    if len(changes) > MAX_TYPED_CHANGES:
        raise InvalidInput(
            f"{len(changes):,} changes in one message, at most {MAX_TYPED_CHANGES:,}"
        )
    rows: list[dict[str, Any]] = []
    refused: dict[int, tuple[str, str]] = {}
    for i, c in enumerate(changes):
        try:
            rows.append(_typed_row(c, municipality.code))
        except ValueError as e:
            refused[i] = ("invalid", f"row {first_row + i}: {e}")
            # A placeholder the registry rejects without remembering: no municipality.
            reason = REASONS.get(c.reason, "unspecified")
            rows.append({"municipality": None, "sequence": 0, "reason": reason})
    return pa.Table.from_pylist(rows, schema=CHANGE_SCHEMA), refused


def _typed_row(c: cpb.Change, municipality: str) -> dict[str, Any]:
    if c.sequence >= _MAX_SEQUENCE:
        raise ValueError(f"sequence {c.sequence} is outside 0..2^43")
    row: dict[str, Any] = {
        "municipality": municipality,
        "sequence": c.sequence,
        "reason": REASONS.get(c.reason),
        "effective_date": _date(c.effective_date, "effective_date"),
        "reported_date": _date(c.reported_date, "reported_date"),
    }
    if row["reason"] is None:
        raise ValueError(f"reason {c.reason} is not a ChangeReason")
    key = c.key.WhichOneof("value")
    if key is not None:
        row[key] = getattr(c.key, key)
    for name in _TEXT:
        if c.HasField(name):
            row[name] = getattr(c, name)
    if c.HasField("birth_date"):
        row["birth_date"] = _date(c.birth_date, "birth_date")
    if c.HasField("sex"):
        if c.sex not in (pb.SEX_MALE, pb.SEX_FEMALE):
            raise ValueError(f"sex {c.sex} is not SEX_MALE or SEX_FEMALE")
        row["sex"] = int(c.sex)
    if c.HasField("cancels"):
        if c.cancels >= _MAX_SEQUENCE:
            raise ValueError(f"cancels {c.cancels} is outside 0..2^43")
        row["cancels"] = c.cancels
    return row


def _date(text: str, name: str) -> dt.date | None:
    if not text:
        return None
    try:
        if len(text) != 10:
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} {text[:32]!r} is not a date (YYYY-MM-DD)") from None


def bulk_table(
    claims: Claims, municipality: Municipality, first_row: int
) -> tuple[pa.Table, dict[int, tuple[str, str]]]:
    """A change table from the wire (decoded and validated by the core) under the caller's
    municipality: a missing or null `municipality` is the caller's; a row naming another is
    refused here, its municipality nulled so the registry neither applies nor remembers it."""
    table = claims.to_arrow()
    caller = pa.scalar(municipality.code, pa.string())
    if "municipality" not in table.column_names:
        column = pa.array([municipality.code] * table.num_rows, pa.string())
        return table.append_column("municipality", column), {}
    named = table["municipality"].combine_chunks()
    if not pa.types.is_string(named.type):
        named = named.cast(pa.string())
    foreign = pc.fill_null(pc.not_equal(named, caller), False)
    refused = {
        int(i): (
            "not_permitted",
            f"row {first_row + int(i)}: municipality {str(named[int(i)].as_py())[:16]!r} is "
            f"not the caller's ({municipality.code}): a municipality submits its own changes",
        )
        for i in np.flatnonzero(foreign.to_numpy(zero_copy_only=False))
    }
    fixed = pc.if_else(foreign, pa.scalar(None, pa.string()), pc.fill_null(named, caller))
    i = table.schema.get_field_index("municipality")
    return table.set_column(i, pa.field("municipality", pa.string()), fixed), refused
