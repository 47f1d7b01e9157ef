"""`juki changes generate` and `juki_engine.synthetic.changes`: a realistic year of changes that
keeps the contract of docs/changes.md, checked record by record against the registry."""

from __future__ import annotations

import collections
import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from juki_engine import Registry, ids
from juki_engine.cli import main
from juki_engine.synthetic.changes import CHANGE_SCHEMA, generate_changes

YEAR = 2017
SEED = 3

# docs/changes.md, column by column.
CONTRACT = pa.schema(
    [
        ("municipality", pa.utf8()),
        ("sequence", pa.int64()),
        ("reason", pa.utf8()),
        ("effective_date", pa.date32()),
        ("reported_date", pa.date32()),
        ("resident_code", pa.utf8()),
        ("my_number", pa.utf8()),
        ("family_name", pa.utf8()),
        ("family_name_kana", pa.utf8()),
        ("given_name", pa.utf8()),
        ("given_name_kana", pa.utf8()),
        ("birth_date", pa.date32()),
        ("sex", pa.uint8()),
        ("address_town", pa.utf8()),
        ("address_block", pa.utf8()),
        ("moving_to", pa.utf8()),
        ("cancels", pa.int64()),
    ]
)
# A year's changes for the nation (128,066,211 residents): the task's figures.
NATION = 128_066_211
NATIONAL = {
    "birth": 800_000,
    "death": 1_400_000,
    "move_out": 5_700_000,
    "move_in": 5_700_000,
    "move_within": 4_000_000,
    "name_change": 600_000,
    "move_abroad": 100_000,
    "return_from_abroad": 80_000,
    "card_applied": 5_000_000,
    "card_issued": 4_500_000,
    "official_correction": 50_000,
}
SUBJECT_FREE = {"birth"}

Row = dict[str, Any]


def scaled(national: int, residents: int) -> int:
    """The national figure for `residents`, rounded half up."""
    return int(national * residents / NATION + 0.5)


@pytest.fixture(scope="module")
def changes(small: Registry) -> pa.Table:
    return generate_changes(small, YEAR, seed=SEED)


@pytest.fixture(scope="module")
def rows(changes: pa.Table) -> list[Row]:
    return changes.to_pylist()


@pytest.fixture(scope="module")
def person(small_by: dict[str, dict[str, Row]]) -> Any:
    """The registry row of a record's subject, whichever identifier names it."""

    def of(row: Row) -> Row:
        if row["resident_code"] is not None:
            return small_by["resident_code"][row["resident_code"]]
        return small_by["my_number"][row["my_number"]]

    return of


@pytest.fixture(scope="module")
def addresses(small_rows: list[Row]) -> set[tuple[str, str, str]]:
    return {(r["municipality_code"], r["address_town"], r["address_block"]) for r in small_rows}


def test_the_schema_is_the_contract(changes: pa.Table) -> None:
    assert changes.schema == CONTRACT
    assert CHANGE_SCHEMA == CONTRACT
    assert changes["cancels"].null_count == changes.num_rows


def test_the_same_seed_draws_the_same_year(small: Registry, changes: pa.Table) -> None:
    assert generate_changes(small, YEAR, seed=SEED).equals(changes)
    assert not generate_changes(small, YEAR, seed=SEED + 1).equals(changes)
    assert not generate_changes(small, YEAR + 1, seed=SEED).equals(changes)


def test_volumes_are_the_national_figures_scaled(small: Registry, changes: pa.Table) -> None:
    counted = {c["values"]: c["counts"] for c in pc.value_counts(changes["reason"]).to_pylist()}
    assert counted == {reason: scaled(n, len(small)) for reason, n in NATIONAL.items()}
    assert all(counted.values())


def test_a_prefecture_is_drawn_alone(small: Registry, small_rows: list[Row]) -> None:
    tokyo = generate_changes(small, YEAR, prefecture="東京都", seed=SEED)
    residents = sum(r["prefecture"] == "東京都" for r in small_rows)
    counted = collections.Counter(tokyo["reason"].to_pylist())
    assert counted == {reason: scaled(n, residents) for reason, n in NATIONAL.items()}
    for column in ("municipality", "moving_to"):
        assert all(code.startswith("13") for code in tokyo[column].drop_null().to_pylist())
    with pytest.raises(ValueError, match="no residents"):
        generate_changes(small, YEAR, prefecture="どこか県")


def test_rows_come_in_the_order_they_apply(rows: list[Row]) -> None:
    keys = [(r["reported_date"], r["municipality"], r["sequence"]) for r in rows]
    assert keys == sorted(keys)
    assert all(dt.date(YEAR, 1, 1) <= r["reported_date"] <= dt.date(YEAR, 12, 31) for r in rows)


def test_sequences_count_each_municipality_in_reported_order(rows: list[Row]) -> None:
    per: dict[str, list[Row]] = collections.defaultdict(list)
    for r in rows:
        per[r["municipality"]].append(r)
    for records in per.values():
        sequences = [r["sequence"] for r in records]
        assert sequences == [YEAR * 10_000_000 + n for n in range(1, len(records) + 1)]
        dates = [r["reported_date"] for r in records]
        assert dates == sorted(dates)


