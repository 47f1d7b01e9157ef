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


def folded_keys(table: pa.Table) -> pa.Table:
    """`table`'s names folded at the normalised level (each distinct value once): the keys a
    user would precompute to let a database do a normalised 4情報 join."""
    from juki_engine import names

    out = {}
    for name in ("family_name", "given_name"):
        encoded = table[name].cast(pa.string()).combine_chunks().dictionary_encode()
        folded = pa.array([names.fold(v, "normalised") for v in encoded.dictionary.to_pylist()])
        out[name] = folded.take(encoded.indices)
    out["birth_date"] = table["birth_date"].combine_chunks()
    return pa.table(out)


@pytest.fixture(scope="module")
def search_claims(registry: Registry) -> pa.Table:
    """4情報 claims of random residents, names as the registry writes them."""
    rows = pa.array(np.random.default_rng(5).integers(0, POPULATION, CLAIMS))
    table = registry.to_arrow(["family_name", "given_name", "birth_date"]).take(rows)
    return pa.table(
        {
            n: table[n].cast(pa.string()) if n != "birth_date" else table[n]
            for n in table.column_names
        }
    )


@pytest.mark.benchmark(group="4情報 search, normalised names")
def test_search(benchmark: Any, registry: Registry, search_claims: pa.Table) -> None:
    registry.search(search_claims.slice(0, 1))  # the index, once
    out = run(benchmark, lambda: registry.search(search_claims), CLAIMS)
    # Every claim is a resident's own facts: it finds them (alone, or among look-alikes).
    assert pc.count_distinct(out["claim"]).as_py() == CLAIMS
    assert pc.sum(pc.equal(out["outcome"], "not_found")).as_py() == 0


@pytest.mark.benchmark(group="4情報 search, normalised names")
def test_search_duckdb_baseline(
    benchmark: Any, registry: Registry, search_claims: pa.Table
) -> None:
    """DuckDB's join on the same question, given the folded keys precomputed (not timed)."""
    import duckdb

    people = registry.to_arrow(["resident_code", "family_name", "given_name", "birth_date"])
    con = duckdb.connect()
    con.register(
        "registry", folded_keys(people).append_column("resident_code", people["resident_code"])
    )
    claims = folded_keys(search_claims)
    con.register("claims", claims.append_column("claim", pa.array(np.arange(CLAIMS))))
    query = """SELECT c.claim, r.resident_code FROM claims AS c LEFT JOIN registry AS r
               ON c.family_name = r.family_name AND c.given_name = r.given_name
              AND c.birth_date = r.birth_date"""
    out = run(benchmark, lambda: con.sql(query).to_arrow_table(), CLAIMS)
    assert out.num_rows >= CLAIMS
    con.close()
