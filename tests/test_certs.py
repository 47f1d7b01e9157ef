"""Tests for demo certificates (juki_engine.certs): the CA, server and agency certificates, subject
strings, verification with cryptography's verifier, and a real grpc mutual-TLS handshake."""

from __future__ import annotations

import ipaddress
import os
import shutil
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from juki_engine.certs import (
    CertificateAuthority,
    CertPaths,
    canonical_subject,
    certificate_subject,
    create_demo,
    fingerprint,
    write_demo_policy,
)
from juki_engine.policy import Policy, example_path

AGENCIES = {
    "nenkin": "CN=nenkin,O=日本年金機構,C=JP",
    "moj": "CN=moj,O=法務省,C=JP",
}
ECHO = "/t.T/Echo"

E = TypeVar("E", bound=x509.ExtensionType)


@dataclass(frozen=True)
class Demo:
    ca: CertificateAuthority
    paths: dict[str, CertPaths]


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _store(ca: CertificateAuthority) -> Store:
    return Store([_load(ca.cert_path)])


def _extension(cert: x509.Certificate, kind: type[E]) -> x509.Extension[E]:
    return cert.extensions.get_extension_for_class(kind)


def _make_demo(directory: Path) -> Demo:
    paths = create_demo(directory, AGENCIES)
    return Demo(CertificateAuthority.load(directory), paths)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return _make_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The same agencies under a second, unrelated CA."""
    return _make_demo(tmp_path_factory.mktemp("other"))


@pytest.fixture(scope="module")
def expired(demo: Demo) -> CertPaths:
    """An agency certificate from the demo CA whose validity ended nine days ago."""
    ten_days_ago = datetime.now(UTC) - timedelta(days=10)
    return demo.ca.issue_client("expired", AGENCIES["nenkin"], days=1, not_before=ten_days_ago)


# --- the CA ---------------------------------------------------------------------------------


def test_create_then_load_round_trips(tmp_path: Path) -> None:
    directory = tmp_path / "not" / "yet"
    created = CertificateAuthority.create(directory, common_name="test CA", days=30)
    loaded = CertificateAuthority.load(directory)
    assert created.cert_path == loaded.cert_path == directory / "ca.pem"
    assert loaded.directory == directory
    cert = _load(loaded.cert_path)
    assert cert.subject.rfc4514_string() == "CN=test CA"
    assert cert.issuer == cert.subject
    assert _extension(cert, x509.BasicConstraints).critical
    assert _extension(cert, x509.BasicConstraints).value == x509.BasicConstraints(True, 0)
    usage = _extension(cert, x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == timedelta(days=30)
    # A leaf issued by the loaded CA verifies against the created CA's certificate.
    leaf = loaded.issue_client("nenkin", AGENCIES["nenkin"])
    PolicyBuilder().store(_store(created)).build_client_verifier().verify(_load(leaf.cert), [])


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    CertificateAuthority.create(tmp_path)
    key = (tmp_path / "ca.key").read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite") as raised:
        CertificateAuthority.create(tmp_path)
    assert raised.value.filename == str(tmp_path / "ca.key")
    assert (tmp_path / "ca.key").read_bytes() == key


@pytest.mark.parametrize("missing", ["ca.pem", "ca.key"])
def test_load_names_the_missing_file(tmp_path: Path, missing: str) -> None:
    CertificateAuthority.create(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(FileNotFoundError) as raised:
        CertificateAuthority.load(tmp_path)
    assert raised.value.filename == str(tmp_path / missing)
    assert missing in str(raised.value)


def test_load_rejects_a_key_from_another_ca(tmp_path: Path) -> None:
    CertificateAuthority.create(tmp_path / "a")
    CertificateAuthority.create(tmp_path / "b")
    shutil.copy(tmp_path / "b" / "ca.key", tmp_path / "a" / "ca.key")
    with pytest.raises(ValueError, match="not the private key"):
        CertificateAuthority.load(tmp_path / "a")


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_key_files_are_0600(tmp_path: Path) -> None:
    paths = create_demo(tmp_path, AGENCIES)
    keys = sorted(tmp_path.rglob("*.key"))
    signing = tmp_path / "audit-signing.key"  # the audit trail's, Ed25519
    residents = tmp_path / "residents" / "ca.key"  # the residents' CA, issuing nothing yet
    everything = [tmp_path / "ca.key", signing, residents, *(p.key for p in paths.values())]
    assert keys == sorted(everything)
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    # Reissuing replaces the key file and keeps it private, whatever mode the old file had.
    os.chmod(paths["moj"].key, 0o644)
    reissued = CertificateAuthority.load(tmp_path).issue_client("moj", AGENCIES["moj"])
    assert stat.S_IMODE(reissued.key.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.rglob(".*")] == []  # no temporary files left behind


def test_keys_are_unencrypted_pkcs8_p256(demo: Demo) -> None:
    for key_path in sorted(demo.ca.directory.rglob("*.key")):
        if key_path.name == "audit-signing.key":
            continue  # Ed25519: signs the audit trail, never TLS
        pem = key_path.read_bytes()
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----"), key_path
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(key.curve, ec.SECP256R1)


# --- leaves ---------------------------------------------------------------------------------


def test_server_certificate_has_sans_and_server_auth(demo: Demo) -> None:
    cert = _load(demo.paths["server"].cert)
    assert demo.paths["server"] == CertPaths(
        demo.ca.directory / "server.pem", demo.ca.directory / "server.key"
    )
    sans = _extension(cert, x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert list(_extension(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert _extension(cert, x509.BasicConstraints).value.ca is False
    assert _extension(cert, x509.KeyUsage).value.digital_signature


@pytest.mark.parametrize("agency", sorted(AGENCIES))
def test_client_certificate_has_client_auth_and_its_subject(demo: Demo, agency: str) -> None:
    paths = demo.paths[agency]
    assert paths == CertPaths(
        demo.ca.directory / "agencies" / f"{agency}.pem",
        demo.ca.directory / "agencies" / f"{agency}.key",
    )
    cert = _load(paths.cert)
    assert list(_extension(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _extension(cert, x509.KeyUsage).value.digital_signature
    # The string the policy author writes is the string the server reads off the certificate.
    assert certificate_subject(paths.cert.read_bytes()) == AGENCIES[agency]


def test_subject_keeps_japanese_organization_as_utf8(demo: Demo) -> None:
    cert = _load(demo.paths["nenkin"].cert)
    (organization,) = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    assert organization.value == "日本年金機構"
    utf8 = "日本年金機構".encode()
    assert bytes([0x0C, len(utf8)]) + utf8 in cert.subject.public_bytes()  # UTF8String
    # RFC 4514 order is the reverse of the certificate's: C is stored first.
    assert [rdn.rfc4514_string() for rdn in cert.subject.rdns] == [
        "C=JP",
        "O=日本年金機構",
        "CN=nenkin",
    ]


def test_validity_starts_in_the_past_and_serials_are_random(demo: Demo) -> None:
    now = datetime.now(UTC)
    certs = [_load(demo.ca.cert_path), *(_load(paths.cert) for paths in demo.paths.values())]
    for cert in certs:
        assert now - timedelta(hours=1) < cert.not_valid_before_utc < now - timedelta(minutes=1)
    serials = {cert.serial_number for cert in certs}
    assert len(serials) == len(certs)
    assert all(serial.bit_length() > 64 for serial in serials)


def test_leaf_never_outlives_its_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path, days=10)
    leaf = _load(ca.issue_server(days=825).cert)
    assert leaf.not_valid_after_utc == _load(ca.cert_path).not_valid_after_utc


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("CN=nenkin,O=日本年金機構,C=JP", "CN=nenkin,O=日本年金機構,C=JP"),
        ("CN=a\\,b,OU=住民基本台帳,O=総務省,L=千代田区,ST=東京都,C=JP", None),
        ("CN=x,OU=y+O=z,C=JP", "CN=x,O=z+OU=y,C=JP"),
        ("CN=x,O=z+OU=y,C=JP", "CN=x,O=z+OU=y,C=JP"),
    ],
)
def test_subject_round_trips_through_a_certificate(
    tmp_path: Path, written: str, canonical: str | None
) -> None:
    expected = written if canonical is None else canonical
    assert canonical_subject(written) == expected
    leaf = CertificateAuthority.create(tmp_path).issue_client("agency", written)
    assert certificate_subject(leaf.cert.read_bytes()) == expected


@pytest.mark.parametrize(
    "subject", ["", "CN=nenkin, O=日本年金機構, C=JP", "cn=nenkin", "nenkin", "C=JPN"]
)
def test_unparseable_subjects_are_rejected(tmp_path: Path, subject: str) -> None:
    with pytest.raises(ValueError, match="CN=nenkin,O=日本年金機構,C=JP"):
        canonical_subject(subject)
    ca = CertificateAuthority.create(tmp_path)
    with pytest.raises(ValueError, match="CN=nenkin,O=日本年金機構,C=JP"):
        ca.issue_client("agency", subject)
    assert not (tmp_path / "agencies" / "agency.key").exists()


def test_certificate_subject_reads_the_first_of_a_chain(demo: Demo) -> None:
    chain = demo.paths["moj"].cert.read_bytes() + demo.ca.cert_path.read_bytes()
    assert certificate_subject(chain) == AGENCIES["moj"]


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "a b", "a\\b"])
def test_names_must_be_plain_file_names(demo: Demo, name: str) -> None:
    with pytest.raises(ValueError, match="file name"):
        demo.ca.issue_client(name, AGENCIES["moj"])
    with pytest.raises(ValueError, match="file name"):
        demo.ca.issue_server(name)


def test_server_cannot_overwrite_the_ca(demo: Demo) -> None:
    with pytest.raises(ValueError, match="the CA"):
        demo.ca.issue_server("ca")


def test_bad_arguments(demo: Demo) -> None:
    with pytest.raises(TypeError, match="single string"):
        demo.ca.issue_server("web", "localhost")
    with pytest.raises(ValueError, match="at least one host"):
        demo.ca.issue_server("web", [])
    with pytest.raises(ValueError, match="timezone-aware"):
        demo.ca.issue_client("naive", AGENCIES["moj"], not_before=datetime(2020, 1, 1))
    with pytest.raises(ValueError, match="at least 1"):
        demo.ca.issue_client("brief", AGENCIES["moj"], days=0)
    assert not (demo.ca.directory / "web.pem").exists()


# --- verification with cryptography's verifier ----------------------------------------------


@pytest.mark.parametrize(
    "host", [DNSName("localhost"), IPAddress(ipaddress.ip_address("127.0.0.1"))], ids=str
)
def test_server_certificate_verifies_against_the_ca(demo: Demo, host: DNSName | IPAddress) -> None:
    verifier = PolicyBuilder().store(_store(demo.ca)).build_server_verifier(host)
    chain = verifier.verify(_load(demo.paths["server"].cert), [])
    assert chain[-1] == _load(demo.ca.cert_path)


def test_server_certificate_does_not_verify_for_another_host(demo: Demo) -> None:
    verifier = PolicyBuilder().store(_store(demo.ca)).build_server_verifier(DNSName("example.jp"))
    with pytest.raises(VerificationError):
        verifier.verify(_load(demo.paths["server"].cert), [])


@pytest.mark.parametrize("agency", sorted(AGENCIES))
def test_client_certificate_verifies_against_the_ca(demo: Demo, agency: str) -> None:
    verifier = PolicyBuilder().store(_store(demo.ca)).build_client_verifier()
    verified = verifier.verify(_load(demo.paths[agency].cert), [])
    assert verified.chain[0].subject.rfc4514_string() == AGENCIES[agency]
    assert verified.subjects == [x509.UniformResourceIdentifier(f"urn:juki-engine:agency:{agency}")]


def test_certificates_from_another_ca_do_not_verify(demo: Demo, other: Demo) -> None:
    store = _store(demo.ca)
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_client_verifier().verify(
            _load(other.paths["nenkin"].cert), []
        )
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(DNSName("localhost")).verify(
            _load(other.paths["server"].cert), []
        )


def test_expired_client_certificate_does_not_verify(demo: Demo, expired: CertPaths) -> None:
    cert = _load(expired.cert)
    assert cert.not_valid_after_utc < datetime.now(UTC)
    with pytest.raises(VerificationError, match="not valid at validation time"):
        PolicyBuilder().store(_store(demo.ca)).build_client_verifier().verify(cert, [])


# --- create_demo ----------------------------------------------------------------------------


def _contents(paths: dict[str, CertPaths]) -> dict[str, tuple[bytes, bytes]]:
    return {name: (p.cert.read_bytes(), p.key.read_bytes()) for name, p in paths.items()}


def test_create_demo_is_idempotent(tmp_path: Path) -> None:
    first = create_demo(tmp_path, AGENCIES)
    assert set(first) == {"server", *AGENCIES}
    before = _contents(first)
    ca_before = (tmp_path / "ca.pem").read_bytes()
    again = create_demo(tmp_path, AGENCIES)
    assert again == first
    assert _contents(again) == before
    assert (tmp_path / "ca.pem").read_bytes() == ca_before
    # A new agency is issued; nothing else is touched.
    more = create_demo(tmp_path, {**AGENCIES, "soumu": "CN=soumu,O=総務省,C=JP"})
    assert {name: contents for name, contents in _contents(more).items() if name in before} == (
        before
    )
    assert certificate_subject(more["soumu"].cert.read_bytes()) == "CN=soumu,O=総務省,C=JP"


def test_create_demo_reissues_what_is_stale(tmp_path: Path) -> None:
    before = _contents(create_demo(tmp_path, AGENCIES))
    ten_days_ago = datetime.now(UTC) - timedelta(days=10)
    ca = CertificateAuthority.load(tmp_path)
    ca.issue_client("moj", AGENCIES["moj"], days=1, not_before=ten_days_ago)
    changed = {**AGENCIES, "nenkin": "CN=nenkin,OU=年金給付,O=日本年金機構,C=JP"}
    after = create_demo(tmp_path, changed, hosts=["juki.example.jp"])
    contents = _contents(after)
    for name in ("server", "nenkin", "moj"):
        assert contents[name] != before[name], name
    assert certificate_subject(after["nenkin"].cert.read_bytes()) == changed["nenkin"]
    assert _load(after["moj"].cert).not_valid_after_utc > datetime.now(UTC)
    verifier = PolicyBuilder().store(_store(ca)).build_server_verifier(DNSName("juki.example.jp"))
    verifier.verify(_load(after["server"].cert), [])


def test_create_demo_with_a_new_ca_reissues_everything(tmp_path: Path) -> None:
    before = _contents(create_demo(tmp_path, AGENCIES))
    (tmp_path / "ca.key").unlink()
    (tmp_path / "ca.pem").unlink()
    after = create_demo(tmp_path, AGENCIES)
    store = _store(CertificateAuthority.load(tmp_path))
    for name, contents in _contents(after).items():
        assert contents != before[name], name
    server = PolicyBuilder().store(store).build_server_verifier(DNSName("localhost"))
    server.verify(_load(after["server"].cert), [])
    for name in AGENCIES:
        PolicyBuilder().store(store).build_client_verifier().verify(_load(after[name].cert), [])


def test_create_demo_checks_its_input_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RFC 4514"):
        create_demo(tmp_path / "a", {"nenkin": "CN=nenkin, O=日本年金機構"})
    with pytest.raises(ValueError, match="'server'"):
        create_demo(tmp_path / "b", {"server": "CN=server"})
    with pytest.raises(ValueError, match="file name"):
        create_demo(tmp_path / "c", {"../nenkin": "CN=nenkin"})
    assert list(tmp_path.iterdir()) == []


# --- a real grpc mutual-TLS handshake -------------------------------------------------------


def _echo_subject(request: bytes, context: grpc.ServicerContext) -> bytes:
    """Answers with the peer's certificate subject, as the server maps peers to agencies."""
    (pem,) = context.auth_context()["x509_pem_cert"]
    return certificate_subject(pem).encode()


