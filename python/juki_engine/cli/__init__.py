"""The `juki` command line: generate, inspect and query registries, run bulk verification jobs,
serve agencies, read the audit trail, generate changes.

One module per command group: `registry` (generate, stats, lookup), `jobs` (verify),
`serving` (serve, certs, affairs, demo), `audit`, `policy`, `changes` (apply, history,
checkpoint, generate a year of changes), `municipality` (submit, notices: a municipality's side
of a server); `output` and `outcomes` are what they share (formats, exit statuses and summaries).
`juki demo` is the README's first command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc

from juki_engine import JukiError
from juki_engine.cli import audit, changes, jobs, municipality, policy, registry, serving
from juki_engine.cli.logs import log_to_stderr
from juki_engine.cli.outcomes import EXIT_ERROR
from juki_engine.cli.output import console

__all__ = ["build_parser", "main"]

EPILOG = """exit status: 0 done; 1 done, but some keys were rejected (invalid_key: the reason is in
the error column); 2 not done: a usage or input error, or a refused call (docs/outcomes.md)."""


def cmd_bench(args: argparse.Namespace) -> int:
    from juki_engine import bench

    return bench.main(list(args.bench_args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="juki",
        description="National resident registry identity verification engine.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    registry.add_parsers(sub)
    jobs.add_parsers(sub)
    serving.add_parsers(sub)
    audit.add_parsers(sub)
    policy.add_parsers(sub)
    changes.add_parsers(sub)
    municipality.add_parsers(sub)
    p = sub.add_parser("bench", help="lookup/verify benchmark against DuckDB, Polars, numpy")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    log_to_stderr()
    if argv[:1] == ["bench"]:
        # The benchmark owns its options (`juki bench --help` lists them).
        return cmd_bench(argparse.Namespace(bench_args=argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (JukiError, ValueError, OSError) as e:
        console.print(f"[red]error:[/red] {e}", soft_wrap=True)
        return EXIT_ERROR
    except grpc.RpcError as e:
        console.print(f"[red]refused:[/red] {e.code().name}: {e.details()}", soft_wrap=True)
        return EXIT_ERROR