def test_identifiers_are_valid_and_in_the_registry(
    changes: pa.Table, rows: list[Row], small_by: dict[str, dict[str, Row]]
) -> None:
    for kind in ("resident_code", "my_number"):
        given = changes[kind].drop_null()
        assert pc.all(ids.is_valid_array(kind, given)).as_py()
        assert set(given.to_pylist()) <= set(small_by[kind])
    codes = {r["municipality_code"] for r in small_by["resident_code"].values()}
    for column in ("municipality", "moving_to"):
        given = changes[column].drop_null()
        assert pc.all(ids.is_valid_array("local_government_code", given)).as_py()
        assert set(given.to_pylist()) <= codes
    for r in rows:
        named = (r["resident_code"] is not None) + (r["my_number"] is not None)
        assert named == (0 if r["reason"] in SUBJECT_FREE else 1), r
    subjects = [r for r in rows if r["reason"] not in SUBJECT_FREE]
    share = sum(r["my_number"] is not None for r in subjects) / len(subjects)
    assert 0.07 < share < 0.13


def test_subjects_are_residents_of_the_submitting_municipality(
    rows: list[Row], person: Any
) -> None:
    emigrants = {person(r)["resident_code"] for r in rows if r["reason"] == "move_abroad"}
    for r in rows:
        if r["reason"] in SUBJECT_FREE:
            continue
        who = person(r)
        if r["reason"] == "return_from_abroad" and who["resident_code"] in emigrants:
            continue  # left this year: checked with the emigrations
        status = "moved_abroad" if r["reason"] == "return_from_abroad" else "resident"
        assert who["status"] == status, r
        assert who["birth_date"] < dt.date(YEAR, 1, 1)
        if r["reason"] != "move_in":
            assert r["municipality"] == who["municipality_code"], r


def test_moves_go_out_then_in_elsewhere(
    rows: list[Row], person: Any, addresses: set[tuple[str, str, str]]
) -> None:
    outs: dict[str, tuple[int, Row]] = {}
    ins: dict[str, tuple[int, Row]] = {}
    for i, r in enumerate(rows):
        if r["reason"] in ("move_out", "move_in"):
            seen = outs if r["reason"] == "move_out" else ins
            code = person(r)["resident_code"]
            assert code not in seen, "one move a year"
            seen[code] = (i, r)
    assert outs.keys() == ins.keys()
    for code, (i, out) in outs.items():
        j, into = ins[code]
        assert i < j and out["reported_date"] < into["reported_date"]
        assert out["reported_date"] <= out["effective_date"] == into["effective_date"]
        assert (out["effective_date"] - out["reported_date"]).days <= 14
        assert (into["reported_date"] - into["effective_date"]).days <= 14
        assert into["municipality"] == out["moving_to"] != out["municipality"]
        assert (into["municipality"], into["address_town"], into["address_block"]) in addresses


def test_nothing_follows_a_death(rows: list[Row], person: Any) -> None:
    last: dict[str, tuple[int, Row]] = {}
    ends: dict[str, int] = collections.Counter()
    for i, r in enumerate(rows):
        if r["reason"] in SUBJECT_FREE:
            continue
        code = person(r)["resident_code"]
        last[code] = (i, r)
        ends[code] += r["reason"] in ("death", "move_abroad")
    deaths = [person(r)["resident_code"] for r in rows if r["reason"] == "death"]
    assert deaths
    for code in deaths:
        assert last[code][1]["reason"] == "death"
        assert ends[code] == 1


def test_returns_follow_their_emigration(rows: list[Row], person: Any) -> None:
    left = {person(r)["resident_code"]: r for r in rows if r["reason"] == "move_abroad"}
    returns = [r for r in rows if r["reason"] == "return_from_abroad"]
    assert returns
    for r in returns:
        gone = left.get(person(r)["resident_code"])
        if gone is not None:
            assert gone["effective_date"] < r["effective_date"]
            assert gone["reported_date"] < r["reported_date"]


def test_returns_are_of_residents_abroad_when_the_registry_has_them(
    small: Registry, small_by: dict[str, dict[str, Row]]
) -> None:
    # The registry's emigrants left in 2021–2025: in 2026 they are abroad, and they return.
    later = generate_changes(small, 2026, seed=SEED)
    returns = later.filter(pc.equal(later["reason"], "return_from_abroad")).to_pylist()
    assert returns
    for r in returns:
        who = (
            small_by["resident_code"][r["resident_code"]]
            if r["resident_code"]
            else small_by["my_number"][r["my_number"]]
        )
        assert who["status"] == "moved_abroad"
        assert who["status_date"] is None or who["status_date"] < dt.date(2026, 1, 1)


def test_moves_peak_in_march_and_april(rows: list[Row]) -> None:
    moves = [r for r in rows if r["reason"] in ("move_out", "move_within")]
    spring = sum(r["effective_date"].month in (3, 4) for r in moves) / len(moves)
    assert 0.25 < spring < 0.36  # 30 % against 2/12 of an even year