def _identity(data: bytes) -> bytes:
    return data


@pytest.fixture(scope="module")
def port(demo: Demo) -> Iterator[int]:
    handler = grpc.method_handlers_generic_handler(
        "t.T",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(
                _echo_subject, request_deserializer=_identity, response_serializer=_identity
            )
        },
    )
    credentials = grpc.ssl_server_credentials(
        [(demo.paths["server"].key.read_bytes(), demo.paths["server"].cert.read_bytes())],
        root_certificates=demo.ca.cert_path.read_bytes(),
        require_client_auth=True,
    )
    with ThreadPoolExecutor(max_workers=2) as executor:
        server = grpc.server(executor)
        try:
            server.add_generic_rpc_handlers([handler])
            bound = server.add_secure_port("127.0.0.1:0", credentials)
            server.start()
            yield bound
        finally:
            server.stop(None).wait()


def _call(
    port: int,
    client: CertPaths | None,
    *,
    root: Path,
    target_name: str | None = None,
) -> bytes:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root.read_bytes(),
        private_key=None if client is None else client.key.read_bytes(),
        certificate_chain=None if client is None else client.cert.read_bytes(),
    )
    options = [] if target_name is None else [("grpc.ssl_target_name_override", target_name)]
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        echo = channel.unary_unary(
            ECHO, request_serializer=_identity, response_deserializer=_identity
        )
        response: bytes = echo(b"ping", timeout=5)
        return response


