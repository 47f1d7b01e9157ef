"""Demo and test certificates for the gRPC server's mutual TLS, and the subject strings that name
agencies (機関) in its policy file.

The server identifies each agency (日本年金機構, 法務省, …) by its client certificate's subject.
This module makes a local certificate authority, a server certificate and one client certificate
per agency with the `cryptography` package, for the demo (`juki certs`) and the tests; production
deployments bring their own. Keys are EC P-256 (fast to generate, accepted by grpc's BoringSSL),
signatures SHA-256.

Layout of a certificate directory::

    ca.pem  ca.key                  the CA
    <name>.pem  <name>.key          server certificates (default name "server")
    agencies/<name>.pem  .key       one client certificate per agency
    audit-signing.key  .pub         the server's audit-trail signing key (Ed25519)
    residents/ca.pem  ca.key        the residents' CA (`juki certs --residents`)
    residents/issued/<name>.pem     one client certificate per demo resident

Certificates are PEM; keys are unencrypted PKCS8 PEM with file mode 0600.

Subject strings (`certificate_subject`, `canonical_subject`) are RFC 4514 as cryptography's
`Name.rfc4514_string()` writes them: most specific RDN first (RFC 4514 reverses the order in which
the certificate stores them, so ``CN=nenkin,O=日本年金機構,C=JP`` is stored C, O, CN), attribute
names in upper case (CN, O, OU, C, L, ST, STREET, DC, UID; other attributes as dotted OIDs), no
spaces around ``,`` ``+`` ``=``, RFC 4514 escapes (``\\,`` …) but non-ASCII characters as
themselves, and the attributes of a multi-valued RDN (``O=x+OU=y``) sorted. The string a policy
author writes in that form is exactly the string `certificate_subject` returns for a certificate
issued with it; `canonical_subject` rewrites any parseable RFC 4514 string into that form.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "AGENCY_DIRECTORY",
    "CA_CERT",
    "CA_KEY",
    "DEFAULT_HOSTS",
    "CertPaths",
    "CertificateAuthority",
    "canonical_subject",
    "certificate_subject",
    "create_demo",
    "fingerprint",
    "key_pin",
    "write_demo_policy",
]

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
AGENCY_DIRECTORY = "agencies"
RESIDENTS_DIRECTORY = "residents"
RESIDENTS_CA = f"{RESIDENTS_DIRECTORY}/{CA_CERT}"
"""The residents' CA under a certificate directory: a root of its own, standing in for the
J-LIS CA that issues the My Number card's 利用者証明用電子証明書."""
AUDIT_SIGNING_KEY = "audit-signing.key"
"""The server's Ed25519 key that signs the audit trail's checkpoints and manifest (its public
half beside it, `audit-signing.pub`, is what `juki audit verify` checks with)."""
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")

# Certificates start this far in the past so that a peer whose clock is a little behind ours
# does not reject a certificate issued a moment ago.
_CLOCK_SKEW = timedelta(minutes=5)
# Names become file names: no separators, no leading dot, nothing a shell or Windows mangles.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

# The demo CA's line in a policy's [certificate_authorities] table.
_DEMO_AUTHORITY = re.compile(r'^(demo\s*=\s*)"[0-9a-fA-F:]*"', re.MULTILINE)

_SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True)
class CertPaths:
    """Where an issued certificate and its private key were written."""

    cert: Path
    """PEM certificate."""
    key: Path
    """PEM private key (PKCS8, unencrypted), file mode 0600."""


