"""What the service tests share: calls to a running server and the inputs they send."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from cryptography import x509

from juki_engine import audit, certs, service
from juki_engine._proto import registry_pb2 as pb
from juki_engine._proto import registry_pb2_grpc as pb_grpc
from juki_engine.client import AgencyTLS, request_context
from juki_engine.service import wire

Row = dict[str, Any]
PENSION = "pension-benefit"
STRANGER = "CN=stranger,O=どこかの機関,C=JP"


def demo_ca(pki: Path) -> str:
    """The fingerprint of the test CA, as a policy binds agencies to it."""
    return certs.fingerprint(x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes()))


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
    pki: Path, running: service.Server, messages: list[pb.BulkRequest], agency: str = "nenkin"
) -> grpc.RpcError:
    with channel(pki, running, agency) as ch:
        stub = pb_grpc.BulkVerificationStub(ch)
        return rpc_error(lambda: list(stub.VerifyStream(iter(messages), timeout=10)))


def header(by: int = pb.RESIDENT_CODE, fields: tuple[str, ...] = ()) -> pb.BulkRequest:
    return pb.BulkRequest(header=pb.BulkHeader(context=ctx(), key=by, retrieve_fields=fields))


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
