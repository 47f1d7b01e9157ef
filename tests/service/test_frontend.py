"""The call discipline: every call ends with one status and one truthful audit record per
subject (or per call); client strings are bounded; quotas are reserved before work and count the
same after a restart; bulk jobs never starve typed calls; a reply waits for its fsync."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pytest
from calls import (
    PENSION,
    Row,
    channel,
    ctx,
    own_server,
    person,
    records,
    rpc_error,
    tiny_quota,
)

from juki_engine import InvalidInput, Registry, audit, service
from juki_engine._proto import registry_pb2 as pb
from juki_engine._proto import registry_pb2_grpc as pb_grpc
from juki_engine.audit import AuditTrail
from juki_engine.client import BulkJob
from juki_engine.policy import Policy
from juki_engine.service import wire


def verify(p: Row, context: pb.RequestContext | None = None) -> pb.VerifyRequest:
    return pb.VerifyRequest(
        context=context or ctx(),
        key=pb.Key(resident_code=p["resident_code"]),
        claims=pb.Claims(family_name=p["family_name"]),
    )


# -- every refusal leaves one truthful record ---------------------------------------------------


@pytest.mark.parametrize(
    ("make", "code", "outcome", "mode"),
    [
        pytest.param(
            lambda p: ("Verify", verify(p, pb.RequestContext(affair=PENSION, request_id="r"))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_request",
            "verify",
            id="empty-operator",
        ),
        pytest.param(
            lambda p: (
                "Retrieve",
                pb.RetrieveRequest(
                    context=ctx("no-such-affair"), key=pb.Key(resident_code=p["resident_code"])
                ),
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            "denied",
            "retrieve",
            id="retrieve-unknown-affair",
        ),
        pytest.param(
            lambda p: ("Verify", pb.VerifyRequest(context=ctx())),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_request",
            "verify",
            id="no-key",
        ),
    ],
)
def test_each_typed_refusal_is_recorded_once_as_it_was(
    pki: Path,
    running: service.Server,
    small_rows: list[Row],
    make: Any,
    code: grpc.StatusCode,
    outcome: str,
    mode: str,
) -> None:
    method, request = make(person(small_rows))
    request_id = request.context.request_id or "r"
    with channel(pki, running, "nenkin") as ch:
        stub = pb_grpc.IdentityVerificationServiceStub(ch)
        error = rpc_error(lambda: getattr(stub, method)(request, timeout=10))
    assert error.code() == code
    (record,) = records(running, request_id).to_pylist()
    assert (record["agency"], record["outcome"], record["mode"]) == ("nenkin", outcome, mode)
    assert record["reason"] == error.details()


def test_a_bulk_job_without_its_key_column_is_recorded(pki: Path, running: service.Server) -> None:
    context = ctx()
    claims = pa.table({"family_name": ["佐藤"]})
    with channel(pki, running, "nenkin") as ch:
        job = BulkJob(ch, context, "resident_code")
        error = rpc_error(lambda: list(job.run(claims.to_batches())))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no 'resident_code' column" in error.details()
    (record,) = records(running, context.request_id).to_pylist()
    assert record["outcome"] == "invalid_request" and record["subject"] is None


def test_an_unexpected_error_is_internal_with_an_id_in_the_log_and_the_record(
    pki: Path,
    running: service.Server,
    small_rows: list[Row],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a fault deep inside")

    monkeypatch.setattr(Registry, "verify_one", broken)
    request = verify(person(small_rows))
    with caplog.at_level(logging.ERROR, "juki.server"), channel(pki, running, "nenkin") as ch:
        error = rpc_error(
            lambda: pb_grpc.IdentityVerificationServiceStub(ch).Verify(request, timeout=10)
        )
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details().startswith("internal error ")
    assert "fault deep inside" not in error.details()  # no traceback or message leaks
    error_id = error.details().split()[-1]
    assert any(error_id in r.getMessage() for r in caplog.records)
    (record,) = records(running, request.context.request_id).to_pylist()
    assert (record["outcome"], record["reason"]) == ("failed", error.details())


def test_client_strings_are_bounded(
    pki: Path, running: service.Server, small_rows: list[Row]
) -> None:
    huge = "事" * 100_000
    request = verify(
        person(small_rows), pb.RequestContext(affair=huge, operator_id="o", request_id="big")
    )
    with channel(pki, running, "nenkin") as ch:
        error = rpc_error(
            lambda: pb_grpc.IdentityVerificationServiceStub(ch).Verify(request, timeout=10)
        )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "context.affair" in error.details() and len(error.details()) < 200
    (record,) = records(running, "big").to_pylist()
    assert record["outcome"] == "invalid_request"
    assert len(record["affair"]) <= wire.MAX_TEXT_CHARS + 1


def test_echo_is_cut_at_32_characters() -> None:
    assert wire.echo("x" * 40) == repr("x" * 32 + "…")
    assert wire.echo("short") == "'short'"


# -- quotas -----------------------------------------------------------------------------------


def used_today(pki: Path, srv: service.Server) -> int:
    with channel(pki, srv, "nenkin") as ch:
        reply = pb_grpc.IdentityVerificationServiceStub(ch).ListAffairs(
            pb.ListAffairsRequest(), timeout=10
        )
    (affair,) = reply.affairs
    return int(affair.used_today)


def test_quota_counts_answers_alike_live_and_after_a_restart(
    pki: Path, small: Registry, small_rows: list[Row], tmp_path: Path
) -> None:
    trail = tmp_path / "audit"

    def start() -> service.Server:
        frontend = service.Frontend.open(small, pki / "policy.toml", trail)
        frontend.policy = tiny_quota(pki, 10)
        return service.start(frontend, service.ServerTLS.in_directory(pki))

    srv = start()
    try:
        found = [r["resident_code"] for r in small_rows[:3]]
        keys = [*found, "00000000000", "not a code"]  # 3 disclosed, not found, invalid key
        with channel(pki, srv, "nenkin") as ch:
            job = BulkJob(ch, ctx("tiny"), "resident_code")
            assert (
                sum(r.num_rows for _, r in job.run(pa.table({"resident_code": keys}).to_batches()))
                == 5
            )
            # A refused job (a field the affair does not grant) costs nothing.
            refused = BulkJob(ch, ctx("tiny"), "resident_code", ["birth_date"])
            rpc_error(lambda: list(refused.run(pa.table({"resident_code": keys}).to_batches())))
            # Past the quota: refused before any work, nothing disclosed.
            over = BulkJob(ch, ctx("tiny"), "resident_code")
            error = rpc_error(
                lambda: list(over.run(pa.table({"resident_code": keys + keys}).to_batches()))
            )
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (
            records(srv, over.context.request_id)["outcome"].to_pylist() == ["quota_exhausted"] * 10
        )
        assert used_today(pki, srv) == 5
    finally:
        srv.stop(grace=1)
    srv = start()
    try:
        assert used_today(pki, srv) == 5
    finally:
        srv.stop(grace=1)


# -- availability -----------------------------------------------------------------------------


def test_bulk_jobs_past_the_limit_are_refused_and_typed_calls_still_answer(
    pki: Path, small: Registry, small_rows: list[Row], tmp_path: Path
) -> None:
    srv = own_server(small, pki, tmp_path / "a", workers=1, max_bulk_jobs=1)
    release = threading.Event()

    def held() -> Iterator[pb.VerifyStreamRequest]:
        yield pb.VerifyStreamRequest(
            header=pb.VerifyStreamHeader(context=ctx(), key=pb.KEY_KIND_RESIDENT_CODE)
        )
        release.wait(20)

    try:
        with channel(pki, srv, "nenkin") as ch:
            bulk = pb_grpc.BulkVerificationServiceStub(ch)
            holding = bulk.VerifyStream(held(), timeout=30)
            deadline = time.monotonic() + 10
            while srv.bulk.slots.running < 1:  # the first job holds its slot once it is read
                assert time.monotonic() < deadline and not holding.done()
                time.sleep(0.01)
            second = pb.VerifyStreamRequest(
                header=pb.VerifyStreamHeader(context=ctx(), key=pb.KEY_KIND_RESIDENT_CODE)
            )
            error = rpc_error(lambda: list(bulk.VerifyStream(iter([second]), timeout=10)))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "bulk jobs" in error.details()
            stub = pb_grpc.IdentityVerificationServiceStub(ch)
            for _ in range(3):
                assert stub.Verify(verify(person(small_rows)), timeout=10).found
            release.set()
            assert list(holding) == []
    finally:
        release.set()
        srv.stop(grace=1)


def test_a_reply_waits_for_its_fsync_and_a_stalled_disk_answers_unavailable(
    pki: Path,
    small: Registry,
    small_rows: list[Row],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    srv = own_server(small, pki, tmp_path / "a", audit_timeout=1.0)
    disk = threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        assert disk.wait(30)
        real_fsync(fd)

    try:
        with channel(pki, srv, "nenkin") as ch, futures.ThreadPoolExecutor(2) as pool:
            stub = pb_grpc.IdentityVerificationServiceStub(ch)
            assert stub.Verify(verify(person(small_rows)), timeout=10).found  # segment open
            monkeypatch.setattr(os, "fsync", slow_fsync)
            first = pool.submit(stub.Verify, verify(person(small_rows)), timeout=10)
            time.sleep(0.5)
            assert not first.done()  # the reply waits for the fsync
            second = verify(person(small_rows))
            error = rpc_error(lambda: stub.Verify(second, timeout=10))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            disk.set()
            with pytest.raises(grpc.RpcError):  # it timed out too: a stalled disk discloses nothing
                first.result()
    finally:
        disk.set()
        monkeypatch.undo()
        srv.stop(grace=1)
    # The reply that did not leave is not recorded as a disclosure.
    logged = audit.read(tmp_path / "a").to_pylist()
    (withdrawn,) = [r for r in logged if r["request_id"] == second.context.request_id]
    assert withdrawn["outcome"] == "unavailable"


def test_a_second_server_cannot_take_a_port_in_use(
    pki: Path, running: service.Server, small: Registry, tmp_path: Path
) -> None:
    frontend = service.Frontend(small, Policy.load(pki / "policy.toml"), AuditTrail(tmp_path / "b"))
    with pytest.raises(InvalidInput, match="in use"):
        service.start(frontend, service.ServerTLS.in_directory(pki), f"127.0.0.1:{running.port}")
    frontend.audit.close()


def test_a_bulk_job_whose_fsync_fails_discloses_nothing(
    pki: Path,
    small: Registry,
    small_rows: list[Row],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fault is injected in the fsync itself: a writer that skipped it would answer."""
    srv = own_server(small, pki, tmp_path / "a")

    def disk_gone(fd: int) -> None:
        raise OSError(5, "Input/output error")

    try:
        monkeypatch.setattr(os, "fsync", disk_gone)
        received = []
        claims = pa.table({"resident_code": [r["resident_code"] for r in small_rows[:1000]]})
        with channel(pki, srv, "nenkin") as ch:
            job = BulkJob(ch, ctx(), "resident_code", ["family_name"])
            with pytest.raises(grpc.RpcError) as failed:
                for _, results in job.run(claims.to_batches(max_chunksize=100)):
                    received.append(results)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert received == []
    finally:
        monkeypatch.undo()
        srv.stop(grace=1)