@pytest.mark.parametrize("target_name", [None, "localhost"], ids=["ip-san", "dns-san"])
@pytest.mark.parametrize("agency", sorted(AGENCIES))
def test_mtls_handshake_identifies_the_agency(
    demo: Demo, port: int, agency: str, target_name: str | None
) -> None:
    response = _call(port, demo.paths[agency], root=demo.ca.cert_path, target_name=target_name)
    assert response.decode() == AGENCIES[agency]


@pytest.mark.parametrize("client", ["none", "other-ca", "expired"])
def test_mtls_handshake_rejects_clients(
    demo: Demo, other: Demo, expired: CertPaths, port: int, client: str
) -> None:
    paths = {"none": None, "other-ca": other.paths["nenkin"], "expired": expired}[client]
    with pytest.raises(grpc.RpcError) as raised:
        _call(port, paths, root=demo.ca.cert_path)
    assert isinstance(raised.value, grpc.Call)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_client_rejects_a_server_it_does_not_trust(demo: Demo, other: Demo, port: int) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        _call(port, demo.paths["nenkin"], root=other.ca.cert_path)
    assert isinstance(raised.value, grpc.Call)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_write_demo_policy_binds_the_example_to_the_demo_ca(tmp_path: Path) -> None:
    create_demo(tmp_path, AGENCIES)
    path = write_demo_policy(tmp_path, example_path())
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    bound = Policy.load(path)
    assert bound.authorities == {"demo": fingerprint(ca)}
    assert {a.certificate_issuer for a in bound.agencies} == {fingerprint(ca)}
    template = tmp_path / "no-demo.toml"
    template.write_text("[[agency]]\n")
    with pytest.raises(ValueError, match="no 'demo"):
        write_demo_policy(tmp_path, template)
