"""Tests for the synthetic population plan (juki_engine.synthetic)."""

from __future__ import annotations

import csv
import io
import re
from importlib.resources import files

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import juki_engine.synthetic as synthetic

KATAKANA = re.compile(r"[ァ-ヺー]+")


def check_digit_ok(code: str) -> bool:
    """Independent check of a 6-digit 全国地方公共団体コード."""
    if not re.fullmatch(r"\d{6}", code):
        return False
    r = sum(w * int(d) for w, d in zip((6, 5, 4, 3, 2), code[:5], strict=True)) % 11
    return (11 - r) % 10 == int(code[5])


def toyama_csv() -> dict[str, dict[str, str]]:
    text = (files("juki_engine") / "data" / "toyama_mynumber_cards_2017.csv").read_text("utf-8")
    return {row["municipality_code"]: row for row in csv.DictReader(io.StringIO(text))}


def assert_well_formed(plan: synthetic.Plan) -> None:
    munis, towns = plan.municipalities, plan.towns
    assert munis.schema.equals(synthetic.MUNICIPALITY_SCHEMA)
    assert towns.schema.equals(synthetic.TOWN_SCHEMA)
    assert plan.family_names.schema.equals(synthetic.FAMILY_NAME_SCHEMA)
    assert plan.given_names.schema.equals(synthetic.GIVEN_NAME_SCHEMA)
    rows = munis.to_pylist()
    codes = [r["code"] for r in rows]
    assert codes == sorted(codes)
    assert len(set(codes)) == len(codes)
    expected_start = 0
    for r in rows:
        assert check_digit_ok(r["code"]), r
        assert r["prefecture"] in synthetic.PREFECTURES
        assert r["population"] > 0
        assert r["card_applied"] + r["card_issued"] <= r["population"]
        assert r["town_start"] == expected_start  # contiguous, in municipality order
        assert r["town_end"] > r["town_start"], r  # never empty
        expected_start = r["town_end"]
    assert expected_start == towns.num_rows


@pytest.fixture(scope="module")
def nation() -> synthetic.Plan:
    return synthetic.build_plan()


@pytest.fixture(scope="module")
def toyama() -> synthetic.Plan:
    return synthetic.build_plan(prefecture=synthetic.TOYAMA)


def test_helpers() -> None:
    assert synthetic.municipality_code("16201") == "162019"
    assert synthetic.municipality_code("13101") == "131016"
    assert synthetic.hiragana_to_katakana("わたなべ・ゔぁー") == "ワタナベ・ヴァー"
    with pytest.raises(ValueError, match="1620"):
        synthetic.municipality_code("1620")


def test_toyama_reproduces_csv(toyama: synthetic.Plan) -> None:
    assert_well_formed(toyama)
    expected = toyama_csv()
    rows = toyama.municipalities.to_pylist()
    assert [r["code"] for r in rows] == sorted(expected)
    for r in rows:
        src = expected[r["code"]]
        assert r["name"] == src["municipality"]
        assert r["prefecture"] == synthetic.TOYAMA
        assert r["card_issued"] == int(src["cards_issued"])
        assert r["card_applied"] == int(src["card_applications"]) - int(src["cards_issued"])
        assert r["population"] == synthetic.TOYAMA_MUNICIPAL_POPULATIONS[r["name"]]
    assert sum(r["population"] for r in rows) == synthetic.TOYAMA_POPULATION == 1_080_160
    toyama_city = next(r for r in rows if r["code"] == "162019")
    names = toyama.towns["name"].to_pylist()[toyama_city["town_start"] : toyama_city["town_end"]]
    assert "以下に掲載がない場合" not in names
    assert len(names) == len(set(names))
    assert all("（" not in n for n in names)


def test_nation(nation: synthetic.Plan, toyama: synthetic.Plan) -> None:
    assert_well_formed(nation)
    rows = nation.municipalities.to_pylist()
    assert sum(r["population"] for r in rows) == synthetic.NATION_POPULATION == 128_066_211
    assert {r["prefecture"] for r in rows} == set(synthetic.PREFECTURES)
    assert len(synthetic.PREFECTURES) == 47
    # 富山県 inside the nation is the same as the 富山県 plan.
    in_nation = [r for r in rows if r["prefecture"] == synthetic.TOYAMA]
    assert [{k: v for k, v in r.items() if not k.startswith("town_")} for r in in_nation] == [
        {k: v for k, v in r.items() if not k.startswith("town_")}
        for r in toyama.municipalities.to_pylist()
    ]
    by_code = {r["code"]: r for r in rows}
    assert by_code["011011"]["name"] == "札幌市中央区"
    assert by_code["131016"]["name"] == "千代田区"
    assert by_code["133817"]["name"] == "三宅村"
    # Elsewhere the nationwide card rates apply: 10.97 % applied, 8.27 % issued.
    tokyo = by_code["132012"]
    assert tokyo["card_issued"] == round(tokyo["population"] * 0.0827)
    assert tokyo["card_applied"] + tokyo["card_issued"] == round(tokyo["population"] * 0.1097)
    towns = nation.towns.to_pylist()
    for r in rows:
        names = [t["name"] for t in towns[r["town_start"] : r["town_end"]]]
        assert len(names) == len(set(names)), r["name"]
        assert not any(
            "以下に掲載がない場合" in n or "の次に番地がくる場合" in n or "（" in n or "）" in n
            for n in names
        ), r["name"]
    chiyoda = by_code["131016"]
    chiyoda_towns = [t["name"] for t in towns[chiyoda["town_start"] : chiyoda["town_end"]]]
    assert "大手町" in chiyoda_towns  # from 大手町（次のビルを除く）


