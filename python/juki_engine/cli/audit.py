"""`juki audit`: who looked at whom, when, why — the trail as an operator reads it.

Times are shown in the operator's zone (`--tz`, an IANA name such as Asia/Tokyo or UTC; by
default the machine's own), with the zone in the column's name and each time's UTC offset;
`--since` / `--until` without an offset are read in that zone too. The trail stores UTC.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import zoneinfo
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from juki_engine import JukiError, files, ids
from juki_engine.certs import AUDIT_SIGNING_KEY
from juki_engine.cli.defaults import DEMO_CERTS, DEMO_PATH, SERVE_AUDIT
from juki_engine.cli.outcomes import EXIT_OK, EXIT_PROBLEMS_FOUND
from juki_engine.cli.output import add_format_option, console, print_records


def zone(name: str | None) -> dt.tzinfo:
    """The zone `--tz` names, or the machine's local zone."""
    if name is None:
        local = dt.datetime.now().astimezone().tzinfo
        assert local is not None
        return local
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise JukiError(f"--tz {name!r} is not a time zone (e.g. Asia/Tokyo, UTC)") from e


def zone_name(tz: dt.tzinfo) -> str:
    return str(tz) if isinstance(tz, zoneinfo.ZoneInfo) else (tz.tzname(None) or "local")


def parse_time(text: str | None, tz: dt.tzinfo) -> dt.datetime | None:
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as e:
        raise JukiError(f"'{text}' is not an ISO 8601 date or time") from e
    return value if value.tzinfo else value.replace(tzinfo=tz)


def with_zone(records: pa.Table, tz: dt.tzinfo) -> pa.Table:
    """Records with their `time` shown in `tz`, to the second, with its UTC offset."""
    times = [
        None if t is None else t.astimezone(tz).isoformat(sep=" ", timespec="seconds")
        for t in records["time"].to_pylist()
    ]
    column = pa.array(times, pa.string())
    return records.set_column(0, f"time ({zone_name(tz)})", column)


def resolve_subject(subject: str, by: str | None, snapshot: Path) -> tuple[str, int | None, str]:
    """Whose records `--subject` asks for: (the resident code, the person id where the
    registry can say, how it was read). A resident code is taken as it is; a My Number, or any
    key once the snapshot is there, is looked up in it, and the person id (which survives every
    change of identifier) then finds records made under former codes too. `by` forces the kind;
    otherwise the length tells (11 digits: resident code, 12: My Number)."""
    kind = by or {11: "resident_code", 12: "my_number"}.get(len(subject))
    if kind is None:
        raise JukiError(
            f"--subject {subject!r}: a resident code has 11 digits and a My Number 12 "
            "(or say which with --by)"
        )
    ids.validate(kind, subject)
    if not (snapshot / "CURRENT").exists():
        if kind == "resident_code":
            return subject, None, f"resident code {subject}"
        raise JukiError(
            f"--subject {subject} is a My Number: the trail keys records on residents, and "
            f"translating it needs the registry (--snapshot; {snapshot} holds none)"
        )
    from juki_engine.registry import Registry

    registry = Registry.open(snapshot, mmap=True)
    person = registry._persons([subject], kind)["person"][0].as_py()
    if person is None:
        if kind == "resident_code":
            return subject, None, f"resident code {subject} (no resident of {snapshot})"
        raise JukiError(f"no resident of {snapshot} holds My Number {subject}")
    (code,) = registry._by_person([person], ["resident_code"])["resident_code"].to_pylist()
    code = code or subject
    name = "resident code" if kind == "resident_code" else "My Number"
    return code, person, f"{name} {subject} → the resident now {code}, under every code held"


