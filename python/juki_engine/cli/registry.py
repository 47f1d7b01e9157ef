"""Registry commands: `generate`, `stats`, `lookup`."""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from juki_engine import JukiError, ids
from juki_engine.cli.defaults import add_client_options
from juki_engine.cli.outcomes import EXIT_OK, EXIT_ROWS_REJECTED, row_summary
from juki_engine.cli.output import add_format_option, console, print_records, spinner
from juki_engine.files import check_writable
from juki_engine.registry import Registry
from juki_engine.synthetic import CARD_FIGURES, POPULATION_FIGURES, TOYAMA

KEY_KINDS = ("my_number", "resident_code")


def generate(population: int | None, prefecture: str | None, seed: int) -> Registry:
    area = prefecture or "the nation"
    with spinner(f"generating {area} (seed {seed})") as progress:
        progress.add_task("generate")
        started = time.perf_counter()
        registry = Registry.generate(population, seed=seed, prefecture=prefecture)
    console.print(
        f"generated {len(registry):,} residents of {area} in {time.perf_counter() - started:.1f} s"
    )
    return registry


def open_snapshot(path: Path, mmap: bool = False) -> Registry:
    with spinner(f"opening {path}") as progress:
        progress.add_task("open")
        started = time.perf_counter()
        registry = Registry.open(path, mmap=mmap)
    console.print(
        f"opened {path}: {len(registry):,} residents in {time.perf_counter() - started:.1f} s"
    )
    return registry


def cmd_generate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_writable(out, args.force)
    prefecture = None if args.nation else args.prefecture
    registry = generate(args.population, prefecture, args.seed)
    with spinner(f"saving to {out}") as progress:
        progress.add_task("save")
        if out.exists() and not (out / "CURRENT").exists():
            # --force over something that is not a snapshot: it is replaced whole.
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        registry.save(out)
    console.print(f"saved snapshot to {out} ({registry.memory_bytes / 2**30:.2f} GiB)")
    return EXIT_OK


def cmd_shard(args: argparse.Namespace) -> int:
    from juki_engine.distributed import shard
    from juki_engine.service.identity import BINDINGS

    registry = open_snapshot(Path(args.snapshot), mmap=True)
    with spinner(f"writing {args.shards} shards to {args.out}") as progress:
        progress.add_task("shard")
        started = time.perf_counter()
        shards = shard(registry, args.shards, args.out)
    # The residents' certificates bind person ids, which the split keeps: they bind the same
    # residents served from the shards (their directory is the sharded server's state).
    bindings = Path(args.snapshot) / BINDINGS
    if bindings.exists():
        (Path(args.out) / BINDINGS).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bindings, Path(args.out) / BINDINGS)
    for s in shards.shards:
        console.print(f"{s.path}: persons {s.first_person:,} … {s.first_person + s.rows - 1:,}")
    console.print(
        f"sharded {shards.rows:,} residents into {len(shards.shards)} shards in "
        f"{time.perf_counter() - started:.1f} s, with routing tables (docs/sharding.md)"
    )
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    from juki_engine import cards

    registry = open_snapshot(Path(args.snapshot), args.mmap)
    per = cards.by_municipality(registry).to_pylist()

    def row(code: str, name: str, residents: int, applied: int, issued: int) -> dict[str, object]:
        return {
            "code": code,
            "municipality": name,
            "residents": residents,
            "applied": applied,
            "issued": issued,
            "issued %": round(100 * issued / residents, 2) if residents else 0.0,
        }

    rows = [
        row(
            r["municipality_code"],
            r["municipality_name"],
            r["residents"],
            r["applications"],
            r["cards_issued"],
        )
        for r in per
    ]
    shown = rows[: args.limit]
    total = [sum(r[k] for r in per) for k in ("residents", "applications", "cards_issued")]
    shown.append(row("", f"total ({len(rows):,} municipalities)", *total))
    status = pc.cast(registry.to_arrow(["status"])["status"], pa.string())
    statuses = pc.value_counts(status).to_pylist()
    hidden = len(rows) - len(shown) + 1
    note = "\n".join(
        [
            *([f"{hidden:,} more municipalities: --limit {len(rows)} shows all"] if hidden else []),
            "statuses: " + ", ".join(f"{s['values']} {s['counts']:,}" for s in statuses),
            f"card figures: {CARD_FIGURES}",
            f"populations: {POPULATION_FIGURES}",
        ]
    )
    print_records(
        pa.Table.from_pylist(shown),
        "My Number card issuance per municipality (個人番号カード交付状況)",
        args.format,
        note,
    )
    if args.report:
        written = cards.write_report(registry, args.report)
        console.print(f"report: {', '.join(str(p) for p in written)}")
    return EXIT_OK


