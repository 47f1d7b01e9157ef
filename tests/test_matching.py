"""Names as Japan writes them: verify's match levels (exact, normalised, reading), pinned on the
pairs registry practice treats as one name — and the one it does not (斎藤 ≠ 斉藤)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from juki_engine import InvalidInput, Registry, names


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("髙橋", "高橋"),
        ("山﨑", "山崎"),
        ("渡邉", "渡邊"),
        ("渡邊", "渡辺"),
        ("渡邉", "渡辺"),
        ("齋藤", "斎藤"),
        ("齊藤", "斉藤"),
        ("濵田", "浜田"),
        ("山田　太郎", "山田 太郎"),
        ("山田 太郎", "山田太郎"),
        ("ｽｽﾞｷ", "スズキ"),
        ("ＡＢＣ", "ABC"),
    ],
)
def test_the_normalised_level_holds_these_one_name(a: str, b: str) -> None:
    assert names.fold(a, "normalised") == names.fold(b, "normalised")
    assert names.fold(a, "exact") != names.fold(b, "exact")


@pytest.mark.parametrize(("a", "b"), [("斎藤", "斉藤"), ("高橋", "髙田"), ("さとう", "サトウ")])
def test_the_normalised_level_keeps_these_apart(a: str, b: str) -> None:
    assert names.fold(a, "normalised") != names.fold(b, "normalised")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("さとう", "サトウ"),
        ("ｻﾄｳ", "さとう"),
        ("きゃべつ", "キヤベツ"),
        ("はっとり", "ハツトリ"),
        ("ちぢみ", "チジミ"),
        ("つづき", "ツズキ"),
        ("いちがや", "イチカ゛ヤ"),  # a separate voiced mark, composed by NFKC
    ],
)
def test_the_reading_level_folds_kana_forms(a: str, b: str) -> None:
    assert names.fold(a, "reading") == names.fold(b, "reading")


def test_the_reading_level_keeps_the_long_vowel_mark() -> None:
    # オー may stand for オオ or オウ depending on the word: no rule folds it.
    assert names.fold("オーノ", "reading") != names.fold("オオノ", "reading")
    assert names.fold("サイトウ", "reading") != names.fold("サトウ", "reading")


def test_the_table_comes_from_the_published_maps() -> None:
    sources, targets = names.folding_table()
    table = dict(zip(sources, targets, strict=True))
    assert len(table) > 20_000
    assert chr(table[ord("髙")]) == "高" and chr(table[ord("﨑")]) == "崎"
    assert names.install() > 20_000


@pytest.fixture(scope="module")
def variant_holder() -> tuple[Registry, dict[str, Any]]:
    """A synthetic registry and one of its residents whose family name has a variant form
    (the generator seeds 髙橋, 山﨑 and the like)."""
    registry = Registry.generate(200_000, seed=3)
    table = registry.to_arrow(["my_number", "family_name", "family_name_kana", "birth_date"])
    for row in table.to_pylist():
        if row["family_name"] in ("髙橋", "山﨑", "宮﨑", "髙木", "髙田", "濵田"):
            return registry, row
    raise AssertionError("the generator seeded no variant family name")


@pytest.mark.parametrize("level", ["exact", "normalised", "reading"])
def test_a_pension_form_spelling_the_common_form_matches_above_the_exact_level(
    variant_holder: tuple[Registry, dict[str, Any]], level: str
) -> None:
    registry, row = variant_holder
    common = names.fold(row["family_name"], "normalised")
    assert common != row["family_name"]
    claims = pa.table(
        {
            "my_number": [row["my_number"]] * 4,
            "family_name": [row["family_name"], common, "違う名前", None],
            "family_name_kana": [None, row["family_name_kana"], None, None],
            "birth_date": pa.array([row["birth_date"]] * 4, pa.date32()),
        }
    )
    out = registry.verify(claims, match=level)
    assert out["found"].to_pylist() == [True] * 4
    if level == "exact":
        assert out["family_name_match"].to_pylist() == [True, False, False, None]
        assert "family_name_level" not in out.column_names
        return
    assert out["family_name_match"].to_pylist() == [True, True, False, None]
    assert out["family_name_level"].to_pylist() == ["exact", "normalised", "none", None]
    assert out["family_name_kana_level"].to_pylist() == [None, "exact", None, None]
    assert out["birth_date_level"].to_pylist() == ["exact"] * 4


def test_a_reading_in_hiragana_matches_at_the_reading_level_only(
    variant_holder: tuple[Registry, dict[str, Any]],
) -> None:
    registry, row = variant_holder
    hiragana = "".join(
        chr(ord(c) - 0x60) if "ァ" <= c <= "ヶ" else c for c in row["family_name_kana"]
    )
    claims = pa.table({"my_number": [row["my_number"]], "family_name_kana": [hiragana]})
    assert registry.verify(claims, match="normalised")["family_name_kana_match"][0].as_py() is False
    out = registry.verify(claims, match="reading")
    assert out["family_name_kana_match"][0].as_py() is True
    assert out["family_name_kana_level"][0].as_py() == "reading"


def test_a_claim_that_is_not_utf8_agrees_at_no_level(
    variant_holder: tuple[Registry, dict[str, Any]],
) -> None:
    registry, row = variant_holder
    raw = pa.Array.from_buffers(
        pa.string(),
        1,
        [None, pa.py_buffer(b"\x00\x00\x00\x00\x02\x00\x00\x00"), pa.py_buffer(b"\xff\xfe")],
    )
    out = registry.verify(
        pa.table({"my_number": [row["my_number"]], "family_name": raw}), match="reading"
    )
    assert out["family_name_match"].to_pylist() == [False]
    assert out["family_name_level"].to_pylist() == ["none"]


def test_an_unknown_level_is_refused(variant_holder: tuple[Registry, dict[str, Any]]) -> None:
    registry, row = variant_holder
    with pytest.raises(InvalidInput, match="match level 'fuzzy' is not one of exact, normalised"):
        registry.verify(pa.table({"my_number": [row["my_number"]]}), match="fuzzy")
