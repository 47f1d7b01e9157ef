"""The trust boundary: which agency, municipality or resident a call comes from, read from its TLS
client certificate.

grpc's TLS layer has already checked that the certificate chains to a CA of the server's trust
bundle. That alone does not name an agency: any CA in the bundle could sign a certificate with
another agency's subject. So an agency is the pair (issuing CA, subject) the policy binds it to,
the CA named by the SHA-256 fingerprint of its certificate, plus optional public-key pins; and a
certificate the CA has revoked (its CRL, named in the server's configuration and reloaded on
SIGHUP) names no one. The check runs for every call, and for every message of a bulk job, so a
revocation or a policy change stops a running job at its next message.

A resident is a certificate of the residents' CA (a separate root, standing in for the My Number
card's 利用者証明用電子証明書) that the engine bound to a person when it was issued
(`ResidentBindings`): no agency can be bound to that CA's certificates by the policy, and no
resident certificate names an agency.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from juki_engine.audit import fsync_directory
from juki_engine.certs import certificate_subject, fingerprint, key_pin
from juki_engine.policy import NotPermitted, Policy, PolicyError

log = logging.getLogger("juki.server")

__all__ = ["PeerCertificate", "ResidentAuthority", "ResidentBindings", "TrustStore", "bind"]

BINDINGS = Path("residents") / "bindings.parquet"
"""Where, under the server's state directory, the certificate → person bindings live."""
BINDINGS_SCHEMA = pa.schema(
    [
        ("fingerprint", pa.string()),  # SHA-256 of the certificate's DER, lower-case hex
        ("person", pa.uint32()),
        ("issued", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What the server reads from a caller's certificate."""

    subject: str
    """Canonical RFC 4514 subject (see `juki_engine.certs`)."""
    issuer: str
    """SHA-256 fingerprint of the trusted CA that signed it; "" if none of the bundle did."""
    key_pin: str
    serial: int
    fingerprint: str = ""
    """SHA-256 of the certificate itself: what binds a resident's certificate to a person."""


class TrustStore:
    """The CAs whose certificates the server accepts (its TLS trust bundle) and their CRLs."""

    def __init__(self, ca_pem: bytes, crl_path: Path | None = None) -> None:
        try:
            authorities = x509.load_pem_x509_certificates(ca_pem)
        except ValueError as e:
            raise PolicyError(f"the trust bundle holds no readable CA certificate: {e}") from e
        self._authorities = {fingerprint(ca): ca for ca in authorities}
        self._crl_path = crl_path
        self._lock = threading.Lock()
        self._revoked: frozenset[tuple[str, int]] = frozenset()
        self.reload()

    @property
    def fingerprints(self) -> frozenset[str]:
        return frozenset(self._authorities)

    def check_policy(self, policy: Policy) -> None:
        """Refuse a policy that binds agencies to a CA the server does not trust: no certificate
        could ever name them, which is a mistake to report, not a silent denial."""
        missing = {
            name: fp for name, fp in policy.authorities.items() if fp not in self._authorities
        }
        if missing:
            raise PolicyError(
                f"policy {policy.source}: certificate authorities {sorted(missing)} are not in "
                f"the server's trust bundle (fingerprints {sorted(missing.values())}); for the "
                "demo, `juki certs` writes a policy bound to its CA"
            )

    def reload(self) -> None:
        """Read the CRL file again; a broken file keeps the revocations already in force."""
        if self._crl_path is None:
            return
        revoked = self._read_crl(self._crl_path)
        with self._lock:
            self._revoked = revoked
        log.info("revocation list %s: %d certificates revoked", self._crl_path, len(revoked))

    def _read_crl(self, path: Path) -> frozenset[tuple[str, int]]:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise PolicyError(f"revocation list {path}: {e.strerror or e}") from e
        try:
            if b"-----BEGIN" in data:
                crls = [x509.load_pem_x509_crl(block) for block in _pem_blocks(data, b"X509 CRL")]
            else:
                crls = [x509.load_der_x509_crl(data)]
        except ValueError as e:
            raise PolicyError(f"revocation list {path}: not a PEM or DER CRL: {e}") from e
        revoked: set[tuple[str, int]] = set()
        for crl in crls:
            issuer = next(
                (
                    fp
                    for fp, ca in self._authorities.items()
                    if crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
                ),
                None,
            )
            if issuer is None:
                raise PolicyError(
                    f"revocation list {path}: issued by {crl.issuer.rfc4514_string()!r}, "
                    "which is no CA of the server's trust bundle (or its signature is bad)"
                )
            revoked.update((issuer, entry.serial_number) for entry in crl)
        return frozenset(revoked)

    def peer(self, context: grpc.ServicerContext) -> PeerCertificate | None:
        """The caller's certificate, or None if the call carries none."""
        pems = context.auth_context().get("x509_pem_cert") or []
        return self._parse(pems[0]) if pems else None

    @lru_cache(maxsize=1024)  # noqa: B019 (one store per server; entries are small)
    def _parse(self, pem: bytes) -> PeerCertificate:
        cert = x509.load_pem_x509_certificate(pem)
        issuer = ""
        for fp, ca in self._authorities.items():
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            issuer = fp
            break
        return PeerCertificate(
            certificate_subject(pem), issuer, key_pin(cert), cert.serial_number, fingerprint(cert)
        )

    def check(self, peer: PeerCertificate) -> None:
        """Refuse a certificate no CA of the bundle issued, or one its CA has revoked."""
        if not peer.issuer:
            raise NotPermitted(f"certificate {peer.subject!r} was issued by no trusted CA")
        with self._lock:
            revoked = (peer.issuer, peer.serial) in self._revoked
        if revoked:
            raise NotPermitted(f"certificate {peer.subject!r} (serial {peer.serial:x}) is revoked")


def _pem_blocks(data: bytes, label: bytes) -> list[bytes]:
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    blocks, position = [], 0
    while (start := data.find(begin, position)) >= 0:
        stop = data.find(end, start)
        if stop < 0:
            raise ValueError("a PEM block has no END line")
        position = stop + len(end)
        blocks.append(data[start:position])
    if not blocks:
        raise ValueError(f"no {label.decode()} block")
    return blocks


# --- residents -------------------------------------------------------------------------------


class ResidentBindings:
    """Certificate fingerprint → person id, as issued; read again when the file changes, so a
    certificate issued while the server runs works at once."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._persons: dict[str, int] = {}

    def person_of(self, fingerprint: str) -> int | None:
        with self._lock:
            self._refresh()
            return self._persons.get(fingerprint)

    def _refresh(self) -> None:
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            self._stamp, self._persons = None, {}
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            table = pq.read_table(self._path)
            if not table.schema.equals(BINDINGS_SCHEMA) or table["person"].null_count:
                raise ValueError(f"schema {table.schema}, expected {BINDINGS_SCHEMA}")
        except (OSError, ValueError, pa.ArrowException) as e:
            # Keep the bindings in force: a half-written or foreign file binds no one new.
            log.error("resident bindings %s unreadable, keeping the last read: %s", self._path, e)
            return
        self._persons = dict(
            zip(table["fingerprint"].to_pylist(), table["person"].to_pylist(), strict=True)
        )
        self._stamp = stamp


def bind(state_dir: str | os.PathLike[str], bindings: dict[str, int]) -> Path:
    """Record which person each certificate (by fingerprint) was issued to, beside what is
    bound already (a fingerprint bound again is re-bound); written whole, then renamed."""
    path = Path(state_dir) / BINDINGS
    path.parent.mkdir(parents=True, exist_ok=True)
    now = pa.scalar(dt.datetime.now(dt.UTC), BINDINGS_SCHEMA.field("issued").type)
    new = pa.table(
        {
            "fingerprint": pa.array(list(bindings), pa.string()),
            "person": pa.array(list(bindings.values()), pa.uint32()),
            "issued": pa.array([now.as_py()] * len(bindings), now.type),
        },
        schema=BINDINGS_SCHEMA,
    )
    if path.exists():
        old = pq.read_table(path, schema=BINDINGS_SCHEMA)
        old = old.filter(pc.invert(pc.is_in(old["fingerprint"], new["fingerprint"])))
        new = pa.concat_tables([old, new])
    tmp = path.with_suffix(".tmp")
    pq.write_table(new, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
    fsync_directory(path.parent)
    return path


@dataclass(frozen=True)
class ResidentAuthority:
    """The residents' CA (by the fingerprint of its certificate) and the bindings of what it
    issued: the only way a call is a resident's."""

    ca_fingerprint: str
    bindings: ResidentBindings
