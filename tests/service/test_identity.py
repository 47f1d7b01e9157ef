"""The trust boundary: an agency is its issuing CA, subject and (where pinned) key; a revoked
certificate names no one, from the next call or bulk message on."""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pyarrow as pa
import pytest
from calls import PENSION, Row, claims_of, ctx, rpc_error
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from juki_engine import Registry, audit, certs, service
from juki_engine._proto import registry_pb2 as pb
from juki_engine._proto import registry_pb2_grpc as pb_grpc
from juki_engine.audit import AuditTrail
from juki_engine.client import AgencyTLS, BulkJob
from juki_engine.policy import Policy, PolicyError, example_path

NENKIN = "CN=nenkin,O=日本年金機構,C=JP"


@pytest.fixture
def two_cas(tmp_path: Path) -> Path:
    """A server directory trusting two CAs; both issue a certificate with nenkin's subject, and
    the policy binds nenkin to the first."""
    first = tmp_path / "first"
    agencies = {a.code: a.certificate_subject for a in Policy.load(example_path()).agencies}
    certs.create_demo(first, agencies)
    certs.write_demo_policy(first, example_path())
    other = certs.CertificateAuthority.create(tmp_path / "other")
    other.issue_client("nenkin", NENKIN)
    bundle = (first / "ca.pem").read_bytes() + (tmp_path / "other" / "ca.pem").read_bytes()
    (first / "ca.pem").write_bytes(bundle)
    return tmp_path


def serve(small: Registry, directory: Path, policy: Policy, audit_dir: Path) -> service.Server:
    frontend = service.Frontend(small, policy, AuditTrail(audit_dir))
    return service.start(frontend, service.ServerTLS.in_directory(directory))


@pytest.fixture
def server(small: Registry, two_cas: Path, tmp_path: Path) -> Iterator[service.Server]:
    first = two_cas / "first"
    srv = serve(small, first, Policy.load(first / "policy.toml"), tmp_path / "audit")
    try:
        yield srv
    finally:
        srv.stop(grace=1)


def list_affairs(srv: service.Server, cert: Path, ca: Path) -> pb.ListAffairsResponse:
    with AgencyTLS.from_cert(cert, ca=ca).channel(f"127.0.0.1:{srv.port}") as ch:
        return pb_grpc.IdentityVerificationServiceStub(ch).ListAffairs(
            pb.ListAffairsRequest(), timeout=10
        )


def test_the_same_subject_from_another_trusted_ca_is_refused(
    server: service.Server, two_cas: Path
) -> None:
    ca = two_cas / "first" / "ca.pem"
    assert list_affairs(server, two_cas / "first" / "agencies" / "nenkin.pem", ca).agency_code
    forged = two_cas / "other" / "agencies" / "nenkin.pem"
    error = rpc_error(lambda: list_affairs(server, forged, ca))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not a registered agency" in error.details()
    (record,) = audit.read(server.frontend.audit.directory).to_pylist()
    assert (record["mode"], record["outcome"]) == ("list_affairs", "denied")
    assert record["agency"].startswith("unregistered: ")


def pinned(policy_path: Path, pins: list[str]) -> Policy:
    text = policy_path.read_text()
    line = 'certificate_issuer = "demo"\n'
    text = text.replace(line, line + f"key_pins = {pins!r}\n".replace("'", '"'), 1)
    return Policy.from_dict(tomllib.loads(text))


