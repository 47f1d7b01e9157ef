"""Tests for the Registry: generation, lookup and verify (juki_engine.registry, rust/query.rs)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections import Counter
from collections.abc import Callable
from importlib.resources import files
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st

import juki_engine
import juki_engine.synthetic as synthetic
from juki_engine import InvalidInput, Registry

SETTINGS = settings(max_examples=50, deadline=None)
REFERENCE_DATE = dt.date(2026, 1, 1)
KATAKANA = re.compile(r"[ァ-ヺー]+")
KEY_KINDS = ("my_number", "resident_code")
CLAIM_FIELDS = (
    "family_name",
    "given_name",
    "family_name_kana",
    "given_name_kana",
    "birth_date",
    "sex",
    "municipality_code",
)
Row = dict[str, Any]


def plain(table: pa.Table) -> pa.Table:
    """`table` with dictionary and view columns cast to plain strings, for value comparisons."""
    out = table
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type) or pa.types.is_string_view(field.type):
            out = out.set_column(i, field.name, pc.cast(table[field.name], pa.string()))
    return out


def column_values(table: pa.Table, name: str) -> list[Any]:
    return table[name].to_pylist()


# ----------------------------------------------------------------------------- generation


def test_public_schema(small_table: pa.Table) -> None:
    assert small_table.column_names == Registry.column_names()
    assert Registry.column_names() == [
        "resident_code",
        "my_number",
        "family_name",
        "family_name_kana",
        "given_name",
        "given_name_kana",
        "birth_date",
        "sex",
        "municipality_code",
        "municipality_name",
        "prefecture",
        "address_town",
        "address_block",
        "status",
        "status_date",
        "card_state",
    ]
    assert small_table["birth_date"].type == pa.date32()
    assert small_table["status_date"].type == pa.date32()
    assert small_table["sex"].type == pa.uint8()


def test_size(small: Registry, small_table: pa.Table) -> None:
    assert len(small) == small_table.num_rows == 20_000
    assert repr(small) == "Registry(20,000 residents)"
    assert small.memory_bytes > 0


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_identifiers_are_valid_and_unique(kind: str, small_table: pa.Table) -> None:
    values = column_values(small_table, kind)
    assert len(set(values)) == len(values)
    assert all(ref.is_valid(kind, v) for v in values)
    assert pc.all(juki_engine.ids.is_valid_array(kind, small_table[kind])).as_py()
    # Not all drawn from a narrow range: leading zeros occur at the expected rate (~1 in 10).
    zeros = sum(v.startswith("0") for v in values) / len(values)
    assert 0.05 < zeros < 0.15


def test_addresses(small_rows: list[Row]) -> None:
    for row in small_rows[:: len(small_rows) // 2000]:
        code = row["municipality_code"]
        assert ref.is_valid("local_government_code", code), row
        # The first two digits are the prefecture's JIS code.
        assert synthetic.PREFECTURES[int(code[:2]) - 1] == row["prefecture"], row
        assert row["municipality_name"] and row["address_block"], row
        assert row["address_town"] is not None, row
    codes = {row["municipality_code"] for row in small_rows}
    assert len(codes) > 1000  # the nation, scaled: most municipalities keep a resident
    assert {row["prefecture"] for row in small_rows} == set(synthetic.PREFECTURES)


def test_people(small_rows: list[Row]) -> None:
    sexes = Counter(row["sex"] for row in small_rows)
    assert set(sexes) == {1, 2}
    assert 0.4 < sexes[1] / len(small_rows) < 0.6
    births = [row["birth_date"] for row in small_rows]
    assert max(births) < REFERENCE_DATE
    assert min(births) > dt.date(1915, 1, 1)
    for row in small_rows:
        assert row["family_name"] and row["given_name"], row
        assert KATAKANA.fullmatch(row["family_name_kana"]), row
        assert KATAKANA.fullmatch(row["given_name_kana"]), row


def test_statuses(small_rows: list[Row]) -> None:
    for row in small_rows:
        assert row["status"] in {"resident", "moved_abroad", "deceased", "removed"}, row
        assert row["card_state"] in {"none", "applied", "issued"}, row
        if row["status"] == "resident":
            assert row["status_date"] is None, row
        else:
            assert row["birth_date"] <= row["status_date"] < REFERENCE_DATE, row


def value_counts(column: pa.ChunkedArray) -> dict[str, int]:
    counts = pc.value_counts(pc.cast(column, pa.string())).to_pylist()
    return {c["values"]: c["counts"] for c in counts}


def test_status_shares_full_size(toyama_table: pa.Table) -> None:
    counts = value_counts(toyama_table["status"])
    n = toyama_table.num_rows
    assert set(counts) == {"resident", "moved_abroad", "deceased", "removed"}
    assert counts["deceased"] / n == pytest.approx(0.008, abs=0.0005)
    assert counts["moved_abroad"] / n == pytest.approx(0.003, abs=0.0005)
    assert counts["removed"] / n == pytest.approx(0.0005, abs=0.0002)


def test_status_shares_scaled(small_rows: list[Row]) -> None:
    # A scaled-down registry keeps every status, in about the documented shares (deceased 0.8 %,
    # moved abroad 0.3 %, removed 0.05 %), so small test registries exercise them all.
    counts = Counter(row["status"] for row in small_rows)
    n = len(small_rows)
    assert set(counts) == {"resident", "moved_abroad", "deceased", "removed"}, counts
    assert 0.004 < counts["deceased"] / n < 0.012, counts
    assert 0.001 < counts["moved_abroad"] / n < 0.005, counts


def test_generation_is_deterministic() -> None:
    a = Registry.generate(population=3_000, seed=11).to_arrow()
    b = Registry.generate(population=3_000, seed=11).to_arrow()
    c = Registry.generate(population=3_000, seed=12).to_arrow()
    assert a.equals(b)
    assert not a.equals(c)
    # A different seed draws different people, not a reordering of the same ones.
    shared = set(column_values(a, "my_number")) & set(column_values(c, "my_number"))
    assert len(shared) < 10
    assert column_values(a, "family_name") != column_values(c, "family_name")


def test_to_arrow_columns(small: Registry, small_table: pa.Table) -> None:
    part = small.to_arrow(["sex", "my_number"])
    assert part.column_names == ["sex", "my_number"]
    assert part.equals(small_table.select(["sex", "my_number"]))
    with pytest.raises(InvalidInput, match="nope"):
        small.to_arrow(["sex", "nope"])


# ----------------------------------------------------------------------------- 富山県 cards


def test_toyama_card_table(toyama_table: pa.Table) -> None:
    assert toyama_table.num_rows == 1_080_160
    text = (files("juki_engine") / "data" / "toyama_mynumber_cards_2017.csv").read_text("utf-8")
    expected = {row["municipality_code"]: row for row in csv.DictReader(io.StringIO(text))}
    grouped = (
        plain(toyama_table.select(["municipality_code", "card_state"]))
        .group_by(["municipality_code", "card_state"])
        .aggregate([([], "count_all")])
        .to_pylist()
    )
    counts = {(g["municipality_code"], g["card_state"]): g["count_all"] for g in grouped}
    assert {code for code, _ in counts} == set(expected)
    for code, src in expected.items():
        issued = counts.get((code, "issued"), 0)
        applied = counts.get((code, "applied"), 0)
        assert issued == int(src["cards_issued"]), code
        assert applied + issued == int(src["card_applications"]), code
    assert set(value_counts(toyama_table["prefecture"])) == {"富山県"}


# ----------------------------------------------------------------------------- lookup reference


def key_strategy(kind: str, present: list[str]) -> st.SearchStrategy[str | None]:
    """Keys of every sort: present, absent but valid, and invalid in each documented way."""
    n = ref.LENGTHS[kind]
    known = set(present)
    present_keys = st.sampled_from(present)
    absent_valid = (
        st.text("0123456789", min_size=n - 1, max_size=n - 1)
        .map(lambda base: ref.with_check_digit(kind, base))
        .filter(lambda key: key not in known)
    )
    wrong_check = present_keys.flatmap(
        lambda key: st.sampled_from([key[:-1] + d for d in "0123456789" if d != key[-1]])
    )
    wrong_length = st.text("0123456789", max_size=n + 2).filter(lambda s: len(s) != n)
    full_width = present_keys.map(ref.to_full_width)
    separated = present_keys.map(lambda key: f"{key[:4]}-{key[4:]}")
    letters = st.text("0123456789a ", min_size=n, max_size=n).filter(lambda s: not s.isdigit())
    return st.one_of(
        present_keys,
        present_keys,
        absent_valid,
        wrong_check,
        wrong_length,
        full_width,
        separated,
        letters,
        st.just(""),
        st.none(),
    )


def int_key_strategy(kind: str, present: list[str], signed: bool) -> st.SearchStrategy[int]:
    n = ref.LENGTHS[kind]
    present_keys = st.sampled_from([int(k) for k in present])
    absent_valid = st.integers(0, 10 ** (n - 1) - 1).map(
        lambda base: int(ref.with_check_digit(kind, f"{base:0{n - 1}d}"))
    )
    wrong_check = present_keys.map(lambda v: v - v % 10 + (v % 10 + 1) % 10)
    too_large = st.integers(10**n, 2**63 - 1)
    options = [present_keys, present_keys, absent_valid, wrong_check, too_large]
    if signed:
        options.append(st.integers(-(2**63), -1))
    return st.one_of(*options)


def expected_lookup(kind: str, key: Any, index: dict[str, Row]) -> tuple[Row | None, str | None]:
    """(reference row or None, what an error must name, or None when the key is acceptable)."""
    if key is None:
        return None, "null"
    if isinstance(key, int):
        if not ref.is_valid_int(kind, key):
            return None, str(key)
        return index.get(f"{key:0{ref.LENGTHS[kind]}d}"), None
    if not ref.is_valid(kind, key):
        return None, f"'{key}'"
    return index.get(key), None


def check_lookup(
    out: pa.Table,
    kind: str,
    keys: list[Any],
    columns: list[str],
    index: dict[str, Row],
) -> None:
    assert out.column_names == ["found", "error", "replaced", *columns]
    assert out.num_rows == len(keys)
    found = column_values(out, "found")
    errors = column_values(out, "error")
    rows = out.select(columns).to_pylist()
    for i, key in enumerate(keys):
        want, named = expected_lookup(kind, key, index)
        assert found[i] is (want is not None), (i, key)
        if named is None:
            assert errors[i] is None, (i, key, errors[i])
        else:
            assert errors[i] is not None, (i, key)
            assert f"row {i}:" in errors[i], (i, key, errors[i])
            assert named in errors[i], (i, key, errors[i])
        if want is None:
            assert all(v is None for v in rows[i].values()), (i, key, rows[i])
        else:
            assert rows[i] == {c: want[c] for c in columns}, (i, key)


def columns_strategy() -> st.SearchStrategy[list[str] | None]:
    return st.one_of(
        st.none(), st.lists(st.sampled_from(Registry.column_names()), unique=True, max_size=6)
    )


STRING_CONTAINERS: dict[str, Callable[[list[str | None]], Any]] = {
    "list": lambda keys: keys,
    "numpy_str": lambda keys: np.array(keys, dtype=str),
    "pa_string": lambda keys: pa.array(keys, type=pa.string()),
    "pa_large_string": lambda keys: pa.array(keys, type=pa.large_string()),
    "pa_string_view": lambda keys: pa.array(keys, type=pa.string_view()),
    "pa_dictionary": lambda keys: pa.array(keys, type=pa.string()).dictionary_encode(),
    "pa_chunked": lambda keys: pa.chunked_array(
        [
            pa.array(keys[: len(keys) // 2], pa.string()),
            pa.array(keys[len(keys) // 2 :], pa.string()),
        ]
    ),
    "polars": lambda keys: pl.Series("key", keys, dtype=pl.String),
}
NULL_FREE = {"list", "numpy_str"}  # containers of str only


INT_CONTAINERS: dict[str, Callable[[list[int | None]], Any]] = {
    "numpy_uint64": lambda keys: np.array(keys, dtype=np.uint64),
    "numpy_int64": lambda keys: np.array(keys, dtype=np.int64),
    "pa_int64": lambda keys: pa.array(keys, type=pa.int64()),
    "pa_uint64": lambda keys: pa.array(keys, type=pa.uint64()),
    "polars_uint64": lambda keys: pl.Series("key", keys, dtype=pl.UInt64),
}
SIGNED = {"numpy_int64", "pa_int64"}
NULLABLE_INTS = {"pa_int64", "pa_uint64", "polars_uint64"}


def draw_keys(data: st.DataObject, key: st.SearchStrategy[Any]) -> list[Any]:
    """A batch of keys with repeats: duplicates must each get their own answer."""
    pool = data.draw(st.lists(key, min_size=1, max_size=20))
    return data.draw(st.lists(st.sampled_from(pool), max_size=40))


@pytest.mark.parametrize("kind", KEY_KINDS)
@SETTINGS
@given(data=st.data(), container=st.sampled_from(list(STRING_CONTAINERS)))
def test_lookup_string_keys_matches_reference(
    small: Registry,
    small_by: dict[str, dict[str, Row]],
    kind: str,
    data: st.DataObject,
    container: str,
) -> None:
    index = small_by[kind]
    keys = draw_keys(data, key_strategy(kind, list(index)[:5000]))
    if container in NULL_FREE:
        keys = [k for k in keys if k is not None]
    columns = data.draw(columns_strategy())
    out = small.lookup(STRING_CONTAINERS[container](keys), by=kind, columns=columns)
    check_lookup(out, kind, keys, Registry.column_names() if columns is None else columns, index)


@pytest.mark.parametrize("kind", KEY_KINDS)
@SETTINGS
@given(data=st.data(), container=st.sampled_from(list(INT_CONTAINERS)))
def test_lookup_integer_keys_matches_reference(
    small: Registry,
    small_by: dict[str, dict[str, Row]],
    kind: str,
    data: st.DataObject,
    container: str,
) -> None:
    index = small_by[kind]
    key = int_key_strategy(kind, list(index)[:5000], signed=container in SIGNED)
    if container in NULLABLE_INTS:
        key = st.one_of(key, st.none())
    keys = draw_keys(data, key)
    columns = data.draw(columns_strategy())
    out = small.lookup(INT_CONTAINERS[container](keys), by=kind, columns=columns)
    check_lookup(out, kind, keys, Registry.column_names() if columns is None else columns, index)


def fixed_keys(kind: str, index: dict[str, Row]) -> list[str | None]:
    """One key of each sort, each twice."""
    n = ref.LENGTHS[kind]
    present = list(index)[:3]
    absent = next(
        k for b in range(1000) if (k := ref.with_check_digit(kind, f"{b:0{n - 1}d}")) not in index
    )
    wrong = present[0][:-1] + str((int(present[0][-1]) + 1) % 10)
    keys = [*present, absent, wrong, present[1][:-1], ref.to_full_width(present[2]), "", None]
    return keys + keys


@pytest.mark.parametrize("kind", KEY_KINDS)
@pytest.mark.parametrize("container", list(STRING_CONTAINERS))
def test_lookup_each_string_container(
    small: Registry, small_by: dict[str, dict[str, Row]], kind: str, container: str
) -> None:
    keys = fixed_keys(kind, small_by[kind])
    if container in NULL_FREE:
        keys = [k for k in keys if k is not None]
    out = small.lookup(STRING_CONTAINERS[container](keys), by=kind)
    check_lookup(out, kind, keys, Registry.column_names(), small_by[kind])
    assert sum(column_values(out, "found")) == 6


@pytest.mark.parametrize("kind", KEY_KINDS)
@pytest.mark.parametrize("container", list(INT_CONTAINERS))
def test_lookup_each_integer_container(
    small: Registry, small_by: dict[str, dict[str, Row]], kind: str, container: str
) -> None:
    keys: list[int | None] = [
        int(k) for k in fixed_keys(kind, small_by[kind])[:5] if k is not None
    ] + [10 ** ref.LENGTHS[kind]]
    if container in SIGNED:
        keys.append(-1)
    if container in NULLABLE_INTS:
        keys.append(None)
    out = small.lookup(INT_CONTAINERS[container](keys), by=kind, columns=["sex", kind])
    check_lookup(out, kind, keys, ["sex", kind], small_by[kind])
    assert sum(column_values(out, "found")) == 3


def test_lookup_leading_zero_keys(small: Registry, small_by: dict[str, dict[str, Row]]) -> None:
    key = next(k for k in small_by["my_number"] if k.startswith("0"))
    by_str = small.lookup([key], columns=["my_number"])
    by_int = small.lookup(np.array([int(key)], dtype=np.uint64), columns=["my_number"])
    assert column_values(by_str, "my_number") == column_values(by_int, "my_number") == [key]


def test_lookup_uint64_beyond_int64_is_a_row_error(
    small: Registry, small_by: dict[str, dict[str, Row]]
) -> None:
    # An out-of-range key is one bad row, like any other invalid key: the batch still answers.
    key = next(iter(small_by["my_number"]))
    keys = np.array([int(key), 2**63 + 5, 2**64 - 1], dtype=np.uint64)
    out = small.lookup(keys, columns=["my_number"])
    assert column_values(out, "found") == [True, False, False]
    errors = column_values(out, "error")
    assert errors[0] is None
    assert errors[1] is not None and "row 1" in errors[1] and str(2**63 + 5) in errors[1]
    assert errors[2] is not None and "row 2" in errors[2] and str(2**64 - 1) in errors[2]


def test_lookup_all_keys(small: Registry, small_table: pa.Table) -> None:
    # Every resident is found by either key, and comes back as its own row.
    for kind in KEY_KINDS:
        out = small.lookup(small_table[kind], by=kind)
        assert pc.all(out["found"]).as_py()
        assert plain(out.drop_columns(["found", "error", "replaced"])).equals(plain(small_table))


def test_lookup_empty(small: Registry) -> None:
    for keys in ([], pa.array([], pa.string()), np.array([], dtype=np.uint64)):
        out = small.lookup(keys)
        assert out.num_rows == 0
        assert out.column_names == ["found", "error", "replaced", *Registry.column_names()]


def test_lookup_bad_arguments(small: Registry, small_by: dict[str, dict[str, Row]]) -> None:
    key = next(iter(small_by["my_number"]))
    with pytest.raises(InvalidInput, match="'nope'"):
        small.lookup([key], by="nope")
    with pytest.raises(InvalidInput, match="'nickname'"):
        small.lookup([key], columns=["my_number", "nickname"])
    with pytest.raises(InvalidInput, match="my_number or resident_code"):
        small.lookup(["7000012050002"], by="corporate_number")
    with pytest.raises(InvalidInput, match="str"):
        small.lookup([key, 123456789018])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="float64"):
        small.lookup(np.array([1.0, 2.0]))
    with pytest.raises(InvalidInput, match="shape"):
        small.lookup(np.array([[1, 2]], dtype=np.uint64))
    with pytest.raises(InvalidInput, match=r"(?i)float64|double"):
        small.lookup(pa.array([1.5]))
    with pytest.raises(InvalidInput):
        small.lookup(key)  # a bare string is not a list of keys


# ----------------------------------------------------------------------------- verify reference


def expected_verify(
    kind: str, claims: list[Row], fields: list[str], index: dict[str, Row]
) -> list[Row]:
    out = []
    for i, claim in enumerate(claims):
        want, named = expected_lookup(kind, claim[kind], index)
        row: Row = {"found": want is not None, "status": want["status"] if want else None}
        row["error_named"] = named
        for f in fields:
            claimed = claim[f]
            if isinstance(claimed, str) and f == "birth_date":
                claimed = dt.date.fromisoformat(claimed)
            row[f"{f}_match"] = None if want is None or claimed is None else claimed == want[f]
        row["row"] = i
        out.append(row)
    return out


def check_verify(
    out: pa.Table, kind: str, claims: list[Row], fields: list[str], index: dict[str, Row]
) -> None:
    assert out.column_names == [
        "found",
        "status",
        "error",
        "replaced",
        *(f"{f}_match" for f in fields),
    ]
    assert out.num_rows == len(claims)
    got = out.to_pylist()
    for want, row in zip(expected_verify(kind, claims, fields, index), got, strict=True):
        i = want["row"]
        assert row["found"] is want["found"], (i, claims[i], row)
        assert row["status"] == want["status"], (i, claims[i], row)
        if want["error_named"] is None:
            assert row["error"] is None, (i, claims[i], row)
        else:
            assert row["error"] is not None, (i, claims[i], row)
            assert f"row {i}:" in row["error"] and want["error_named"] in row["error"], row
        for f in fields:
            assert row[f"{f}_match"] == want[f"{f}_match"], (i, f, claims[i], row)


def draw_claims(
    data: st.DataObject, kind: str, index: dict[str, Row], rows: list[Row]
) -> tuple[list[Row], list[str]]:
    """Claims rows (dicts) mixing true values, other residents' values, junk and nulls."""
    fields = data.draw(st.lists(st.sampled_from(CLAIM_FIELDS), unique=True))
    keys = data.draw(st.lists(key_strategy(kind, list(index)[:5000]), min_size=1, max_size=25))
    junk = {
        "family_name": st.sampled_from(["", "高橋", "髙橋", "ｻﾄｳ", "佐藤 "]),
        "given_name": st.text("太郎花子一", max_size=3),
        "family_name_kana": st.sampled_from(["", "サトウ", "さとう", "ｻﾄｳ"]),
        "given_name_kana": st.sampled_from(["", "タロウ", "ハナコ"]),
        "birth_date": st.dates(dt.date(1900, 1, 1), dt.date(2030, 12, 31)),
        "sex": st.sampled_from([0, 1, 2, 3, 9]),
        "municipality_code": st.sampled_from(["162019", "162018", "", "16201", "131016"]),
    }
    claims = []
    for key in keys:
        stored = index.get(key) if isinstance(key, str) else None
        claim: Row = {kind: key}
        for f in fields:
            how = data.draw(st.sampled_from(["null", "true", "true", "other", "junk"]))
            if how == "true" and stored is not None:
                claim[f] = stored[f]
            elif how == "null":
                claim[f] = None
            elif how == "other":
                claim[f] = data.draw(st.sampled_from(rows))[f]
            else:
                claim[f] = data.draw(junk[f])
        claims.append(claim)
    return claims, fields


