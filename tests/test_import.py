"""Tests for building a registry from an Arrow table (Registry.from_arrow, rust/import.rs)."""

from __future__ import annotations

import re

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from juki_engine import (
    DuplicateIdentifier,
    InvalidIdentifier,
    InvalidInput,
    JukiError,
    Registry,
)

REQUIRED = [
    "resident_code",
    "my_number",
    "family_name",
    "family_name_kana",
    "given_name",
    "given_name_kana",
    "birth_date",
    "sex",
    "municipality_code",
]
OPTIONAL = [
    "municipality_name",
    "prefecture",
    "address_town",
    "address_block",
    "status",
    "status_date",
    "card_state",
]


def plain(table: pa.Table) -> pa.Table:
    """`table` with dictionary and view columns cast to plain strings."""
    fields = [
        pa.field(f.name, pa.string())
        if pa.types.is_dictionary(f.type) or pa.types.is_string_view(f.type)
        else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


@pytest.fixture(scope="module")
def source() -> Registry:
    return Registry.generate(population=2_000, seed=3)


@pytest.fixture(scope="module")
def table(source: Registry) -> pa.Table:
    return source.to_arrow()


@pytest.fixture(scope="module")
def head(table: pa.Table) -> pa.Table:
    """The first 100 rows as plain strings: easy to edit row by row."""
    return plain(table.slice(0, 100))


def with_value(table: pa.Table, column: str, row: int, value: object) -> pa.Table:
    values = table[column].to_pylist()
    values[row] = value
    i = table.schema.get_field_index(column)
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


def probe_keys(table: pa.Table, kind: str) -> pa.Array:
    keys = plain(table.select([kind]))[kind].combine_chunks()[::17]
    return pa.concat_arrays([keys, pa.array(["123456789018", "12345", None], pa.string())])


def assert_same_registry(built: Registry, expected: pa.Table) -> None:
    """`built` holds exactly `expected`'s rows, and finds them by either key."""
    assert len(built) == expected.num_rows
    assert plain(built.to_arrow()).equals(plain(expected))
    sample = list(range(0, expected.num_rows, 17))
    for kind in ("my_number", "resident_code"):
        got = built.lookup(probe_keys(expected, kind), by=kind)
        assert got["found"].to_pylist() == [True] * len(sample) + [False] * 3
        rows = plain(got.drop_columns(["found", "error", "replaced"]))
        assert rows.slice(0, len(sample)).equals(plain(expected).take(sample))
        assert all(v is None for row in rows.slice(len(sample)).to_pylist() for v in row.values())


# ----------------------------------------------------------------------------- round trips


def test_round_trip(source: Registry, table: pa.Table) -> None:
    built = Registry.from_arrow(table)
    assert_same_registry(built, table)
    keys = probe_keys(table, "my_number")
    assert plain(built.lookup(keys)).equals(plain(source.lookup(keys)))
    claims = table.select(["my_number", "family_name", "given_name_kana", "birth_date", "sex"])
    assert built.verify(claims).equals(source.verify(claims))


def test_plain_string_columns(table: pa.Table) -> None:
    assert_same_registry(Registry.from_arrow(plain(table)), table)


def test_large_string_and_batches(table: pa.Table) -> None:
    fields = [
        pa.field(f.name, pa.large_string()) if pa.types.is_string(f.type) else f
        for f in plain(table).schema
    ]
    large = plain(table).cast(pa.schema(fields))
    chunked = pa.Table.from_batches(large.to_batches(max_chunksize=300))
    assert chunked.column(0).num_chunks > 1
    assert_same_registry(Registry.from_arrow(chunked), table)


def test_required_columns_only(head: pa.Table) -> None:
    built = Registry.from_arrow(head.select(REQUIRED))
    out = built.to_arrow()
    assert plain(out.select(REQUIRED)).equals(head.select(REQUIRED))
    assert set(pc.cast(out["status"], pa.string()).to_pylist()) == {"resident"}
    assert set(pc.cast(out["card_state"], pa.string()).to_pylist()) == {"none"}
    assert out["status_date"].null_count == head.num_rows


def test_null_status_and_card_state_take_the_defaults(head: pa.Table) -> None:
    table = with_value(with_value(head, "status", 4, None), "card_state", 9, None)
    out = plain(Registry.from_arrow(table).to_arrow())
    assert out["status"][4].as_py() == "resident"
    assert out["card_state"][9].as_py() == "none"


def test_birth_date_strings(head: pa.Table) -> None:
    i = head.schema.get_field_index("birth_date")
    as_text = head.set_column(i, "birth_date", pc.cast(head["birth_date"], pa.string()))
    assert plain(Registry.from_arrow(as_text).to_arrow()).equals(head)


def test_an_empty_table(head: pa.Table) -> None:
    built = Registry.from_arrow(head.slice(0, 0))
    assert len(built) == 0
    assert built.lookup(head["my_number"]).to_pylist()[0]["found"] is False


def test_polars_frames_are_accepted(head: pa.Table) -> None:
    assert plain(Registry.from_arrow(pl.from_arrow(head)).to_arrow()).equals(head)


# ----------------------------------------------------------------------------- rejections


@pytest.mark.parametrize("kind", ["my_number", "resident_code"])
def test_duplicate_identifier_names_both_rows(head: pa.Table, kind: str) -> None:
    table = with_value(head, kind, 70, head[kind][3].as_py())
    with pytest.raises(DuplicateIdentifier) as info:
        Registry.from_arrow(table)
    assert "rows 3 and 70" in str(info.value), str(info.value)
    assert head[kind][3].as_py() in str(info.value)
    assert isinstance(info.value, InvalidInput)


@pytest.mark.parametrize("kind", ["my_number", "resident_code"])
@pytest.mark.parametrize("damage", ["check_digit", "length", "full_width", "hyphen", "empty"])
def test_invalid_identifier_names_row_and_value(head: pa.Table, kind: str, damage: str) -> None:
    good = head[kind][5].as_py()
    bad = {
        "check_digit": good[:-1] + str((int(good[-1]) + 1) % 10),
        "length": good[:-1],
        "full_width": good.translate(str.maketrans("0123456789", "０１２３４５６７８９")),
        "hyphen": f"{good[:4]}-{good[4:]}",
        "empty": "",
    }[damage]
    with pytest.raises(InvalidIdentifier) as info:
        Registry.from_arrow(with_value(head, kind, 5, bad))
    message = str(info.value)
    assert re.search(r"\brow 5\b", message), message
    assert f"'{bad}'" in message, message


@pytest.mark.parametrize("column", REQUIRED)
def test_missing_required_column_is_named(head: pa.Table, column: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Registry.from_arrow(head.drop_columns([column]))
    assert f"'{column}'" in str(info.value), str(info.value)


@pytest.mark.parametrize("column", OPTIONAL)
def test_optional_columns_may_be_missing(head: pa.Table, column: str) -> None:
    built = Registry.from_arrow(head.drop_columns([column]))
    out = plain(built.to_arrow())
    kept = [c for c in head.column_names if c != column]
    assert out.select(kept).equals(head.select(kept))


@pytest.mark.parametrize(
    ("column", "row", "value", "named"),
    [
        ("status", 4, "alive", "alive"),
        ("status", 4, "Resident", "Resident"),
        ("card_state", 8, "lost", "lost"),
        ("sex", 6, 3, "3"),
        ("sex", 6, 0, "0"),
    ],
)
def test_bad_values_name_row_and_value(
    head: pa.Table, column: str, row: int, value: object, named: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        Registry.from_arrow(with_value(head, column, row, value))
    message = str(info.value)
    assert re.search(rf"\brow {row}\b", message), message
    assert named in message, message


@pytest.mark.parametrize(
    "column",
    ["my_number", "resident_code", "family_name", "birth_date", "sex", "municipality_code"],
)
def test_null_in_a_required_column_names_the_row(head: pa.Table, column: str) -> None:
    with pytest.raises(JukiError) as info:
        Registry.from_arrow(with_value(head, column, 7, None))
    assert isinstance(info.value, InvalidInput | InvalidIdentifier)
    assert re.search(r"\brow 7\b", str(info.value)), str(info.value)


def test_bad_municipality_code_names_row_and_value(head: pa.Table) -> None:
    with pytest.raises(JukiError) as info:
        Registry.from_arrow(with_value(head, "municipality_code", 2, "162018"))
    assert isinstance(info.value, InvalidInput | InvalidIdentifier)
    assert re.search(r"\brow 2\b", str(info.value)) and "162018" in str(info.value)


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("sex", pa.array(["1"] * 100)),
        ("birth_date", pa.array(["not a date"] * 100)),
        ("family_name", pa.array(list(range(100)))),
    ],
)
def test_wrong_column_types_are_named(head: pa.Table, column: str, values: pa.Array) -> None:
    i = head.schema.get_field_index(column)
    with pytest.raises(InvalidInput) as info:
        Registry.from_arrow(head.set_column(i, column, values))
    assert f"'{column}'" in str(info.value), str(info.value)


def test_not_a_table() -> None:
    with pytest.raises(InvalidInput):
        Registry.from_arrow([1, 2, 3])
