"""The pytest-benchmark layer of the benchmarks: what every `benches/test_*.py` shares.

Sized to run in minutes on 2 cores (JUKI_BENCH_POPULATION residents, JUKI_BENCH_CLAIMS claims;
defaults 2,000,000 and 2,000,000); the national-scale scripts (`bench_*.py`) stay for the big
runs. Each benchmark's baseline (DuckDB, numpy's random gather, in-process verify) is a benchmark
of its own in the same group and the same run. See benches/README.md for the commands.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from juki_engine import Registry, certs
from juki_engine.bench import build_claims
from juki_engine.client import AgencyTLS
from juki_engine.policy import Policy, example_path
from juki_engine.samples import pension_claims

POPULATION = int(os.environ.get("JUKI_BENCH_POPULATION", "2000000"))
CLAIMS = int(os.environ.get("JUKI_BENCH_CLAIMS", "2000000"))
ROUNDS = int(os.environ.get("JUKI_BENCH_ROUNDS", "7"))


def run(benchmark: Any, fn: Any, items: int, rounds: int = ROUNDS) -> Any:
    """Time `fn` (one warm-up, then `rounds`), record its items, and return its last result."""
    benchmark.extra_info["items"] = items
    result = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable (a plain test run)
        median = benchmark.stats.stats.median
        benchmark.extra_info["M_items_per_s"] = round(items / median / 1e6, 2)
    return result


@pytest.fixture(scope="session")
def registry() -> Registry:
    """A registry of the nation's make-up at the benchmark's size (deterministic)."""
    return Registry.generate(POPULATION, seed=0)


@pytest.fixture(scope="session")
def claims(registry: Registry) -> tuple[pa.Table, np.ndarray]:
    """Claims by My Number with names and birth dates (10 % absent, 5 % wrong name, 5 % wrong
    date), and the same My Numbers as uint64."""
    table, keys_u64, _ = build_claims(registry, CLAIMS, 0.1, 0.05, 0.05, np.random.default_rng(0))
    return table, keys_u64


@pytest.fixture(scope="session")
def pension_job(registry: Registry) -> pa.Table:
    """The pension status check's claims (resident code, names, birth date)."""
    return pension_claims(registry, CLAIMS, seed=1)


@pytest.fixture(scope="session")
def server(
    registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AgencyTLS, str]]:
    """A `juki serve` child over the benchmark's registry: (the pension agency's TLS, address)."""
    from bench_server import start_server

    work = tmp_path_factory.mktemp("server")
    snapshot = work / "snapshot"
    registry.save(snapshot)
    pki = work / "pki"
    agencies = {a.code: a.certificate_subject for a in Policy.load(example_path()).agencies}
    certs.create_demo(pki, agencies)
    certs.write_demo_policy(pki, example_path())
    proc, port = start_server(snapshot, pki, work / "audit", work)
    try:
        yield AgencyTLS.from_cert(pki / "agencies" / "nenkin.pem"), f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def pytest_configure(config: pytest.Config) -> None:
    # `import bench_server` from the benchmarks beside this file.
    sys.path.insert(0, str(Path(__file__).parent))
