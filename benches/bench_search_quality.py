"""4情報 search quality: claims spelled as agencies write them, against the residents they name.

For each of N random residents, a claim of their family name, given name and birth date, spelled
as a form would: each character that has a variant form (a character the published tables fold
to it, docs/matching.md) is written in that form with probability `--variant`, and a full-width
or half-width space sits between syllables with probability `--space`. The search runs at the
normalised level. Reported, as confusion counts:

- recall: the named resident is among the candidates agreeing on every fact (`unique`, or inside
  `ambiguous`);
- false merges: `unique` for another resident (goal: 0);
- ambiguity: `ambiguous` claims, and how many of them are the registry's own look-alikes (two
  residents with the same folded names and birth date), which explain them.

    python benches/bench_search_quality.py                         # Toyama, 200,000 claims
    python benches/bench_search_quality.py --registry /tmp/nation_snap --claims 2000000
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from juki_engine import Registry, names
from juki_engine.bench import log, peak_rss_bytes


def variants_of() -> dict[str, list[str]]:
    """Each character to the forms that fold to it (the published tables, reversed)."""
    sources, targets = names.folding_table()
    out: dict[str, list[str]] = collections.defaultdict(list)
    for s, t in zip(sources, targets, strict=True):
        out[chr(t)].append(chr(s))
    return out


def spelled(
    text: str, variants: dict[str, list[str]], rng: np.random.Generator, p: float, space: float
) -> str:
    out = []
    for i, c in enumerate(text):
        forms = variants.get(c)
        out.append(forms[rng.integers(len(forms))] if forms and rng.random() < p else c)
        if i + 1 < len(text) and rng.random() < space:
            out.append("　" if rng.random() < 0.5 else " ")
    return "".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", help="snapshot (default: Toyama, generated)")
    parser.add_argument("--claims", type=int, default=200_000)
    parser.add_argument("--variant", type=float, default=0.5, help="chance to write a variant form")
    parser.add_argument(
        "--space", type=float, default=0.1, help="chance of a space between characters"
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    registry = (
        Registry.open(args.registry, mmap=True)
        if args.registry
        else Registry.generate(prefecture="富山県")
    )
    rng = np.random.default_rng(args.seed)
    rows = rng.integers(0, len(registry), args.claims)
    people = registry.to_arrow(["resident_code", "family_name", "given_name", "birth_date"]).take(
        pa.array(rows)
    )
    variants = variants_of()
    log(f"{len(variants):,} characters have variant forms; spelling {args.claims:,} claims")
    # Spell each distinct name a few ways, not each row: the same draws per name either way.
    family = [
        spelled(v, variants, rng, args.variant, args.space)
        for v in people["family_name"].to_pylist()
    ]
    given = [
        spelled(v, variants, rng, args.variant, args.space)
        for v in people["given_name"].to_pylist()
    ]
    changed = sum(f != o for f, o in zip(family, people["family_name"].to_pylist(), strict=True))
    claims = pa.table(
        {"family_name": family, "given_name": given, "birth_date": people["birth_date"]}
    )
    started = time.perf_counter()
    out = registry.search(claims, columns=["resident_code"])
    elapsed = time.perf_counter() - started
    full = out.filter(pc.equal(out["agreed"], 3))
    expected = people["resident_code"].to_pylist()
    found: dict[int, list[str]] = collections.defaultdict(list)
    outcome: dict[int, str] = {}
    for claim, code, o in zip(
        full["claim"].to_pylist(),
        full["resident_code"].to_pylist(),
        full["outcome"].to_pylist(),
        strict=True,
    ):
        found[claim].append(code)
        outcome[claim] = o
    recall = sum(expected[i] in found.get(i, []) for i in range(args.claims))
    false_merges = sum(
        outcome.get(i) == "unique" and found[i] != [expected[i]] for i in range(args.claims)
    )
    ambiguous = sum(o == "ambiguous" for o in outcome.values())
    print(f"claims: {args.claims:,} ({changed:,} family names spelled otherwise than the registry)")
    print(f"recall: {recall:,} ({100 * recall / args.claims:.3f} %)  goal ≥ 99.9 %")
    print(f"false merges: {false_merges:,}  goal 0")
    explained = all(len(found[i]) > 1 for i, o in outcome.items() if o == "ambiguous")
    share = 100 * ambiguous / args.claims
    print(
        f"ambiguous: {ambiguous:,} ({share:.3f} %), each listing registry look-alikes: {explained}"
    )
    rate = args.claims / elapsed / 1e6
    rss = peak_rss_bytes() / 2**30
    print(f"search: {rate:.2f} M claims/s (index built on the first call); peak RSS {rss:.2f} GiB")
    return 0 if recall == args.claims and false_merges == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
