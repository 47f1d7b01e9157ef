"""The residents' view: a resident reads their own record and who looked at it, by the person
their certificate was issued to; never anyone else's."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from calls import rpc_error
from town import Town

from juki_engine import Registry, audit, certs, service
from juki_engine._proto import registry_pb2 as pb
from juki_engine._proto import registry_pb2_grpc as pb_grpc
from juki_engine._proto import residents_pb2 as rpb
from juki_engine._proto import residents_pb2_grpc as rpb_grpc
from juki_engine.audit import AuditTrail, records
from juki_engine.client import AgencyTLS, request_context
from juki_engine.policy import Policy
from juki_engine.service.identity import BINDINGS, ResidentBindings, bind

PENSION = "pension-benefit"


@pytest.fixture(scope="module")
def town() -> Town:
    return Town(Registry.generate(population=2_000, seed=11))


@pytest.fixture(scope="module")
def people(pki: Path, town: Town, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Certificates for alice and bob (bound to two residents) and carol (bound to no one)."""
    state = tmp_path_factory.mktemp("state")
    fingerprints = certs.issue_residents(pki, ["alice", "bob", "carol"])
    alice, bob = town.resident(0), town.resident(1)
    persons = town.registry._persons([alice["my_number"], bob["my_number"]])["person"]
    bound = {fingerprints["alice"]: persons[0].as_py(), fingerprints["bob"]: persons[1].as_py()}
    bind(state, bound)
    return {"state": state, "alice": alice, "bob": bob}


def serve(town: Town, pki: Path, people: dict[str, Any], trail: Path) -> service.Server:
    frontend = service.Frontend(
        town.registry,
        Policy.load(pki / "policy.toml"),
        AuditTrail(trail),
        resident_bindings=ResidentBindings(people["state"] / BINDINGS),
    )
    return service.start(frontend, service.ServerTLS.in_directory(pki))


