"""Tests for identifiers and check digits (juki_engine.ids, rust/ids.rs)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st

from juki_engine import InvalidIdentifier, InvalidInput, JukiError, ids

KINDS = tuple(ref.LENGTHS)
DIGITS = "0123456789"
SETTINGS = settings(max_examples=50, deadline=None)

IS_VALID = {
    "my_number": ids.is_valid_my_number,
    "resident_code": ids.is_valid_resident_code,
    "local_government_code": ids.is_valid_local_government_code,
    "corporate_number": ids.is_valid_corporate_number,
}
CHECK_DIGIT = {
    "my_number": ids.my_number_check_digit,
    "resident_code": ids.resident_code_check_digit,
    "local_government_code": ids.local_government_code_check_digit,
    "corporate_number": ids.corporate_number_check_digit,
}


def bases(kind: str) -> st.SearchStrategy[str]:
    n = ref.LENGTHS[kind] - 1
    return st.text(DIGITS, min_size=n, max_size=n)


# ----------------------------------------------------------------------------- known vectors


@pytest.mark.parametrize(
    ("kind", "value", "valid"),
    [
        ("my_number", "123456789018", True),
        ("my_number", "023456789013", True),  # a leading zero is part of the identifier
        ("my_number", "614106526000", True),
        ("my_number", "123456789010", False),
        ("my_number", "111111111111", False),
        ("local_government_code", "162019", True),  # 富山市
        ("local_government_code", "162018", False),
        ("local_government_code", "131016", True),  # 千代田区
        ("corporate_number", "7000012050002", True),  # 国税庁
        ("corporate_number", "6000012050002", False),
    ],
)
def test_known_vectors(kind: str, value: str, valid: bool) -> None:
    assert IS_VALID[kind](value) is valid
    assert ref.is_valid(kind, value) is valid  # the reference agrees with the published vectors
    if valid:
        ids.validate(kind, value)
    else:
        with pytest.raises(InvalidIdentifier, match=value):
            ids.validate(kind, value)


def test_known_check_digits() -> None:
    assert ids.my_number_check_digit("12345678901") == 8
    assert ids.my_number_check_digit("02345678901") == 3
    assert ids.local_government_code_check_digit("16201") == 9
    assert ids.corporate_number_check_digit("000012050002") == 7


def test_resident_code_uses_the_documented_weights() -> None:
    base = "1234567890"
    r = sum(w * int(d) for w, d in zip((5, 4, 3, 2, 7, 6, 5, 4, 3, 2), base, strict=True)) % 11
    expected = 0 if r <= 1 else 11 - r
    assert ids.resident_code_check_digit(base) == expected == 3
    assert ids.is_valid_resident_code(base + str(expected))
    assert not ids.is_valid_resident_code(base + str((expected + 1) % 10))


# ----------------------------------------------------------------------------- against reference


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(data=st.data())
def test_check_digit_matches_reference(kind: str, data: st.DataObject) -> None:
    base = data.draw(bases(kind))
    expected = ref.check_digit(kind, base)
    assert CHECK_DIGIT[kind](base) == expected
    full = ref.with_check_digit(kind, base)
    assert IS_VALID[kind](full)
    ids.validate(kind, full)
    for wrong in (d for d in DIGITS if d != str(expected)):
        bad = wrong + base if kind == "corporate_number" else base + wrong
        assert not IS_VALID[kind](bad), bad


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(
    value=st.one_of(
        st.text(DIGITS, min_size=5, max_size=14),
        st.text(max_size=14),
        st.text("0123456789０１２３４５６７８９- ", min_size=6, max_size=13),
    )
)
def test_is_valid_matches_reference_on_any_text(kind: str, value: str) -> None:
    assert IS_VALID[kind](value) is ref.is_valid(kind, value)


# ----------------------------------------------------------------------------- strictness


def strict_rejects(kind: str) -> list[str]:
    good = {
        "my_number": "123456789018",
        "resident_code": ref.with_check_digit("resident_code", "1234567890"),
        "local_government_code": "162019",
        "corporate_number": "7000012050002",
    }[kind]
    return [
        ref.to_full_width(good),  # full-width digits
        good[:4] + "-" + good[4:],  # a hyphen
        good[:4] + " " + good[4:],  # a space
        " " + good,
        good + "\n",
        good[:-1],  # too short
        good + "0",  # too long
        "",
        "a" + good[1:],  # a letter
        "٠" * len(good),  # non-ASCII digits that str.isdigit accepts
        "²" + good[1:],
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_strict_validation_rejects_and_names_the_value(kind: str) -> None:
    for value in strict_rejects(kind):
        assert not IS_VALID[kind](value), value
        with pytest.raises(InvalidIdentifier) as info:
            ids.validate(kind, value)
        assert value in str(info.value), (value, str(info.value))
        assert isinstance(info.value, JukiError)


@pytest.mark.parametrize("kind", KINDS)
def test_check_digit_rejects_malformed_bases(kind: str) -> None:
    n = ref.LENGTHS[kind] - 1
    for base in ["1" * (n - 1), "1" * (n + 1), ref.to_full_width("1" * n), "x" * n, ""]:
        with pytest.raises(InvalidIdentifier) as info:
            CHECK_DIGIT[kind](base)
        assert base in str(info.value)


def test_unknown_kind_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="passport"):
        ids.validate("passport", "123")
    with pytest.raises(InvalidInput, match="passport"):
        ids.normalize("passport", "123")


# ----------------------------------------------------------------------------- normalize


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("123456789018", ("123456789018", False, False)),
        ("１２３４５６７８９０１８", ("123456789018", True, False)),
        ("1234-5678-9018", ("123456789018", False, True)),
        ("1234 5678 9018", ("123456789018", False, True)),
        ("１２３４－５６７８－９０１８", ("123456789018", True, True)),
        ("1234−5678−9018", ("123456789018", False, True)),  # U+2212 minus sign
        ("1234\u30005678\u30009018", ("123456789018", False, True)),  # ideographic space
        ("０２３４５６７８９０１３", ("023456789013", True, False)),  # leading zero kept
        ("12345678901８", ("123456789018", True, False)),
    ],
)
def test_normalize_folds_and_reports(value: str, expected: tuple[str, bool, bool]) -> None:
    got = ids.normalize("my_number", value)
    assert isinstance(got, ids.Normalized)
    assert tuple(got) == expected
    assert (got.value, got.folded_full_width, got.removed_separators) == expected


@pytest.mark.parametrize(
    "value",
    [
        "1234a5678901",
        "1234-5678-9010",
        "１２３４５６７８９０１０",
        "12345678901",
        "",
        "1234_5678_9018",
    ],
)
def test_normalize_rejects_and_names_the_value(value: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        ids.normalize("my_number", value)
    assert f"'{value}'" in str(info.value)


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(data=st.data())
def test_normalize_inverts_typing_noise(kind: str, data: st.DataObject) -> None:
    canonical = ref.with_check_digit(kind, data.draw(bases(kind)))
    fold = data.draw(st.lists(st.booleans(), min_size=len(canonical), max_size=len(canonical)))
    seps = data.draw(
        st.lists(
            st.sampled_from(["", "", "-", " ", "－", "‐", "\u3000"]),
            min_size=len(canonical),
            max_size=len(canonical),
        )
    )
    typed = "".join(
        (ref.to_full_width(c) if f else c) + s
        for c, f, s in zip(canonical, fold, seps, strict=True)
    )
    got = ids.normalize(kind, typed)
    assert got == (canonical, any(fold), any(seps))


# ----------------------------------------------------------------------------- vectorised


def test_is_valid_array_over_strings_with_nulls() -> None:
    values = ["123456789018", None, "023456789013", "１２３４５６７８９０１８", "123456789010", ""]
    expected = [True, None, True, False, False, False]
    for container in (
        values,
        pa.array(values, type=pa.string()),
        pa.array(values, type=pa.large_string()),
        pa.array(values, type=pa.string_view()),
    ):
        got = ids.is_valid_array("my_number", container)
        assert got.type == pa.bool_()
        assert got.to_pylist() == expected


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_is_valid_array_over_numpy_integers(dtype: type) -> None:
    values = [123456789018, 23456789013, 614106526000, 123456789010, 111111111111, 10**12, 0]
    got = ids.is_valid_array("my_number", np.array(values, dtype=dtype))
    assert got.to_pylist() == [ref.is_valid_int("my_number", v) for v in values]
    assert got.to_pylist() == [True, True, True, False, False, False, True]


def test_is_valid_array_over_integers_with_nulls_and_out_of_range() -> None:
    got = ids.is_valid_array("resident_code", pa.array([None, -1, 10**11, 2**62], pa.int64()))
    assert got.to_pylist() == [None, False, False, False]


def test_is_valid_array_over_huge_uint64_rejects_per_value() -> None:
    # Integers beyond int64 are invalid identifiers, not a reason to fail the whole array.
    values = np.array([123456789018, 2**63 + 5, 2**64 - 1], dtype=np.uint64)
    assert ids.is_valid_array("my_number", values).to_pylist() == [True, False, False]


def test_check_digit_array_over_strings_with_nulls() -> None:
    values = ["12345678901", None, "02345678901", "1234", "１２３４５６７８９０１", "1234567890a"]
    for container in (values, pa.array(values), pa.array(values, type=pa.large_string())):
        got = ids.check_digit_array("my_number", container)
        assert got.type == pa.uint8()
        assert got.to_pylist() == [8, None, 3, None, None, None]


def test_check_digit_array_over_numpy_integers() -> None:
    # An integer base is the base's value: leading zeros are implied, as for integer keys.
    values = np.array([12345678901, 2345678901, 0], dtype=np.int64)
    got = ids.check_digit_array("my_number", values)
    assert got.to_pylist() == [8, 3, ref.check_digit("my_number", "0" * 11)]


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(data=st.data())
def test_vectorised_matches_scalar(kind: str, data: st.DataObject) -> None:
    n = ref.LENGTHS[kind]
    value = st.one_of(
        bases(kind).map(lambda b: ref.with_check_digit(kind, b)),
        st.text(DIGITS, min_size=n, max_size=n),
        st.text("0123456789０-", max_size=n + 1),
        st.none(),
    )
    values = data.draw(st.lists(value, max_size=30))
    got = ids.is_valid_array(kind, pa.array(values, type=pa.string())).to_pylist()
    assert got == [None if v is None else ref.is_valid(kind, v) for v in values]
    base = st.one_of(bases(kind), st.text("0123456789x", max_size=n), st.none())
    base_values = data.draw(st.lists(base, max_size=30))
    digits = ids.check_digit_array(kind, pa.array(base_values, type=pa.string())).to_pylist()
    assert digits == [
        ref.check_digit(kind, b) if b is not None and len(b) == n - 1 and b.isdigit() else None
        for b in base_values
    ]