class CertificateAuthority:
    """A local CA that signs server and agency client certificates into its directory.

    Make one with `create` or open one with `load`; the constructor takes already-loaded parts.
    """

    __slots__ = ("_cert", "_directory", "_key")

    def __init__(self, directory: Path, cert: x509.Certificate, key: _SigningKey) -> None:
        self._directory = directory
        self._cert = cert
        self._key = key

    def __repr__(self) -> str:
        subject = self._cert.subject.rfc4514_string()
        return f"CertificateAuthority({str(self._directory)!r}, subject={subject!r})"

    @classmethod
    def create(
        cls,
        directory: str | os.PathLike[str],
        *,
        common_name: str = "juki_engine demo CA",
        days: int = 3650,
    ) -> CertificateAuthority:
        """Make a new CA in `directory` (created if needed): ``ca.pem`` and ``ca.key`` (0600).

        Raises FileExistsError, naming the file, if ``ca.key`` already exists: replacing a CA
        silently would orphan every certificate it issued.
        """
        _check_days(days)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        start = _now() - _CLOCK_SKEW
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=days))
            # path_length=0: this CA signs leaves only, never another CA.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        # The key goes first and exclusively: O_EXCL makes the refusal to overwrite race-free.
        key_path = directory / CA_KEY
        try:
            _write_new(key_path, _key_pem(key), mode=0o600)
        except FileExistsError:
            raise FileExistsError(
                errno.EEXIST,
                "a CA key already exists; refusing to overwrite it (load it instead)",
                str(key_path),
            ) from None
        _write_replacing(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
        return cls(directory, cert, key)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> CertificateAuthority:
        """Open the CA in `directory` (``ca.pem`` and ``ca.key``).

        Raises FileNotFoundError naming whichever file is missing, and ValueError if the files
        are not a CA certificate and its matching EC or RSA key.
        """
        directory = Path(directory)
        cert_path, key_path = directory / CA_CERT, directory / CA_KEY
        cert = x509.load_pem_x509_certificate(_read(cert_path, "CA certificate"))
        key = serialization.load_pem_private_key(_read(key_path, "CA key"), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"{key_path}: expected an EC or RSA private key")
        if _spki(key.public_key()) != _spki(cert.public_key()):
            raise ValueError(f"{key_path} is not the private key of {cert_path}")
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise ValueError(f"{cert_path} is not a CA certificate (basicConstraints CA:true)")
        return cls(directory, cert, key)

    @property
    def directory(self) -> Path:
        """The directory holding the CA and everything it issued."""
        return self._directory

    @property
    def cert_path(self) -> Path:
        """The CA certificate (``ca.pem``): the root that servers and clients trust."""
        return self._directory / CA_CERT

    def issue_server(
        self, name: str = "server", hosts: Sequence[str] = DEFAULT_HOSTS, *, days: int = 825
    ) -> CertPaths:
        """Issue a server certificate to ``<name>.pem`` / ``<name>.key``, replacing any there.

        `hosts` become the subjectAltNames: IP addresses where they parse as one, DNS names
        otherwise; the first is also the subject's CN. Extended key usage is serverAuth.
        """
        paths = self._server_paths(name)
        general_names = _general_names(hosts)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
        return self._issue(
            paths,
            subject,
            [
                (x509.SubjectAlternativeName(general_names), False),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            ],
            days=days,
            not_before=None,
        )

    def issue_client(
        self, name: str, subject: str, *, days: int = 825, not_before: datetime | None = None
    ) -> CertPaths:
        """Issue an agency's client certificate to ``agencies/<name>.pem`` / ``.key``.

        `subject` is an RFC 4514 string such as ``CN=nenkin,O=日本年金機構,C=JP``; the
        certificate's `certificate_subject` is its canonical form. Extended key usage is
        clientAuth; the subjectAltName is the URI ``urn:juki-engine:agency:<name>``.
        `not_before` (timezone-aware; default a few minutes ago) starts the validity period of
        `days` days, so a past `not_before` with few days makes an expired certificate.
        """
        paths = self._client_paths(name)
        # Verifiers following the CA/Browser profile (cryptography's included) require a
        # subjectAltName on every leaf; the agency is still identified by the subject.
        uri = x509.UniformResourceIdentifier(f"urn:juki-engine:agency:{name}")
        return self._issue(
            paths,
            _parse_subject(subject),
            [
                (x509.SubjectAlternativeName([uri]), False),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
            ],
            days=days,
            not_before=not_before,
        )

    def _server_paths(self, name: str) -> CertPaths:
        _check_file_name(name)
        if name == Path(CA_CERT).stem:
            raise ValueError(f"a server certificate cannot be named {name!r}: that is the CA")
        return CertPaths(self._directory / f"{name}.pem", self._directory / f"{name}.key")

    def issue_resident(self, name: str, *, days: int = 1825) -> CertPaths:
        """Issue a resident's client certificate to ``issued/<name>.pem`` / ``.key``. Like the
        card's 利用者証明用電子証明書 it names no one: its subject is a random serial; which
        person it was issued to is the engine's record, not the certificate's."""
        _check_file_name(name)
        folder = self._directory / "issued"
        paths = CertPaths(folder / f"{name}.pem", folder / f"{name}.key")
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "利用者証明用電子証明書 (demo)"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{x509.random_serial_number():x}"),
            ]
        )
        uri = x509.UniformResourceIdentifier("urn:juki-engine:resident")
        return self._issue(
            paths,
            subject,
            [
                (x509.SubjectAlternativeName([uri]), False),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
            ],
            days=days,
            not_before=None,
        )

    def _client_paths(self, name: str) -> CertPaths:
        _check_file_name(name)
        folder = self._directory / AGENCY_DIRECTORY
        return CertPaths(folder / f"{name}.pem", folder / f"{name}.key")

    def _issue(
        self,
        paths: CertPaths,
        subject: x509.Name,
        extensions: list[tuple[x509.ExtensionType, bool]],
        *,
        days: int,
        not_before: datetime | None,
    ) -> CertPaths:
        _check_days(days)
        if not_before is None:
            start = _now() - _CLOCK_SKEW
        elif not_before.utcoffset() is None:
            raise ValueError("not_before must be timezone-aware")
        else:
            start = not_before
        # A leaf outliving its CA would only fail verification later, less clearly.
        end = min(start + timedelta(days=days), self._cert.not_valid_after_utc)
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(self._authority_key_identifier(), critical=False)
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        cert = builder.sign(self._key, hashes.SHA256())
        paths.cert.parent.mkdir(parents=True, exist_ok=True)
        _write_replacing(paths.key, _key_pem(key), mode=0o600)
        _write_replacing(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
        return paths

    def write_crl(
        self, revoked: Sequence[str | os.PathLike[str]], path: str | os.PathLike[str]
    ) -> Path:
        """A certificate revocation list (PEM) at `path` revoking the certificates at the given
        paths (the server honours it with `juki serve --crl`); rewritten atomically."""
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._cert.subject)
            .last_update(now - _CLOCK_SKEW)
            .next_update(now + timedelta(days=7))
        )
        for cert_path in revoked:
            cert = x509.load_pem_x509_certificate(_read(Path(cert_path), "certificate"))
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(cert.serial_number)
                .revocation_date(now - _CLOCK_SKEW)
                .build()
            )
        crl = builder.sign(self._key, hashes.SHA256())
        out = Path(path)
        _write_replacing(out, crl.public_bytes(serialization.Encoding.PEM))
        return out

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        # Copy the CA's own subjectKeyIdentifier where it has one: verifiers match the two, and a
        # CA made elsewhere may have computed its identifier differently.
        try:
            ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)

    def _current(self, paths: CertPaths) -> x509.Certificate | None:
        """The certificate at `paths` if both files are there and it is one this CA issued that
        has not expired; None otherwise."""
        if not paths.key.is_file():
            return None
        try:
            cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
            cert.verify_directly_issued_by(self._cert)
        except (OSError, ValueError, TypeError, InvalidSignature):
            return None
        return cert if cert.not_valid_after_utc > _now() else None


