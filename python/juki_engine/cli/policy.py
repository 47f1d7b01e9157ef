"""`juki policy check FILE`: validate a policy as the server would, without serving it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa

from juki_engine.cli.outcomes import EXIT_OK
from juki_engine.cli.output import add_format_option, console, print_records
from juki_engine.names import LEVELS


def cmd_policy_check(args: argparse.Namespace) -> int:
    from juki_engine.policy import Policy

    policy = Policy.load(args.file)
    checked = "loads"
    if args.ca:
        from juki_engine.service.identity import TrustStore

        TrustStore(Path(args.ca).read_bytes()).check_policy(policy)
        checked += f"; its certificate authorities are all in {args.ca}"
    rows = [
        {
            "agency": agency.code,
            "name": agency.name,
            "affair": affair.code,
            "keys": ", ".join(sorted(affair.keys)),
            "modes": ", ".join(sorted(affair.modes)),
            "fields": ", ".join(affair.fields),
            "match_levels": ", ".join(lv for lv in LEVELS if lv in affair.match_levels),
            "daily_quota": affair.daily_quota or None,
        }
        for agency in policy.agencies
        for affair in agency.affairs.values()
    ]
    affairs = sum(len(a.affairs) for a in policy.agencies)
    console.print(
        f"policy {args.file} {checked}: {len(policy.agencies)} agencies, {affairs} affairs, "
        f"{len(policy.authorities)} certificate authorities"
    )
    print_records(pa.Table.from_pylist(rows), "grants", args.format)
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("policy", help="policy files: check one without serving it")
    policy_sub = p.add_subparsers(dest="policy_command", required=True)
    c = policy_sub.add_parser(
        "check",
        help="load a policy as `juki serve` would and list what it grants (exit 2 if refused)",
    )
    c.add_argument("file", help="policy TOML (docs/policy.md)")
    c.add_argument(
        "--ca", help="the server's trust bundle (ca.pem): also check the policy's CAs are in it"
    )
    add_format_option(c)
    c.set_defaults(func=cmd_policy_check)
