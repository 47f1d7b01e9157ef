"""`juki verify`: a bulk verification job, in-process against a snapshot or over gRPC."""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from juki_engine import JukiError, files
from juki_engine.cli.defaults import add_client_options
from juki_engine.cli.outcomes import exit_status, print_summary
from juki_engine.cli.output import console
from juki_engine.cli.registry import KEY_KINDS, open_snapshot
from juki_engine.client import JobSummary, claim_batches
from juki_engine.names import LEVELS


def key_column(path: Path, names: list[str], by: str | None) -> str:
    """The key column: as given, or the one identifier column the input holds."""
    if by is not None:
        return by
    present = [k for k in ("resident_code", "my_number") if k in names]
    if len(present) != 1:
        raise JukiError(
            f"input {path}: cannot tell the key column (found {present or 'neither'} of "
            "resident_code, my_number); pass --by"
        )
    return present[0]


def _progress(total: int) -> tuple[Progress, TaskID]:
    progress = Progress(
        TextColumn("verifying"),
        BarColumn(),
        TextColumn("{task.completed:,} claims"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
    )
    task = progress.add_task("verify", total=total if total >= 0 else None, rate="")
    return progress, task


def cmd_verify(args: argparse.Namespace) -> int:
    out = Path(args.out)
    files.output_format(out)
    files.check_writable(out, args.force)
    if args.server:
        return verify_remote(args)
    registry = open_snapshot(Path(args.registry), args.mmap)
    total, batches = claim_batches(Path(args.input), args.batch_size)
    started = time.perf_counter()
    summary = JobSummary()
    writer: files.TableWriter | None = None
    progress, task = _progress(total)
    try:
        with progress:
            for batch in batches:
                by = key_column(Path(args.input), batch.schema.names, args.by)
                result = registry.verify(batch, by=by, first_row=summary.records, match=args.match)
                summary.add(result)
                if writer is None:
                    writer = files.TableWriter(out, result.schema)
                writer.write(result)
                rate = summary.records / max(time.perf_counter() - started, 1e-9)
                progress.update(task, completed=summary.records, rate=f"{rate / 1e6:.1f} M/s")
    finally:
        if writer is not None:
            writer.close()
    elapsed = time.perf_counter() - started
    console.print(f"verified {summary.records:,} claims in {elapsed:.2f} s → {out}")
    print_summary(summary, str(out))
    return exit_status(summary)


def verify_remote(args: argparse.Namespace) -> int:
    """The bulk job client: stream the input to the server, write its results."""
    from juki_engine.client import AgencyTLS, BulkJob, request_context, run_to_file

    if not args.cert or not args.affair:
        raise JukiError("verify --server needs --cert and --affair")
    tls = AgencyTLS.from_cert(args.cert, args.key, args.ca)
    path = Path(args.input)
    total, batches = claim_batches(path, args.batch_size)
    first = next(batches, None)
    if first is None:
        raise JukiError(f"input {path}: no claims")
    by = key_column(path, first.schema.names, args.by)
    context = request_context(args.affair, args.operator, args.request_id)
    with tls.channel(args.server) as channel:
        fields = retrieve_fields(channel, args.fields, args.affair)
        job = BulkJob(channel, context, by, fields, args.match)
        started = time.perf_counter()
        progress, task = _progress(total)
        with progress:

            def advance(done: int) -> None:
                rate = done / max(time.perf_counter() - started, 1e-9)
                progress.update(task, completed=done, rate=f"{rate / 1e6:.2f} M/s")

            summary = run_to_file(job, itertools.chain([first], batches), args.out, advance)
    elapsed = time.perf_counter() - started
    console.print(
        f"request {context.request_id}: {summary.records:,} claims in {elapsed:.2f} s "
        f"({summary.records / max(elapsed, 1e-9) / 1e6:.2f} M/s) → {args.out}"
    )
    print_summary(summary, str(args.out))
    return exit_status(summary)


def retrieve_fields(channel: Any, fields: str | None, affair: str) -> list[str]:
    """`--fields`: a comma-separated list, or `all` for every field the affair discloses."""
    if not fields:
        return []
    if fields != "all":
        return [f.strip() for f in fields.split(",") if f.strip()]
    from juki_engine._proto import registry_pb2 as pb
    from juki_engine._proto import registry_pb2_grpc as pb_grpc

    stub = pb_grpc.IdentityVerificationServiceStub(channel)
    granted = stub.ListAffairs(pb.ListAffairsRequest())
    for a in granted.affairs:
        if a.code == affair:
            return list(a.fields) if "retrieve" in a.modes else []
    held = ", ".join(a.code for a in granted.affairs) or "none"
    raise JukiError(
        f"affair '{affair}' is not granted to agency '{granted.agency_code}' (it holds: {held})"
    )


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        help="bulk verification job: Parquet/CSV in; Parquet, CSV or Arrow out (by extension)",
        description="Exit status: 0 when every key is a valid identifier, 1 when any is "
        "rejected (invalid_key: its reason in the error column), 2 on a usage or input error "
        "or a refused job.",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--registry", help="verify in-process against this snapshot directory")
    where.add_argument("--server", help="HOST:PORT of a juki server (mutual TLS)")
    p.add_argument("--input", required=True, help="claims (.parquet or .csv)")
    p.add_argument(
        "--out",
        required=True,
        help=f"results; the format by extension ({', '.join(files.FORMATS)})",
    )
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--by", choices=KEY_KINDS, help="key column (default: the one the input holds)")
    p.add_argument(
        "--match",
        choices=LEVELS,
        default="exact",
        help="how closely claimed names must agree (docs/matching.md; default exact)",
    )
    p.add_argument("--batch-size", type=int, default=1_000_000, help="rows read at a time")
    p.add_argument("--mmap", action="store_true", help="with --registry: map the snapshot")
    add_client_options(p)
    p.add_argument("--affair", help="with --server: the affair (事務) code the job is for")
    p.add_argument("--operator", default=os.environ.get("USER", "operator"), help="operator id")
    p.add_argument("--request-id", help="request id (default: a new UUID)")
    p.add_argument(
        "--fields",
        help="with --server: fields to retrieve, comma-separated, or 'all' the affair allows",
    )
    p.set_defaults(func=cmd_verify)
