"""Tests for the trust boundary (rust/wire.rs, rust/python.rs): every array from outside is
validated before it is read, only the contract's column types are accepted, echoed client values
are bounded, IPC streams from the wire are decoded with caps, and replies disclose no dictionary
value beyond the rows they answer."""

from __future__ import annotations

import re
import struct
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from juki_engine import InternalError, InvalidInput, JukiError, Registry, ResourceExhausted, _core

ECHO = 32  # characters of a client's value an error message repeats at most


def utf8(offsets: list[int], data: bytes) -> pa.Array:
    """A utf8 array built from raw buffers, unvalidated (pyarrow checks nothing here)."""
    return pa.Array.from_buffers(
        pa.string(),
        len(offsets) - 1,
        [None, pa.py_buffer(np.array(offsets, np.int32).tobytes()), pa.py_buffer(data)],
    )


def views(data: bytes, rows: list[tuple[int, int, int]]) -> pa.Array:
    """A utf8_view array over one data buffer: per row (length, buffer index, offset), the
    prefix taken from `data` (so only what a test means to break is broken)."""
    raw = bytearray()
    for length, index, offset in rows:
        if length <= 12:
            raw += struct.pack("<I", length) + data[offset : offset + length].ljust(12, b"\0")
        else:
            prefix = data[offset : offset + 4].ljust(4, b"\0")
            raw += struct.pack("<I", length) + prefix + struct.pack("<II", index, offset)
    return pa.Array.from_buffers(
        pa.string_view(), len(rows), [None, pa.py_buffer(bytes(raw)), pa.py_buffer(data)]
    )


def bad_dictionary() -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array([0, 7], pa.int32()), pa.array(["佐藤"]), safe=False
    )


# Arrays that pyarrow lets one build and that are not valid Arrow data.
INVALID: dict[str, Any] = {
    "non-utf8": lambda: utf8([0, 2], b"\xff\xfe"),
    "offsets-backwards": lambda: utf8([0, 4, 2], b"12345678"),
    "dictionary-key-out-of-range": bad_dictionary,
    "dictionary-values-non-utf8": lambda: pa.DictionaryArray.from_arrays(
        pa.array([0, 0], pa.int8()), utf8([0, 2], b"\xc3\x28"), safe=False
    ),
    "view-past-its-buffer": lambda: views(b"x" * 20, [(16, 0, 10)]),
    "view-in-a-missing-buffer": lambda: views(b"x" * 20, [(16, 3, 0)]),
    "view-non-utf8": lambda: views(b"\xff" * 20, [(16, 0, 0)]),
}


@pytest.fixture(scope="module")
def key(small_rows: list[dict[str, Any]]) -> str:
    key: str = small_rows[0]["my_number"]
    return key


@pytest.mark.parametrize("make", INVALID.values(), ids=list(INVALID))
def test_invalid_keys_are_refused_before_they_are_read(small: Registry, make: Any) -> None:
    with pytest.raises(InvalidInput, match=r"^keys: invalid Arrow data: "):
        small.lookup(make())
    with pytest.raises(InvalidInput, match=r"^values: invalid Arrow data: "):
        _core.is_valid_array("my_number", make())
    with pytest.raises(InvalidInput, match=r"^bases: invalid Arrow data: "):
        _core.check_digit_array("my_number", make())


@pytest.mark.parametrize("make", INVALID.values(), ids=list(INVALID))
@pytest.mark.parametrize("column", ["my_number", "family_name", "given_name_kana"])
def test_invalid_claims_are_refused_naming_the_column(
    small: Registry, key: str, make: Any, column: str
) -> None:
    bad = make()
    claims = {"my_number": pa.array([key] * len(bad)), column: bad}
    with pytest.raises(InvalidInput) as info:
        small.verify(pa.table(claims))
    assert str(info.value).startswith(f"claims column '{column}': invalid Arrow data: "), info


@pytest.mark.parametrize("make", INVALID.values(), ids=list(INVALID))
def test_an_invalid_registry_table_is_refused_naming_the_column(
    small_table: pa.Table, make: Any
) -> None:
    bad = make()
    table = small_table.slice(0, len(bad))
    table = table.set_column(table.schema.get_field_index("family_name"), "family_name", bad)
    with pytest.raises(InvalidInput, match=r"^registry table column 'family_name': invalid"):
        Registry.from_arrow(table)


def test_an_invalid_column_of_a_later_batch_is_found(small: Registry, key: str) -> None:
    good = pa.record_batch({"my_number": pa.array([key]), "family_name": pa.array(["x"])})
    bad = pa.record_batch({"my_number": pa.array([key]), "family_name": INVALID["non-utf8"]()})
    with pytest.raises(InvalidInput, match="claims column 'family_name': invalid Arrow data"):
        small.verify(pa.Table.from_batches([good, good, bad]))


# ----------------------------------------------------------------------------- the contract's types


@pytest.mark.parametrize(
    ("keys", "shown"),
    [
        (pa.array([1.5]), "Float64"),
        (pa.nulls(2), "Null"),
        (pa.array([b"12345678901"]), "Binary"),
        (pa.DictionaryArray.from_arrays(pa.array([0], pa.int8()), pa.array([5])), "Dictionary"),
        (pa.array([[1]]), "List"),
    ],
)
def test_keys_of_other_types_are_refused_naming_the_type(
    small: Registry, key: str, keys: pa.Array, shown: str
) -> None:
    with pytest.raises(InvalidInput, match=f"my_number keys must be strings.*not {shown}"):
        small.lookup(keys)
    with pytest.raises(InvalidInput, match=f"my_number keys must be strings.*not {shown}"):
        small.verify(pa.table({"my_number": keys}))