def certificate_subject(pem: bytes) -> str:
    """The subject of a PEM certificate (the first, if `pem` holds a chain) as a canonical RFC 4514
    string (see the module docstring): what the server matches against its policy file.

    `pem` is typically a gRPC peer's ``context.auth_context()["x509_pem_cert"][0]``.
    """
    return _canonical(x509.load_pem_x509_certificate(pem).subject)


def fingerprint(cert: x509.Certificate) -> str:
    """The SHA-256 fingerprint of a certificate's DER encoding, lower-case hex: how a policy
    names the CA that issues an agency's certificates."""
    return cert.fingerprint(hashes.SHA256()).hex()


def key_pin(cert: x509.Certificate) -> str:
    """The SHA-256 of a certificate's SubjectPublicKeyInfo, lower-case hex: a policy's key pin."""
    return hashlib.sha256(_spki(cert.public_key())).hexdigest()


def write_demo_policy(directory: str | os.PathLike[str], template: str | os.PathLike[str]) -> Path:
    """`policy.toml` in the demo certificate `directory`: the policy `template` with its `demo`
    certificate authority bound to the fingerprint of the directory's CA (see
    `policy.example.toml`). Rewritten atomically; returns its path."""
    directory = Path(directory)
    ca = x509.load_pem_x509_certificate(_read(directory / CA_CERT, "CA certificate"))
    text = Path(template).read_text(encoding="utf-8")
    bound, count = _DEMO_AUTHORITY.subn(f'\\g<1>"{fingerprint(ca)}"', text)
    if count != 1:
        raise ValueError(f"{template}: no 'demo = \"<fingerprint>\"' line to bind to the demo CA")
    path = directory / "policy.toml"
    _write_replacing(path, bound.encode())
    return path


def canonical_subject(subject: str) -> str:
    """`subject` (RFC 4514) rewritten into the canonical form `certificate_subject` returns, so a
    policy file can be checked, and compared, when it is loaded.

    Raises ValueError, saying what to write, if `subject` does not parse or is empty.
    """
    return _canonical(_parse_subject(subject))


