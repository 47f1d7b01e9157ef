"""The gRPC front end, end to end: a real server on a loopback port with real mutual TLS."""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import reference as ref
from calls import (
    PENSION,
    STRANGER,
    Row,
    channel,
    claims_of,
    ctx,
    demo_ca,
    header,
    ipc,
    juki_serve,
    own_server,
    person,
    raw_stream,
    records,
    rpc_error,
    tiny_quota,
    wait_for_port,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import juki_engine as juki
from juki_engine import Registry, audit, certs, service
from juki_engine._proto import registry_pb2 as pb
from juki_engine._proto import registry_pb2_grpc as pb_grpc
from juki_engine.client import (
    AgencyTLS,
    BulkJob,
    claim_batches,
    split_messages,
)
from juki_engine.policy import CLAIMABLE, Policy, example_path
from juki_engine.service import wire

# The typed per-record API -------------------------------------------------------------------


def test_verify_by_resident_code(pki: Path, running: service.Server, small_rows: list[Row]) -> None:
    p = person(small_rows)
    request = pb.VerifyRequest(
        context=ctx(),
        key=pb.Key(resident_code=p["resident_code"]),
        claims=pb.Claims(
            family_name=p["family_name"],
            given_name="違う名前",
            birth_date=p["birth_date"].isoformat(),
            sex=p["sex"],
        ),
    )
    with channel(pki, running, "nenkin") as ch:
        reply = pb_grpc.IdentityVerificationServiceStub(ch).Verify(request, timeout=10)
    assert reply.found
    assert [(m.field, m.match) for m in reply.matches] == [
        ("family_name", True),
        ("given_name", False),
        ("birth_date", True),
        ("sex", True),
    ]
    logged = records(running, request.context.request_id).to_pylist()
    assert len(logged) == 1
    assert logged[0] | {"time": None} == {
        "time": None,
        "agency": "nenkin",
        "operator": "operator-1",
        "request_id": request.context.request_id,
        "affair": PENSION,
        "mode": "verify",
        "fields": "family_name,given_name,birth_date,sex",
        "subject": p["resident_code"],
        # The record is keyed on the person, whatever identifiers they hold later.
        "person": running.frontend.registry._persons([p["my_number"]])["person"][0].as_py(),
        "outcome": "disclosed",
        "reason": None,
    }


def test_verify_unknown_resident_is_not_found(pki: Path, running: service.Server) -> None:
    absent = ref.with_check_digit("my_number", "0" * 11)
    request = pb.VerifyRequest(
        context=ctx(), key=pb.Key(my_number=absent), claims=pb.Claims(family_name="佐藤")
    )
    with channel(pki, running, "nenkin") as ch:
        reply = pb_grpc.IdentityVerificationServiceStub(ch).Verify(request, timeout=10)
    assert not reply.found and not reply.matches
    assert records(running, request.context.request_id)["outcome"].to_pylist() == ["not_found"]


def test_retrieve_discloses_only_the_affairs_fields(
    pki: Path, running: service.Server, small_rows: list[Row]
) -> None:
    p = person(small_rows, "deceased")
    request = pb.RetrieveRequest(context=ctx("onkyu"), key=pb.Key(resident_code=p["resident_code"]))
    with channel(pki, running, "soumu") as ch:
        reply = pb_grpc.IdentityVerificationServiceStub(ch).Retrieve(request, timeout=10)
    affair = Policy.load(example_path()).agency("soumu").affairs["onkyu"]
    assert reply.found
    assert list(reply.fields) == list(affair.fields)
    disclosed = {f.name for f, _ in reply.resident.ListFields()}
    assert disclosed == set(affair.fields)
    assert "my_number" not in disclosed and "resident_code" not in disclosed
    assert reply.resident.family_name == p["family_name"]
    assert reply.resident.status == pb.RESIDENT_STATUS_DECEASED
    assert reply.resident.status_date == p["status_date"].isoformat()
    assert reply.resident.birth_date == p["birth_date"].isoformat()
    logged = records(running, request.context.request_id).to_pylist()
    assert [(r["mode"], r["fields"], r["subject"]) for r in logged] == [
        ("retrieve", ",".join(affair.fields), p["resident_code"])
    ]


def test_retrieve_named_fields(pki: Path, running: service.Server, small_rows: list[Row]) -> None:
    p = person(small_rows)
    request = pb.RetrieveRequest(
        context=ctx(), key=pb.Key(my_number=p["my_number"]), fields=["status", "my_number"]
    )
    with channel(pki, running, "nenkin") as ch:
        reply = pb_grpc.IdentityVerificationServiceStub(ch).Retrieve(request, timeout=10)
    assert list(reply.fields) == ["my_number", "status"]
    assert {f.name for f, _ in reply.resident.ListFields()} == {"my_number", "status"}
    assert reply.resident.my_number == p["my_number"]


def test_list_affairs_shows_the_callers_grants(pki: Path, running: service.Server) -> None:
    with channel(pki, running, "mofa") as ch:
        reply = pb_grpc.IdentityVerificationServiceStub(ch).ListAffairs(pb.ListAffairsRequest())
    assert (reply.agency_code, reply.agency_name) == ("mofa", "外務省")
    assert [a.code for a in reply.affairs] == ["passport"]
    assert reply.affairs[0].legal_basis.startswith("住基法 別表第一")
    assert list(reply.affairs[0].keys) == [pb.KEY_KIND_RESIDENT_CODE]


# Refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agency", "request_", "names"),
    [
        pytest.param(
            "moj",
            pb.RetrieveRequest(context=ctx(), key=pb.Key(resident_code="x")),
            "affair 'pension-benefit' (it holds: bar-exam",
            id="affair-not-granted",
        ),
        pytest.param(
            "moj",
            pb.RetrieveRequest(context=ctx("bar-exam"), key=pb.Key(resident_code="x")),
            "does not allow retrieve",
            id="mode",
        ),
        pytest.param(
            "mofa",
            pb.RetrieveRequest(
                context=ctx("passport"), key=pb.Key(resident_code="x"), fields=["my_number"]
            ),
            "field 'my_number'",
            id="field",
        ),
        pytest.param(
            "mofa",
            pb.RetrieveRequest(context=ctx("passport"), key=pb.Key(my_number="x")),
            "by my_number",
            id="key",
        ),
        pytest.param(
            "moj",
            pb.VerifyRequest(
                context=ctx("bar-exam"),
                key=pb.Key(resident_code="x"),
                claims=pb.Claims(municipality_code="162019"),
            ),
            "field 'municipality_code'",
            id="claimed-field",
        ),
    ],
)
def test_refusals_name_what_is_not_granted(
    pki: Path, running: service.Server, agency: str, request_: Any, names: str
) -> None:
    with channel(pki, running, agency) as ch:
        stub = pb_grpc.IdentityVerificationServiceStub(ch)
        call = stub.Verify if isinstance(request_, pb.VerifyRequest) else stub.Retrieve
        error = rpc_error(lambda: call(request_, timeout=10))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert names in error.details()
    assert records(running, request_.context.request_id)["outcome"].to_pylist() == ["denied"]