@pytest.mark.parametrize(
    "keys",
    [
        pa.array(["x"], pa.string()),
        pa.array(["x"], pa.large_string()),
        pa.array(["x"], pa.string_view()),
        pa.array(["x"], pa.dictionary(pa.int16(), pa.string())),
        pa.array(["x"], pa.dictionary(pa.uint8(), pa.large_string())),
        pa.DictionaryArray.from_arrays(
            pa.array([0], pa.int64()), pa.array(["x"], pa.string_view())
        ),
        *(pa.array([1], t) for t in [pa.int8(), pa.uint16(), pa.int32(), pa.uint64()]),
    ],
    ids=str,
)
def test_keys_of_the_contracts_types_are_accepted(small: Registry, keys: pa.Array) -> None:
    assert small.lookup(keys)["found"].to_pylist() == [False]
    assert small.verify(pa.table({"my_number": keys}))["found"].to_pylist() == [False]


@pytest.mark.parametrize(
    ("column", "values", "shown"),
    [
        ("family_name", pa.array([1]), "Int64"),
        ("family_name", pa.array([b"x"]), "Binary"),
        ("given_name", pa.array([1], pa.dictionary(pa.int8(), pa.int64())), "Dictionary"),
        ("municipality_code", pa.array([162019]), "Int64"),
        ("birth_date", pa.array(["2001-02-03"]), "Utf8"),
        ("birth_date", pa.array([0], pa.int32()), "Int32"),
        ("birth_date", pa.array([0], pa.timestamp("s")), "Timestamp"),
        ("sex", pa.array(["1"]), "Utf8"),
        ("sex", pa.array([1.0]), "Float64"),
    ],
)
def test_claims_of_other_types_are_refused_naming_column_and_type(
    small: Registry, key: str, column: str, values: pa.Array, shown: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        small.verify(pa.table({"my_number": [key], column: values}))
    message = str(info.value)
    assert f"claims column '{column}'" in message and f"not {shown}" in message, message


@pytest.mark.parametrize("column", ["family_name", "given_name_kana", "birth_date", "sex"])
def test_a_null_typed_claim_claims_nothing(small: Registry, key: str, column: str) -> None:
    out = small.verify(pa.table({"my_number": [key], column: pa.nulls(1)}))
    assert out["found"].to_pylist() == [True]
    assert out[f"{column}_match"].to_pylist() == [None]


def test_a_client_chosen_column_name_is_echoed_bounded(small: Registry, key: str) -> None:
    name = "x" * 10_000
    with pytest.raises(InvalidInput) as info:
        small.verify(pa.table({"my_number": [key], name: ["y"]}))
    assert "x" * ECHO + "…'" in str(info.value) and len(str(info.value)) < 400


# ----------------------------------------------------------------------------- echoed values


def test_views_of_one_huge_string_echo_at_most_32_characters(small: Registry) -> None:
    huge = b"9" * (1 << 20)  # one string, viewed by every row: 1 MiB data, 1,000 rows
    keys = views(huge, [(len(huge), 0, 0)] * 1000)
    for out in (small.lookup(keys), small.verify(pa.table({"my_number": keys}))):
        errors = out["error"].to_pylist()
        assert all(e is not None and len(e) < 120 for e in errors), max(map(len, errors))
        assert f"'{'9' * ECHO}…'" in errors[0]
        assert errors[999].startswith("row 999: ")


def test_a_dictionary_of_one_huge_string_echoes_at_most_32_characters(small: Registry) -> None:
    keys = pa.DictionaryArray.from_arrays(pa.array(np.zeros(1000, np.int32)), ["é" * (1 << 20)])
    errors = small.lookup(keys)["error"].to_pylist()
    assert all(e is not None and len(e) < 120 for e in errors)
    assert f"'{'é' * ECHO}…'" in errors[0]


def test_a_short_value_is_echoed_whole(small: Registry) -> None:
    error = small.lookup(["12345"])["error"][0].as_py()
    assert error == "row 0: my_number '12345': must be exactly 12 ASCII digits, got 5 characters"


@pytest.mark.parametrize(
    "call",
    [
        lambda v: _core.validate("my_number", v),
        lambda v: _core.check_digit("my_number", v),
        lambda v: _core.is_valid(v, "1"),
    ],
    ids=["validate", "check_digit", "kind"],
)
def test_identifier_functions_echo_bounded(call: Any) -> None:
    with pytest.raises(JukiError) as info:
        call("７" * 100_000)
    assert re.search(f"７{{{ECHO}}}…", str(info.value)), str(info.value)[:200]
    assert len(str(info.value)) < 300


def test_verify_one_echoes_bounded_and_refuses_text_that_is_not_a_date(
    small: Registry, key: str
) -> None:
    with pytest.raises(InvalidInput, match=r"'birth_date'.*is not a date"):
        small.verify_one(key, "my_number", {"birth_date": "昭和" * 10_000})
    row = small.verify_one("1" * 100_000, "my_number", {})
    assert row["found"] is False and len(row["error"]) < 200


# ----------------------------------------------------------------------------- error classes


def test_new_error_classes_are_juki_errors() -> None:
    for cls in (InternalError, ResourceExhausted):
        assert issubclass(cls, JukiError) and not issubclass(cls, InvalidInput)
        assert cls.__module__ == "juki_engine._core"
