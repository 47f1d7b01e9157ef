"""What crosses the wire: key kinds, message and string limits, and the Arrow IPC of one
message, decoded and validated before anything reads it (protos/juki/v1 is the contract).

The server and its clients share this module: the limits a client keeps are the ones the server
checks.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import pyarrow as pa

from juki_engine._core import Claims, InvalidInput, read_ipc_stream
from juki_engine._proto import registry_pb2 as pb
from juki_engine.registry import Registry

# Clients stream 1–4 MiB messages; anything much larger is refused by grpc itself.
MAX_MESSAGE_BYTES = 8 << 20
# Channel and server options that apply that limit in both directions.
MESSAGE_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
# Rows in one claims message: a bound on the memory one message can make the server allocate.
MAX_BATCH_ROWS = 1 << 20
# Bytes one claims message may decode to (buffers as declared, before any decompression): a
# compressed body cannot make the server allocate more than this.
MAX_DECODED_BYTES = 64 << 20
# Characters of a client-supplied string (affair, operator, request id, field name) the server
# accepts; anything it echoes back is cut shorter still (ECHO_CHARS).
MAX_TEXT_CHARS = 128
ECHO_CHARS = 32

KEY_NAMES = {pb.KEY_KIND_MY_NUMBER: "my_number", pb.KEY_KIND_RESIDENT_CODE: "resident_code"}
KEY_KINDS = {name: kind for kind, name in KEY_NAMES.items()}
MATCH_LEVELS: dict[int, str] = {
    pb.MATCH_LEVEL_UNSPECIFIED: "exact",
    pb.MATCH_LEVEL_EXACT: "exact",
    pb.MATCH_LEVEL_NORMALISED: "normalised",
    pb.MATCH_LEVEL_READING: "reading",
}
"""`MatchLevel` values and the levels `Registry.verify` names them by."""
MATCH_LEVEL_NAMES = {
    "exact": "MATCH_LEVEL_EXACT",
    "normalised": "MATCH_LEVEL_NORMALISED",
    "reading": "MATCH_LEVEL_READING",
}
"""Each level's `MatchLevel` value, by name (as messages take it)."""


def echo(value: object) -> str:
    """A client-supplied value as it may appear in a status or log line: at most ECHO_CHARS
    characters, then "…", in repr form so control characters stay visible."""
    text = value if isinstance(value, str) else str(value)
    cut = text[:ECHO_CHARS] + ("…" if len(text) > ECHO_CHARS else "")
    return repr(cut)


def check_text(value: str, where: str, *, required: bool = True) -> str:
    """A client string within the contract's limits: printable, at most MAX_TEXT_CHARS."""
    if required and not value:
        raise InvalidInput(f"{where} is empty")
    if len(value) > MAX_TEXT_CHARS:
        raise InvalidInput(
            f"{where} is {len(value):,} characters, at most {MAX_TEXT_CHARS}: {echo(value)}"
        )
    if not value.isprintable():
        raise InvalidInput(f"{where} holds control characters: {echo(value)}")
    return value


def match_level(value: int) -> str:
    """The match level a request's `MatchLevel` names; an unknown value is INVALID_ARGUMENT."""
    if value not in MATCH_LEVELS:
        raise InvalidInput(f"match_level {value} is not a MatchLevel (0-3)")
    return MATCH_LEVELS[value]


def _shown_name(name: str) -> str:
    """A client's column name in a message: as it is where it is a short identifier, else cut
    and quoted (`echo`)."""
    return name if name.isidentifier() and len(name) <= ECHO_CHARS else echo(name)


SEARCH_REQUIRED, SEARCH_OPTIONAL = Registry.search_facts()
"""The facts a 4情報 search compares (the core's lists)."""


def check_facts(facts: Sequence[str]) -> None:
    """A search's facts as the contract knows them: every required one, no other. Checked
    before the policy, as field names are."""
    missing = [name for name in SEARCH_REQUIRED if name not in facts]
    if missing:
        raise InvalidInput(f"facts: a 4情報 search needs {', '.join(missing)}")
    unsearched = sorted(set(facts) - {*SEARCH_REQUIRED, *SEARCH_OPTIONAL})
    if unsearched:
        raise InvalidInput(
            f"facts: {', '.join(_shown_name(n) for n in unsearched)} cannot narrow a search "
            f"(it compares {', '.join((*SEARCH_REQUIRED, *SEARCH_OPTIONAL))})"
        )


def check_fields(claimed: Sequence[str], retrieve: Sequence[str]) -> None:
    """Field names the contract knows: claims among the claimable columns, retrieved fields
    among the public schema's. Checked before the policy, so that a typo is INVALID_ARGUMENT
    naming the known names, not a refusal of the agency."""
    known = Registry.column_names()
    for name in retrieve:
        if name not in known:
            raise InvalidInput(f"unknown field {echo(name)}: the fields are {', '.join(known)}")
    claimable = Registry.claimable_columns()
    for name in claimed:
        if name not in claimable:
            raise InvalidInput(
                f"field {echo(name)} cannot be claimed: claims may compare {', '.join(claimable)}"
            )


def write_ipc(table: pa.Table) -> bytes:
    """`table` as one complete Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    payload: bytes = sink.getvalue().to_pybytes()
    return payload


def read_claims(payload: bytes, message: int) -> Claims:
    """One claims message: a complete Arrow IPC stream, decoded in the core after its declared
    rows and sizes are checked, and fully validated; anything else names the message. The
    claims stay in the core's memory (`Registry.verify` takes them as they are)."""
    try:
        return read_ipc_stream(payload, MAX_BATCH_ROWS, MAX_DECODED_BYTES)
    except InvalidInput as e:
        raise InvalidInput(f"message {message}: {e}") from e


def column_of(claims: pa.Table | Claims, name: str) -> pa.ChunkedArray:
    """One column of a claims table, decoded by the core or not."""
    table = claims.to_arrow() if isinstance(claims, Claims) else claims
    return table[name]


class ResultStream:
    """A job's results as one Arrow IPC stream, cut into one part per claims message.

    Each part carries the dictionaries of its own rows only (the core builds them from the
    answered rows), sent as replacement dictionaries where they differ from the previous part's,
    which the stream format allows: nothing of a resident the part does not answer is in it.
    """

    def __init__(self) -> None:
        self._sink = io.BytesIO()
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None

    def part(self, results: pa.Table) -> bytes:
        """The bytes that carry `results` as one record batch (after the schema, if first)."""
        if self._writer is None:
            self._writer = pa.ipc.new_stream(self._sink, results.schema)
        batches = results.combine_chunks().to_batches()
        if batches:
            self._writer.write_batch(batches[0])
        else:
            empty = [pa.array([], type=f.type) for f in results.schema]
            self._writer.write_batch(pa.RecordBatch.from_arrays(empty, schema=results.schema))
        part = self._sink.getvalue()
        self._sink.seek(0)
        self._sink.truncate()
        return part
