"""An agency's subscription (protos/juki/v1/changes.proto, `SubscriptionService`): register the
residents to watch, read their changes, acknowledge them."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pyarrow as pa

from juki_engine._proto import changes_pb2 as cpb
from juki_engine._proto import changes_pb2_grpc as cpb_grpc
from juki_engine.client.bulk import request_context, split_messages
from juki_engine.service.wire import KEY_KINDS, MAX_BATCH_ROWS, write_ipc


def watch(
    channel: grpc.Channel,
    affair: str,
    keys: pa.Array | pa.ChunkedArray | list[str],
    by: str = "my_number",
    *,
    operator: str = "subscriber",
    remove: bool = False,
    timeout: float | None = None,
) -> cpb.WatchResponse:
    """Add `keys` (identifiers of `by`) to the affair's watch list, or remove them; the keys go
    in messages of about 2 MiB (a 40-million list is some 300)."""
    column = keys if isinstance(keys, pa.Array | pa.ChunkedArray) else pa.array(keys, pa.string())
    table = pa.table({by: column})

    def requests() -> Iterator[cpb.WatchRequest]:
        header = cpb.WatchHeader(
            context=request_context(affair, operator), key=KEY_KINDS[by], remove=remove
        )
        yield cpb.WatchRequest(header=header)
        for batch in split_messages(table.to_batches(max_chunksize=MAX_BATCH_ROWS)):
            yield cpb.WatchRequest(keys=write_ipc(pa.Table.from_batches([batch])))

    reply: cpb.WatchResponse = cpb_grpc.SubscriptionServiceStub(channel).Watch(
        requests(), timeout=timeout
    )
    return reply


def stream_changes(
    channel: grpc.Channel,
    affair: str,
    *,
    operator: str = "subscriber",
    after: int | None = None,
    follow: bool = False,
    timeout: float | None = None,
) -> Iterator[cpb.StreamChangesResponse]:
    """The changes of the watched residents, oldest first: after `after` (0: from the first),
    or after the last one acknowledged; with `follow`, new ones as they are recorded."""
    request = cpb.StreamChangesRequest(
        context=request_context(affair, operator), after=after, follow=follow
    )
    yield from cpb_grpc.SubscriptionServiceStub(channel).StreamChanges(request, timeout=timeout)


def acknowledge_changes(
    channel: grpc.Channel, affair: str, through: int, *, operator: str = "subscriber"
) -> int:
    """Acknowledge every change up to `through`; returns the number acknowledged now."""
    request = cpb.AcknowledgeChangesRequest(
        context=request_context(affair, operator), through=through
    )
    reply = cpb_grpc.SubscriptionServiceStub(channel).AcknowledgeChanges(request, timeout=30)
    return int(reply.acknowledged)