TEXT_LAYOUTS: dict[str, Callable[[pa.Array], pa.Array]] = {
    "string": lambda a: a,
    "large_string": lambda a: a.cast(pa.large_string()),
    "string_view": lambda a: a.cast(pa.string_view()),
    # As Polars categoricals, or Parquet read with `read_dictionary`, give them.
    "dictionary": lambda a: a.dictionary_encode(),
}


def claims_table(
    claims: list[Row],
    kind: str,
    fields: list[str],
    date_as: str,
    sex_type: pa.DataType,
    text_as: str = "string",
) -> pa.Table:
    columns: dict[str, pa.Array] = {kind: pa.array([c[kind] for c in claims], pa.string())}
    for f in fields:
        values = [c[f] for c in claims]
        if f == "birth_date":
            # Claimed dates are date32, the contract's type (`date_as` names it).
            assert date_as == "date32", date_as
            columns[f] = pa.array(values, pa.date32())
        elif f == "sex":
            columns[f] = pa.array(values, sex_type)
        else:
            columns[f] = TEXT_LAYOUTS[text_as](pa.array(values, pa.string()))
    return pa.table(columns)


@pytest.mark.parametrize("kind", KEY_KINDS)
@SETTINGS
@given(
    data=st.data(),
    date_as=st.sampled_from(["date32"]),
    sex_type=st.sampled_from([pa.uint8(), pa.int64(), pa.int8(), pa.uint16()]),
    text_as=st.sampled_from(list(TEXT_LAYOUTS)),
)
def test_verify_matches_reference(
    small: Registry,
    small_by: dict[str, dict[str, Row]],
    small_rows: list[Row],
    kind: str,
    data: st.DataObject,
    date_as: str,
    sex_type: pa.DataType,
    text_as: str,
) -> None:
    index = small_by[kind]
    claims, fields = draw_claims(data, kind, index, small_rows)
    table = claims_table(claims, kind, fields, date_as, sex_type, text_as)
    out = small.verify(table, by=kind)
    check_verify(out, kind, claims, fields, index)


