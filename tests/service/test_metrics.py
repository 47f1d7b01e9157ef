"""The Prometheus endpoint: a scrape parses, and what the server does moves its counters."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from calls import ctx, own_server, rpc_error
from prometheus_client.parser import text_string_to_metric_families

from juki_engine import Registry, service
from juki_engine._proto import registry_pb2 as pb
from juki_engine._proto import registry_pb2_grpc as pb_grpc
from juki_engine.client import AgencyTLS

VERIFY = "/juki.v1.IdentityVerificationService/Verify"


@pytest.fixture
def served(small: Registry, pki: Path, tmp_path: Path) -> Iterator[tuple[service.Server, int]]:
    server = own_server(small, pki, tmp_path / "audit")
    assert server.frontend.metrics is not None
    port = server.frontend.metrics.serve("127.0.0.1:0")
    try:
        yield server, port
    finally:
        server.stop(grace=1)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_scrape_parses_and_calls_move_the_counters(
    served: tuple[service.Server, int], pki: Path, small_rows: list[dict]
) -> None:
    server, port = served
    before = scrape(port)
    records = dict(agency="nenkin", affair="pension-benefit", mode="verify", outcome="disclosed")
    channel = AgencyTLS.from_cert(pki / "agencies" / "nenkin.pem").channel(
        f"127.0.0.1:{server.port}"
    )
    stub = pb_grpc.IdentityVerificationServiceStub(channel)
    row = small_rows[3]
    request = pb.VerifyRequest(
        context=ctx(),
        key=pb.Key(resident_code=row["resident_code"]),
        claims=pb.Claims(family_name=row["family_name"]),
    )
    for _ in range(3):
        assert stub.Verify(request, timeout=10).found
    refused = pb.VerifyRequest(
        context=ctx("no-such-affair"), key=request.key, claims=request.claims
    )
    assert rpc_error(lambda: stub.Verify(refused)).code() == grpc.StatusCode.PERMISSION_DENIED

    after = scrape(port)
    assert (
        value(after, "juki_records_total", **records)
        - value(before, "juki_records_total", **records)
        == 3
    )
    assert value(after, "juki_calls_total", method=VERIFY, code="OK") == 3
    assert value(after, "juki_calls_total", method=VERIFY, code="PERMISSION_DENIED") == 1
    assert value(after, "juki_call_duration_seconds_count", method=VERIFY) == 4
    assert value(after, "juki_audit_commit_seconds_count") >= 4  # each reply waited on one
    used = value(after, "juki_quota_used_records", agency="nenkin", affair="pension-benefit")
    left = value(after, "juki_quota_remaining_records", agency="nenkin", affair="pension-benefit")
    assert used == 3 and left > 0
    assert value(after, "juki_registry_residents") == len(server.frontend.registry)
    assert value(after, "juki_registry_memory_bytes") > 0
    assert value(after, "juki_audit_up") == 1


def test_a_port_in_use_is_a_clear_error(served: tuple[service.Server, int]) -> None:
    _, port = served
    from juki_engine import InvalidInput
    from juki_engine.service.metrics import Metrics

    with pytest.raises(InvalidInput, match=f"cannot serve metrics on 127.0.0.1:{port}"):
        Metrics().serve(f"127.0.0.1:{port}")
    with pytest.raises(InvalidInput, match="is not HOST:PORT"):
        Metrics().serve("localhost")