def test_key_pins(server: service.Server, two_cas: Path) -> None:
    first = two_cas / "first"
    cert = first / "agencies" / "nenkin.pem"
    pin = certs.key_pin(x509.load_pem_x509_certificate(cert.read_bytes()))
    server.frontend.policy = pinned(first / "policy.toml", [pin, "ab" * 32])
    assert list_affairs(server, cert, first / "ca.pem").agency_code == "nenkin"
    server.frontend.policy = pinned(first / "policy.toml", ["cd" * 32, "ab" * 32])
    error = rpc_error(lambda: list_affairs(server, cert, first / "ca.pem"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not pinned" in error.details()
    with pytest.raises(PolicyError, match="pin two different keys or more"):
        pinned(first / "policy.toml", [pin])


def test_a_policy_bound_to_an_untrusted_ca_does_not_start(
    small: Registry, two_cas: Path, tmp_path: Path
) -> None:
    with pytest.raises(PolicyError, match="not in the server's trust bundle"):
        serve(small, two_cas / "first", Policy.load(example_path()), tmp_path / "audit2")


def test_a_revoked_certificate_stops_a_running_job_at_its_next_message(
    server: service.Server, two_cas: Path, small_rows: list[Row]
) -> None:
    first = two_cas / "first"
    cert = first / "agencies" / "nenkin.pem"
    crl = first / "revoked.pem"
    ca = certs.CertificateAuthority.load(first)
    ca.write_crl([], crl)
    trust = service.TrustStore((first / "ca.pem").read_bytes(), crl)
    server.frontend.trust = trust
    answered = threading.Event()
    revoked = threading.Event()

    def messages() -> Iterator[pa.RecordBatch]:
        yield claims_of(small_rows, 100).to_batches()[0]
        assert answered.wait(10)
        ca.write_crl([cert], crl)
        server.frontend.reload(first / "policy.toml")
        revoked.set()
        yield claims_of(small_rows, 100, start=100).to_batches()[0]

    received = 0
    with AgencyTLS.from_cert(cert).channel(f"127.0.0.1:{server.port}") as ch:
        job = BulkJob(ch, ctx(), "resident_code")
        with pytest.raises(grpc.RpcError) as stopped:
            for _, results in job.run(messages()):
                received += results.num_rows
                answered.set()
    assert revoked.is_set() and received == 100
    assert stopped.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "revoked" in stopped.value.details()
    # A typed call is refused too, and the refusals are audited under the message's residents.
    error = rpc_error(lambda: list_affairs(server, cert, first / "ca.pem"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    logged = audit.read(server.frontend.audit.directory).to_pylist()
    denied = [
        r for r in logged if r["request_id"] == job.context.request_id and r["outcome"] == "denied"
    ]
    assert len(denied) == 100 and all("revoked" in r["reason"] for r in denied)


def test_a_broken_crl_keeps_the_revocations_in_force(server: service.Server, two_cas: Path) -> None:
    first = two_cas / "first"
    cert = first / "agencies" / "nenkin.pem"
    crl = first / "revoked.pem"
    certs.CertificateAuthority.load(first).write_crl([cert], crl)
    server.frontend.trust = service.TrustStore((first / "ca.pem").read_bytes(), crl)
    crl.write_bytes(b"-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n")
    server.frontend.reload(first / "policy.toml")
    error = rpc_error(lambda: list_affairs(server, cert, first / "ca.pem"))
    assert "revoked" in error.details()
    # A CRL from a CA the server does not trust is refused as a whole.
    certs.CertificateAuthority.load(two_cas / "other").write_crl([], crl)
    first_ca = x509.load_pem_x509_certificates((first / "ca.pem").read_bytes())[0]
    with pytest.raises(PolicyError, match="no CA of the server's trust bundle"):
        service.TrustStore(first_ca.public_bytes(serialization.Encoding.PEM), crl)


def test_pension_affair_still_answers_for_the_bound_agency(
    server: service.Server, two_cas: Path, small_rows: list[Row]
) -> None:
    first = two_cas / "first"
    with AgencyTLS.from_cert(first / "agencies" / "nenkin.pem").channel(
        f"127.0.0.1:{server.port}"
    ) as ch:
        job = BulkJob(ch, ctx(PENSION), "resident_code")
        rows = sum(r.num_rows for _, r in job.run(claims_of(small_rows, 10).to_batches()))
    assert rows == 10
