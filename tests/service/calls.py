"""What the service tests share: calls to a running server and the inputs they send."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from cryptography import x509

from juki_engine import Registry, audit, certs, service
from juki_engine._proto import registry_pb2 as pb
from juki_engine._proto import registry_pb2_grpc as pb_grpc
from juki_engine.audit import AuditTrail
from juki_engine.client import AgencyTLS, request_context
from juki_engine.policy import Policy
from juki_engine.service import wire

Row = dict[str, Any]
PENSION = "pension-benefit"
STRANGER = "CN=stranger,O=どこかの機関,C=JP"


def demo_ca(pki: Path) -> str:
    """The fingerprint of the test CA, as a policy binds agencies to it."""
    return certs.fingerprint(x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes()))


def tiny_quota(pki: Path, quota: int) -> Policy:
    """A policy granting nenkin one affair, 'tiny': verify family_name by resident code, with a
    daily quota of `quota` records."""
    return Policy.from_dict(
        {
            "certificate_authorities": {"demo": demo_ca(pki)},
            "agency": [
                {
                    "code": "nenkin",
                    "name": "日本年金機構",
                    "certificate_subject": "CN=nenkin,O=日本年金機構,C=JP",
                    "certificate_issuer": "demo",
                    "affair": [
                        {
                            "code": "tiny",
                            "title": "t",
                            "legal_basis": "b",
                            "keys": ["resident_code"],
                            "modes": ["verify"],
                            "fields": ["family_name"],
                            "daily_quota": quota,
                        }
                    ],
                }
            ],
        }
    )


def own_server(registry: Registry, pki: Path, audit_dir: Path, **options: Any) -> service.Server:
    """A server of a test's own (its own audit trail), bound to the demo policy; `options` go
    to `service.start`, except `audit_timeout`, which goes to the frontend."""
    timeout = options.pop("audit_timeout", None)
    frontend = service.Frontend(
        registry,
        Policy.load(pki / "policy.toml"),
        AuditTrail(audit_dir),
        **({"audit_timeout": timeout} if timeout else {}),
    )
    return service.start(frontend, service.ServerTLS.in_directory(pki), **options)


def juki_serve(snapshot: Path, pki: Path, trail: Path, port_file: Path) -> subprocess.Popen[bytes]:
    """`juki serve` in a child process on a free loopback port (written to `port_file`)."""
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "juki_engine.cli", "serve", "--snapshot", str(snapshot)),
            *("--certs", str(pki), "--audit", str(trail), "--listen", "127.0.0.1:0"),
            *("--metrics", "127.0.0.1:0", "--port-file", str(port_file)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def channel(pki: Path, running: service.Server, agency: str) -> grpc.Channel:
    return AgencyTLS.from_cert(pki / "agencies" / f"{agency}.pem").channel(
        f"127.0.0.1:{running.port}"
    )


def ctx(affair: str = PENSION, request_id: str | None = None) -> pb.RequestContext:
    return request_context(affair, "operator-1", request_id or uuid.uuid4().hex)


def records(running: service.Server, request_id: str) -> pa.Table:
    table = audit.read(running.frontend.audit.directory)
    return table.filter(pc.equal(table["request_id"], request_id))


def rpc_error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def person(small_rows: list[Row], status: str = "resident") -> Row:
    return next(r for r in small_rows if r["status"] == status)


def claims_of(small_rows: list[Row], n: int, start: int = 0) -> pa.Table:
    rows = [small_rows[(start + i * 7919) % len(small_rows)] for i in range(n)]
    return pa.table(
        {
            "resident_code": [r["resident_code"] for r in rows],
            "family_name": [r["family_name"] for r in rows],
            "birth_date": pa.array([r["birth_date"] for r in rows], pa.date32()),
        }
    )


def raw_stream(
    pki: Path,
    running: service.Server,
    messages: list[pb.VerifyStreamRequest],
    agency: str = "nenkin",
) -> grpc.RpcError:
    with channel(pki, running, agency) as ch:
        stub = pb_grpc.BulkVerificationServiceStub(ch)
        return rpc_error(lambda: list(stub.VerifyStream(iter(messages), timeout=10)))


def header(
    by: int = pb.KEY_KIND_RESIDENT_CODE, fields: tuple[str, ...] = ()
) -> pb.VerifyStreamRequest:
    return pb.VerifyStreamRequest(
        header=pb.VerifyStreamHeader(context=ctx(), key=by, retrieve_fields=fields)
    )


def ipc(table: pa.Table) -> bytes:
    return wire.write_ipc(table)


def wait_for_port(path: Path, proc: subprocess.Popen[bytes]) -> int:
    """The port a `juki serve --port-file` writes once it listens."""
    deadline = time.monotonic() + 120
    while not path.exists() or not path.read_text().strip():
        if proc.poll() is not None:
            assert proc.stderr is not None
            raise AssertionError(f"server exited: {proc.stderr.read().decode()}")
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    return int(path.read_text())