def test_prefecture_default_population(nation: synthetic.Plan) -> None:
    plan = synthetic.build_plan(prefecture="東京都")
    assert_well_formed(plan)
    expected = [r for r in nation.municipalities.to_pylist() if r["prefecture"] == "東京都"]
    assert plan.municipalities["population"].to_pylist() == [r["population"] for r in expected]


@settings(deadline=None, max_examples=60)
@given(st.integers(min_value=1, max_value=3_000_000))
def test_toyama_scaling(population: int) -> None:
    plan = synthetic.build_plan(population, synthetic.TOYAMA)
    assert_well_formed(plan)
    assert sum(plan.municipalities["population"].to_pylist()) == population
    assert plan.municipalities.num_rows <= 15


@settings(deadline=None, max_examples=8)
@given(st.integers(min_value=1, max_value=200_000_000))
def test_nation_scaling(population: int) -> None:
    plan = synthetic.build_plan(population)
    assert_well_formed(plan)
    assert sum(plan.municipalities["population"].to_pylist()) == population


@pytest.mark.parametrize("population", [1, 7, 1_000, 128_066_211])
def test_scaling_edges(population: int) -> None:
    plan = synthetic.build_plan(population)
    assert_well_formed(plan)
    assert sum(plan.municipalities["population"].to_pylist()) == population
    if population == 1:
        assert plan.municipalities.num_rows == 1  # the zero-population municipalities drop


def test_toyama_scaled_cards_are_proportional() -> None:
    half = synthetic.TOYAMA_POPULATION // 2
    plan = synthetic.build_plan(half, "富山県")
    rows = {r["code"]: r for r in plan.municipalities.to_pylist()}
    assert sum(r["population"] for r in rows.values()) == half
    for code, src in toyama_csv().items():
        assert abs(rows[code]["card_issued"] - int(src["cards_issued"]) / 2) <= 1


def test_family_names(nation: synthetic.Plan) -> None:
    names = nation.family_names.to_pylist()
    by_name = {r["name"]: r for r in names}
    assert len(by_name) == len(names)
    for name, kana in [
        ("渡辺", "ワタナベ"), ("渡邊", "ワタナベ"), ("渡邉", "ワタナベ"), ("斎藤", "サイトウ"),
        ("齋藤", "サイトウ"), ("髙橋", "タカハシ"), ("山﨑", "ヤマザキ"), ("宮﨑", "ミヤザキ"),
        ("髙木", "タカギ"), ("髙田", "タカダ"), ("濵田", "ハマダ"),
    ]:  # fmt: skip
        assert by_name[name]["kana"] == kana, name
        assert by_name[name]["weight"] > 0
    # A variant takes its share from the base form: the pair keeps the dataset's total.
    assert by_name["高橋"]["weight"] + by_name["髙橋"]["weight"] == 1_421_000
    assert by_name["髙橋"]["weight"] == 42_630
    assert all(r["weight"] > 0 and KATAKANA.fullmatch(r["kana"]) for r in names)


def test_given_names(nation: synthetic.Plan) -> None:
    rows = nation.given_names.to_pylist()
    keys = [(r["name"], r["kana"], r["sex"]) for r in rows]
    assert len(set(keys)) == len(keys)
    assert {r["sex"] for r in rows} == {1, 2}
    assert all(KATAKANA.fullmatch(r["kana"]) and r["name"] for r in rows)
    assert ("翔", "ショウ", 1) in keys
    assert ("愛", "アイ", 2) in keys


@pytest.mark.parametrize("bad", ["Toyama", "富山", "", "toyama-ken", "富山県 "])
def test_bad_prefecture(bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))) as info:
        synthetic.build_plan(prefecture=bad)
    assert "富山県" in str(info.value)  # says how to spell it


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1000"])
def test_bad_population(bad: object) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        synthetic.build_plan(population=bad)  # type: ignore[arg-type]