@pytest.mark.parametrize("kind", KEY_KINDS)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_verify_accepts_polars_and_duckdb(
    small: Registry,
    small_by: dict[str, dict[str, Row]],
    small_rows: list[Row],
    kind: str,
    data: st.DataObject,
) -> None:
    index = small_by[kind]
    claims, fields = draw_claims(data, kind, index, small_rows)
    table = claims_table(claims, kind, fields, "date32", pa.uint8())

    check_verify(small.verify(pl.from_arrow(table), by=kind), kind, claims, fields, index)

    con = duckdb.connect()
    try:
        ordered = table.append_column("i", pa.array(range(table.num_rows), pa.int64()))
        con.register("claims", ordered)
        relation = con.sql("SELECT * EXCLUDE (i) FROM claims ORDER BY i")
        check_verify(small.verify(relation, by=kind), kind, claims, fields, index)
        reader = con.sql("SELECT * EXCLUDE (i) FROM claims ORDER BY i").arrow()
        check_verify(small.verify(reader, by=kind), kind, claims, fields, index)
    finally:
        con.close()


@pytest.mark.parametrize("kind", KEY_KINDS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_verify_one_agrees_with_verify(
    small: Registry,
    small_by: dict[str, dict[str, Row]],
    small_rows: list[Row],
    kind: str,
    data: st.DataObject,
) -> None:
    """A typed call's path: one claim as Python values gives `verify`'s row, with dates and the
    registry's names and codes as text."""
    claims, fields = draw_claims(data, kind, small_by[kind], small_rows)
    columns = Registry.column_names()
    for claim in claims:
        if not isinstance(claim[kind], str):
            continue
        claimed = [f for f in fields if claim[f] is not None]
        values = {f: claim[f].isoformat() if f == "birth_date" else claim[f] for f in claimed}
        one = small.verify_one(claim[kind], kind, values, columns=columns)
        table = claims_table([claim], kind, claimed, "date32", pa.int64())
        want = small.verify(table, by=kind, columns=columns).to_pylist()[0]
        assert one == {
            name: value.isoformat() if isinstance(value, dt.date) else value
            for name, value in want.items()
        }, (claim, one)


def test_verify_one_bad_input(small: Registry, small_rows: list[Row]) -> None:
    key = small_rows[0]["my_number"]
    for by, claims, named in [
        ("my_number", {"sex": 1.5}, "sex"),
        ("my_number", {"nickname": "x"}, "nickname"),
        ("my_number", {"birth_date": "2001-02-30"}, "birth_date"),
        ("nope", {}, "nope"),
    ]:
        with pytest.raises(InvalidInput) as info:
            small.verify_one(key, by, claims)
        assert f"'{named}'" in str(info.value), (claims, str(info.value))
    row = small.verify_one("123", "my_number", {"family_name": "佐藤"})
    assert row["found"] is False and row["family_name_match"] is None
    assert row["error"] is not None and "'123'" in row["error"]


@pytest.mark.parametrize("kind", KEY_KINDS)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_verify_columns_come_from_the_same_probe_as_lookup(
    small: Registry,
    small_by: dict[str, dict[str, Row]],
    small_rows: list[Row],
    kind: str,
    data: st.DataObject,
) -> None:
    index = small_by[kind]
    claims, fields = draw_claims(data, kind, index, small_rows)
    table = claims_table(claims, kind, fields, "date32", pa.uint8())
    columns = data.draw(
        st.lists(st.sampled_from(Registry.column_names()), unique=True, max_size=6), "columns"
    )
    out = small.verify(table, by=kind, first_row=0, columns=columns)
    check_verify(out.select(range(4 + len(fields))), kind, claims, fields, index)
    looked_up = small.lookup(table[kind], by=kind, columns=columns)
    # `status` is already the verify result's own column; the others follow the matches.
    extra = [c for c in columns if c != "status"]
    assert out.column_names[4 + len(fields) :] == extra
    assert plain(out.select(extra)) == plain(looked_up.select(extra))
    if "status" in columns:
        assert plain(out.select(["status"])) == plain(looked_up.select(["status"]))


@pytest.mark.parametrize("kind", KEY_KINDS)
@pytest.mark.parametrize("rows", [20_001, 70_001], ids=["one-thread", "all-cores"])
def test_verify_columns_of_a_large_batch(
    small: Registry, small_rows: list[Row], kind: str, rows: int
) -> None:
    """Over many chunks every column, not-found and rejected rows included, agrees with lookup:
    a message-sized batch (one thread, columns built from the residents' copies) and one over
    65,536 claims (all cores, gathered per column)."""
    rng = np.random.default_rng(7)
    keys = [small_rows[i][kind] for i in rng.integers(0, len(small_rows), rows)]
    keys[5] = "0" * len(keys[5])
    keys[-1] = None
    table = pa.table({kind: pa.array(keys, pa.string())})
    columns = list(Registry.column_names())
    out = small.verify(table, by=kind, columns=columns)
    looked_up = small.lookup(table[kind], by=kind, columns=columns)
    assert not out["found"][5].as_py() and out["error"][rows - 1].as_py() is not None
    extra = [c for c in columns if c != "status"]
    assert plain(out.select(extra)) == plain(looked_up.select(extra))
    assert plain(out.select(["status"])) == plain(looked_up.select(["status"]))


def test_verify_a_known_resident(small: Registry, small_rows: list[Row]) -> None:
    person = next(r for r in small_rows if r["status"] == "deceased")
    claims = {
        "my_number": [person["my_number"]],
        "family_name": [person["family_name"]],
        "given_name": ["違う名前"],
        "birth_date": pa.array([person["birth_date"]], pa.date32()),
        "sex": pa.array([3 - person["sex"]], pa.uint8()),
    }
    out = small.verify(claims).to_pylist()
    assert out == [
        {
            "found": True,
            "status": "deceased",
            "error": None,
            "replaced": False,
            "family_name_match": True,
            "given_name_match": False,
            "birth_date_match": True,
            "sex_match": False,
        }
    ]


def test_verify_key_only(small: Registry, small_rows: list[Row]) -> None:
    keys = [small_rows[0]["resident_code"], ref.with_check_digit("resident_code", "0" * 10)]
    out = small.verify({"resident_code": keys}, by="resident_code")
    assert out.column_names == ["found", "status", "error", "replaced"]
    assert column_values(out, "found") == [
        True,
        ref.with_check_digit("resident_code", "0" * 10) in {r["resident_code"] for r in small_rows},
    ]


def test_verify_multi_batch_claims_name_global_rows(small: Registry, small_rows: list[Row]) -> None:
    first = pa.record_batch({"my_number": [small_rows[0]["my_number"], small_rows[1]["my_number"]]})
    second = pa.record_batch({"my_number": [small_rows[2]["my_number"], "123"]})
    out = small.verify(pa.Table.from_batches([first, second]))
    assert column_values(out, "found") == [True, True, True, False]
    errors = column_values(out, "error")
    assert errors[:3] == [None, None, None]
    assert errors[3] is not None and "row 3:" in errors[3] and "'123'" in errors[3], errors[3]


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param(lambda: pa.table({"my_number": pa.array([], pa.string())}), id="pyarrow"),
        pytest.param(
            lambda: pa.Table.from_batches([], pa.schema([("my_number", pa.string())])),
            id="no-batches",
        ),
        pytest.param(
            lambda: duckdb.sql("SELECT '123456789018' AS my_number WHERE false").arrow(),
            id="duckdb",
        ),
    ],
)
def test_verify_empty_claims(small: Registry, claims: Callable[[], Any]) -> None:
    out = small.verify(claims())
    assert out.num_rows == 0
    assert out.column_names == ["found", "status", "error", "replaced"]