def test_births_are_new_people_of_the_municipality(
    rows: list[Row], small_rows: list[Row], addresses: set[tuple[str, str, str]]
) -> None:
    families = {
        (r["municipality_code"], r["family_name"], r["family_name_kana"]) for r in small_rows
    }
    given = {(r["given_name"], r["given_name_kana"], r["sex"]) for r in small_rows}
    births = [r for r in rows if r["reason"] == "birth"]
    assert births
    for r in births:
        assert r["birth_date"] == r["effective_date"]
        assert 0 <= (r["reported_date"] - r["effective_date"]).days <= 14
        assert r["sex"] in (1, 2)
        assert (r["municipality"], r["family_name"], r["family_name_kana"]) in families
        assert (r["given_name"], r["given_name_kana"], r["sex"]) in given
        assert (r["municipality"], r["address_town"], r["address_block"]) in addresses


def test_addresses_are_the_municipalitys_own(
    rows: list[Row], person: Any, addresses: set[tuple[str, str, str]]
) -> None:
    for r in rows:
        if r["address_town"] is None:
            continue
        assert (r["municipality"], r["address_town"], r["address_block"]) in addresses
        if r["reason"] in ("move_within", "official_correction"):
            who = person(r)
            assert (r["address_town"], r["address_block"]) != (
                who["address_town"],
                who["address_block"],
            )


def test_name_changes_are_mostly_marriages_of_women(
    rows: list[Row], person: Any, small_rows: list[Row]
) -> None:
    families = {(r["family_name"], r["family_name_kana"]) for r in small_rows}
    readings = {(r["given_name"], r["given_name_kana"]) for r in small_rows}
    changes = [r for r in rows if r["reason"] == "name_change"]
    marriages = [r for r in changes if r["family_name"] is not None]
    assert len(marriages) > 0.75 * len(changes)
    women = [r for r in marriages if person(r)["sex"] == 2]
    assert len(women) > 0.85 * len(marriages)
    aged = [r for r in marriages if 25 <= YEAR - person(r)["birth_date"].year - 1 <= 40]
    assert len(aged) > 0.5 * len(marriages)
    for r in marriages:
        assert (r["family_name"], r["family_name_kana"]) in families
        assert r["family_name"] != person(r)["family_name"]
        assert r["given_name"] is None and r["given_name_kana"] is None
    for r in changes:
        if r["family_name"] is None:
            assert r["given_name_kana"] is not None
            name = r["given_name"] or person(r)["given_name"]
            assert (name, r["given_name_kana"]) in readings
            assert (name, r["given_name_kana"]) != (
                person(r)["given_name"],
                person(r)["given_name_kana"],
            )


def test_cards_are_applied_for_then_issued(rows: list[Row], person: Any) -> None:
    applied: dict[str, dt.date] = {}
    issued = 0
    for r in rows:
        if r["reason"] == "card_applied":
            who = person(r)
            assert who["card_state"] == "none"
            applied[who["resident_code"]] = r["reported_date"]
        elif r["reason"] == "card_issued":
            who = person(r)
            issued += 1
            if who["card_state"] != "applied":
                assert applied[who["resident_code"]] < r["reported_date"]
    assert applied and issued


def test_corrections_correct_one_thing(rows: list[Row], person: Any) -> None:
    corrections = [r for r in rows if r["reason"] == "official_correction"]
    assert corrections
    for r in corrections:
        given = [c for c in ("birth_date", "given_name_kana", "address_town") if r[c] is not None]
        assert len(given) == 1
        if r["birth_date"] is not None:
            assert r["birth_date"] != person(r)["birth_date"]
            assert r["birth_date"] < dt.date(YEAR, 1, 1)


def test_bad_arguments_are_refused(small: Registry) -> None:
    with pytest.raises(ValueError, match="year"):
        generate_changes(small, 0)
    with pytest.raises(ValueError, match="seed"):
        generate_changes(small, YEAR, seed=-1)


def test_the_cli_writes_the_apis_table(
    small: Registry, changes: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = tmp_path / "snap"
    small.save(snapshot)
    out = tmp_path / "changes.parquet"
    args = ["changes", "generate", str(snapshot), "--year", str(YEAR), "--seed", str(SEED)]
    assert main([*args, "--out", str(out)]) == 0
    assert pq.read_table(out).equals(changes)
    shown = capsys.readouterr().out
    assert "move_in" in shown and f"{changes.num_rows:,} changes" in shown
    assert main([*args, "--out", str(out)]) == 2  # exists: --force replaces it
    csv = tmp_path / "changes.csv"
    assert main([*args, "--out", str(csv), "--format", "json"]) == 0
    back = pacsv.read_csv(csv, convert_options=pacsv.ConvertOptions(column_types=CONTRACT))
    assert back.select(["municipality", "sequence", "reason"]).equals(
        changes.select(["municipality", "sequence", "reason"])
    )
