"""Shared fixtures: generated registries, built once per session (generation is deterministic)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from juki_engine import Registry

SMALL_POPULATION = 20_000
TOYAMA_POPULATION = 1_080_160


@pytest.fixture(scope="session")
def small() -> Registry:
    """A nation-wide registry scaled down to 20,000 residents."""
    return Registry.generate(population=SMALL_POPULATION, seed=7)


@pytest.fixture(scope="session")
def small_table(small: Registry) -> pa.Table:
    return small.to_arrow()


@pytest.fixture(scope="session")
def small_rows(small_table: pa.Table) -> list[dict[str, Any]]:
    """Every resident of `small` as a plain dict: the reference the queries are checked against."""
    return small_table.to_pylist()


@pytest.fixture(scope="session")
def small_by(small_rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Reference indexes of `small`: key kind -> identifier -> row."""
    return {kind: {row[kind]: row for row in small_rows} for kind in ("my_number", "resident_code")}


@pytest.fixture(scope="session")
def toyama() -> Registry:
    """富山県 at full size (1,080,160): its card states reproduce the bundled 2017 figures."""
    return Registry.generate(prefecture="富山県", seed=7)


@pytest.fixture(scope="session")
def toyama_table(toyama: Registry) -> pa.Table:
    return toyama.to_arrow()