def test_verify_bad_input(small: Registry, small_rows: list[Row]) -> None:
    key = small_rows[0]["my_number"]
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"family_name": ["佐藤"]}, "my_number", "my_number"),
        ({"my_number": [key], "nickname": ["x"]}, "my_number", "nickname"),
        ({"my_number": [key], "resident_code": ["x"]}, "my_number", "resident_code"),
        ({"my_number": [key], "birth_date": ["yesterday"]}, "my_number", "birth_date"),
        ({"my_number": [key], "birth_date": ["2001-02-30"]}, "my_number", "birth_date"),
        # Dates are date32: text, even a valid ISO date, is not the contract's type.
        ({"my_number": [key], "birth_date": ["2001-02-03"]}, "my_number", "birth_date"),
        ({"my_number": [key], "birth_date": pa.array([0], pa.int32())}, "my_number", "birth_date"),
        ({"my_number": [key], "family_name": pa.array([1.5])}, "my_number", "family_name"),
        ({"my_number": [key], "sex": ["male"]}, "my_number", "sex"),
        ({"my_number": [key], "sex": ["1"]}, "my_number", "sex"),
        ({"my_number": [key], "family_name": [1]}, "my_number", "family_name"),
        ({"resident_code": [key]}, "my_number", "my_number"),
        ({"my_number": [key]}, "nope", "nope"),
    ]
    for claims, by, named in cases:
        with pytest.raises(InvalidInput) as info:
            small.verify(claims, by=by)
        assert f"'{named}'" in str(info.value), (claims, str(info.value))
    with pytest.raises(InvalidInput):
        small.verify([key])  # not a table


def test_claimable_columns_are_what_verify_accepts(small: Registry) -> None:
    claimable = Registry.claimable_columns()
    assert claimable == [c for c in Registry.column_names() if c in claimable]
    for column in Registry.column_names():
        if column == "my_number":
            continue
        claims = small.to_arrow(["my_number", column]).slice(0, 1)
        if column in claimable:
            assert small.verify(claims)[f"{column}_match"].to_pylist() == [True], column
        else:
            with pytest.raises(InvalidInput, match=f"'{column}' cannot be verified"):
                small.verify(claims)
