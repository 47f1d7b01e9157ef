"""Build and run the server: its port (never shared), mutual TLS, the trust store, health
checking and reflection, signals (SIGHUP reloads, SIGTERM drains)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from juki_engine._core import InvalidInput
from juki_engine._proto import changes_pb2 as cpb
from juki_engine._proto import changes_pb2_grpc as cpb_grpc
from juki_engine._proto import registry_pb2 as pb
from juki_engine._proto import registry_pb2_grpc as pb_grpc
from juki_engine._proto import residents_pb2 as rpb
from juki_engine._proto import residents_pb2_grpc as rpb_grpc
from juki_engine.audit import AuditUnavailable
from juki_engine.certs import RESIDENTS_CA, fingerprint
from juki_engine.service.bulk import MAX_BULK_JOBS, BulkVerificationService
from juki_engine.service.changes import MAX_SUBMISSIONS, ChangeSubmissionService
from juki_engine.service.frontend import Frontend
from juki_engine.service.identity import ResidentAuthority, ResidentBindings, TrustStore
from juki_engine.service.metrics import Metrics
from juki_engine.service.notices import MAX_FOLLOWERS, NoticeService
from juki_engine.service.residents import ResidentService
from juki_engine.service.subscriptions import SubscriptionService
from juki_engine.service.verification import IdentityVerificationService
from juki_engine.service.wire import MESSAGE_OPTIONS

log = logging.getLogger("juki.server")

# Threads serving typed calls. More do not serve more: the handlers hand the GIL to each other at
# every call into Arrow or the core, and on 2 cores 8 threads served typed calls ~25 % slower
# than 4 (BENCHMARKS.md). Bulk jobs get threads of their own on top (MAX_BULK_JOBS).
RPC_WORKERS = 4
SERVICES = (
    pb.DESCRIPTOR.services_by_name["IdentityVerificationService"].full_name,
    pb.DESCRIPTOR.services_by_name["BulkVerificationService"].full_name,
    cpb.DESCRIPTOR.services_by_name["ChangeSubmissionService"].full_name,
    cpb.DESCRIPTOR.services_by_name["NoticeService"].full_name,
    cpb.DESCRIPTOR.services_by_name["SubscriptionService"].full_name,
    rpb.DESCRIPTOR.services_by_name["ResidentService"].full_name,
)
# grpc lets a second server bind a port in use (SO_REUSEPORT) and share its calls: never; with
# the option off, binding a port in use fails.
SERVER_OPTIONS = [*MESSAGE_OPTIONS, ("grpc.so_reuseport", 0)]


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """The server's certificate and key, the CAs whose client certificates it accepts, and the
    revocation list (CRL, PEM or DER) it honours."""

    cert: Path
    key: Path
    ca: Path
    crl: Path | None = None
    residents_ca: Path | None = None
    """The residents' CA (`juki certs --residents`), trusted beside the agencies' for the
    residents' service only; None: no residents' view."""

    @classmethod
    def in_directory(cls, directory: str | Path, crl: str | Path | None = None) -> ServerTLS:
        """`server.pem`, `server.key` and `ca.pem` in a directory (as `juki certs` writes it)."""
        d = Path(directory)
        residents = d / RESIDENTS_CA
        tls = cls(
            d / "server.pem",
            d / "server.key",
            d / "ca.pem",
            Path(crl) if crl else None,
            residents if residents.exists() else None,
        )
        missing = [str(p) for p in (tls.cert, tls.key, tls.ca, tls.crl) if p and not p.exists()]
        if missing:
            raise InvalidInput(f"certificate directory {d}: missing {', '.join(missing)}")
        return tls

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self._bundle(),
            require_client_auth=True,
        )

    def trust_store(self) -> TrustStore:
        return TrustStore(self._bundle(), self.crl)

    def _bundle(self) -> bytes:
        """The client CAs: the agencies' and, where there is one, the residents'."""
        bundle = self.ca.read_bytes()
        if self.residents_ca is not None:
            bundle += b"\n" + self.residents_ca.read_bytes()
        return bundle

    def resident_authority(self, bindings: ResidentBindings | None) -> ResidentAuthority | None:
        if self.residents_ca is None or bindings is None:
            return None
        ca = x509.load_pem_x509_certificate(self.residents_ca.read_bytes())
        return ResidentAuthority(fingerprint(ca), bindings)


@dataclass
class Server:
    """A running server: its port, and how to stop it gracefully."""

    grpc_server: grpc.Server
    port: int
    frontend: Frontend
    health: health.HealthServicer
    bulk: BulkVerificationService

    def stop(self, grace: float = 10.0) -> None:
        """Refuse new calls, let calls in flight finish (their audit records with them), then
        close the audit trail."""
        self.health.enter_graceful_shutdown()
        self.grpc_server.stop(grace).wait()
        if self.frontend.metrics is not None:
            self.frontend.metrics.stop()
        self.bulk.pool.shutdown()
        self.frontend.audit.close()


def start(
    frontend: Frontend,
    tls: ServerTLS,
    address: str = "127.0.0.1:0",
    workers: int = RPC_WORKERS,
    max_bulk_jobs: int = MAX_BULK_JOBS,
) -> Server:
    """Start serving on `address` (port 0 picks a free one) with mutual TLS, health checking
    and reflection. Typed calls keep `workers` threads whatever the streams do: bulk jobs,
    change submissions and following notice streams each have threads of their own."""
    if frontend.trust is None:
        frontend.trust = tls.trust_store()
    frontend.residents = tls.resident_authority(frontend.resident_bindings)
    frontend.trust.check_policy(frontend.policy)
    # Following notice streams and following subscriptions have a limit each.
    streams = max_bulk_jobs + MAX_SUBMISSIONS + 2 * MAX_FOLLOWERS
    if frontend.metrics is None:
        frontend.metrics = Metrics()
        frontend.metrics.watch(frontend)
        frontend.audit.on_durable = frontend.metrics.audit_commit.observe
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers + streams, thread_name_prefix="juki-rpc"),
        options=SERVER_OPTIONS,
        interceptors=[frontend.metrics.interceptor()],
    )
    bulk = BulkVerificationService(frontend, max_bulk_jobs)
    pb_grpc.add_IdentityVerificationServiceServicer_to_server(
        IdentityVerificationService(frontend), server
    )
    pb_grpc.add_BulkVerificationServiceServicer_to_server(bulk, server)
    cpb_grpc.add_ChangeSubmissionServiceServicer_to_server(
        ChangeSubmissionService(frontend), server
    )
    cpb_grpc.add_NoticeServiceServicer_to_server(NoticeService(frontend), server)
    cpb_grpc.add_SubscriptionServiceServicer_to_server(SubscriptionService(frontend), server)
    rpb_grpc.add_ResidentServiceServicer_to_server(ResidentService(frontend), server)
    checker = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    for name in ("", *SERVICES):
        checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        port = server.add_secure_port(address, tls.credentials())
    except RuntimeError as e:  # grpc cannot bind: without SO_REUSEPORT, a port in use
        raise InvalidInput(
            f"cannot listen on {address}: the port is in use (another server?) or the address "
            "is not this host's"
        ) from e
    if port == 0:
        raise InvalidInput(f"cannot listen on {address}")
    server.start()
    return Server(server, port, frontend, checker, bulk)


COMPACTION_EVERY_S = 3600.0
"""How often a serving server has the closed days of its trail compacted."""


class Compaction:
    """Compacts the trail's closed days into its store now and then, in a child process at the
    lowest priority (`juki audit compact --nice`): its memory is its own, bounded, and never
    the server's; a failure is logged and tried again next time."""

    def __init__(
        self,
        audit_dir: Path,
        key: Path,
        retention_days: int,
        every_s: float = COMPACTION_EVERY_S,
    ) -> None:
        self._command = [
            sys.executable,
            "-m",
            "juki_engine.cli",
            "audit",
            "compact",
            "--nice",
            *("--dir", str(audit_dir), "--audit-key", str(key)),
            *("--retention-days", str(retention_days), "--operator", "juki-serve"),
        ]
        self._every_s = every_s
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._child: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._run, name="juki-compaction", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                if self._stopping.is_set():
                    return
                self._child = subprocess.Popen(
                    self._command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
            out, err = self._child.communicate()
            if self._child.returncode and not self._stopping.is_set():
                log.error("audit compaction failed (%d): %s", self._child.returncode, err[-2000:])
            elif out.strip():
                log.info("%s", " ".join(out.split()))
            self._stopping.wait(self._every_s)

    def stop(self) -> None:
        """Stop, ending a compaction in progress (it resumes next time: an interrupted one
        leaves nothing a reader sees)."""
        self._stopping.set()
        with self._lock:
            if self._child is not None and self._child.poll() is None:
                self._child.terminate()
        self._thread.join()


def _checkpoint(server: Server) -> None:
    try:
        server.frontend.audit.checkpoint("SIGUSR1")
        log.info("audit trail checkpoint signed")
    except AuditUnavailable as e:
        log.error("audit trail checkpoint failed: %s", e)


def serve_forever(server: Server, policy_path: str | Path) -> None:
    """Block until SIGTERM or SIGINT, then drain and stop; SIGHUP reloads the policy and CRL,
    SIGUSR1 signs a checkpoint of the audit trail now (it also signs one a day)."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGHUP, lambda *_: server.frontend.reload(policy_path))
    signal.signal(signal.SIGUSR1, lambda *_: _checkpoint(server))
    while not stopping.wait(0.5):
        pass
    log.info("shutting down: finishing calls in flight")
    server.stop()
    log.info("stopped")
