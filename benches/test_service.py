"""The gRPC front end: the bulk stream and typed calls against a `juki serve` child, with
in-process verify of the same job as the baseline in the same group."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from bench_server import FIELDS, bulk_stream, typed_requests
from conftest import CLAIMS, run

from juki_engine import Registry
from juki_engine._proto import registry_pb2_grpc as pb_grpc
from juki_engine.client import AgencyTLS
from juki_engine.samples import pension_claims

TYPED_CALLS = 300


@pytest.mark.benchmark(group="pension job: 5 retrieved fields")
def test_bulk_stream(benchmark: Any, server: tuple[AgencyTLS, str], pension_job: pa.Table) -> None:
    tls, address = server
    rows = run(benchmark, lambda: bulk_stream(tls, address, pension_job), CLAIMS, rounds=3)
    assert rows == CLAIMS


@pytest.mark.benchmark(group="pension job: 5 retrieved fields")
def test_bulk_in_process_baseline(
    benchmark: Any, registry: Registry, pension_job: pa.Table
) -> None:
    columns = ["resident_code", *FIELDS]
    out = run(
        benchmark, lambda: registry.verify(pension_job, "resident_code", columns=columns), CLAIMS
    )
    assert out.num_rows == CLAIMS


@pytest.mark.benchmark(group="typed Verify, one record a call")
def test_typed_verify(benchmark: Any, server: tuple[AgencyTLS, str], registry: Registry) -> None:
    tls, address = server
    requests = typed_requests(pension_claims(registry, TYPED_CALLS, seed=2, bad_code_fraction=0))
    with tls.channel(address) as channel:
        stub = pb_grpc.IdentityVerificationServiceStub(channel)

        def calls() -> int:
            return sum(stub.Verify(r, timeout=30).found for r in requests)

        found = run(benchmark, calls, len(requests))
    assert 0 < found <= len(requests)