def lookup_keys(keys: list[str], by: str, normalize: bool) -> list[str]:
    """The keys as typed, or with `normalize` folded to canonical digits (full-width digits,
    hyphens and spaces); a key that does not normalise stays as typed and is rejected per row."""
    if not normalize:
        return keys
    out = []
    for key in keys:
        try:
            out.append(ids.normalize(by, key).value)
        except JukiError:
            out.append(key)
    return out


def cmd_lookup(args: argparse.Namespace) -> int:
    registry = open_snapshot(Path(args.snapshot), args.mmap)
    keys = lookup_keys(list(args.keys), args.by, args.normalize)
    result = registry.lookup(keys, by=args.by, columns=args.columns)
    # The key as asked comes first, so a row not found still says what was asked.
    result = result.add_column(0, f"{args.by} (asked)", pa.array(list(args.keys), pa.string()))
    summary = row_summary(result)
    print_records(result, f"lookup by {args.by}", args.format, summary.line())
    return EXIT_ROWS_REJECTED if summary.invalid_key else EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    import datetime as dt

    try:
        born = dt.date.fromisoformat(args.birth_date)
    except ValueError as e:
        raise JukiError(f"--birth-date {args.birth_date!r} is not a date (YYYY-MM-DD)") from e
    if args.server:
        return search_remote(args)
    if not args.snapshot:
        raise JukiError("search needs a snapshot, or --server")
    registry = open_snapshot(Path(args.snapshot), args.mmap)
    facts: dict[str, pa.Array] = {
        "family_name": pa.array([args.family_name]),
        "given_name": pa.array([args.given_name]),
        "birth_date": pa.array([born], pa.date32()),
    }
    if args.sex is not None:
        facts["sex"] = pa.array([args.sex], pa.int8())
    if args.municipality_code is not None:
        facts["municipality_code"] = pa.array([args.municipality_code])
    found = registry.search(pa.table(facts), match=args.match, columns=args.columns)
    outcome = found["outcome"][0].as_py()
    shown = (
        found.drop_columns(["claim"])
        if found["agreed"][0].as_py()
        else found.select(["outcome", "candidates"])
    )
    print_records(
        shown,
        f"4情報 search at the {args.match} level",
        args.format,
        f"{outcome}: {found['candidates'][0].as_py()} resident(s) agree on every fact given",
    )
    return EXIT_OK