def cmd_audit(args: argparse.Namespace) -> int:
    from juki_engine import audit

    tz = zone(args.tz)
    subject, person, read_as = (None, None, "")
    if args.subject is not None:
        subject, person, read_as = resolve_subject(args.subject, args.by, Path(args.snapshot))
    if args.out:
        files.output_format(args.out)
        files.check_writable(args.out, args.force)
    filters = {
        "agency": args.agency,
        "affair": args.affair,
        "since": parse_time(args.since, tz),
        "until": parse_time(args.until, tz),
    }
    if person is None:
        records = audit.read(args.dir, subject=subject, **filters)
    else:
        # The person's records (from the store's index), and records from before person ids
        # (format 2) under the code.
        records = audit.read(args.dir, person=person, **filters)
        older = audit.read(args.dir, subject=subject, **filters)
        older = older.filter(pc.is_null(older["person"]))
        if older.num_rows:
            records = pa.concat_tables([records, older])
            records = records.take(pc.sort_indices(records["time"]))
    asked = " ".join(
        f"--{name} {value}"
        for name, value in (
            ("subject", subject),
            ("agency", args.agency),
            ("affair", args.affair),
            ("since", args.since),
            ("until", args.until),
        )
        if value
    )
    record_operator(
        args, "export" if args.out else "query", f"{asked or 'every record'}: {records.num_rows:,}"
    )
    if args.out:
        files.write_table(records, args.out)
        console.print(f"{records.num_rows:,} audit records → {args.out}")
        return EXIT_OK
    shown = with_zone(records.slice(max(records.num_rows - args.limit, 0)), tz)
    title = f"audit trail: {records.num_rows:,} records (the last {shown.num_rows:,})"
    if read_as:
        title += f" for {read_as}"
    print_records(shown, title, args.format)
    return EXIT_OK


def record_operator(args: argparse.Namespace, mode: str, reason: str) -> None:
    """An operator's action, recorded in the trail (`operators/` beside the server's records),
    signed with the trail's key where this operator holds it."""
    from juki_engine.audit import OPERATOR, AuditContext
    from juki_engine.audit.integrity import load_private_key
    from juki_engine.audit.writer import record_operator_action

    key_path = Path(args.audit_key) if args.audit_key else DEMO_CERTS / AUDIT_SIGNING_KEY
    key = load_private_key(key_path) if key_path.exists() else None
    context = AuditContext(OPERATOR, args.operator, "", "audit_trail", mode, ())
    record_operator_action(args.dir, context, "applied", reason, key)


def cmd_verify(args: argparse.Namespace) -> int:
    from juki_engine.audit import integrity

    public = None
    if not args.unsigned:
        public = integrity.load_public_key(args.public_key)
    report = integrity.verify(args.dir, public)
    signed = "signatures checked" if report.signatures_checked else "signatures NOT checked"
    console.print(
        f"{args.dir}: {report.segments} segments, {report.checkpoints} checkpoints, "
        f"{report.expired} expired by retention; {signed}; "
        f"{report.unsigned_bytes:,} bytes written since the last checkpoint"
    )
    if report.unchained:
        console.print(
            f"{report.unchained} segments were written before the chain (format 1 or 2): the "
            "first chained segment vouches for the last of them by hash, not for the others"
        )
    if report.intact:
        console.print("intact: no file altered, removed outside retention, or reordered")
        return EXIT_OK
    for problem in report.problems:
        console.print(f"[red]{problem}[/red]")
    return EXIT_PROBLEMS_FOUND


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from juki_engine.audit import AuditTrail
    from juki_engine.audit.integrity import load_private_key

    key = load_private_key(args.audit_key or DEMO_CERTS / AUDIT_SIGNING_KEY)
    with AuditTrail(args.dir, signing_key=key) as trail:
        trail.checkpoint(args.operator)
    console.print(f"signed a checkpoint of {args.dir}")
    return EXIT_OK


