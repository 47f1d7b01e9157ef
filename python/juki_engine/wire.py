"""What the gRPC server and its clients share about the wire: key kinds, message limits and the
Arrow IPC encoding of one message (protos/juki/v1 is the contract itself)."""

from __future__ import annotations

import pyarrow as pa

from juki_engine._proto import registry_pb2 as pb

# Clients stream 1–4 MiB messages; anything much larger is refused by grpc itself.
MAX_MESSAGE_BYTES = 8 << 20
# Channel and server options that apply that limit in both directions.
MESSAGE_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]

KEY_NAMES = {pb.MY_NUMBER: "my_number", pb.RESIDENT_CODE: "resident_code"}
KEY_KINDS = {name: kind for kind, name in KEY_NAMES.items()}


def write_ipc(table: pa.Table) -> bytes:
    """`table` as one complete Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    payload: bytes = sink.getvalue().to_pybytes()
    return payload
