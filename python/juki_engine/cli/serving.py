"""Serving agencies: `certs`, `serve`, `affairs` (what may this agency ask) and `demo`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from juki_engine import JukiError
from juki_engine.certs import AUDIT_SIGNING_KEY
from juki_engine.cli.audit import add_operator_option, record_operator, with_zone, zone
from juki_engine.cli.defaults import (
    DEFAULT_LISTEN,
    DEFAULT_METRICS,
    DEMO_AUDIT,
    DEMO_CERTS,
    DEMO_PATH,
    SERVE_AUDIT,
    add_client_options,
)
from juki_engine.cli.jobs import verify_remote
from juki_engine.cli.logs import log_to_stderr
from juki_engine.cli.outcomes import EXIT_OK
from juki_engine.cli.output import add_format_option, console, print_records
from juki_engine.cli.registry import generate, open_snapshot
from juki_engine.distributed import ShardedRegistry
from juki_engine.registry import Registry
from juki_engine.synthetic import TOYAMA


def registry_at(path: Path, generate_demo: bool, mmap: bool = False) -> Registry:
    """The snapshot at `path`; with `generate_demo`, the Toyama demo is generated there first."""
    if (path / "CURRENT").exists() or not generate_demo:
        return open_snapshot(path, mmap)
    generate(None, TOYAMA, 0).save(path)
    console.print(f"saved the demo registry to {path}")
    # Served from the snapshot, so that the changes it takes are durable in its change log.
    return open_snapshot(path, mmap)


def policy_path(arg: str | None) -> Path:
    from juki_engine.policy import example_path

    return Path(arg) if arg else example_path()


def demo_certs(directory: Path, policy: Path) -> Path:
    """Create a demo CA, server and agency certificates where they are missing, and the policy
    `policy` bound to that CA (`policy.toml` beside them, whose path is returned)."""
    from juki_engine import certs
    from juki_engine.policy import Policy

    loaded = Policy.load(policy)
    # Agencies and municipalities alike: one client certificate each, named by its code.
    callers = {a.code: a.certificate_subject for a in loaded.agencies}
    callers |= {m.code: m.certificate_subject for m in loaded.municipalities}
    certs.create_demo(directory, callers)
    return certs.write_demo_policy(directory, policy)


def cmd_certs(args: argparse.Namespace) -> int:
    out = Path(args.out)
    policy = policy_path(args.policy)
    bound = demo_certs(out, policy)
    console.print(
        f"demo CA, server certificate and agency certificates for the agencies of {policy} "
        f"in {out} (agency certificates under {out / 'agencies'}; not for production); "
        f"the policy bound to this CA: {bound}; the audit trail's signing key: "
        f"{out / AUDIT_SIGNING_KEY}"
    )
    issued = f"server and {len(list((out / 'agencies').glob('*.pem')))} agency certificates"
    if args.residents:
        snapshot = Path(args.snapshot)
        shown = issue_resident_certs(
            registry_at(snapshot, snapshot == DEMO_PATH, mmap=True), out, snapshot, args.residents
        )
        print_records(shown, f"residents' certificates (bound in {snapshot})", args.format)
        issued += f", {shown.num_rows} residents' certificates bound in {snapshot}"
    # Issuing certificates is an operator's action: recorded in the trail it will serve.
    args.dir, args.audit_key = args.audit, str(out / AUDIT_SIGNING_KEY)
    record_operator(args, "certify", f"{issued} in {out}")
    return EXIT_OK


def issue_resident_certs(registry: Registry, certs_dir: Path, state: Path, count: int) -> pa.Table:
    """Certificates from the residents' CA for the first `count` residents of `registry`, each
    bound by the engine (in `state`, the snapshot's directory) to the person it was issued to;
    named by resident code under `<certs_dir>/residents/issued/`."""
    from juki_engine import certs
    from juki_engine.service.identity import bind

    if count <= 0:
        raise JukiError(f"--residents must be a positive number of residents, not {count}")
    people = registry.to_arrow(["resident_code", "family_name", "given_name", "person", "status"])
    people = people.filter(pc.equal(people["status"], "resident")).slice(0, count)
    codes = people["resident_code"].to_pylist()
    fingerprints = certs.issue_residents(certs_dir, codes)
    bind(state, dict(zip(fingerprints.values(), people["person"].to_pylist(), strict=True)))
    folder = certs_dir / certs.RESIDENTS_DIRECTORY / "issued"
    return people.select(["resident_code", "family_name", "given_name"]).append_column(
        "certificate", pa.array([str(folder / f"{code}.pem") for code in codes])
    )


def start_server(
    registry: Registry | ShardedRegistry,
    policy: Path,
    certs_dir: Path,
    audit_dir: Path,
    retention_days: int,
    listen: str,
    workers: int,
    crl: str | None = None,
    max_bulk_jobs: int | None = None,
    state_dir: Path | None = None,
    audit_key: Path | None = None,
) -> Any:
    from juki_engine.audit.integrity import load_private_key
    from juki_engine.service import MAX_BULK_JOBS, Frontend, ServerTLS, start

    tls = ServerTLS.in_directory(certs_dir, crl)
    key_path = audit_key or certs_dir / AUDIT_SIGNING_KEY
    if not key_path.exists():
        raise JukiError(
            f"no audit signing key at {key_path}: `juki certs` makes one for the demo, "
            "`juki audit keygen FILE` one of your own (then --audit-key FILE)"
        )
    key = load_private_key(key_path)
    frontend = Frontend.open(registry, policy, audit_dir, retention_days, state_dir, key)
    try:
        return start(frontend, tls, listen, workers, max_bulk_jobs or MAX_BULK_JOBS)
    except BaseException:
        frontend.audit.close()
        raise


def cmd_serve(args: argparse.Namespace) -> int:
    from juki_engine.service import serve_forever
    from juki_engine.service.app import Compaction

    log_to_stderr(args.log_format)
    snapshot = Path(args.snapshot)
    registry: Registry | ShardedRegistry
    if args.shards:
        # The shards' actors hold the registry; this process routes, checks, audits, merges.
        registry = ShardedRegistry.start(args.shards, address=args.ray, replicas=args.replicas)
    else:
        registry = registry_at(snapshot, snapshot == DEMO_PATH, args.mmap)
    if args.certs is None:
        certs_dir = DEMO_CERTS
        policy = demo_certs(certs_dir, policy_path(args.policy))
    else:
        certs_dir = Path(args.certs)
        bound = certs_dir / "policy.toml"
        policy = (
            Path(args.policy) if args.policy else bound if bound.exists() else policy_path(None)
        )
    server = start_server(
        registry,
        policy,
        certs_dir,
        Path(args.audit),
        args.retention_days,
        args.listen,
        args.workers,
        args.crl,
        args.max_bulk_jobs,
        # Beside the change log (a sharded registry's: beside its shards): notices and
        # subscriptions read its changes; their cursors and watch lists live with it, as do the
        # bindings of residents' certificates.
        Path(args.shards) if args.shards else snapshot,
        Path(args.audit_key) if args.audit_key else None,
    )
    if args.port_file:
        # Written whole, then renamed: a watcher never reads half a number.
        tmp = Path(f"{args.port_file}.tmp")
        tmp.write_text(f"{server.port}\n")
        tmp.replace(args.port_file)
    metrics = ""
    if args.metrics != "off":
        metrics = f"; metrics on http://{args.metrics.rpartition(':')[0] or '127.0.0.1'}:"
        metrics += f"{server.frontend.metrics.serve(args.metrics)}/metrics"
    console.print(
        f"serving {len(registry):,} residents on port {server.port} (mutual TLS; policy "
        f"{policy}; certificates {certs_dir}; audit trail {args.audit}{metrics}); SIGHUP "
        "reloads the policy, SIGUSR1 signs an audit checkpoint"
    )
    compaction = None
    if not args.no_compaction:
        key = Path(args.audit_key) if args.audit_key else certs_dir / AUDIT_SIGNING_KEY
        compaction = Compaction(Path(args.audit), key, args.retention_days)
    try:
        serve_forever(server, policy)
    finally:
        if compaction is not None:
            compaction.stop()
    return EXIT_OK


def granted_affairs(reply: Any) -> pa.Table:
    """A ListAffairs reply as a table, one affair a row."""
    from juki_engine._proto import registry_pb2 as pb
    from juki_engine.service.wire import KEY_NAMES

    names: dict[int, str] = {int(kind): name for kind, name in KEY_NAMES.items()}

    def key_name(kind: int) -> str:
        return names.get(kind, str(kind))

    return pa.Table.from_pylist(
        [
            {
                "affair": a.code,
                "title": a.title,
                "legal_basis": a.legal_basis,
                "keys": ", ".join(key_name(k) for k in a.keys),
                "modes": ", ".join(a.modes),
                "fields": ", ".join(a.fields),
                "match_levels": ", ".join(
                    pb.MatchLevel.Name(lv).removeprefix("MATCH_LEVEL_").lower()
                    for lv in a.match_levels
                ),
                "daily_quota": a.daily_quota or None,
                "used_today": a.used_today,
            }
            for a in reply.affairs
        ]
    )


def cmd_affairs(args: argparse.Namespace) -> int:
    """What may this agency ask: the server's answer to ListAffairs for the certificate."""
    from juki_engine._proto import registry_pb2 as pb
    from juki_engine._proto import registry_pb2_grpc as pb_grpc
    from juki_engine.client import AgencyTLS

    if not args.cert:
        raise ValueError("affairs needs --cert, the agency's client certificate")
    tls = AgencyTLS.from_cert(args.cert, args.key, args.ca)
    with tls.channel(args.server) as channel:
        reply = pb_grpc.IdentityVerificationServiceStub(channel).ListAffairs(
            pb.ListAffairsRequest(), timeout=30
        )
    title = f"affairs granted to {reply.agency_code} ({reply.agency_name}) by {args.server}"
    print_records(granted_affairs(reply), title, args.format, "daily_quota: empty = unlimited")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve the Toyama demo registry over mutual TLS and run the pension status check on it."""
    from juki_engine import audit
    from juki_engine.client import AgencyTLS, BulkJob, request_context
    from juki_engine.samples import pension_claims

    path = Path(args.path)
    base = path.parent
    registry = registry_at(path, generate_demo=True)
    certs_dir = base / "certs"
    policy = demo_certs(certs_dir, policy_path(None))
    audit_dir = Path(args.audit) if args.audit else base / DEMO_AUDIT.name
    server = start_server(
        registry,
        policy,
        certs_dir,
        audit_dir,
        args.retention_days,
        "127.0.0.1:0",
        4,
        state_dir=path,
    )
    address = f"127.0.0.1:{server.port}"
    try:
        pensioners = base / "pensioners.parquet"
        pq.write_table(pension_claims(registry, args.pensioners, seed=1), pensioners)
        console.print(
            f"serving on {address} (its own audit trail: {audit_dir}); "
            f"{args.pensioners:,} pensioners → {pensioners}"
        )
        results = base / "pension_results.parquet"
        console.rule("日本年金機構: pension status check (現況確認) over gRPC, mutual TLS")
        verify_remote(
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
                match="exact",
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
        print_records(changed.select(shown).slice(0, 6), "not resident, or the name differs")

        console.rule("法務省 asks for the pension affair")
        moj = AgencyTLS.from_cert(certs_dir / "agencies" / "moj.pem")
        with moj.channel(address) as channel:
            job = BulkJob(channel, request_context("pension-benefit", "demo"), "resident_code")
            try:
                list(job.run(pq.read_table(pensioners).slice(0, 10).to_batches()))
            except grpc.RpcError as e:
                console.print(f"refused: {e.code().name}: {e.details()}")

        _demo_names(registry, certs_dir, address)
        mover = _demo_changes(registry, certs_dir, address, pq.read_table(pensioners), path)

        # The mover's trail holds the whole flow: the pension service's retrievals, both
        # municipalities' submissions and the notice sent to the former one.
        subject = mover or table["resident_code"][0].as_py()
        console.rule(f"who looked at and who changed resident {subject}")
        console.print(f"juki audit --dir {audit_dir} --subject {subject}")
        trail = audit.read(audit_dir, subject=subject)
        columns = ["time", "agency", "operator", "affair", "mode", "outcome"]
        print_records(with_zone(trail.select(columns), zone(None)), "audit trail")
        _demo_resident_view(registry, certs_dir, path, address, subject)
    finally:
        server.stop()  # closing the trail signs a checkpoint of all it holds
    from juki_engine.audit import integrity

    console.rule("the audit trail's signatures (juki audit verify)")
    public = certs_dir / AUDIT_SIGNING_KEY.replace(".key", ".pub")
    report = integrity.verify(audit_dir, integrity.load_public_key(public))
    console.print(
        f"juki audit verify --dir {audit_dir} --public-key {public}: {report.segments} "
        f"segments, {report.checkpoints} signed checkpoints — "
        + ("intact" if report.intact else "; ".join(report.problems))
    )
    return EXIT_OK


def _demo_resident_view(
    registry: Registry, certs_dir: Path, state: Path, address: str, code: str
) -> None:
    """The resident sees for themselves: a certificate from the residents' CA bound to them,
    and their access history over `ResidentService`."""
    from juki_engine import certs
    from juki_engine._proto import residents_pb2 as rpb
    from juki_engine._proto import residents_pb2_grpc as rpb_grpc
    from juki_engine.client import AgencyTLS
    from juki_engine.service.identity import bind

    console.rule(
        f"resident {code} reads who looked at them (ResidentService, their own certificate)"
    )
    person = registry._persons([code], "resident_code")["person"][0].as_py()
    (fingerprint,) = certs.issue_residents(certs_dir, [code]).values()
    bind(state, {fingerprint: person})
    cert = certs_dir / certs.RESIDENTS_DIRECTORY / "issued" / f"{code}.pem"
    with AgencyTLS.from_cert(cert, ca=certs_dir / "ca.pem").channel(address) as channel:
        stub = rpb_grpc.ResidentServiceStub(channel)
        reply = stub.ListMyAccesses(rpb.ListMyAccessesRequest(page_size=20), timeout=30)
    shown = pa.table(
        {
            "time (UTC)": [a.time[:19] for a in reply.accesses],
            "who": [a.agency_name or a.agency for a in reply.accesses],
            "affair": [a.affair_title or a.affair for a in reply.accesses],
            "mode": [a.mode for a in reply.accesses],
            "fields": [",".join(a.fields) for a in reply.accesses],
        }
    )
    print_records(
        shown, f"accesses to resident {code}'s record, newest first (juki certs --residents)"
    )


def _demo_changes(
    registry: Registry, certs_dir: Path, address: str, pensioners: pa.Table, path: Path
) -> str | None:
    """The demo's living registry, end to end over gRPC: 富山市 submits a death and a move-out,
    高岡市 the move-in, 富山市 reads the 転入通知 it is owed; the pension service retrieves both
    residents before and after. Each run submits new changes (sequence numbers are the run's
    time)."""
    import datetime as dt
    import time

    from juki_engine._proto import changes_pb2 as cpb
    from juki_engine._proto import registry_pb2 as pb
    from juki_engine._proto import registry_pb2_grpc as pb_grpc
    from juki_engine.client import (
        AgencyTLS,
        acknowledge_changes,
        acknowledge_notices,
        read_notices,
        request_context,
        stream_changes,
        submit_changes,
        watch,
    )

    toyama, takaoka = "162019", "162027"
    codes = pensioners["resident_code"].to_pylist()[:5_000]
    now = registry.lookup(codes, by="resident_code", columns=["status", "municipality_code"])
    living = [
        c
        for c, s, m in zip(
            codes, now["status"].to_pylist(), now["municipality_code"].to_pylist(), strict=True
        )
        if s == "resident" and m == toyama
    ]
    if len(living) < 2:
        return None
    dies, moves = living[:2]
    fields = ["status", "status_date", "municipality_name", "address_town"]
    nenkin = AgencyTLS.from_cert(certs_dir / "agencies" / "nenkin.pem")

    def show(when: str) -> None:
        with nenkin.channel(address) as channel:
            stub = pb_grpc.IdentityVerificationServiceStub(channel)
            for code in (dies, moves):
                reply = stub.Retrieve(
                    pb.RetrieveRequest(
                        context=request_context("pension-benefit", "demo-operator"),
                        key=pb.Key(resident_code=code),
                        fields=fields,
                    ),
                    timeout=30,
                )
                r = reply.resident
                console.print(
                    f"{when}: {code} {pb.ResidentStatus.Name(r.status)} {r.status_date} "
                    f"{r.municipality_name} {r.address_town}"
                )

    console.rule("the registry is alive: 富山市 and 高岡市 submit changes over gRPC (mutual TLS)")
    show("before")
    # The pension service watches its pensioners: it will be told of the death and the move.
    with nenkin.channel(address) as channel:
        numbers = registry.lookup([dies, moves], by="resident_code", columns=["my_number"])
        reply = watch(channel, "pension-benefit", numbers["my_number"], "my_number", timeout=30)
    console.print(f"日本年金機構 watches {reply.watched:,} pensioners (SubscriptionService.Watch)")
    today = dt.datetime.now(dt.UTC).date().isoformat()
    sequence = int(time.time())

    def change(reason: cpb.ChangeReason, code: str, n: int) -> cpb.Change:
        return cpb.Change(
            sequence=sequence * 2 + n,
            reason=reason,
            effective_date=today,
            reported_date=today,
            key=pb.Key(resident_code=code),
        )

    move_out = change(cpb.CHANGE_REASON_MOVE_OUT, moves, 1)
    move_out.moving_to = takaoka
    move_in = change(cpb.CHANGE_REASON_MOVE_IN, moves, 0)
    move_in.address_town, move_in.address_block = "末広町", "2-5"
    submitted = [
        (toyama, change(cpb.CHANGE_REASON_DEATH, dies, 0)),
        (toyama, move_out),
        (takaoka, move_in),
    ]
    for municipality, record in submitted:
        tls = AgencyTLS.from_cert(certs_dir / "agencies" / f"{municipality}.pem")
        with tls.channel(address) as channel:
            (result,) = submit_changes(channel, [record], "demo-clerk", timeout=30).to_pylist()
        reason = cpb.ChangeReason.Name(record.reason).removeprefix("CHANGE_REASON_").lower()
        outcome = result["outcome"] if result["error"] is None else result["error"]
        console.print(f"{municipality} submits {reason}: {outcome} (durable, audited)")
    show("after ")
    console.rule("富山市 reads the 転入通知 it is owed (juki notices --municipality 162019 --ack)")
    toyama_tls = AgencyTLS.from_cert(certs_dir / "agencies" / f"{toyama}.pem")
    with toyama_tls.channel(address) as channel:
        notices = list(read_notices(channel, "demo-clerk", timeout=30))
        for n in notices[-1:]:
            console.print(
                f"notice {n.notice}: {n.resident.resident_code} {n.resident.family_name} "
                f"{n.resident.given_name} moved from {n.from_address_town} to "
                f"{n.to_municipality_name} {n.to_address_town} on {n.effective_date}"
            )
        if notices:
            acknowledge_notices(channel, notices[-1].notice)
    console.rule("日本年金機構 is told of its pensioners' changes (StreamChanges), no 届出 needed")
    with nenkin.channel(address) as channel:
        told = list(stream_changes(channel, "pension-benefit", operator="demo-operator"))
        for c in told[-2:]:
            values = {f: getattr(c.resident, f) for f in c.fields}
            if "status" in values:
                values["status"] = pb.ResidentStatus.Name(c.resident.status)
            shown = ", ".join(f"{f}={v}" for f, v in values.items())
            console.print(f"change {c.change}: {c.reason} of {c.resident.my_number}: {shown}")
        if told:
            acknowledge_changes(channel, "pension-benefit", told[-1].change)
    console.print(f"their history: juki history {path} {moves} --by resident_code")
    return str(moves)


def _demo_names(registry: Registry, certs_dir: Path, address: str) -> None:
    """The demo's names part: a form that writes a variant name the common way, verified at the
    exact and the normalised level; then the same resident found by the four basic facts."""
    from juki_engine import names
    from juki_engine._proto import registry_pb2 as pb
    from juki_engine._proto import registry_pb2_grpc as pb_grpc
    from juki_engine.client import AgencyTLS, request_context

    people = registry.to_arrow(["resident_code", "family_name", "given_name", "birth_date"])
    variant = next(
        (
            r
            for r in people.slice(0, 200_000).to_pylist()
            if names.fold(r["family_name"]) != r["family_name"]
        ),
        None,
    )
    if variant is None:
        return
    written = names.fold(variant["family_name"])
    console.rule(f"a pension form writes {written} for the registry's {variant['family_name']}")
    nenkin = AgencyTLS.from_cert(certs_dir / "agencies" / "nenkin.pem")
    with nenkin.channel(address) as channel:
        stub = pb_grpc.IdentityVerificationServiceStub(channel)
        for level in (pb.MATCH_LEVEL_EXACT, pb.MATCH_LEVEL_NORMALISED):
            reply = stub.Verify(
                pb.VerifyRequest(
                    context=request_context("pension-benefit", "demo-operator"),
                    key=pb.Key(resident_code=variant["resident_code"]),
                    claims=pb.Claims(family_name=written),
                    match_level=level,
                ),
                timeout=30,
            )
            match = reply.matches[0]
            agreed = pb.MatchLevel.Name(match.level) if match.match else "no match"
            console.print(f"Verify at {pb.MatchLevel.Name(level)}: family_name {agreed}")
        console.rule("the same pensioner by the four basic facts (4情報), no number at hand")
        reply = stub.Search(
            pb.SearchRequest(
                context=request_context("pension-benefit", "demo-operator"),
                facts=pb.Claims(
                    family_name=written,
                    given_name=variant["given_name"],
                    birth_date=variant["birth_date"].isoformat(),
                ),
                fields=["resident_code", "family_name", "address_town"],
            ),
            timeout=30,
        )
        found = ", ".join(
            f"{c.resident.resident_code} {c.resident.family_name} {c.resident.address_town}"
            for c in reply.candidates
        )
        console.print(f"Search: {pb.SearchOutcome.Name(reply.outcome)}: {found}")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def audit_options(p: argparse.ArgumentParser, default: Path | None) -> None:
        shown = f" (default {default})" if default else f" (default: {DEMO_AUDIT.name} beside it)"
        p.add_argument(
            "--audit",
            default=None if default is None else str(default),
            help="audit trail directory" + shown,
        )
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
        f"(default: demo certificates in {DEMO_CERTS}, created if missing)",
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
    p.add_argument(
        "--shards",
        metavar="DIR",
        help="serve a shard directory (`juki shard`) from Ray actors instead of a snapshot; "
        "verification, search and lookups only (docs/sharding.md)",
    )
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="with --shards: the Ray cluster to run the shards' actors on (e.g. auto, or "
        "HOST:6379; default: a local one started here)",
    )
    p.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="with --shards: actors a shard; calls go round them, and one that cannot answer is "
        "answered by the next",
    )
    audit_options(p, SERVE_AUDIT)
    p.add_argument(
        "--audit-key",
        help=f"Ed25519 key signing the audit trail (default: {AUDIT_SIGNING_KEY} in --certs)",
    )
    p.add_argument(
        "--metrics",
        default=DEFAULT_METRICS,
        help=f"HOST:PORT of the Prometheus /metrics endpoint (default {DEFAULT_METRICS}; "
        "port 0 picks one; off: none)",
    )
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="stderr lines as text, or one JSON object a line with the request ids, agencies "
        "and affairs the audit trail records",
    )
    p.add_argument(
        "--no-compaction",
        action="store_true",
        help="do not compact the audit trail's closed days hourly (then run `juki audit "
        "compact` yourself, e.g. from cron)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "certs",
        help="create a demo CA, server and agency certificates, the audit signing key, and "
        "residents' certificates",
    )
    p.add_argument("--out", default=str(DEMO_CERTS), help="directory to write")
    p.add_argument("--policy", help="issue one certificate per agency of this policy")
    p.add_argument(
        "--residents",
        type=int,
        default=0,
        help="also issue certificates from the residents' CA to this many residents of "
        "--snapshot, bound to them by the engine (the residents' view, docs/residents.md)",
    )
    p.add_argument(
        "--snapshot",
        default=str(DEMO_PATH),
        help=f"registry whose residents --residents binds (default: the demo, {DEMO_PATH})",
    )
    p.add_argument(
        "--audit",
        default=str(SERVE_AUDIT),
        help=f"the audit trail that records the issuance (default: juki serve's, {SERVE_AUDIT})",
    )
    add_operator_option(p)
    add_format_option(p)
    p.set_defaults(func=cmd_certs)

    p = sub.add_parser(
        "affairs", help="what may this agency ask: the affairs a server grants its certificate"
    )
    p.add_argument("--server", default=DEFAULT_LISTEN, help=f"HOST:PORT (default {DEFAULT_LISTEN})")
    add_client_options(p)
    add_format_option(p)
    p.set_defaults(func=cmd_affairs)

    p = sub.add_parser(
        "demo",
        help="serve the Toyama demo and run a sample pension status check against it "
        "(works beside a running juki serve)",
    )
    p.add_argument("--path", default=str(DEMO_PATH), help=f"demo snapshot (default {DEMO_PATH})")
    p.add_argument("--pensioners", type=int, default=200_000, help="pensioners in the sample job")
    audit_options(p, None)
    p.set_defaults(func=cmd_demo)
