"""Look-alikes: a registry seeded with the cases name matching must get right, deterministically.

`seed_lookalikes(registry, pairs, seed)` returns a copy of the registry in which `pairs`
residents of each kind below have been made to resemble another resident (`original`), and the
pairs themselves, so a benchmark can say what every ambiguity and every miss is:

- `twin`: the same names (and readings) and birth date, in another municipality: two people a
  4情報 search cannot tell apart without the address; `ambiguous` at every level unless the
  claim gives the municipality;
- `variant`: the original's family name written in a variant form (髙橋 for 高橋: the published
  tables, docs/matching.md), same given name and birth date: one person at the normalised
  level, two different spellings at the exact level;
- `reading`: another family name with the same reading (斎藤 and 斉藤: サイトウ), same given name
  and birth date: different people, whom only the reading joins; no search by name may merge
  them.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import pyarrow as pa

from juki_engine import names
from juki_engine.registry import Registry

__all__ = ["KINDS", "seed_lookalikes"]

KINDS = ("twin", "variant", "reading")


def _plain(table: pa.Table) -> pa.Table:
    return table.cast(
        pa.schema(
            [
                f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f
                for f in table.schema
            ]
        )
    )


def seed_lookalikes(
    registry: Registry, pairs: int = 1000, seed: int = 0
) -> tuple[Registry, pa.Table]:
    """`registry` with `pairs` look-alikes of each kind (fewer where the registry lacks the
    names), and the pairs: kind, the original's resident code, the look-alike's."""
    rng = np.random.default_rng(seed)
    table = _plain(registry.to_arrow())
    rows: list[dict[str, Any]] = table.to_pylist()
    sources, targets = names.folding_table()
    variants: dict[str, list[str]] = collections.defaultdict(list)
    for s, t in zip(sources, targets, strict=True):
        variants[chr(t)].append(chr(s))
    by_reading: dict[str, set[str]] = collections.defaultdict(set)
    for r in rows:
        by_reading[r["family_name_kana"]].add(r["family_name"])
    # Residents are drawn in a random order, each at most once; a draw skips residents that do
    # not fit (they stay as they are).
    pool = iter(rng.permutation(len(rows)).tolist())
    out: list[tuple[str, str, str]] = []

    def take(fits: Any = lambda r: True) -> int | None:
        return next((i for i in pool if fits(rows[i])), None)

    def copy_person(dst: dict[str, Any], src: dict[str, Any]) -> None:
        for key in ("family_name", "family_name_kana", "given_name", "given_name_kana"):
            dst[key] = src[key]
        dst["birth_date"] = src["birth_date"]

    def other_readings(r: dict[str, Any]) -> list[str]:
        """Family names that share `r`'s reading but fold otherwise (斎藤 for 斉藤)."""
        fold = names.fold(r["family_name"])
        return sorted(n for n in by_reading[r["family_name_kana"]] if names.fold(n) != fold)

    for kind in KINDS:
        for _ in range(pairs):
            if kind == "twin":
                a = take()
                b = (
                    None
                    if a is None
                    else take(lambda r, a=a: r["municipality_code"] != rows[a]["municipality_code"])
                )
            elif kind == "variant":
                a = take(lambda r: any(c in variants for c in r["family_name"]))
                b = None if a is None else take()
            else:
                a = take(lambda r: bool(other_readings(r)))
                b = None if a is None else take()
            if a is None or b is None:
                break
            copy_person(rows[b], rows[a])
            name = rows[a]["family_name"]
            if kind == "variant":
                at = next(i for i, c in enumerate(name) if c in variants)
                forms = variants[name[at]]
                rows[b]["family_name"] = (
                    name[:at] + forms[rng.integers(len(forms))] + name[at + 1 :]
                )
            elif kind == "reading":
                others = other_readings(rows[a])
                rows[b]["family_name"] = others[rng.integers(len(others))]
            out.append((kind, rows[a]["resident_code"], rows[b]["resident_code"]))
    seeded = Registry.from_arrow(pa.Table.from_pylist(rows, table.schema))
    pairs_table = pa.table(
        {
            "kind": [k for k, _, _ in out],
            "original": [a for _, a, _ in out],
            "lookalike": [b for _, _, b in out],
        }
    )
    return seeded, pairs_table