def cmd_compact(args: argparse.Namespace) -> int:
    import os
    import time

    from juki_engine.audit import store
    from juki_engine.audit.integrity import load_private_key

    if args.nice:
        os.nice(19)  # beside a serving server: its CPU first
    key = load_private_key(args.audit_key or DEMO_CERTS / AUDIT_SIGNING_KEY)
    started = time.perf_counter()
    done = store.compact(
        args.dir,
        signing_key=key,
        memory_budget=args.memory_mib << 20,
        retention_days=args.retention_days,
        until=parse_time(args.until, dt.UTC),
    )
    seconds = time.perf_counter() - started
    console.print(
        f"{args.dir}: {done.days} days compacted ({done.records:,} records, "
        f"{done.records / max(seconds, 1e-9):,.0f}/s), {done.months} months merged, "
        f"{done.expired} files past retention removed"
    )
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    from juki_engine.audit.integrity import write_key_pair

    out = Path(args.file)
    if out.exists():
        raise JukiError(f"{out} exists: a signing key is never replaced in place")
    public = write_key_pair(out)
    console.print(f"audit signing key → {out} (mode 0600); its public half → {public}")
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("audit", help="query the audit trail: who looked at whom, when, why")
    trail_options(p)
    p.add_argument(
        "--subject",
        help="every access to this resident: a resident code (11 digits) or a My Number (12)",
    )
    p.add_argument(
        "--by",
        choices=["resident_code", "my_number"],
        help="what --subject is (default: by length)",
    )
    p.add_argument(
        "--snapshot",
        default=str(DEMO_PATH),
        help=f"registry that translates a My Number --subject (default: {DEMO_PATH})",
    )
    p.add_argument("--agency", help="agency code")
    p.add_argument("--affair", help="affair code")
    p.add_argument("--since", help="from this ISO 8601 time (in --tz if it has no offset)")
    p.add_argument("--until", help="up to this ISO 8601 time (exclusive)")
    p.add_argument(
        "--tz", help="time zone to show times in, e.g. Asia/Tokyo (default: this machine's)"
    )
    p.add_argument("--limit", type=int, default=50, help="records to show (the latest)")
    p.add_argument("--out", help="write every matching record to this file (format by extension)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    add_format_option(p)
    p.set_defaults(func=cmd_audit)

    actions = p.add_subparsers(dest="action", metavar="{verify,checkpoint,compact,keygen}")
    v = actions.add_parser(
        "verify",
        help="check the trail's hash chain, manifest and signatures; name the first file "
        "altered, removed outside retention, or reordered (exit 1 if any)",
    )
    trail_options(v)
    v.add_argument(
        "--public-key",
        default=str(DEMO_CERTS / AUDIT_SIGNING_KEY.replace(".key", ".pub")),
        help="the signing key's public half (PEM; default: the demo's)",
    )
    v.add_argument(
        "--unsigned", action="store_true", help="check the chain only, not the signatures"
    )
    v.set_defaults(func=cmd_verify)
    c = actions.add_parser(
        "checkpoint",
        help="sign a checkpoint of a trail no server is writing (a running server: send it "
        "SIGUSR1)",
    )
    trail_options(c)
    c.set_defaults(func=cmd_checkpoint)
    m = actions.add_parser(
        "compact",
        help="compact the closed days of the trail into its Parquet store (by person), merge "
        "the months that are over, remove files past retention (juki serve runs it hourly)",
    )
    trail_options(m)
    m.add_argument(
        "--memory-mib", type=int, default=512, help="records held in memory at once (MiB)"
    )
    m.add_argument("--retention-days", type=int, default=7 * 366, help="retention (7 years)")
    m.add_argument("--nice", action="store_true", help="run at the lowest CPU priority")
    m.add_argument("--until", help="compact only the days before this ISO 8601 date (UTC)")
    m.set_defaults(func=cmd_compact)
    k = actions.add_parser("keygen", help="write a new Ed25519 audit signing key (and .pub)")
    k.add_argument("file", help="where to write the private key")
    k.set_defaults(func=cmd_keygen)


def add_operator_option(p: argparse.ArgumentParser) -> None:
    """Who is acting, as the trail records an operator's action."""
    p.add_argument(
        "--operator",
        default=getpass.getuser(),
        help="who is acting, as the trail records it (default: this login)",
    )


def trail_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dir",
        default=str(SERVE_AUDIT),
        help=f"audit trail directory (default: juki serve's, {SERVE_AUDIT})",
    )
    add_operator_option(p)
    p.add_argument(
        "--audit-key",
        help="the trail's signing key (default: the demo's, where present); an operator "
        "without it records unsigned",
    )
