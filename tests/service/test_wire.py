"""What crosses the wire: hostile Arrow IPC is refused before it is read, echoes are bounded,
and no reply carries a value of a resident it does not answer (dictionaries included). The fuzz
tests here are bounded for CI; benches/fuzz_service.py runs them longer."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from calls import Row, channel, ctx, header, ipc, raw_stream, rpc_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from juki_engine import InvalidInput, Registry, service
from juki_engine._proto import registry_pb2 as pb
from juki_engine._proto import registry_pb2_grpc as pb_grpc
from juki_engine.audit import AuditTrail
from juki_engine.client import BulkJob
from juki_engine.policy import Policy
from juki_engine.service import wire

# Examples per fuzz test: bounded for CI; a longer run sets JUKI_FUZZ_EXAMPLES (BENCHMARKS.md).
FUZZ_EXAMPLES = int(os.environ.get("JUKI_FUZZ_EXAMPLES", "60"))
SENTINEL_NAME = "番兵㊙"
SENTINEL_TOWN = "番兵㊙町"
# The statuses a hostile message may end a call with: never UNKNOWN, INTERNAL or a crash.
CLEAN = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
}


# -- hostile messages -------------------------------------------------------------------------


def test_crafted_offsets_are_refused_before_they_are_read(
    pki: Path, running: service.Server
) -> None:
    keys = pa.array(["12345678901", "23456789012"])
    payload = bytearray(ipc(pa.table({"resident_code": keys})))
    # The offsets buffer [0, 11, 22] follows the validity-less layout; point the last offset far
    # outside the values.
    at = payload.find((22).to_bytes(4, "little"))
    assert at > 0
    payload[at : at + 4] = (1 << 30).to_bytes(4, "little")
    error = raw_stream(pki, running, [header(), pb.VerifyStreamRequest(claims=bytes(payload))])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "message 1" in error.details()
    assert len(error.details()) < 400


def test_views_of_one_huge_string_are_refused_or_echoed_at_most_32_characters(
    pki: Path, running: service.Server
) -> None:
    # 100,000 rows viewing one 4 MiB string: 400 GB if each were read out; refused first.
    keys = one_string_viewed(b"9" * (4 << 20), 100_000)
    with channel(pki, running, "nenkin") as ch:
        job = BulkJob(ch, ctx(), "resident_code")
        error = rpc_error(lambda: list(job.run(pa.table({"resident_code": keys}).to_batches())))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bytes of strings" in error.details()
    # Within the cap, every rejected key is echoed cut short, naming its row.
    keys = one_string_viewed(b"9" * (60 << 10), 1000)
    with channel(pki, running, "nenkin") as ch:
        job = BulkJob(ch, ctx(), "resident_code")
        ((_, results),) = list(job.run(pa.table({"resident_code": keys}).to_batches()))
    errors = results["error"]
    assert errors.null_count == 0
    assert pc.max(pc.utf8_length(errors)).as_py() < 160  # the message, the value cut at 32
    assert "…" in errors[0].as_py() and "row 999" in errors[-1].as_py()


def one_string_viewed(value: bytes, rows: int) -> pa.Array:
    """A string_view array whose every row views the same long value (one data buffer)."""
    views = np.zeros((rows, 4), np.uint32)  # length, prefix, buffer index, offset
    views[:, 0] = len(value)
    views[:, 1] = int.from_bytes(value[:4], "little")
    return pa.Array.from_buffers(
        pa.string_view(), rows, [None, pa.py_buffer(views.tobytes()), pa.py_buffer(value)]
    )


def test_a_message_declaring_a_huge_decoded_size_is_refused(
    pki: Path, running: service.Server
) -> None:
    table = pa.table({"resident_code": ["12345678901"] * 1000})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(
        sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")
    ) as writer:
        writer.write_table(table)
    payload = bytearray(sink.getvalue().to_pybytes())
    # Each compressed buffer starts with its uncompressed length (int64); claim 1 TiB.
    length = (11_000).to_bytes(8, "little")
    at = payload.find(length)
    assert at > 0
    payload[at : at + 8] = (1 << 40).to_bytes(8, "little")
    error = raw_stream(pki, running, [header(), pb.VerifyStreamRequest(claims=bytes(payload))])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bytes" in error.details()


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzzed_messages_end_in_a_clean_status_and_the_server_keeps_serving(
    pki: Path, running: service.Server, small_rows: list[Row], data: st.DataObject
) -> None:
    valid = ipc(
        pa.table(
            {
                "resident_code": [r["resident_code"] for r in small_rows[:50]],
                "family_name": pa.array(
                    [r["family_name"] for r in small_rows[:50]]
                ).dictionary_encode(),
                "birth_date": pa.array([r["birth_date"] for r in small_rows[:50]], pa.date32()),
            }
        )
    )
    kind = data.draw(st.sampled_from(["bytes", "flip", "truncate", "splice"]))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    if kind == "bytes":
        payload = rng.randbytes(rng.randrange(0, 4096))
    elif kind == "truncate":
        payload = valid[: rng.randrange(0, len(valid))]
    else:
        mutated = bytearray(valid)
        for _ in range(rng.randrange(1, 16)):
            at = rng.randrange(len(mutated))
            mutated[at] = rng.randrange(256) if kind == "flip" else 0xFF
        payload = bytes(mutated)
    with channel(pki, running, "nenkin") as ch:
        stub = pb_grpc.BulkVerificationServiceStub(ch)
        try:
            replies = list(
                stub.VerifyStream(
                    iter([header(), pb.VerifyStreamRequest(claims=payload)]), timeout=20
                )
            )
        except grpc.RpcError as e:
            assert e.code() in CLEAN, (e.code(), e.details())
        else:
            assert len(replies) == 1  # a mutation that left a valid message is answered
        # The server answers a valid message after whatever came before.
        good = list(
            stub.VerifyStream(iter([header(), pb.VerifyStreamRequest(claims=valid)]), timeout=20)
        )
        assert len(good) == 1


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    affair=st.text(max_size=200),
    operator=st.text(max_size=200),
    key=st.text(max_size=40),
    name=st.text(max_size=300),
)
def test_fuzzed_typed_requests_end_in_a_clean_status(
    pki: Path, running: service.Server, affair: str, operator: str, key: str, name: str
) -> None:
    request = pb.VerifyRequest(
        context=pb.RequestContext(affair=affair, operator_id=operator, request_id="fuzz"),
        key=pb.Key(resident_code=key),
        claims=pb.Claims(family_name=name),
    )
    with channel(pki, running, "nenkin") as ch:
        try:
            pb_grpc.IdentityVerificationServiceStub(ch).Verify(request, timeout=10)
        except grpc.RpcError as e:
            assert e.code() in CLEAN, (e.code(), e.details())
            assert len(e.details()) < 400


# -- nothing beyond the answered rows ---------------------------------------------------------


@pytest.fixture(scope="module")
def sentinel(small_table: pa.Table) -> tuple[Registry, str]:
    """A registry where exactly one resident holds the sentinel name and town; its code."""
    table = small_table.slice(0, 3000)
    family = table["family_name"].to_pylist()
    town = table["address_town"].to_pylist()
    family[0], town[0] = SENTINEL_NAME, SENTINEL_TOWN
    table = table.set_column(
        table.schema.get_field_index("family_name"), "family_name", pa.array(family)
    )
    table = table.set_column(
        table.schema.get_field_index("address_town"), "address_town", pa.array(town)
    )
    return Registry.from_arrow(table), table["resident_code"][0].as_py()


@pytest.fixture(scope="module")
def sentinel_server(
    sentinel: tuple[Registry, str], pki: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[service.Server]:
    registry, _ = sentinel
    trail = AuditTrail(tmp_path_factory.mktemp("sentinel-audit"))
    srv = service.start(
        service.Frontend(registry, Policy.load(pki / "policy.toml"), trail),
        service.ServerTLS.in_directory(pki),
    )
    try:
        yield srv
    finally:
        srv.stop(grace=1)


def leaked(table: pa.Table) -> bool:
    """Whether the sentinel is anywhere in the table's buffers, dictionaries included."""
    for column in table.columns:
        for chunk in column.chunks:
            arrays = [chunk]
            if pa.types.is_dictionary(chunk.type):
                arrays.append(chunk.dictionary)
            for array in arrays:
                for buffer in array.buffers():
                    if buffer is not None and (
                        SENTINEL_NAME.encode() in buffer.to_pybytes()
                        or SENTINEL_TOWN.encode() in buffer.to_pybytes()
                    ):
                        return True
    return False


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(picks=st.lists(st.integers(1, 2999), min_size=1, max_size=40), include=st.booleans())
def test_no_reply_carries_a_resident_it_does_not_answer(
    sentinel: tuple[Registry, str],
    sentinel_server: service.Server,
    small_table: pa.Table,
    pki: Path,
    picks: list[int],
    include: bool,
) -> None:
    registry, code = sentinel
    codes = registry.to_arrow(["resident_code"])["resident_code"].to_pylist()
    keys = [codes[i] for i in picks] + ([code] if include else [])
    fields = (
        "family_name",
        "family_name_kana",
        "address_town",
        "address_block",
        "municipality_name",
    )
    with channel(pki, sentinel_server, "nenkin") as ch:
        job = BulkJob(ch, ctx(), "resident_code", list(fields))
        parts = [r for _, r in job.run(pa.table({"resident_code": keys}).to_batches())]
        stub = pb_grpc.IdentityVerificationServiceStub(ch)
        typed = stub.Retrieve(
            pb.RetrieveRequest(context=ctx(), key=pb.Key(resident_code=keys[0]), fields=fields),
            timeout=10,
        )
    results = pa.concat_tables(parts)
    assert leaked(results) == include
    assert (SENTINEL_NAME in str(typed)) == (keys[0] == code)
    # The reply's values are exactly those of the residents it answers.
    assert results["family_name"].to_pylist()[: len(picks)] == [
        registry.lookup([k], by="resident_code", columns=["family_name"])["family_name"][0].as_py()
        for k in keys[: len(picks)]
    ]


def test_wire_limits_are_what_the_contract_says() -> None:
    assert wire.MAX_TEXT_CHARS == 128 and wire.ECHO_CHARS == 32
    assert wire.MAX_DECODED_BYTES >= wire.MAX_MESSAGE_BYTES
    with pytest.raises(InvalidInput, match="at most 128"):
        wire.check_text("x" * 129, "context.affair")
    with pytest.raises(InvalidInput, match="control characters"):
        wire.check_text("a\x00b", "context.affair")