@pytest.mark.parametrize(
    ("request_", "names"),
    [
        pytest.param(
            pb.RetrieveRequest(context=ctx(), key=pb.Key(resident_code="x"), fields=["statuss"]),
            "unknown field 'statuss': the fields are resident_code, my_number, family_name",
            id="unknown-field",
        ),
        pytest.param(
            # An agency that may not retrieve at all: the mistake is still named first.
            pb.RetrieveRequest(
                context=ctx("no-such-affair"), key=pb.Key(resident_code="x"), fields=["statuss"]
            ),
            "unknown field 'statuss'",
            id="unknown-field-before-policy",
        ),
    ],
)
def test_a_mistake_in_the_request_is_invalid_argument_naming_the_known_names(
    pki: Path, running: service.Server, request_: Any, names: str
) -> None:
    with channel(pki, running, "nenkin") as ch:
        stub = pb_grpc.IdentityVerificationServiceStub(ch)
        error = rpc_error(lambda: stub.Retrieve(request_, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert names in error.details()
    assert "(" not in error.details()  # no Python tuple
    logged = records(running, request_.context.request_id)["outcome"].to_pylist()
    assert logged == ["invalid_request"]


def test_a_claims_column_the_contract_does_not_know_is_invalid_argument(
    pki: Path, running: service.Server
) -> None:
    claims = pa.table({"resident_code": ["x"], "family_nam": ["佐藤"]})
    error = raw_stream(pki, running, [header(), pb.VerifyStreamRequest(claims=ipc(claims))])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "field 'family_nam' cannot be claimed: claims may compare family_name" in (
        error.details()
    )


def test_unregistered_certificate_is_refused(pki: Path, running: service.Server) -> None:
    request = pb.RetrieveRequest(context=ctx(), key=pb.Key(resident_code="x"))
    with channel(pki, running, "stranger") as ch:
        error = rpc_error(
            lambda: pb_grpc.IdentityVerificationServiceStub(ch).Retrieve(request, timeout=10)
        )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert STRANGER in error.details()
    logged = records(running, request.context.request_id).to_pylist()
    assert [(r["agency"], r["outcome"]) for r in logged] == [
        (f"unregistered: {STRANGER}", "denied")
    ]


def test_a_request_field_cannot_claim_another_agency(pki: Path, running: service.Server) -> None:
    # The agency is its certificate: 外務省 naming the pension affair is still 外務省.
    request = pb.RetrieveRequest(context=ctx(PENSION), key=pb.Key(resident_code="x"))
    with channel(pki, running, "mofa") as ch:
        error = rpc_error(
            lambda: pb_grpc.IdentityVerificationServiceStub(ch).Retrieve(request, timeout=10)
        )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "agency 'mofa'" in error.details()


@pytest.mark.parametrize("credentials", ["none", "other-ca", "expired"])
def test_handshake_refuses_bad_client_certificates(
    pki: Path, running: service.Server, tmp_path: Path, credentials: str
) -> None:
    ca = (pki / "ca.pem").read_bytes()
    if credentials == "none":
        creds = grpc.ssl_channel_credentials(root_certificates=ca)
    else:
        if credentials == "other-ca":
            paths = certs.CertificateAuthority.create(tmp_path / "other").issue_client(
                "nenkin", "CN=nenkin,O=日本年金機構,C=JP"
            )
        else:
            import datetime as dt

            paths = certs.CertificateAuthority.load(pki).issue_client(
                "expired",
                "CN=nenkin,O=日本年金機構,C=JP",
                days=1,
                not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=10),
            )
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=paths.key.read_bytes(),
            certificate_chain=paths.cert.read_bytes(),
        )
    with grpc.secure_channel(f"127.0.0.1:{running.port}", creds) as ch:
        error = rpc_error(
            lambda: pb_grpc.IdentityVerificationServiceStub(ch).ListAffairs(
                pb.ListAffairsRequest(), timeout=10
            )
        )
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_wrong_check_digit_is_invalid_argument(pki: Path, running: service.Server) -> None:
    bad = ref.with_check_digit("resident_code", "1234567890")
    bad = bad[:-1] + str((int(bad[-1]) + 1) % 10)
    request = pb.VerifyRequest(
        context=ctx(), key=pb.Key(resident_code=bad), claims=pb.Claims(family_name="佐藤")
    )
    with channel(pki, running, "nenkin") as ch:
        error = rpc_error(
            lambda: pb_grpc.IdentityVerificationServiceStub(ch).Verify(request, timeout=10)
        )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"key.resident_code: resident_code '{bad}'")
    assert records(running, request.context.request_id)["outcome"].to_pylist() == ["invalid_key"]


