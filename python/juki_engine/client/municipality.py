"""The municipality side of the change flow (protos/juki/v1/changes.proto): submit changes,
read the move-in notices owed, acknowledge them. The municipality is its client certificate
(`AgencyTLS.from_cert` takes it as it takes an agency's)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import grpc
import pyarrow as pa

from juki_engine._proto import changes_pb2 as cpb
from juki_engine._proto import changes_pb2_grpc as cpb_grpc
from juki_engine.client.bulk import split_messages
from juki_engine.service.wire import write_ipc

# Change table rows per message: well inside the server's message limit at ~200 bytes a row.
CHANGE_ROWS_PER_MESSAGE = 10_000

_OUTCOMES = {
    cpb.CHANGE_OUTCOME_APPLIED: "applied",
    cpb.CHANGE_OUTCOME_DUPLICATE: "duplicate",
    cpb.CHANGE_OUTCOME_REJECTED: "rejected",
}
_REFUSALS = {
    cpb.REFUSAL_INVALID: "invalid",
    cpb.REFUSAL_NOT_FOUND: "not_found",
    cpb.REFUSAL_NOT_PERMITTED: "not_permitted",
    cpb.REFUSAL_CONFLICT: "conflict",
}
RESULT_SCHEMA = pa.schema(
    [
        ("row", pa.uint64()),
        ("outcome", pa.string()),
        ("code", pa.string()),
        ("error", pa.string()),
        ("resident_code", pa.string()),
        ("my_number", pa.string()),
    ]
)
"""`submit_changes`'s results: the same columns as `Registry.apply`'s, after the row number."""


def change_requests(
    changes: pa.Table | Iterable[cpb.Change],
    operator: str,
    request_id: str | None = None,
    rows_per_message: int = CHANGE_ROWS_PER_MESSAGE,
) -> Iterator[cpb.SubmitChangesRequest]:
    """A submission's messages: the header, then the changes — a change table as Arrow IPC
    messages of `rows_per_message` rows, typed records in messages of as many."""
    header = cpb.SubmitChangesHeader(
        operator_id=operator, request_id=request_id or str(uuid.uuid4())
    )
    yield cpb.SubmitChangesRequest(header=header)
    if isinstance(changes, pa.Table):
        for batch in split_messages(changes.to_batches(max_chunksize=rows_per_message)):
            yield cpb.SubmitChangesRequest(table=write_ipc(pa.Table.from_batches([batch])))
        return
    chunk: list[cpb.Change] = []
    for change in changes:
        chunk.append(change)
        if len(chunk) == rows_per_message:
            yield cpb.SubmitChangesRequest(changes=cpb.Changes(changes=chunk))
            chunk = []
    if chunk:
        yield cpb.SubmitChangesRequest(changes=cpb.Changes(changes=chunk))


def submit_changes(
    channel: grpc.Channel,
    changes: pa.Table | Iterable[cpb.Change],
    operator: str,
    request_id: str | None = None,
    *,
    rows_per_message: int = CHANGE_ROWS_PER_MESSAGE,
    timeout: float | None = None,
) -> pa.Table:
    """Submit changes as the channel's municipality; one result row per change, in order
    (`RESULT_SCHEMA`). Each result arrived only once its change was durable: resending the same
    changes after a failure gives `duplicate` where they had been applied."""
    stub = cpb_grpc.ChangeSubmissionServiceStub(channel)
    requests = change_requests(changes, operator, request_id, rows_per_message)
    rows = [
        result_row(r)
        for reply in stub.SubmitChanges(requests, timeout=timeout)
        for r in reply.results
    ]
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


def result_row(r: cpb.ChangeResult) -> dict[str, Any]:
    return {
        "row": r.row,
        "outcome": _OUTCOMES.get(r.outcome, "unspecified"),
        "code": _REFUSALS.get(r.refusal),
        "error": r.error or None,
        "resident_code": r.resident_code if r.HasField("resident_code") else None,
        "my_number": r.my_number if r.HasField("my_number") else None,
    }


def read_notices(
    channel: grpc.Channel,
    operator: str,
    *,
    after: int | None = None,
    follow: bool = False,
    timeout: float | None = None,
) -> Iterator[cpb.StreamNoticesResponse]:
    """The move-in notices owed to the channel's municipality, oldest first: after `after` (0:
    from the first), or after the last one acknowledged; with `follow`, new ones as they are
    recorded."""
    stub = cpb_grpc.NoticeServiceStub(channel)
    request = cpb.StreamNoticesRequest(operator_id=operator, after=after, follow=follow)
    yield from stub.StreamNotices(request, timeout=timeout)


def acknowledge_notices(channel: grpc.Channel, through: int, timeout: float = 30) -> int:
    """Acknowledge every notice up to `through` (none of them is sent again); returns the
    number acknowledged now."""
    stub = cpb_grpc.NoticeServiceStub(channel)
    reply = stub.AcknowledgeNotices(cpb.AcknowledgeNoticesRequest(through=through), timeout=timeout)
    return int(reply.acknowledged)


def notices_table(messages: Iterable[cpb.StreamNoticesResponse]) -> pa.Table:
    """Notice messages as a table: what `juki notices` prints and writes."""
    return pa.Table.from_pylist(
        [
            {
                "notice": m.notice,
                "kind": m.kind,
                "resident_code": m.resident.resident_code,
                "family_name": m.resident.family_name,
                "given_name": m.resident.given_name,
                "birth_date": m.resident.birth_date,
                "from_address": f"{m.from_address_town} {m.from_address_block}",
                "to_municipality": f"{m.to_municipality_code} {m.to_municipality_name}",
                "to_address": f"{m.to_address_town} {m.to_address_block}",
                "effective_date": m.effective_date,
                "recorded_at": m.recorded_at,
            }
            for m in messages
        ],
        schema=pa.schema(
            [
                ("notice", pa.uint64()),
                *(
                    (name, pa.string())
                    for name in (
                        "kind",
                        "resident_code",
                        "family_name",
                        "given_name",
                        "birth_date",
                        "from_address",
                        "to_municipality",
                        "to_address",
                        "effective_date",
                        "recorded_at",
                    )
                ),
            ]
        ),
    )