@pytest.fixture(scope="module")
def server(
    town: Town, pki: Path, people: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[service.Server]:
    running = serve(town, pki, people, tmp_path_factory.mktemp("audit"))
    try:
        yield running
    finally:
        running.stop(grace=1)


def resident(pki: Path, server: service.Server, name: str) -> rpb_grpc.ResidentServiceStub:
    tls = AgencyTLS.from_cert(pki / "residents" / "issued" / f"{name}.pem", ca=pki / "ca.pem")
    return rpb_grpc.ResidentServiceStub(tls.channel(f"127.0.0.1:{server.port}"))


def agency(pki: Path, server: service.Server, name: str) -> grpc.Channel:
    return AgencyTLS.from_cert(pki / "agencies" / f"{name}.pem").channel(f"127.0.0.1:{server.port}")


def verify_by(
    pki: Path, server: service.Server, name: str, affair: str, key: str, by: str = "my_number"
) -> None:
    stub = pb_grpc.IdentityVerificationServiceStub(agency(pki, server, name))
    reply = stub.Verify(
        pb.VerifyRequest(
            context=request_context(affair, "op-1"),
            key=pb.Key(**{by: key}),
            claims=pb.Claims(family_name="誰か"),
        ),
        timeout=10,
    )
    assert reply.found


def accesses(stub: rpb_grpc.ResidentServiceStub, **request: Any) -> list[rpb.Access]:
    """Every page of the caller's history."""
    out: list[rpb.Access] = []
    token = ""
    while True:
        page = stub.ListMyAccesses(
            rpb.ListMyAccessesRequest(page_token=token, **request), timeout=10
        )
        out.extend(page.accesses)
        token = page.next_page_token
        if not token:
            return out


def test_a_resident_sees_who_looked_at_them_and_under_which_affair(
    pki: Path, server: service.Server, people: dict[str, Any], town: Town
) -> None:
    alice, bob = people["alice"], people["bob"]
    verify_by(pki, server, "nenkin", PENSION, alice["my_number"])
    verify_by(pki, server, "nenkin", PENSION, bob["my_number"])
    stub = resident(pki, server, "alice")
    record = stub.GetMyRecord(rpb.GetMyRecordRequest(), timeout=10).resident
    assert (record.resident_code, record.my_number) == (alice["resident_code"], alice["my_number"])
    assert record.family_name == alice["family_name"]

    (seen,) = accesses(stub)  # bob's access is not hers; her own read is not shown back
    assert (seen.agency, seen.agency_name, seen.affair) == ("nenkin", "日本年金機構", PENSION)
    assert seen.legal_basis.startswith("住基法 別表第一")
    assert (seen.mode, seen.outcome, list(seen.fields)) == ("verify", "disclosed", ["family_name"])
    assert seen.time.endswith("Z")

    # Her reads are audited against her, as a resident's.
    trail = audit.read(server.frontend.audit.directory, subject=alice["resident_code"])
    own = trail.filter(pa.compute.equal(trail["agency"], "resident"))
    assert set(own["affair"].to_pylist()) >= {"own_record", "access_history"}


def test_the_history_follows_the_person_through_a_new_my_number(
    pki: Path, server: service.Server, people: dict[str, Any], town: Town
) -> None:
    alice = people["alice"]
    stub = resident(pki, server, "alice")
    before = len(accesses(stub))
    verify_by(pki, server, "nenkin", PENSION, alice["my_number"])
    (changed,) = town.apply(
        town.change(
            "my_number_change", alice["municipality_code"], resident_code=alice["resident_code"]
        )
    )
    assert changed["outcome"] == "applied" and changed["my_number"] != alice["my_number"]
    verify_by(pki, server, "nenkin", PENSION, changed["my_number"])
    after = accesses(stub)
    assert len(after) == before + 2  # made under the old number and the new
    assert (
        stub.GetMyRecord(rpb.GetMyRecordRequest(), timeout=10).resident.my_number
        == (changed["my_number"])
    )
    people["alice"] = {**alice, "my_number": changed["my_number"]}


def test_withheld_affairs_are_shown_once_their_period_has_passed(
    pki: Path,
    town: Town,
    people: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A server of its own: its trail's clock moves a year on.
    server = serve(town, pki, people, tmp_path / "audit")
    try:
        bob = people["bob"]
        stub = resident(pki, server, "bob")
        verify_by(pki, server, "nenkin", PENSION, bob["my_number"])
        verify_by(pki, server, "npa", "investigation", bob["resident_code"], by="resident_code")
        assert [a.agency for a in accesses(stub)] == ["nenkin"]  # withheld, and nothing says so
        year_on = records.clock() + 366 * records.DAY_US
        monkeypatch.setattr(records, "clock", lambda: year_on)
        shown = accesses(stub)
        assert [a.agency for a in shown] == ["npa", "nenkin"]  # newest first
        assert shown[0].affair_title.startswith("犯罪の捜査")
    finally:
        server.stop(grace=1)


def test_pages_and_periods(pki: Path, server: service.Server, people: dict[str, Any]) -> None:
    bob = people["bob"]
    for _ in range(3):
        verify_by(pki, server, "nenkin", PENSION, bob["my_number"])
    stub = resident(pki, server, "bob")
    whole = accesses(stub)
    assert len(whole) >= 4
    paged = accesses(stub, page_size=1)
    assert [a.time for a in paged] == [a.time for a in whole]
    assert [a.time for a in whole] == sorted((a.time for a in whole), reverse=True)
    newest = dt.datetime.fromisoformat(whole[0].time)
    assert [a.time for a in accesses(stub, since=newest.isoformat())] == [whole[0].time]
    assert accesses(stub, until=newest.isoformat())[0].time == whole[1].time
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).date().isoformat()
    assert accesses(stub, since=tomorrow) == []


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"page_size": 5000}, "page_size is 5000, at most 1000"),
        ({"page_token": "v1:x:1"}, "page_token is not one this service gave"),
        ({"page_token": "\x00"}, "page_token holds control characters"),
        ({"since": "yesterday"}, "since: 'yesterday' is not an ISO 8601 date or time"),
        ({"until": "2026-13-01"}, "until: '2026-13-01' is not an ISO 8601 date or time"),
        ({"my_number": "123"}, "my_number: "),
        ({"page_token": "v1:99999999999999999999:0"}, "page_token is not one this service"),
        ({"page_token": "v1:１２:0"}, "page_token is not one this service gave"),
    ],
)
def test_malformed_requests_are_refused_by_name(
    pki: Path, server: service.Server, request_fields: dict[str, Any], message: str
) -> None:
    stub = resident(pki, server, "alice")
    error = rpc_error(lambda: stub.ListMyAccesses(rpb.ListMyAccessesRequest(**request_fields)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    # Refused, and audited as the resident's call with its reason.
    trail = audit.read(server.frontend.audit.directory, agency="resident")
    assert (
        message
        in trail.filter(pa.compute.equal(trail["outcome"], "invalid_request"))["reason"][-1].as_py()
    )


def test_periods_reaching_past_the_trails_times_answer(
    pki: Path, server: service.Server, people: dict[str, Any]
) -> None:
    stub = resident(pki, server, "alice")
    whole = accesses(stub)
    assert accesses(stub, since="0001-01-01") == whole  # before 1970: from the start
    assert accesses(stub, until="0001-01-02") == []
    assert accesses(stub, since="9999-12-31") == []
    assert accesses(stub, until="9999-12-31T23:59:59") == whole


def test_never_anyone_elses(pki: Path, server: service.Server, people: dict[str, Any]) -> None:
    alice, bob = people["alice"], people["bob"]
    stub = resident(pki, server, "alice")
    for call in (
        lambda: stub.GetMyRecord(rpb.GetMyRecordRequest(my_number=bob["my_number"])),
        lambda: stub.ListMyAccesses(rpb.ListMyAccessesRequest(my_number=bob["my_number"])),
    ):
        error = rpc_error(call)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "only their own" in error.details()
    # Naming her own number is fine.
    own = stub.GetMyRecord(rpb.GetMyRecordRequest(my_number=alice["my_number"]), timeout=10)
    assert own.resident.resident_code == alice["resident_code"]
    # The attempts are in the trail, against the resident they named.
    trail = audit.read(server.frontend.audit.directory, subject=bob["resident_code"])
    denied = trail.filter(pa.compute.equal(trail["outcome"], "denied")).to_pylist()
    assert len(denied) == 2 and {d["agency"] for d in denied} == {"resident"}


def test_only_bound_residents_certificates_reach_the_service(
    pki: Path, server: service.Server, people: dict[str, Any]
) -> None:
    carol = resident(pki, server, "carol")  # issued, never bound
    error = rpc_error(lambda: carol.GetMyRecord(rpb.GetMyRecordRequest()))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "bound to no resident" in error.details()
    trail = audit.read(server.frontend.audit.directory)
    refused = trail.filter(pa.compute.equal(trail["reason"], error.details())).to_pylist()
    assert refused and refused[-1]["outcome"] == "denied" and refused[-1]["mode"] == "resident"
    assert refused[-1]["agency"].startswith("unregistered: ")  # who it was not, bounded

    nenkin = rpb_grpc.ResidentServiceStub(agency(pki, server, "nenkin"))
    error = rpc_error(lambda: nenkin.ListMyAccesses(rpb.ListMyAccessesRequest()))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "residents' certificates only" in error.details()

    # A resident's certificate names no agency.
    tls = AgencyTLS.from_cert(pki / "residents" / "issued" / "alice.pem", ca=pki / "ca.pem")
    stub = pb_grpc.IdentityVerificationServiceStub(tls.channel(f"127.0.0.1:{server.port}"))
    error = rpc_error(
        lambda: stub.Verify(
            pb.VerifyRequest(
                context=request_context(PENSION, "op"),
                key=pb.Key(my_number=people["bob"]["my_number"]),
                claims=pb.Claims(family_name="x"),
            )
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not a registered agency" in error.details()


def test_a_damaged_bindings_file_binds_no_one_new(tmp_path: Path, pki: Path) -> None:
    fingerprints = certs.issue_residents(pki, ["dave"])
    bind(tmp_path, {fingerprints["dave"]: 7})
    bindings = ResidentBindings(tmp_path / BINDINGS)
    assert bindings.person_of(fingerprints["dave"]) == 7
    # Replaced by something that is not the engine's bindings: the bindings in force stay.
    (tmp_path / BINDINGS).write_bytes(b"not parquet at all, and longer than before")
    assert bindings.person_of(fingerprints["dave"]) == 7
    pq.write_table(pa.table({"fingerprint": ["x"], "person": [-1]}), tmp_path / BINDINGS)
    assert bindings.person_of("x") is None and bindings.person_of(fingerprints["dave"]) == 7
    # A fresh reader of a damaged file binds no one at all.
    assert ResidentBindings(tmp_path / BINDINGS).person_of(fingerprints["dave"]) is None
