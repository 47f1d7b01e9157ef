"""The core in one process: verify and lookup, against DuckDB's join and numpy's random gather
(their baselines, each a benchmark in the same group)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import CLAIMS, POPULATION, run

from juki_engine import Registry
from juki_engine.bench import DUCKDB_VERIFY, FIELDS, plain_registry_columns, verify_counts


@pytest.mark.benchmark(group="verify: 3 claimed fields")
def test_verify(benchmark: Any, registry: Registry, claims: tuple[pa.Table, Any]) -> None:
    table, _ = claims
    out = run(benchmark, lambda: registry.verify(table), CLAIMS)
    assert out.num_rows == CLAIMS
    assert 0.85 * CLAIMS < pc.sum(out["found"]).as_py() < 0.95 * CLAIMS


@pytest.mark.benchmark(group="verify: 3 claimed fields")
def test_verify_duckdb_baseline(
    benchmark: Any, registry: Registry, claims: tuple[pa.Table, Any]
) -> None:
    import duckdb

    table, _ = claims
    con = duckdb.connect()
    con.register("registry", plain_registry_columns(registry))
    con.register("claims", table)
    out = run(benchmark, lambda: con.sql(DUCKDB_VERIFY).to_arrow_table(), CLAIMS)
    # The baseline answers the same question: the same counts as the engine.
    assert verify_counts(out) == verify_counts(registry.verify(table))
    con.close()


@pytest.mark.benchmark(group="lookup by My Number")
def test_lookup_key_only(benchmark: Any, registry: Registry, claims: tuple[pa.Table, Any]) -> None:
    keys = claims[0]["my_number"].chunk(0)
    out = run(benchmark, lambda: registry.lookup(keys, columns=[]), CLAIMS)
    assert out.num_rows == CLAIMS


@pytest.mark.benchmark(group="lookup by My Number")
def test_lookup_key_only_uint64(
    benchmark: Any, registry: Registry, claims: tuple[pa.Table, Any]
) -> None:
    out = run(benchmark, lambda: registry.lookup(claims[1], columns=[]), CLAIMS)
    assert out.num_rows == CLAIMS


@pytest.mark.benchmark(group="lookup by My Number")
def test_lookup_3_columns(benchmark: Any, registry: Registry, claims: tuple[pa.Table, Any]) -> None:
    keys = claims[0]["my_number"].chunk(0)
    out = run(benchmark, lambda: registry.lookup(keys, columns=FIELDS), CLAIMS)
    assert out.column_names[-len(FIELDS) :] == FIELDS


@pytest.mark.benchmark(group="lookup by My Number")
def test_random_gather_limit(benchmark: Any) -> None:
    """The memory system's limit for a lookup: one random 8-byte gather per key from a
    registry-sized array (`np.take` into a buffer)."""
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**63, size=POPULATION, dtype=np.uint64)
    rows = rng.integers(0, POPULATION, size=CLAIMS, dtype=np.int64)
    out = np.empty(CLAIMS, dtype=np.uint64)
    run(benchmark, lambda: np.take(values, rows, out=out, mode="clip"), CLAIMS)
    assert out[0] == values[rows[0]]


@pytest.mark.benchmark(group="verify: 3 claimed fields")
def test_verify_normalised(
    benchmark: Any, registry: Registry, claims: tuple[pa.Table, Any]
) -> None:
    """The normalised level (docs/matching.md): folding costs only where the exact comparison
    fails, here the 5 % of claims with another family name. Goal: ≥ 0.6× exact verify."""
    table, _ = claims
    registry.verify(table.slice(0, 1), match="normalised")  # the folded dictionaries, once
    out = run(benchmark, lambda: registry.verify(table, match="normalised"), CLAIMS)
    exact = registry.verify(table)
    # Every exact match holds at the normalised level too.
    assert pc.sum(out["family_name_match"]).as_py() >= pc.sum(exact["family_name_match"]).as_py()