def create_demo(
    directory: str | os.PathLike[str],
    agencies: Mapping[str, str],
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
) -> dict[str, CertPaths]:
    """A CA, a server certificate for `hosts` and a client certificate per agency in `agencies`
    (``{name: RFC 4514 subject}``), in `directory`.

    Returns ``{"server": …, <agency name>: …}``. Idempotent: an existing CA is loaded, and a
    certificate is issued only where none is there or the one there is stale (not issued by this
    CA, expired, or for other hosts / another subject).
    """
    if "server" in agencies:
        raise ValueError("an agency cannot be named 'server': that key is the server certificate")
    # Check every input before writing anything, so a typo leaves no half-made directory.
    subjects = {name: canonical_subject(subject) for name, subject in agencies.items()}
    for name in subjects:
        _check_file_name(name)
    wanted_hosts = set(_general_names(hosts))
    directory = Path(directory)
    if (directory / CA_KEY).exists():
        ca = CertificateAuthority.load(directory)
    else:
        ca = CertificateAuthority.create(directory)

    issued: dict[str, CertPaths] = {}
    server = ca._server_paths("server")
    cert = ca._current(server)
    if cert is None or set(_subject_alternative_names(cert)) != wanted_hosts:
        server = ca.issue_server(hosts=hosts)
    issued["server"] = server
    for name, subject in subjects.items():
        paths = ca._client_paths(name)
        cert = ca._current(paths)
        if cert is None or _canonical(cert.subject) != subject:
            paths = ca.issue_client(name, subject)
        issued[name] = paths
    key = directory / AUDIT_SIGNING_KEY
    if not key.exists():
        from juki_engine.audit.integrity import write_key_pair

        write_key_pair(key)
    _residents_ca(directory)  # so a server started now trusts the certificates it issues later
    return issued


def _residents_ca(directory: Path) -> CertificateAuthority:
    folder = directory / RESIDENTS_DIRECTORY
    if (folder / CA_KEY).exists():
        return CertificateAuthority.load(folder)
    return CertificateAuthority.create(folder, common_name="juki_engine demo residents' CA")


def issue_residents(directory: str | os.PathLike[str], names: Sequence[str]) -> dict[str, str]:
    """A client certificate per name from the residents' CA under `directory` (made the first
    time), replacing any of that name; {name: SHA-256 fingerprint of its certificate}, for the
    engine to bind to the person it was issued to."""
    ca = _residents_ca(Path(directory))
    issued = {}
    for name in names:
        paths = ca.issue_resident(name)
        issued[name] = fingerprint(x509.load_pem_x509_certificate(paths.cert.read_bytes()))
    return issued


def _parse_subject(subject: str) -> x509.Name:
    try:
        name = x509.Name.from_rfc4514_string(subject)
    except ValueError as error:
        # cryptography's parse errors are often empty; say what a valid string looks like.
        detail = f" ({error})" if str(error) else ""
        raise ValueError(
            f"not an RFC 4514 subject: {subject!r}{detail}; write e.g. "
            "'CN=nenkin,O=日本年金機構,C=JP' (upper-case attribute names, no spaces around ',')"
        ) from error
    if not name.rdns:
        raise ValueError("the subject is empty; write e.g. 'CN=nenkin,O=日本年金機構,C=JP'")
    return name


def _canonical(name: x509.Name) -> str:
    # A multi-valued RDN is a DER SET, which the encoder sorts by encoding: sort on both sides so
    # a written string and the certificate made from it agree, whatever order each used.
    rdns = [
        x509.RelativeDistinguishedName(
            sorted(rdn, key=lambda attribute: attribute.rfc4514_string())
        )
        for rdn in name.rdns
    ]
    return x509.Name(rdns).rfc4514_string()


def _general_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    if isinstance(hosts, str):
        # A bare string is a Sequence[str] too, of single characters.
        raise TypeError("hosts must be a sequence of host names, not a single string")
    if not hosts:
        raise ValueError("a server certificate needs at least one host")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _subject_alternative_names(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, f"no {what} (make one with `juki certs`)", str(path)
        ) from None


def _write_new(path: Path, data: bytes, *, mode: int) -> None:
    """Create `path` with `mode`, failing with FileExistsError if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        # os.open's mode is filtered by the umask; set it exactly.
        os.chmod(path, mode)
        file.write(data)


def _write_replacing(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write `path` atomically: a key never sits, even briefly, in a file readable by others."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            os.chmod(temporary, mode)
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _check_days(days: int) -> None:
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")


def _check_file_name(name: str) -> None:
    if not _FILE_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not usable as a file name: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit"
        )


def _now() -> datetime:
    return datetime.now(UTC)
