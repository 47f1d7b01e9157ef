"""Names as Japan writes them: the folding table behind verify's match levels.

`verify(..., match="normalised")` compares names after folding width, spaces and character
variants (異体字); `match="reading"` also folds kana forms in readings (the levels are defined
in the core, rust/normalize.rs, and in docs/matching.md). The character table is built here from
published data, never typed by hand:

1. each character to the first candidate of the MJ縮退マップ (文字情報基盤's shrink map, as the
   `jntajis-python` package ships it), with all four of its schemes: JIS包摂規準・UCS統合規則,
   読み・字形による類推, 法務省告示582号別表第四, 法務省戸籍法関連通達・通知 (﨑→崎 comes
   only from the last);
2. then old forms to new (旧字体→新字体), by the `joyokanji` package's table.

The core resolves chains (a target that folds further) when the table is installed, so folding
is one lookup a character. Building the table takes ~0.1 s, once a process.
"""

from __future__ import annotations

import functools

from juki_engine import _core

__all__ = ["LEVELS", "fold", "folding_table", "install"]

LEVELS = ("exact", "normalised", "reading")
"""verify's match levels, weakest last."""

# The CJK blocks the MJ shrink map covers: unified ideographs (and extensions A–H) and the
# compatibility ideographs.
_RANGES = (
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2EBEF),
    (0x2F800, 0x2FA1F),
    (0x30000, 0x3134F),
)


@functools.cache
def folding_table() -> tuple[list[int], list[int]]:
    """(sources, targets): each character the published tables fold to another, as code points."""
    import jntajis
    import joyokanji

    schemes = 0
    for scheme in jntajis.MJShrinkSchemeCombo:
        schemes |= scheme
    sources, targets = [], []
    for first, last in _RANGES:
        for code in range(first, last + 1):
            char = chr(code)
            candidates = jntajis.mj_shrink_candidates(char, schemes, 1)
            folded = joyokanji.convert(candidates[0] if candidates else char)
            if folded != char and len(folded) == 1:
                sources.append(code)
                targets.append(ord(folded))
    return sources, targets


@functools.cache
def install() -> int:
    """Install the folding table in the core (once a process); how many characters it maps."""
    return _core.install_folding(*folding_table())


def fold(text: str, level: str = "normalised") -> str:
    """`text` as verify compares it at `level` (exact, normalised or reading)."""
    if level != "exact":
        install()
    return _core.fold(text, level)