@pytest.mark.parametrize(
    ("request_", "names"),
    [
        (
            pb.RetrieveRequest(
                context=pb.RequestContext(affair=PENSION, operator_id="o"),
                key=pb.Key(resident_code="x"),
            ),
            "context.request_id",
        ),
        (
            pb.RetrieveRequest(
                context=pb.RequestContext(affair=PENSION, operator_id="o", request_id="r")
            ),
            "key:",
        ),
        (
            pb.VerifyRequest(
                context=ctx(), key=pb.Key(resident_code="x"), claims=pb.Claims(birth_date="昭和")
            ),
            "birth_date",
        ),
    ],
    ids=["no-request-id", "no-key", "bad-date"],
)
def test_malformed_requests_are_invalid_argument(
    pki: Path, running: service.Server, request_: Any, names: str
) -> None:
    with channel(pki, running, "nenkin") as ch:
        stub = pb_grpc.IdentityVerificationServiceStub(ch)
        call = stub.Verify if isinstance(request_, pb.VerifyRequest) else stub.Retrieve
        error = rpc_error(lambda: call(request_, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert names in error.details()


def test_quota(pki: Path, policy: service.Frontend, running: service.Server) -> None:
    policy.policy = tiny_quota(pki, 5)
    keys = [ref.with_check_digit("resident_code", f"{i:010d}") for i in range(4)]
    claims = pa.table({"resident_code": keys})
    with channel(pki, running, "nenkin") as ch:
        job = BulkJob(ch, ctx("tiny"), "resident_code")
        assert sum(r.num_rows for _, r in job.run(claims.to_batches())) == 4
        again = BulkJob(ch, ctx("tiny"), "resident_code")
        error = rpc_error(lambda: list(again.run(claims.to_batches())))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "5 records" in error.details()
    assert set(records(running, again.context.request_id)["outcome"].to_pylist()) == {
        "quota_exhausted"
    }


def test_audit_failure_discloses_nothing(
    pki: Path,
    small: Registry,
    small_rows: list[Row],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A trail that cannot write fails closed: the call is refused, nothing is disclosed."""
    own = own_server(small, pki, tmp_path / "audit")
    try:

        def disk_gone(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fsync", disk_gone)
        code = person(small_rows)["resident_code"]
        for _ in range(2):  # the first fails on writing, the next at once
            request = pb.RetrieveRequest(context=ctx(), key=pb.Key(resident_code=code))
            with channel(pki, own, "nenkin") as ch:
                stub = pb_grpc.IdentityVerificationServiceStub(ch)
                error = rpc_error(functools.partial(stub.Retrieve, request, timeout=10))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert "audit" in error.details().lower()
    finally:
        monkeypatch.undo()
        own.stop(grace=1)


# The columnar streaming API -----------------------------------------------------------------


def test_claims_from_parquet_read_as_stored(small_rows: list[Row], tmp_path: Path) -> None:
    claims = claims_of(small_rows, 30_000)
    claims = claims.append_column("given_name", pa.array([None] * 5 + ["太郎"] * 29_995))
    src = tmp_path / "claims.parquet"
    pq.write_table(claims, src, row_group_size=12_000)
    rows, batches = claim_batches(src, 12_000)
    read = pa.Table.from_batches(list(batches))
    assert rows == claims.num_rows
    # Names read through Parquet's dictionaries come out as the strings they were written as.
    assert read.schema == claims.schema
    assert read.equals(claims)


def test_bulk_job_results_and_audit(
    pki: Path, running: service.Server, small: Registry, small_rows: list[Row]
) -> None:
    claims = claims_of(small_rows, 50_000)
    bad = ref.with_check_digit("resident_code", "1" * 10)
    bad = bad[:-1] + str((int(bad[-1]) + 1) % 10)
    codes = claims["resident_code"].to_pylist()
    codes[10] = bad
    claims = claims.set_column(0, "resident_code", pa.array(codes))
    fields = ["status", "status_date", "municipality_name"]
    with channel(pki, running, "nenkin") as ch:
        job = BulkJob(ch, ctx(), "resident_code", fields)
        pairs = list(job.run(split_messages(claims.to_batches(), 200_000)))
    assert len(pairs) > 1  # several messages
    results = pa.concat_tables([r for _, r in pairs])
    sent = pa.concat_tables([pa.Table.from_batches([c]) for c, _ in pairs])
    assert sent.equals(claims)
    assert results.column_names == [
        "found",
        "error",
        "family_name_match",
        "birth_date_match",
        "municipality_name",
        "status",
        "status_date",
    ]
    expected = small.verify(claims, by="resident_code", columns=fields)
    for name in results.column_names:
        assert results[name].to_pylist() == expected[name].to_pylist(), name
    assert results["error"][10].as_py().startswith("row 10: resident_code")
    logged = records(running, job.context.request_id)
    assert logged.num_rows == claims.num_rows
    disclosed = logged.filter(pc.equal(logged["outcome"], "disclosed"))
    assert sorted(disclosed["subject"].to_pylist()) == sorted(
        c for i, c in enumerate(codes) if i != 10
    )
    assert set(logged["fields"].to_pylist()) == {
        "family_name,birth_date,municipality_name,status,status_date"
    }
    assert logged.filter(pc.equal(logged["outcome"], "invalid_key")).num_rows == 1


def test_bulk_empty_job(pki: Path, running: service.Server) -> None:
    with channel(pki, running, "nenkin") as ch:
        assert list(BulkJob(ch, ctx(), "resident_code").run([])) == []


def test_bulk_by_my_number_with_my_number_disclosed(
    pki: Path, running: service.Server, small_rows: list[Row]
) -> None:
    rows = small_rows[:100]
    claims = pa.table({"my_number": [r["my_number"] for r in rows]})
    with channel(pki, running, "nenkin") as ch:
        job = BulkJob(ch, ctx(), "my_number", ["resident_code", "my_number"])
        ((_, results),) = list(job.run(claims.to_batches()))
    assert results.column_names == ["found", "error", "resident_code", "my_number"]
    assert results["resident_code"].to_pylist() == [r["resident_code"] for r in rows]


@pytest.mark.parametrize("key_type", [pa.string(), pa.large_string(), pa.uint64()])
def test_bulk_subjects_are_canonical_codes_whatever_the_key_type(
    pki: Path, running: service.Server, small_rows: list[Row], key_type: pa.DataType
) -> None:
    rows = [r for r in small_rows if r["resident_code"].startswith("0")][:20]
    codes = [r["resident_code"] for r in rows]
    keys = pa.array([int(c) for c in codes] if key_type == pa.uint64() else codes, key_type)
    with channel(pki, running, "nenkin") as ch:
        job = BulkJob(ch, ctx(), "resident_code", ["resident_code", "status"])
        ((_, results),) = list(job.run([pa.record_batch({"resident_code": keys})]))
    assert results["resident_code"].to_pylist() == codes  # leading zeros kept
    logged = records(running, job.context.request_id)
    assert sorted(logged["subject"].to_pylist()) == sorted(codes)


def test_bulk_malformed_payloads(pki: Path, running: service.Server) -> None:
    good = ipc(pa.table({"resident_code": ["x"]}))
    cases = [
        (
            [pb.VerifyStreamRequest(claims=good)],
            "message 0: a bulk job starts with a VerifyStreamHeader",
        ),
        (
            [header(), pb.VerifyStreamRequest(claims=b"not arrow at all")],
            "message 1: claims are not",
        ),
        (
            [header(), pb.VerifyStreamRequest(claims=good[: len(good) // 2])],
            "message 1: claims are not",
        ),
        ([header(), pb.VerifyStreamRequest(claims=good), header()], "message 2: only the first"),
        (
            [header(), pb.VerifyStreamRequest(claims=ipc(pa.table({"my_number": ["x"]})))],
            "message 1",
        ),
        ([header(by=pb.KEY_KIND_UNSPECIFIED)], "header.key"),
        (
            [header(), pb.VerifyStreamRequest(claims=ipc(pa.table({"resident_code": [1.5]})))],
            "resident_code",
        ),
    ]
    for messages, names in cases:
        error = raw_stream(pki, running, messages)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (names, error.details())
        assert names in error.details(), (names, error.details())


def test_bulk_error_mid_job_follows_the_earlier_replies(
    pki: Path, running: service.Server, small_rows: list[Row]
) -> None:
    """Claims are read ahead of the replies; a bad message still ends the job only after the
    replies to the messages before it, and names itself."""
    good = ipc(claims_of(small_rows, 50).select(["resident_code"]))
    changed = ipc(claims_of(small_rows, 50).select(["resident_code", "family_name"]))
    messages = [header(), *(pb.VerifyStreamRequest(claims=good) for _ in range(3))]
    messages.append(pb.VerifyStreamRequest(claims=changed))
    received = []
    with channel(pki, running, "nenkin") as ch:
        stub = pb_grpc.BulkVerificationServiceStub(ch)
        error = rpc_error(lambda: received.extend(stub.VerifyStream(iter(messages), timeout=10)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "message 4: columns" in error.details()
    assert [r.first_row for r in received] == [0, 50, 100]


def test_bulk_refusals(pki: Path, running: service.Server) -> None:
    denied = raw_stream(pki, running, [header(fields=("card_state",))])
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "card_state" in denied.details()
    # A column no claim may carry is a mistake in the request, not a refusal by the policy.
    claimed = ipc(pa.table({"resident_code": ["x"], "address_town": ["x"]}))
    invalid = raw_stream(pki, running, [header(), pb.VerifyStreamRequest(claims=claimed)])
    assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "field 'address_town' cannot be claimed" in invalid.details()


def test_bulk_refusal_audits_the_residents_behind_the_keys(
    pki: Path, running: service.Server, small_rows: list[Row]
) -> None:
    """A refused job keyed by My Number is audited under the residents' codes, never the My
    Numbers the agency sent; a key that names no resident is audited without a subject."""
    people = small_rows[:2]
    keys = [p["my_number"] for p in people] + ["not a number"]
    start = pb.VerifyStreamRequest(
        header=pb.VerifyStreamHeader(context=ctx(), key=pb.KEY_KIND_MY_NUMBER)
    )
    # A column no claim may carry: the message is refused before the policy is asked.
    claims = ipc(pa.table({"my_number": keys, "address_town": ["x"] * 3}))
    refused = raw_stream(pki, running, [start, pb.VerifyStreamRequest(claims=claims)])
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    logged = records(running, start.header.context.request_id)
    assert logged["outcome"].to_pylist() == ["invalid_request"] * 3
    assert logged["subject"].to_pylist() == [p["resident_code"] for p in people] + [None]


def test_bulk_oversize_messages(
    pki: Path, running: service.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = pb.VerifyStreamRequest(claims=b"\0" * (wire.MAX_MESSAGE_BYTES + 1))
    assert raw_stream(pki, running, [header(), huge]).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    monkeypatch.setattr(wire, "MAX_BATCH_ROWS", 10)
    rows = ipc(pa.table({"resident_code": ["x"] * 11}))
    error = raw_stream(pki, running, [header(), pb.VerifyStreamRequest(claims=rows)])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "11 rows, at most 10" in error.details()


def test_bulk_huge_job_streams(pki: Path, running: service.Server, small_rows: list[Row]) -> None:
    """A job far larger than one message goes through in many, in order."""
    claims = claims_of(small_rows, 20_000).select(["resident_code"])
    batches = (claims.to_batches()[0] for _ in range(60))  # 1.2 M claims, made lazily
    total = found = messages = 0
    with channel(pki, running, "nenkin") as ch:
        for sent, results in BulkJob(ch, ctx(), "resident_code").run(batches):
            assert results.num_rows == sent.num_rows
            total += results.num_rows
            found += pc.sum(results["found"]).as_py()
            messages += 1
    assert total == found == 1_200_000
    assert messages >= 60


def test_a_cancelled_job_leaves_the_server_serving(
    pki: Path, running: service.Server, small_rows: list[Row]
) -> None:
    """A client that walks away mid-job: what it received is audited; the next job is served."""
    claims = claims_of(small_rows, 20_000).select(["resident_code"])
    endless = (claims.to_batches()[0] for _ in range(1_000))
    received = 0
    with channel(pki, running, "nenkin") as ch:
        job = BulkJob(ch, ctx(), "resident_code", ["resident_code"])
        results = job.run(endless)
        for _, batch in results:
            received += batch.num_rows
            if received >= 100_000:
                break
        results.close()  # cancels the call
        logged = records(running, job.context.request_id)
        assert logged.num_rows >= received
        again = BulkJob(ch, ctx(), "resident_code")
        assert sum(r.num_rows for _, r in again.run(claims.to_batches())) == claims.num_rows


# Properties: nothing outside the policy is ever disclosed ---------------------------------


FIELDS = Registry.column_names()


@st.composite
def affairs(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "code": "random",
        "title": "t",
        "legal_basis": "b",
        "keys": draw(st.lists(st.sampled_from(["my_number", "resident_code"]), unique=True)),
        "modes": draw(st.lists(st.sampled_from(["verify", "retrieve"]), unique=True)),
        "fields": draw(st.lists(st.sampled_from(FIELDS), unique=True)),
    }


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    affair=affairs(),
    by=st.sampled_from(["my_number", "resident_code"]),
    claimed=st.lists(st.sampled_from(CLAIMABLE), unique=True, max_size=3),
    retrieve=st.lists(st.sampled_from(FIELDS), unique=True, max_size=5),
)
def test_no_response_field_outside_the_policy(
    pki: Path,
    policy: service.Frontend,
    running: service.Server,
    small_rows: list[Row],
    affair: dict[str, Any],
    by: str,
    claimed: list[str],
    retrieve: list[str],
) -> None:
    subject = "CN=nenkin,O=日本年金機構,C=JP"
    agency = {
        "code": "nenkin",
        "name": "n",
        "certificate_subject": subject,
        "certificate_issuer": "demo",
        "affair": [affair],
    }
    policy.policy = Policy.from_dict(
        {"certificate_authorities": {"demo": demo_ca(pki)}, "agency": [agency]}
    )
    p = small_rows[3]
    modes = {m for m, asked in (("verify", claimed), ("retrieve", retrieve)) if asked} or {"verify"}
    allowed = (
        by in affair["keys"]
        and modes <= set(affair["modes"])
        and set(claimed) | set(retrieve) <= set(affair["fields"])
    )
    claims = pa.table({by: [p[by]], **{c: [p[c]] for c in claimed}})
    with channel(pki, running, "nenkin") as ch:
        job = BulkJob(ch, ctx("random"), by, retrieve)
        try:
            ((_, results),) = list(job.run(claims.to_batches()))
        except grpc.RpcError as e:
            assert not allowed, e.details()
            assert e.code() == grpc.StatusCode.PERMISSION_DENIED
            assert set(records(running, job.context.request_id)["outcome"].to_pylist()) == {
                "denied"
            }
            return
        assert allowed
        disclosed = set(results.column_names) - {"found", "error"}
        assert disclosed == {f"{c}_match" for c in claimed} | set(retrieve)
        assert {c.removesuffix("_match") for c in disclosed} <= set(affair["fields"])
        if retrieve:
            typed = pb_grpc.IdentityVerificationServiceStub(ch).Retrieve(
                pb.RetrieveRequest(
                    context=ctx("random"), key=pb.Key(**{by: p[by]}), fields=retrieve
                ),
                timeout=10,
            )
            assert {f.name for f, _ in typed.resident.ListFields()} <= set(affair["fields"])


# Health, reflection, reload, crash ----------------------------------------------------------


def test_health_and_reflection(pki: Path, running: service.Server) -> None:
    with channel(pki, running, "nenkin") as ch:
        checker = health_pb2_grpc.HealthStub(ch)
        for name in ("", "juki.v1.BulkVerificationService", "juki.v1.IdentityVerificationService"):
            reply = checker.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        services = ProtoReflectionDescriptorDatabase(ch).get_services()
        assert {"juki.v1.BulkVerificationService", "juki.v1.IdentityVerificationService"} <= set(
            services
        )
        assert "grpc.health.v1.Health" in services


def test_policy_reload_keeps_the_old_policy_on_error(
    pki: Path, policy: service.Frontend, tmp_path: Path
) -> None:
    broken = tmp_path / "policy.toml"
    broken.write_text("[[agency]]\ncode = 1\n")
    before = policy.policy
    policy.reload(broken)
    assert policy.policy is before
    good = tmp_path / "good.toml"
    good.write_text(
        (pki / "policy.toml").read_text().replace("daily_quota = 60_000_000", "daily_quota = 7")
    )
    policy.reload(good)
    nenkin = policy.policy.agency("nenkin")
    assert nenkin.affairs[PENSION].daily_quota == 7


def test_every_received_disclosure_is_audited_after_kill_9(
    small_rows: list[Row], pki: Path, tmp_path: Path
) -> None:
    """Kill the server mid-job; every result the client received has its audit record. Each
    message asks for residents no other message asks for, so a message whose records were lost
    is caught."""
    snapshot = tmp_path / "snapshot"
    Registry.generate(population=20_000, seed=7).save(snapshot)
    trail = tmp_path / "audit"
    proc = juki_serve(snapshot, pki, trail, tmp_path / "port")
    try:
        port = wait_for_port(tmp_path / "port", proc)
        tls = AgencyTLS.from_cert(pki / "agencies" / "nenkin.pem")
        codes = pa.table({"resident_code": [r["resident_code"] for r in small_rows]})
        messages = codes.to_batches(max_chunksize=250)  # 80 messages, no resident twice
        received: list[str] = []
        sent = threading.Semaphore(8)  # at most 8 messages ahead of the replies

        def paced() -> Iterator[pa.RecordBatch]:
            for message in messages:
                if not sent.acquire(timeout=30):
                    return
                yield message

        with tls.channel(f"127.0.0.1:{port}") as ch:
            job = BulkJob(ch, ctx(), "resident_code", ["resident_code"])
            with pytest.raises(grpc.RpcError) as died:
                for _, results in job.run(paced()):
                    received.extend(results["resident_code"].to_pylist())
                    sent.release()
                    if len(received) >= 5_000:
                        os.kill(proc.pid, signal.SIGKILL)
        assert died.value.code() == grpc.StatusCode.UNAVAILABLE
        assert len(set(received)) == len(received) >= 5_000
    finally:
        proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    logged = audit.read(trail, columns=["subject", "outcome"])
    assert set(received) <= set(logged["subject"].to_pylist())
    assert logged.num_rows >= len(received)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (juki.NotPermitted("x"), grpc.StatusCode.PERMISSION_DENIED),
        (juki.QuotaExhausted("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (juki.InvalidIdentifier("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (juki.InvalidInput("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (juki.DuplicateIdentifier("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (juki.AuditUnavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (juki.SnapshotCorrupt("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_each_error_class_maps_to_one_status(error: juki.JukiError, code: grpc.StatusCode) -> None:
    assert service.status_code(error) == code
    assert isinstance(error, juki.JukiError)


def test_sigterm_drains_a_job_in_flight_with_its_audit(
    small_rows: list[Row], pki: Path, tmp_path: Path
) -> None:
    """SIGTERM mid-job: the job in flight runs to its end, every result audited, then the
    server exits cleanly; a new call is refused meanwhile."""
    snapshot = tmp_path / "snapshot"
    Registry.generate(population=20_000, seed=7).save(snapshot)
    trail = tmp_path / "audit"
    proc = juki_serve(snapshot, pki, trail, tmp_path / "port")
    try:
        port = wait_for_port(tmp_path / "port", proc)
        tls = AgencyTLS.from_cert(pki / "agencies" / "nenkin.pem")
        codes = pa.table({"resident_code": [r["resident_code"] for r in small_rows[:4000]]})
        replies = threading.Semaphore(0)

        def paced() -> Iterator[pa.RecordBatch]:
            for n, message in enumerate(codes.to_batches(max_chunksize=200)):
                if n == 3:
                    assert replies.acquire(timeout=30)  # one reply back: the job is in flight
                    proc.send_signal(signal.SIGTERM)
                time.sleep(0.05)
                yield message

        received: list[str] = []
        with tls.channel(f"127.0.0.1:{port}") as ch:
            job = BulkJob(ch, ctx(), "resident_code", ["resident_code"])
            for _, results in job.run(paced()):
                received.extend(results["resident_code"].to_pylist())
                replies.release()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    assert len(received) == 4000
    logged = audit.read(trail, columns=["request_id", "subject", "outcome"])
    mine = logged.filter(pc.equal(logged["request_id"], job.context.request_id))
    assert sorted(mine["subject"].to_pylist()) == sorted(received)
    assert set(mine["outcome"].to_pylist()) == {"disclosed"}


# -- match levels (docs/matching.md) ----------------------------------------------------------


def test_typed_verify_at_the_normalised_level_says_where_each_field_agrees(
    pki: Path, running: service.Server, small_rows: list[Row]
) -> None:
    p = person(small_rows)
    request = pb.VerifyRequest(
        context=ctx(),
        key=pb.Key(resident_code=p["resident_code"]),
        # A full-width space the form added: not the same characters, the same name.
        claims=pb.Claims(family_name=p["family_name"] + "　", given_name="違う名前"),
        match_level=pb.MATCH_LEVEL_NORMALISED,
    )
    with channel(pki, running, "nenkin") as ch:
        reply = pb_grpc.IdentityVerificationServiceStub(ch).Verify(request, timeout=10)
    assert [(m.field, m.match, m.level) for m in reply.matches] == [
        ("family_name", True, pb.MATCH_LEVEL_NORMALISED),
        ("given_name", False, pb.MATCH_LEVEL_UNSPECIFIED),
    ]
    # The trail says how much a yes revealed.
    assert records(running, request.context.request_id)["mode"].to_pylist() == ["verify@normalised"]
    exact = pb.VerifyRequest(context=ctx(), key=request.key, claims=request.claims)
    with channel(pki, running, "nenkin") as ch:
        reply = pb_grpc.IdentityVerificationServiceStub(ch).Verify(exact, timeout=10)
    assert [(m.match, m.level) for m in reply.matches] == [
        (False, pb.MATCH_LEVEL_UNSPECIFIED),
        (False, pb.MATCH_LEVEL_UNSPECIFIED),
    ]


def test_a_match_level_the_affair_does_not_allow_is_refused(
    pki: Path, running: service.Server, small_rows: list[Row]
) -> None:
    p = person(small_rows)
    request = pb.VerifyRequest(
        context=ctx("bar-exam"),
        key=pb.Key(resident_code=p["resident_code"]),
        claims=pb.Claims(family_name=p["family_name"]),
        match_level=pb.MATCH_LEVEL_READING,
    )
    with channel(pki, running, "moj") as ch:
        stub = pb_grpc.IdentityVerificationServiceStub(ch)
        error = rpc_error(lambda: stub.Verify(request, timeout=10))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "does not allow the reading match level (it allows: exact)" in error.details()
        unknown = pb.VerifyRequest(
            context=ctx("bar-exam"), key=request.key, claims=request.claims, match_level=7
        )
        error = rpc_error(lambda: stub.Verify(unknown, timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "match_level 7 is not a MatchLevel" in error.details()
        granted = stub.ListAffairs(pb.ListAffairsRequest(), timeout=10).affairs
        assert [list(a.match_levels) for a in granted] == [[pb.MATCH_LEVEL_EXACT]]
    with channel(pki, running, "nenkin") as ch:
        pension = pb_grpc.IdentityVerificationServiceStub(ch).ListAffairs(
            pb.ListAffairsRequest(), timeout=10
        )
    assert list(pension.affairs[0].match_levels) == [
        pb.MATCH_LEVEL_EXACT,
        pb.MATCH_LEVEL_NORMALISED,
        pb.MATCH_LEVEL_READING,
    ]


def test_a_bulk_job_above_the_exact_level_gets_each_fields_level(
    pki: Path, running: service.Server, small_rows: list[Row]
) -> None:
    claims = claims_of(small_rows, 30).to_pylist()
    claims[0]["family_name"] += " "  # a space more: the same name at the normalised level
    table = pa.Table.from_pylist(claims, claims_of(small_rows, 1).schema)
    with channel(pki, running, "nenkin") as ch:
        job = BulkJob(ch, ctx(), "resident_code", match="normalised")
        results = pa.concat_tables([r for _, r in job.run(table.to_batches())])
    assert results["family_name_match"].to_pylist() == [True] * 30
    levels = results["family_name_level"].to_pylist()
    assert levels[0] == "normalised" and set(levels[1:]) == {"exact"}
    assert set(results["birth_date_level"].to_pylist()) == {"exact"}
    with channel(pki, running, "nenkin") as ch:
        plain = pa.concat_tables(
            [r for _, r in BulkJob(ch, ctx(), "resident_code").run(table.to_batches())]
        )
    assert "family_name_level" not in plain.column_names
    assert plain["family_name_match"][0].as_py() is False


# -- search by the four basic facts (docs/matching.md) ----------------------------------------


def search(pki: Path, running: service.Server, agency: str, request: pb.SearchRequest) -> Any:
    with channel(pki, running, agency) as ch:
        return pb_grpc.IdentityVerificationServiceStub(ch).Search(request, timeout=10)


def test_search_finds_a_resident_by_name_and_birth_date_and_audits_the_disclosure(
    pki: Path, running: service.Server, small_rows: list[Row]
) -> None:
    p = person(small_rows)
    facts = pb.Claims(
        family_name=p["family_name"] + "　",  # as a form writes it: the normalised level folds it
        given_name=p["given_name"],
        birth_date=p["birth_date"].isoformat(),
        sex=p["sex"],
    )
    request = pb.SearchRequest(context=ctx(), facts=facts, fields=["resident_code", "status"])
    reply = search(pki, running, "nenkin", request)
    codes = [c.resident.resident_code for c in reply.candidates]
    assert p["resident_code"] in codes
    assert reply.outcome == (
        pb.SEARCH_OUTCOME_UNIQUE if len(codes) == 1 else pb.SEARCH_OUTCOME_AMBIGUOUS
    )
    assert list(reply.fields) == ["resident_code", "status"]
    assert all(c.agreed == 4 and not c.resident.HasField("family_name") for c in reply.candidates)
    logged = records(running, request.context.request_id).to_pylist()
    assert sorted(r["subject"] for r in logged) == sorted(codes)
    assert {(r["mode"], r["outcome"]) for r in logged} == {("search@normalised", "disclosed")}
    # At the exact level the form's spelling finds no one, and no partial candidate is shown.
    exact = pb.SearchRequest(context=ctx(), facts=facts, match_level=pb.MATCH_LEVEL_EXACT)
    reply = search(pki, running, "nenkin", exact)
    assert reply.outcome == pb.SEARCH_OUTCOME_NOT_FOUND and not reply.candidates
    logged = records(running, exact.context.request_id).to_pylist()
    assert [(r["subject"], r["outcome"]) for r in logged] == [(None, "not_found")]


@pytest.mark.parametrize(
    ("agency", "facts", "level", "code", "names"),
    [
        pytest.param(
            "moj",
            {"family_name": "x", "given_name": "y", "birth_date": "2000-01-01"},
            0,
            grpc.StatusCode.PERMISSION_DENIED,
            "does not allow search",
            id="not-granted",
        ),
        pytest.param(
            "nenkin",
            {"family_name": "x", "birth_date": "2000-01-01"},
            0,
            grpc.StatusCode.INVALID_ARGUMENT,
            "a 4情報 search needs given_name",
            id="missing-fact",
        ),
        pytest.param(
            "nenkin",
            {"family_name": "x", "given_name": "y", "birth_date": "昭和25年"},
            0,
            grpc.StatusCode.INVALID_ARGUMENT,
            "is not a date",
            id="bad-date",
        ),
        pytest.param(
            "nenkin",
            {"family_name": "x", "given_name": "y", "birth_date": "2000-01-01"},
            pb.MATCH_LEVEL_READING,
            grpc.StatusCode.INVALID_ARGUMENT,
            "exact or normalised level",
            id="reading-level",
        ),
        pytest.param(
            "nenkin",
            {
                "family_name": "x",
                "given_name": "y",
                "birth_date": "2000-01-01",
                "given_name_kana": "ア",
            },
            0,
            grpc.StatusCode.INVALID_ARGUMENT,
            "given_name_kana cannot narrow a search",
            id="unsearched-fact",
        ),
    ],
)
def test_search_refusals_name_what_is_wrong(
    pki: Path,
    running: service.Server,
    agency: str,
    facts: dict[str, str],
    level: int,
    code: grpc.StatusCode,
    names: str,
) -> None:
    affair = "bar-exam" if agency == "moj" else PENSION
    request = pb.SearchRequest(context=ctx(affair), facts=pb.Claims(**facts), match_level=level)
    error = rpc_error(lambda: search(pki, running, agency, request))
    assert error.code() == code
    assert names in error.details()
    assert len(records(running, request.context.request_id)) == 1


def test_a_search_counts_against_the_quota_as_many_records_as_it_leaves(
    pki: Path, running: service.Server, small_rows: list[Row]
) -> None:
    p = person(small_rows)
    facts = pb.Claims(
        family_name=p["family_name"],
        given_name=p["given_name"],
        birth_date=p["birth_date"].isoformat(),
    )
    for facts_ in (
        facts,
        pb.Claims(family_name="存在しない", given_name="名", birth_date="1900-01-01"),
    ):
        before = running.frontend.quotas.used("nenkin", PENSION)
        request = pb.SearchRequest(context=ctx(), facts=facts_)  # every field the affair allows
        reply = search(pki, running, "nenkin", request)
        for candidate in reply.candidates:
            assert candidate.resident.birth_date == p["birth_date"].isoformat()
        counted = running.frontend.quotas.used("nenkin", PENSION) - before
        assert counted == len(records(running, request.context.request_id)) >= 1


def test_a_bulk_search_streams_candidates_and_audits_each_one(
    pki: Path, running: service.Server, small_rows: list[Row]
) -> None:
    rows = [small_rows[i] for i in (3, 50, 400)]
    facts = pa.table(
        {
            "family_name": [r["family_name"] + "　" for r in rows] + ["存在しない"],
            "given_name": [r["given_name"] for r in rows] + ["名"],
            "birth_date": pa.array(
                [r["birth_date"] for r in rows] + [rows[0]["birth_date"]], pa.date32()
            ),
        }
    )
    header = pb.SearchStreamRequest(
        header=pb.SearchStreamHeader(context=ctx(), fields=["resident_code", "status"])
    )
    messages = [header, *(pb.SearchStreamRequest(facts=ipc(facts.slice(i, 2))) for i in (0, 2))]
    with channel(pki, running, "nenkin") as ch:
        replies = list(
            pb_grpc.BulkVerificationServiceStub(ch).SearchStream(iter(messages), timeout=30)
        )
    assert [r.first_row for r in replies] == [0, 2]
    results = pa.ipc.open_stream(b"".join(r.results for r in replies)).read_all()
    assert results.column_names == [
        "claim",
        "outcome",
        "candidates",
        "agreed",
        "resident_code",
        "status",
    ]
    by_claim: dict[int, list[str | None]] = {}
    for row in results.to_pylist():
        by_claim.setdefault(row["claim"], []).append(row["resident_code"])
    for i, r in enumerate(rows):
        assert r["resident_code"] in by_claim[i]
    assert by_claim[3] == [None]
    assert results.filter(pc.equal(results["claim"], 3))["outcome"].to_pylist() == ["not_found"]
    logged = records(running, header.header.context.request_id)
    assert logged.num_rows == results.num_rows
    assert set(logged["mode"].to_pylist()) == {"search@normalised"}
    disclosed = logged.filter(pc.equal(logged["outcome"], "disclosed"))["subject"].to_pylist()
    assert sorted(disclosed) == sorted(c for c in results["resident_code"].to_pylist() if c)


def test_a_bulk_search_is_refused_where_the_affair_grants_no_search(
    pki: Path, running: service.Server
) -> None:
    header = pb.SearchStreamRequest(header=pb.SearchStreamHeader(context=ctx("bar-exam")))
    with channel(pki, running, "moj") as ch:
        stub = pb_grpc.BulkVerificationServiceStub(ch)
        error = rpc_error(lambda: list(stub.SearchStream(iter([header]), timeout=10)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "does not allow search" in error.details()
    logged = records(running, header.header.context.request_id)
    assert [(r["agency"], r["mode"], r["outcome"]) for r in logged.to_pylist()] == [
        ("moj", "search", "denied")
    ]


def test_a_bulk_search_reply_carries_no_value_of_a_resident_it_does_not_disclose(
    pki: Path, running: service.Server, small_rows: list[Row]
) -> None:
    """A resident sharing the claim's name and birth date but not its sex is a partial candidate:
    withheld over gRPC, its values must not ride in the reply's dictionaries either."""
    p = person(small_rows)
    facts = pa.table(
        {
            "family_name": [p["family_name"]],
            "given_name": [p["given_name"]],
            "birth_date": pa.array([p["birth_date"]], pa.date32()),
            "sex": pa.array([3 - p["sex"]], pa.int8()),
        }
    )
    header = pb.SearchStreamRequest(
        header=pb.SearchStreamHeader(context=ctx(), fields=["address_town", "family_name"])
    )
    messages = [header, pb.SearchStreamRequest(facts=ipc(facts))]
    with channel(pki, running, "nenkin") as ch:
        replies = list(
            pb_grpc.BulkVerificationServiceStub(ch).SearchStream(iter(messages), timeout=30)
        )
    payload = b"".join(r.results for r in replies)
    results = pa.ipc.open_stream(payload).read_all()
    assert results["outcome"].to_pylist() == ["not_found"]
    assert results["address_town"].to_pylist() == [None]
    for name in ("address_town", "family_name"):
        column = results[name].combine_chunks()
        values = column.dictionary if pa.types.is_dictionary(column.type) else column
        assert values.drop_null().to_pylist() == [], name
    assert p["address_town"].encode() not in payload


def partial_candidates_allowed(pki: Path, policy: service.Frontend, tmp_path: Path, n: int) -> None:
    """Install the example policy with the pension affair granting `n` partial candidates."""
    text = (pki / "policy.toml").read_text()
    levels = 'match_levels = ["normalised", "reading"]'
    assert levels in text
    path = tmp_path / "partial.toml"
    path.write_text(text.replace(levels, f"{levels}\n  search_partial_candidates = {n}"))
    policy.reload(path)
    assert policy.policy.agency("nenkin").affairs[PENSION].search_partial_candidates == n


def test_partial_candidates_are_disclosed_only_where_the_affair_grants_them(
    pki: Path,
    running: service.Server,
    policy: service.Frontend,
    tmp_path: Path,
    small_rows: list[Row],
) -> None:
    """A claim of the wrong sex finds no one; with `search_partial_candidates` the residents
    sharing its names and birth date are listed as partial candidates, each audited."""
    p = person(small_rows)
    facts = pb.Claims(
        family_name=p["family_name"],
        given_name=p["given_name"],
        birth_date=p["birth_date"].isoformat(),
        sex=3 - p["sex"],
    )
    fields = ["resident_code", "sex"]
    withheld = search(pki, running, "nenkin", pb.SearchRequest(context=ctx(), facts=facts))
    assert withheld.outcome == pb.SEARCH_OUTCOME_NOT_FOUND and not withheld.candidates

    partial_candidates_allowed(pki, policy, tmp_path, 2)
    request = pb.SearchRequest(context=ctx(), facts=facts, fields=fields)
    reply = search(pki, running, "nenkin", request)
    assert reply.outcome == pb.SEARCH_OUTCOME_NOT_FOUND
    listed = [(c.resident.resident_code, c.resident.sex, c.agreed) for c in reply.candidates]
    assert (p["resident_code"], p["sex"], 3) in listed  # names and birth date: not the sex
    assert 1 <= len(listed) <= 2 and all(agreed == 3 for _, _, agreed in listed)
    logged = records(running, request.context.request_id).to_pylist()
    assert sorted((r["subject"], r["outcome"]) for r in logged) == sorted(
        (code, "disclosed") for code, _, _ in listed
    )
    # A claim no one shares the names and birth date with still discloses no one.
    nobody = pb.Claims(family_name="存在しない", given_name="名", birth_date="1900-01-01")
    reply = search(pki, running, "nenkin", pb.SearchRequest(context=ctx(), facts=nobody))
    assert reply.outcome == pb.SEARCH_OUTCOME_NOT_FOUND and not reply.candidates

    # In bulk, the same claim's partial candidates ride in the reply, outcome not_found.
    table = pa.table(
        {
            "family_name": [p["family_name"]],
            "given_name": [p["given_name"]],
            "birth_date": pa.array([p["birth_date"]], pa.date32()),
            "sex": pa.array([3 - p["sex"]], pa.int8()),
        }
    )
    header = pb.SearchStreamRequest(header=pb.SearchStreamHeader(context=ctx(), fields=fields))
    with channel(pki, running, "nenkin") as ch:
        replies = list(
            pb_grpc.BulkVerificationServiceStub(ch).SearchStream(
                iter([header, pb.SearchStreamRequest(facts=ipc(table))]), timeout=30
            )
        )
    results = pa.ipc.open_stream(b"".join(r.results for r in replies)).read_all()
    assert set(results["outcome"].to_pylist()) == {"not_found"}
    assert sorted(results["resident_code"].to_pylist()) == sorted(c for c, _, _ in listed)
    assert set(results["agreed"].to_pylist()) == {3}
    logged = records(running, header.header.context.request_id)
    assert set(logged["outcome"].to_pylist()) == {"disclosed"}


def test_a_bulk_search_facts_column_the_contract_does_not_know_is_invalid_argument(
    pki: Path, running: service.Server
) -> None:
    facts = pa.table(
        {
            "family_name": ["x"],
            "given_name": ["y"],
            "birth_date": pa.array([0], pa.date32()),
            "address": ["z"],
        }
    )
    header = pb.SearchStreamRequest(header=pb.SearchStreamHeader(context=ctx()))
    messages = [header, pb.SearchStreamRequest(facts=ipc(facts))]
    with channel(pki, running, "nenkin") as ch:
        stub = pb_grpc.BulkVerificationServiceStub(ch)
        error = rpc_error(lambda: list(stub.SearchStream(iter(messages), timeout=10)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "address cannot narrow a search" in error.details()
    assert records(running, header.header.context.request_id)["outcome"].to_pylist() == [
        "invalid_request"
    ]
