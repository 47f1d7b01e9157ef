"""Identifiers and check digits: My Number (個人番号), resident code (住民票コード),
local-government code (全国地方公共団体コード) and corporate number (法人番号).

Identifiers are strings (leading zeros matter). Validation is strict: exactly the right number of
ASCII digits with a valid check digit. `normalize_*` is the one lenient entry point for typed
input: it folds full-width digits and drops hyphens/spaces, and says which it did.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pyarrow as pa

from juki_engine import _core

__all__ = [
    "Normalized",
    "check_digit_array",
    "corporate_number_check_digit",
    "is_valid_array",
    "is_valid_corporate_number",
    "is_valid_local_government_code",
    "is_valid_my_number",
    "is_valid_resident_code",
    "local_government_code_check_digit",
    "my_number_check_digit",
    "normalize",
    "resident_code_check_digit",
    "validate",
]

KINDS = ("my_number", "resident_code", "local_government_code", "corporate_number")


class Normalized(NamedTuple):
    """A normalised identifier and what normalising changed."""

    value: str
    folded_full_width: bool
    removed_separators: bool


def is_valid_my_number(value: str) -> bool:
    """Whether `value` is 12 ASCII digits with a valid My Number check digit."""
    return _core.is_valid("my_number", value)


def is_valid_resident_code(value: str) -> bool:
    """Whether `value` is 11 ASCII digits with a valid resident-code check digit."""
    return _core.is_valid("resident_code", value)


def is_valid_local_government_code(value: str) -> bool:
    """Whether `value` is 6 ASCII digits with a valid local-government-code check digit."""
    return _core.is_valid("local_government_code", value)


def is_valid_corporate_number(value: str) -> bool:
    """Whether `value` is 13 ASCII digits with a valid (leading) corporate-number check digit."""
    return _core.is_valid("corporate_number", value)


def my_number_check_digit(base: str) -> int:
    """Check digit for 11 base digits (weights 6,5,4,3,2,7,6,5,4,3,2; 総務省令第85号 第5条)."""
    return _core.check_digit("my_number", base)


def resident_code_check_digit(base: str) -> int:
    """Check digit for 10 base digits: the My Number scheme with weights 5,4,3,2,7,6,5,4,3,2,
    r = Σ mod 11, check = 0 if r ≤ 1 else 11 − r."""
    return _core.check_digit("resident_code", base)


def local_government_code_check_digit(base: str) -> int:
    """Check digit for 5 base digits (weights 6,5,4,3,2; check = (11 − Σ mod 11) mod 10)."""
    return _core.check_digit("local_government_code", base)


def corporate_number_check_digit(base: str) -> int:
    """Check digit for the 12 base digits of a corporate number (9 − Σ P·Q mod 9)."""
    return _core.check_digit("corporate_number", base)


def validate(kind: str, value: str) -> None:
    """Raise `InvalidIdentifier` naming the value unless it is a valid identifier of `kind`."""
    _core.validate(kind, value)


def normalize(kind: str, value: str) -> Normalized:
    """Fold full-width digits and drop hyphen/space separators, then validate strictly."""
    return Normalized(*_core.normalize(kind, value))


def is_valid_array(kind: str, values: Any) -> pa.BooleanArray:
    """Vectorised validity over strings or integers (pyarrow, numpy, any Arrow array)."""
    return pa.array(_core.is_valid_array(kind, pa.array(values)))


def check_digit_array(kind: str, bases: Any) -> pa.UInt8Array:
    """Vectorised check digits over bases (digit strings, or integers giving the base's value);
    malformed bases give null."""
    return pa.array(_core.check_digit_array(kind, pa.array(bases)))
