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
    python benches/bench_search_quality.py --lookalikes 1000   # Toyama seeded with look-alikes

With `--lookalikes N`, the registry is first seeded with N pairs of each kind of look-alike
(twins, variant spellings, names sharing a reading) and each pair's original is searched: a twin
must be listed beside it (both agree on every fact), a variant spelling at the normalised level
only, a name sharing the reading never. The seeding is a set of official corrections applied to
the registry: a `--registry` snapshot is opened from a hard-linked copy made beside it, whose
change log takes them and which is removed afterwards.

    python benches/bench_search_quality.py --registry /tmp/nation_snap --claims 2000000 \
        --lookalikes 1000                                          # the nation, seeded
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import tempfile
import time
from pathlib import Path

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


def report_lookalikes(registry: Registry, pairs: pa.Table) -> None:
    """Search each pair's original as the registry spells it: how often the look-alike is listed
    beside it (agreeing on every fact), per kind and level."""
    claims = registry.lookup(
        pairs["original"], by="resident_code", columns=["family_name", "given_name", "birth_date"]
    ).select(["family_name", "given_name", "birth_date"])
    claims = pa.table(
        {
            n: claims[n].cast(pa.string()) if n != "birth_date" else claims[n]
            for n in claims.column_names
        }
    )
    for match in ("exact", "normalised"):
        out = registry.search(claims, match=match, columns=["resident_code"])
        full = out.filter(pc.equal(out["agreed"], 3))
        listed: dict[int, set[str]] = collections.defaultdict(set)
        for claim, code in zip(
            full["claim"].to_pylist(), full["resident_code"].to_pylist(), strict=True
        ):
            listed[claim].add(code)
        counts: collections.Counter[str] = collections.Counter()
        for i, (kind, original, lookalike) in enumerate(
            zip(
                pairs["kind"].to_pylist(),
                pairs["original"].to_pylist(),
                pairs["lookalike"].to_pylist(),
                strict=True,
            )
        ):
            counts[f"{kind}: original found"] += original in listed[i]
            counts[f"{kind}: look-alike listed"] += lookalike in listed[i]
            counts[f"{kind}: pairs"] += 1
        print(
            f"look-alikes at the {match} level: "
            + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", help="snapshot (default: Toyama, generated)")
    parser.add_argument("--claims", type=int, default=200_000)
    parser.add_argument("--variant", type=float, default=0.5, help="chance to write a variant form")
    parser.add_argument(
        "--space", type=float, default=0.1, help="chance of a space between characters"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--lookalikes",
        type=int,
        default=0,
        help="seed this many look-alike pairs of each kind first (synthetic.lookalikes)",
    )
    args = parser.parse_args()
    copy = None
    if args.registry and args.lookalikes:
        # Seeding applies changes: to a copy (hard links: the files are never written in place).
        source = Path(args.registry)
        copy = Path(tempfile.mkdtemp(prefix="lookalikes-", dir=source.parent)) / "registry"
        shutil.copytree(source, copy, copy_function=os.link, ignore=lambda *_: ["changes.log"])
    try:
        return run(args, copy)
    finally:
        if copy is not None:
            shutil.rmtree(copy.parent)


def run(args: argparse.Namespace, copy: Path | None) -> int:
    registry = (
        Registry.open(copy or args.registry, mmap=True)
        if args.registry
        else Registry.generate(prefecture="富山県")
    )
    if args.lookalikes:
        from juki_engine.synthetic.lookalikes import seed_lookalikes

        registry, pairs = seed_lookalikes(registry, args.lookalikes, seed=args.seed)
        report_lookalikes(registry, pairs)
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
