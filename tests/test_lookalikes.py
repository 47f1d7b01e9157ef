"""The look-alike population (juki_engine.synthetic.lookalikes) and what 4情報 search makes of
each kind: twins are ambiguous until the address tells them apart, variant spellings are one
name at the normalised level only, names sharing a reading are never merged."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from juki_engine import Registry
from juki_engine.synthetic.lookalikes import KINDS, seed_lookalikes

FACTS = ["family_name", "given_name", "birth_date", "municipality_code", "resident_code"]


@pytest.fixture(scope="module")
def seeded() -> tuple[Registry, pa.Table, dict[str, dict[str, Any]]]:
    registry, pairs = seed_lookalikes(Registry.generate(60_000, seed=4), pairs=40, seed=2)
    table = registry.to_arrow(FACTS).cast(
        pa.schema([pa.field(n, pa.string() if n != "birth_date" else pa.date32()) for n in FACTS])
    )
    people = {r["resident_code"]: r for r in table.to_pylist()}
    return registry, pairs, people


def candidates(
    registry: Registry, person: dict[str, Any], match: str, **more: Any
) -> tuple[str, set[str]]:
    facts = {k: [person[k]] for k in ("family_name", "given_name")}
    facts["birth_date"] = pa.array([person["birth_date"]], pa.date32())
    facts.update({k: [v] for k, v in more.items()})
    out = registry.search(pa.table(facts), match=match, columns=["resident_code"])
    full = out.filter(pc.equal(out["agreed"], 3 + len(more)))
    return out["outcome"][0].as_py(), set(full["resident_code"].to_pylist())


def test_each_kind_is_seeded_deterministically(seeded: tuple[Registry, pa.Table, Any]) -> None:
    _, pairs, people = seeded
    assert pc.value_counts(pairs["kind"]).to_pylist() == [
        {"values": k, "counts": 40} for k in KINDS
    ]
    again = seed_lookalikes(Registry.generate(60_000, seed=4), pairs=40, seed=2)[1]
    assert again.equals(pairs)
    for pair in pairs.to_pylist():
        a, b = people[pair["original"]], people[pair["lookalike"]]
        assert (a["given_name"], a["birth_date"]) == (b["given_name"], b["birth_date"])


@pytest.mark.parametrize("kind", KINDS)
def test_search_makes_of_each_kind_what_it_should(
    seeded: tuple[Registry, pa.Table, Any], kind: str
) -> None:
    registry, pairs, people = seeded
    for pair in pairs.filter(pc.equal(pairs["kind"], kind)).to_pylist():
        a, b = people[pair["original"]], people[pair["lookalike"]]
        _, normalised = candidates(registry, a, "normalised")
        _, exact = candidates(registry, a, "exact")
        assert a["resident_code"] in normalised and a["resident_code"] in exact
        if kind == "twin":
            assert b["resident_code"] in normalised and b["resident_code"] in exact
            # The address tells them apart: the twin no longer agrees on every fact.
            _, found = candidates(
                registry, a, "normalised", municipality_code=a["municipality_code"]
            )
            assert a["resident_code"] in found and b["resident_code"] not in found
        elif kind == "variant":
            assert b["family_name"] != a["family_name"]
            assert b["resident_code"] in normalised  # one name once folded: ambiguous, listed
            assert b["resident_code"] not in exact
        else:
            assert b["family_name"] != a["family_name"]
            assert b["resident_code"] not in normalised and b["resident_code"] not in exact
