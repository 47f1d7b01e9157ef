"""Look-alikes: a registry seeded with the cases name matching must get right, deterministically.

`seed_lookalikes(registry, pairs, seed)` makes `pairs` residents of each kind below resemble
another resident (`original`), by official corrections applied to the registry itself (any
size: the nation too), and returns the pairs, so a benchmark can say what every ambiguity and
every miss is:

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
import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from juki_engine import names
from juki_engine.registry import Registry

__all__ = ["KINDS", "seed_lookalikes"]

KINDS = ("twin", "variant", "reading")


#: The sequence numbers the seeding corrections take, far above what the tests and the
#: generator use.
FIRST_SEQUENCE = 7_000_000_000


def seed_lookalikes(
    registry: Registry, pairs: int = 1000, seed: int = 0, today: dt.date | None = None
) -> tuple[Registry, pa.Table]:
    """Seed `registry` in place with `pairs` look-alikes of each kind (fewer where it lacks the
    names) and return it with the pairs: kind, the original's resident code, the look-alike's.

    Each look-alike is a resident given the original's names, readings and birth date (the
    family name in a variant form, or another with the same reading, where the kind says so)
    by an official correction (職権修正) applied through `Registry.apply`: no copy of the
    registry is made, so the nation is seeded as cheaply as a town. Residents are drawn at
    random, each at most once, and must be resident (a correction needs it)."""
    rng = np.random.default_rng(seed)
    table = registry.to_arrow(
        [
            "resident_code",
            "family_name",
            "family_name_kana",
            "given_name",
            "given_name_kana",
            "birth_date",
            "municipality_code",
            "status",
        ]
    )
    n = table.num_rows
    sources, targets = names.folding_table()
    variants: dict[str, list[str]] = collections.defaultdict(list)
    for s, t in zip(sources, targets, strict=True):
        variants[chr(t)].append(chr(s))
    # The family-name dictionaries are parallel (one key, its name and reading): every name
    # with each reading.
    family = table["family_name"].combine_chunks()
    kana = table["family_name_kana"].combine_chunks()
    by_reading: dict[str, set[str]] = collections.defaultdict(set)
    for name, reading in zip(
        family.dictionary.to_pylist(), kana.dictionary.to_pylist(), strict=True
    ):
        by_reading[reading].add(name)
    used: set[int] = set()

    def other_readings(r: dict[str, Any]) -> list[str]:
        """Family names that share `r`'s reading but fold otherwise (斎藤 for 斉藤)."""
        fold = names.fold(r["family_name"])
        return sorted(x for x in by_reading[r["family_name_kana"]] if names.fold(x) != fold)

    def take(fits: Any = lambda r: True) -> dict[str, Any] | None:
        """A random resident not drawn before who `fits`; None after as many draws as the
        registry has rows (a small registry may lack the names a kind needs)."""
        tries = 0
        while tries < n:
            rows = rng.integers(0, n, min(1024, n))
            tries += len(rows)
            drawn: list[dict[str, Any]] = table.take(rows).to_pylist()
            for i, r in zip(rows.tolist(), drawn, strict=True):
                if i not in used and r["status"] == "resident" and fits(r):
                    used.add(i)
                    return r
        return None

    out: list[tuple[str, str, str]] = []
    corrections: list[dict[str, Any]] = []
    for kind in KINDS:
        for _ in range(pairs):
            if kind == "twin":
                a = take()
                b = (
                    None
                    if a is None
                    else take(lambda r, a=a: r["municipality_code"] != a["municipality_code"])
                )
            elif kind == "variant":
                a = take(lambda r: any(c in variants for c in r["family_name"]))
                b = None if a is None else take()
            else:
                a = take(lambda r: bool(other_readings(r)))
                b = None if a is None else take()
            if a is None or b is None:
                break
            name = a["family_name"]
            if kind == "variant":
                at = next(i for i, c in enumerate(name) if c in variants)
                forms = variants[name[at]]
                name = name[:at] + forms[rng.integers(len(forms))] + name[at + 1 :]
            elif kind == "reading":
                others = other_readings(a)
                name = others[rng.integers(len(others))]
            corrections.append(
                {
                    "municipality": b["municipality_code"],
                    "sequence": FIRST_SEQUENCE + len(corrections),
                    "reason": "official_correction",
                    "resident_code": b["resident_code"],
                    "family_name": name,
                    "family_name_kana": a["family_name_kana"],
                    "given_name": a["given_name"],
                    "given_name_kana": a["given_name_kana"],
                    "birth_date": a["birth_date"],
                }
            )
            out.append((kind, a["resident_code"], b["resident_code"]))
    day = today or dt.date.today()
    changes = pa.Table.from_pylist(
        [c | {"effective_date": day, "reported_date": day} for c in corrections]
    )
    if corrections:
        results = registry.apply(changes, today=day)
        refused = results.filter(pc.not_equal(results["outcome"], "applied"))
        if refused.num_rows:
            raise RuntimeError(f"a look-alike correction was refused: {refused.to_pylist()[0]}")
    pairs_table = pa.table(
        {
            "kind": pa.array([k for k, _, _ in out], pa.string()),
            "original": pa.array([a for _, a, _ in out], pa.string()),
            "lookalike": pa.array([b for _, _, b in out], pa.string()),
        }
    )
    return registry, pairs_table
