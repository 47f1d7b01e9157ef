"""What a municipality runs against a server (docs/municipalities.md): `submit`, a change file
streamed over gRPC (durable and audited before each result comes back), and `notices`, the
move-in notices (転入通知) owed to it, acknowledged on request."""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from juki_engine.cli.changes import ChangeTally, change_batches, progress_bar
from juki_engine.cli.defaults import DEFAULT_LISTEN, DEMO_CERTS, add_client_options
from juki_engine.cli.outcomes import EXIT_OK
from juki_engine.cli.output import add_format_option, print_records
from juki_engine.files import check_writable, output_format, write_table


def municipality_tls(args: argparse.Namespace) -> object:
    """The municipality's client credentials: `--cert`, or the demo certificate of
    `--municipality` (`<certs>/agencies/<code>.pem`, as `juki certs` writes it)."""
    from juki_engine.client import AgencyTLS

    if args.cert:
        return AgencyTLS.from_cert(args.cert, args.key, args.ca)
    if not args.municipality:
        raise ValueError("give --municipality CODE (its demo certificate) or --cert")
    return AgencyTLS.from_cert(Path(args.certs) / "agencies" / f"{args.municipality}.pem")


def cmd_submit(args: argparse.Namespace) -> int:
    from juki_engine._proto import changes_pb2 as cpb
    from juki_engine._proto import changes_pb2_grpc as cpb_grpc
    from juki_engine.client.municipality import result_row
    from juki_engine.service.wire import write_ipc

    tls = municipality_tls(args)
    rows, batches = change_batches(Path(args.changes), args.batch_size)
    tally = ChangeTally()
    # Each message's reasons, for its reply: grpc reads message i before reply i can come.
    sent: list[list[str]] = []

    def requests() -> Iterator[cpb.SubmitChangesRequest]:
        header = cpb.SubmitChangesHeader(
            operator_id=args.operator, request_id=args.request_id or str(uuid.uuid4())
        )
        yield cpb.SubmitChangesRequest(header=header)
        for batch in batches:
            sent.append([str(r) for r in batch.column("reason").to_pylist()])
            yield cpb.SubmitChangesRequest(table=write_ipc(pa.Table.from_batches([batch])))

    started = time.perf_counter()
    with tls.channel(args.server) as channel, progress_bar() as progress:  # type: ignore[attr-defined]
        task = progress.add_task(f"submitting {args.changes}", total=rows)
        stub = cpb_grpc.ChangeSubmissionServiceStub(channel)
        for i, reply in enumerate(stub.SubmitChanges(requests())):
            results = pa.Table.from_pylist([result_row(r) for r in reply.results])
            tally.add(sent[i], results)
            progress.advance(task, results.num_rows)
    elapsed = time.perf_counter() - started
    return tally.print(
        f"changes submitted to {args.server}",
        f"{rows:,} changes in {elapsed:.1f} s ({rows / max(elapsed, 1e-9):,.0f}/s); each "
        "result came back once its change was durable and audited",
        args,
    )


def cmd_notices(args: argparse.Namespace) -> int:
    from juki_engine.client.municipality import acknowledge_notices, notices_table, read_notices

    tls = municipality_tls(args)
    if args.out:
        output_format(Path(args.out))
        check_writable(Path(args.out), args.force)
    with tls.channel(args.server) as channel:  # type: ignore[attr-defined]
        messages = list(read_notices(channel, args.operator, after=args.after, timeout=60))
        table = notices_table(messages)
        acknowledged = None
        if args.ack and messages:
            acknowledged = acknowledge_notices(channel, messages[-1].notice)
    footer = f"{table.num_rows} notices"
    if acknowledged is not None:
        footer += f"; acknowledged through {acknowledged}: they will not be sent again"
    elif table.num_rows:
        footer += "; not acknowledged (--ack): they will be sent again"
    if args.out:
        kind = write_table(table, Path(args.out))
        footer += f"; written to {args.out} ({kind})"
    print_records(table, f"転入通知 owed to {args.municipality or args.cert}", args.format, footer)
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def client(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--server", default=DEFAULT_LISTEN, help=f"HOST:PORT (default {DEFAULT_LISTEN})"
        )
        p.add_argument(
            "--municipality",
            help="the municipality's code; its demo certificate is used unless --cert is given",
        )
        p.add_argument(
            "--certs",
            default=str(DEMO_CERTS),
            help=f"where the demo certificates are (default {DEMO_CERTS})",
        )
        p.add_argument("--operator", default="cli", help="the official (recorded in the audit)")
        add_client_options(p)
        add_format_option(p)

    s = sub.add_parser(
        "submit",
        help="a municipality submits a change file over gRPC (durable before each result)",
        description="Streams the changes of a Parquet or CSV file (docs/changes.md) to a "
        "server as the municipality of the client certificate; rows naming another "
        "municipality are refused. Prints a summary per reason and per error.",
    )
    s.add_argument("changes", help="change file (.parquet or .csv)")
    s.add_argument("--batch-size", type=int, default=10_000, help="changes per message")
    s.add_argument("--request-id", help="the submission's id (recorded in the audit)")
    s.add_argument("--errors", type=int, default=10, help="how many kinds of error to list")
    client(s)
    s.set_defaults(func=cmd_submit)

    n = sub.add_parser(
        "notices",
        help="the move-in notices (転入通知) owed to a municipality, from a server",
        description="Reads the notices owed to the municipality of the client certificate, "
        "after the last one it acknowledged (or --after). They are sent again until "
        "acknowledged: --ack acknowledges those read.",
    )
    n.add_argument(
        "--after", type=int, help="start after this notice number (default: the last acknowledged)"
    )
    n.add_argument("--ack", action="store_true", help="acknowledge the notices read")
    n.add_argument("--out", help="also write them to a file (.parquet, .csv …)")
    n.add_argument("--force", action="store_true", help="replace --out if it exists")
    client(n)
    n.set_defaults(func=cmd_notices)