def search_remote(args: argparse.Namespace) -> int:
    """The same search as an agency asks it: the `Search` RPC, under its affair's grant."""
    from juki_engine._proto import registry_pb2 as pb
    from juki_engine._proto import registry_pb2_grpc as pb_grpc
    from juki_engine.client import AgencyTLS, request_context

    if not args.cert or not args.affair:
        raise JukiError("search --server needs --cert and --affair")
    facts = pb.Claims(
        family_name=args.family_name, given_name=args.given_name, birth_date=args.birth_date
    )
    if args.sex is not None:
        facts.sex = args.sex
    if args.municipality_code is not None:
        facts.municipality_code = args.municipality_code
    level = {"exact": pb.MATCH_LEVEL_EXACT, "normalised": pb.MATCH_LEVEL_NORMALISED}[args.match]
    request = pb.SearchRequest(
        context=request_context(args.affair, args.operator),
        facts=facts,
        match_level=level,
        fields=args.columns,
    )
    with AgencyTLS.from_cert(args.cert, args.key, args.ca).channel(args.server) as channel:
        reply = pb_grpc.IdentityVerificationServiceStub(channel).Search(request, timeout=30)
    outcome = pb.SearchOutcome.Name(reply.outcome).removeprefix("SEARCH_OUTCOME_").lower()
    rows = [
        {"agreed": c.agreed, **{f: getattr(c.resident, f) for f in reply.fields}}
        for c in reply.candidates
    ]
    table = pa.Table.from_pylist(rows) if rows else pa.table({"outcome": [outcome]})
    print_records(
        table,
        f"4情報 search by {args.server} under {args.affair}",
        args.format,
        f"{outcome}: {len(rows)} resident(s) disclosed (request {request.context.request_id})",
    )
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("generate", help="generate a synthetic registry snapshot")
    p.add_argument("--out", required=True, help="snapshot directory to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    area = p.add_mutually_exclusive_group()
    area.add_argument("--prefecture", default=TOYAMA, help=f"prefecture (default {TOYAMA})")
    area.add_argument("--nation", action="store_true", help="the whole nation")
    p.add_argument("--population", type=int, help="residents (default: the area's real figure)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "shard",
        help="split a snapshot into shards (contiguous person ranges) with routing tables, to "
        "serve on Ray (a living registry: checkpoint it first)",
    )
    p.add_argument("snapshot")
    p.add_argument("--shards", type=int, required=True, help="how many (1–255)")
    p.add_argument("--out", required=True, help="an empty directory for the shards")
    p.set_defaults(func=cmd_shard)

    p = sub.add_parser("stats", help="card issuance and status statistics of a snapshot")
    p.add_argument("snapshot")
    p.add_argument("--limit", type=int, default=60, help="municipalities to show (totals: all)")
    p.add_argument("--mmap", action="store_true", help="map the snapshot instead of loading it")
    p.add_argument(
        "--report",
        metavar="DIR",
        help="also write the card report there: charts (PNG) per municipality and over time, "
        "and index.html",
    )
    add_format_option(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser(
        "lookup",
        help="look residents up in a snapshot",
        description="Exit status: 0 when every key is a valid identifier (found or not), 1 when "
        "any is rejected (its reason in the error column), 2 on a usage or input error.",
    )
    p.add_argument("snapshot")
    p.add_argument("keys", nargs="+")
    p.add_argument("--by", default="my_number", choices=KEY_KINDS)
    p.add_argument("--columns", nargs="*", help="columns to show (default: all)")
    p.add_argument(
        "--normalize",
        action="store_true",
        help="fold full-width digits and drop hyphens and spaces in the keys first",
    )
    p.add_argument("--mmap", action="store_true")
    add_format_option(p)
    p.set_defaults(func=cmd_lookup)

    p = sub.add_parser(
        "search",
        help="find residents by the four basic facts (4情報) in a snapshot",
        description="Lists every resident sharing the name and birth date, those agreeing on "
        "every fact given first: unique, ambiguous (all listed) or not_found (docs/matching.md).",
    )
    p.add_argument("snapshot", nargs="?", help="search this snapshot in-process")
    p.add_argument("--server", help="HOST:PORT: ask a juki server instead (mutual TLS)")
    add_client_options(p)
    p.add_argument("--affair", help="with --server: the affair (事務) the search is for")
    p.add_argument("--operator", default=os.environ.get("USER", "operator"), help="operator id")
    p.add_argument("--family-name", required=True)
    p.add_argument("--given-name", required=True)
    p.add_argument("--birth-date", required=True, help="YYYY-MM-DD")
    p.add_argument("--sex", type=int, choices=[1, 2], help="1 male, 2 female")
    p.add_argument("--municipality-code", help="全国地方公共団体コード (6 digits)")
    p.add_argument("--match", choices=["exact", "normalised"], default="normalised")
    p.add_argument(
        "--columns",
        nargs="*",
        default=["resident_code", "family_name", "given_name", "birth_date", "municipality_name"],
        help="columns to show of each candidate",
    )
    p.add_argument("--mmap", action="store_true")
    add_format_option(p)
    p.set_defaults(func=cmd_search)
