"""Plain-Python reference implementations the tests compare the engine against.

Written from the documented rules (DESIGN.md, juki_engine.ids), independently of the Rust core.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Total digits of each identifier kind, check digit included.
LENGTHS: Mapping[str, int] = {
    "my_number": 12,
    "resident_code": 11,
    "local_government_code": 6,
    "corporate_number": 13,
}

_MODULUS_11_WEIGHTS: Mapping[str, tuple[int, ...]] = {
    "my_number": (6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2),  # 総務省令第85号 第5条
    "resident_code": (5, 4, 3, 2, 7, 6, 5, 4, 3, 2),
}

FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def check_digit(kind: str, base: str) -> int:
    """The check digit of `base` (the identifier's digits without its check digit)."""
    assert len(base) == LENGTHS[kind] - 1 and base.isascii() and base.isdigit(), base
    digits = [int(c) for c in base]
    if kind in _MODULUS_11_WEIGHTS:
        r = sum(w * d for w, d in zip(_MODULUS_11_WEIGHTS[kind], digits, strict=True)) % 11
        return 0 if r <= 1 else 11 - r
    if kind == "local_government_code":
        r = sum(w * d for w, d in zip((6, 5, 4, 3, 2), digits, strict=True)) % 11
        return (11 - r) % 10
    if kind == "corporate_number":
        # n counts from the rightmost base digit, starting at 1; Q = 1 for odd n, 2 for even n.
        total = sum(d * (1 if n % 2 else 2) for n, d in enumerate(reversed(digits), start=1))
        return 9 - total % 9
    raise AssertionError(kind)


def with_check_digit(kind: str, base: str) -> str:
    """The full identifier for `base` (corporate numbers carry their check digit first)."""
    c = str(check_digit(kind, base))
    return c + base if kind == "corporate_number" else base + c


def is_valid(kind: str, value: Any) -> bool:
    """Strict validity: exactly the right number of ASCII digits with the right check digit."""
    if not isinstance(value, str) or len(value) != LENGTHS[kind]:
        return False
    if not (value.isascii() and value.isdigit()):
        return False
    if kind == "corporate_number":
        return int(value[0]) == check_digit(kind, value[1:])
    return int(value[-1]) == check_digit(kind, value[:-1])


def is_valid_int(kind: str, value: int) -> bool:
    """Validity of an identifier given as its integer value (leading zeros implied)."""
    n = LENGTHS[kind]
    return 0 <= value < 10**n and is_valid(kind, f"{value:0{n}d}")


def to_full_width(value: str) -> str:
    """ASCII digits to full-width digits (０–９)."""
    return value.translate(FULL_WIDTH)
