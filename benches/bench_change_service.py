"""The change service under load, every ratio against a baseline timed in the same run:

- streamed submission over mutual TLS (`juki submit`'s path: Arrow IPC messages of 10,000
  changes from a client in a child process; each result sent once durable and audited) against
  in-process `Registry.apply` of the same kind and number of changes (goal ≥ 50,000 changes/s);
- a watch list of every resident (or `--watch` of them) registered by a subscribing agency:
  its time and the server's RSS for it;
- the latency from a move-in's acknowledgement to its 転入通知 on the former municipality's
  following stream, and to the subscribing agency's following stream (its watch list holding
  every resident), with moves submitted at 1,000 changes a second (p50, p99; goal p99 ≤ 100 ms);
- verify while a child process submits changes without pause, against read-only verify beside
  it (goal ≥ 0.8);
- peak RSS.

The changes are 転居 (move_within) of the residents of the registry's largest municipality, and
moves from it to the second largest: the kinds of change whose rules one municipality's stream
can meet on its own, in any order.

    .venv/bin/python benches/bench_change_service.py --population 2000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from cryptography import x509

from juki_engine import Registry, certs, service
from juki_engine._proto import changes_pb2 as cpb
from juki_engine._proto import registry_pb2 as pb
from juki_engine.audit import AuditTrail
from juki_engine.client import AgencyTLS, read_notices, stream_changes, submit_changes, watch
from juki_engine.policy import Policy
from juki_engine.service.acknowledgements import Acknowledgements, WatchLists
from juki_engine.service.subscriptions import subscription_name
from juki_engine.synthetic.changes import CHANGE_SCHEMA

GIB = 2**30
TODAY = dt.datetime.now(dt.UTC).date()

# The child that submits a change file over gRPC and prints its seconds: at full speed (rate 0,
# 10,000 changes a message) or at `rate` changes a second (a message every 0.1 s), one stream.
SUBMITTER = """
import sys, time, uuid
import pyarrow.parquet as pq
from juki_engine._proto import changes_pb2 as cpb
from juki_engine._proto import changes_pb2_grpc as cpb_grpc
from juki_engine.client import AgencyTLS
from juki_engine.service.wire import write_ipc
tls = AgencyTLS.from_cert(sys.argv[1])
table = pq.read_table(sys.argv[3])
rate = int(sys.argv[4])
rows = 10_000 if rate == 0 else max(rate // 10, 1)
def requests():
    header = cpb.SubmitChangesHeader(operator_id="bench", request_id=str(uuid.uuid4()))
    yield cpb.SubmitChangesRequest(header=header)
    next_at = time.perf_counter()
    for i in range(0, table.num_rows, rows):
        yield cpb.SubmitChangesRequest(table=write_ipc(table.slice(i, rows)))
        if rate:
            next_at += 0.1
            time.sleep(max(0.0, next_at - time.perf_counter()))
with tls.channel(sys.argv[2]) as channel:
    started = time.perf_counter()
    stub = cpb_grpc.ChangeSubmissionServiceStub(channel)
    n = sum(len(r.results) for r in stub.SubmitChanges(requests()))
    print(time.perf_counter() - started, n, flush=True)
"""


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def moves_within(municipality: str, codes: list[str], first: int, n: int) -> pa.Table:
    """`n` 転居 of the residents `codes` (round robin), sequence numbers from `first`."""
    k = np.arange(n)
    return pa.Table.from_pydict(
        {
            "municipality": [municipality] * n,
            "sequence": pa.array(first + k, pa.int64()),
            "reason": ["move_within"] * n,
            "effective_date": pa.array([TODAY] * n, pa.date32()),
            "reported_date": pa.array([TODAY] * n, pa.date32()),
            "resident_code": [codes[i % len(codes)] for i in range(n)],
            "address_town": [f"町{i % 97}" for i in range(n)],
            "address_block": [f"{i % 1000}-{i % 7}" for i in range(n)],
        },
        schema=pa.schema(
            [
                CHANGE_SCHEMA.field(c)
                for c in (
                    "municipality",
                    "sequence",
                    "reason",
                    "effective_date",
                    "reported_date",
                    "resident_code",
                    "address_town",
                    "address_block",
                )
            ]
        ),
    )


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--snapshot",
        type=Path,
        help="an existing snapshot (its change log is removed afterwards; default: generate one)",
    )
    p.add_argument("--population", type=int, default=2_000_000)
    p.add_argument("--changes", type=int, default=200_000, help="changes per submission round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--moves", type=int, default=2_000, help="moves for the latency phase")
    p.add_argument("--claims", type=int, default=1_000_000)
    p.add_argument("--watch", type=int, help="residents on the watch list (default: every one)")
    return p.parse_args()


def run(args: argparse.Namespace) -> None:

    tmp = Path(tempfile.mkdtemp(prefix="bench-change-service-"))
    started = time.perf_counter()
    snapshot = args.snapshot or tmp / "registry"
    if args.snapshot is None:
        Registry.generate(population=args.population, seed=1).save(snapshot)
    elif (snapshot / "changes.log").exists():
        raise SystemExit(f"{snapshot} has a change log: the bench would add its changes to it")
    registry = Registry.open(snapshot)
    print(
        f"registry: {len(registry):,} residents (generated and opened in "
        f"{time.perf_counter() - started:.0f} s)"
    )
    # Arrow compute throughout: at the nation's size a Python list of the rows would not fit.
    rows = registry.to_arrow(["resident_code", "municipality_code", "status"])
    living = rows.filter(pc.equal(rows["status"], "resident"))
    per = pc.value_counts(living["municipality_code"].cast(pa.string())).to_pylist()
    top = sorted(per, key=lambda c: -c["counts"])[:2]
    (home, home_n), (away, away_n) = ((c["values"], c["counts"]) for c in top)
    mine = living.filter(pc.equal(living["municipality_code"].cast(pa.string()), home))
    codes = mine["resident_code"].cast(pa.string()).to_pylist()
    rng = np.random.default_rng(1)
    sample = rows["resident_code"].take(pa.array(rng.integers(0, rows.num_rows, args.claims)))
    del rows, living, mine
    print(f"municipalities: {home} ({home_n:,} residents), {away} ({away_n:,})")

    names = {m: f"CN=m{m},O=bench,C=JP" for m in (home, away)}
    certs.create_demo(tmp / "pki", {**names, "nenkin": "CN=nenkin,O=bench,C=JP"})
    ca = certs.fingerprint(x509.load_pem_x509_certificate((tmp / "pki" / "ca.pem").read_bytes()))
    policy = Policy.from_dict(
        {
            "certificate_authorities": {"bench": ca},
            "municipality": [
                {"code": m, "name": m, "certificate_subject": s, "certificate_issuer": "bench"}
                for m, s in names.items()
            ],
            "agency": [
                {
                    "code": "nenkin",
                    "name": "pension",
                    "certificate_subject": "CN=nenkin,O=bench,C=JP",
                    "certificate_issuer": "bench",
                    "affair": [
                        {
                            "code": "pension",
                            "title": "t",
                            "legal_basis": "b",
                            "keys": ["my_number"],
                            "modes": ["subscribe"],
                            "subscribe_reasons": ["death", "move_in", "move_abroad"],
                            "fields": ["my_number", "municipality_code", "address_town"],
                        }
                    ],
                }
            ],
        }
    )
    lists = WatchLists(tmp / "subscriptions")
    frontend = service.Frontend(
        registry,
        policy,
        AuditTrail(tmp / "audit"),
        acknowledgements=Acknowledgements(tmp / "notices"),
        subscriptions=lists,
    )
    server = service.start(frontend, service.ServerTLS.in_directory(tmp / "pki"))
    try:
        address = f"127.0.0.1:{server.port}"
        cert = {m: tmp / "pki" / "agencies" / f"{m}.pem" for m in (home, away, "nenkin")}
        sequence = 1

        # -- submission over gRPC against in-process apply ------------------------------------
        local_rates, wire_rates = [], []
        for _ in range(args.rounds):
            table = moves_within(home, codes, sequence, args.changes)
            sequence += args.changes
            t = time.perf_counter()
            for batch in table.to_batches(max_chunksize=10_000):
                registry.apply(pa.Table.from_batches([batch]))
            local_rates.append(args.changes / (time.perf_counter() - t))
            table = moves_within(home, codes, sequence, args.changes)
            sequence += args.changes
            pq.write_table(table, tmp / "changes.parquet")
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    SUBMITTER,
                    str(cert[home]),
                    address,
                    str(tmp / "changes.parquet"),
                    "0",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            seconds, n = out.stdout.split()
            assert int(n) == args.changes
            wire_rates.append(args.changes / float(seconds))
        local, wire = statistics.median(local_rates), statistics.median(wire_rates)
        print(
            f"submission over mTLS (10,000 a message, durable and audited): {wire:,.0f} changes/s "
            f"= {wire / local:.2f}x in-process apply ({local:,.0f}/s) (goal >= 50,000/s); "
            f"medians of {args.rounds}"
        )

        # -- a watch list ------------------------------------------------------
        # The movers of the latency phase are on it, and as many others as it holds.
        numbers = registry.to_arrow(["my_number"])["my_number"].cast(pa.string())
        mover_numbers = registry.lookup(
            codes[: args.moves], by="resident_code", columns=["my_number"]
        )["my_number"]
        size = (args.watch or len(numbers)) - len(mover_numbers)
        numbers = pa.chunked_array(
            [*mover_numbers.chunks, *numbers.slice(0, max(size, 0)).chunks], pa.string()
        )
        before = rss()
        t = time.perf_counter()
        with AgencyTLS.from_cert(cert["nenkin"]).channel(address) as ch:
            reply = watch(ch, "pension", numbers, "my_number", timeout=600)
        print(
            f"watch list of {reply.watched:,} residents (messages of 2 MiB): registered in "
            f"{time.perf_counter() - t:.1f} s; server RSS "
            f"{(rss() - before) / 2**20:+.0f} MiB after it (the list: "
            f"{len(lists.watch(subscription_name('nenkin', 'pension'))) / 2**10:.0f}"
            f" KiB, a bit per person id: 16 MiB over the nation's 128 M, whatever its length)"
        )
        del numbers

        # -- latency from a move-in's acknowledgement to its notice and its subscribed change ------
        movers = codes[: args.moves]
        number_of = dict(
            zip(
                registry.lookup(movers, by="resident_code", columns=["my_number"])[
                    "my_number"
                ].to_pylist(),
                movers,
                strict=True,
            )
        )
        received: dict[str, float] = {}
        told: dict[str, float] = {}
        done = threading.Event()
        heard = threading.Event()

        def follow() -> None:
            with AgencyTLS.from_cert(cert[home]).channel(address) as ch:
                for n in read_notices(ch, "bench", follow=True, timeout=600):
                    received[n.resident.resident_code] = time.perf_counter()
                    if len(received) >= len(movers):
                        done.set()
                        return

        def subscribed() -> None:
            with AgencyTLS.from_cert(cert["nenkin"]).channel(address) as ch:
                for c in stream_changes(ch, "pension", follow=True, timeout=600):
                    told[number_of.get(c.resident.my_number, "")] = time.perf_counter()
                    if len(told) >= len(movers):
                        heard.set()
                        return

        for target in (follow, subscribed):
            threading.Thread(target=target, daemon=True).start()
        acked: dict[str, float] = {}
        today = TODAY.isoformat()

        def change(reason: int, code: str, seq: int) -> cpb.Change:
            c = cpb.Change(
                sequence=seq,
                reason=reason,
                effective_date=today,
                reported_date=today,
                key=pb.Key(resident_code=code),
            )
            if reason == cpb.CHANGE_REASON_MOVE_IN:
                c.address_town, c.address_block = "転入町", "1"
            return c

        # 1,000 changes a second: every 0.1 s, 50 move-outs from `home`, then their 50 move-ins.
        with (
            AgencyTLS.from_cert(cert[home]).channel(address) as out_ch,
            AgencyTLS.from_cert(cert[away]).channel(address) as in_ch,
        ):
            next_at = time.perf_counter()
            for i in range(0, len(movers), 50):
                group = movers[i : i + 50]
                submit_changes(
                    out_ch,
                    [
                        change(cpb.CHANGE_REASON_MOVE_OUT, c, sequence + j)
                        for j, c in enumerate(group)
                    ],
                    "bench",
                    timeout=60,
                )
                sequence += len(group)
                result = submit_changes(
                    in_ch,
                    [
                        change(cpb.CHANGE_REASON_MOVE_IN, c, sequence + j)
                        for j, c in enumerate(group)
                    ],
                    "bench",
                    timeout=60,
                )
                at = time.perf_counter()
                sequence += len(group)
                for c, outcome in zip(group, result["outcome"].to_pylist(), strict=True):
                    if outcome == "applied":
                        acked[c] = at
                next_at += 0.1
                time.sleep(max(0.0, next_at - time.perf_counter()))
        done.wait(60)
        heard.wait(60)
        for what, arrived in (("its notice", received), ("the watching subscription", told)):
            latencies = sorted((arrived[c] - acked[c]) * 1e3 for c in acked if c in arrived)
            p50 = latencies[len(latencies) // 2]
            p99 = latencies[int(len(latencies) * 0.99) - 1]
            print(
                f"move-in acknowledged -> {what} on a following stream, at 1,000 changes/s: "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(latencies):,} (goal p99 <= 100 ms)"
            )

        # -- verify while a child submits without pause ----------------------------------------
        facts = registry.lookup(sample, by="resident_code", columns=["family_name", "birth_date"])
        claims = pa.table(
            {
                "resident_code": sample.cast(pa.string()),
                "family_name": facts["family_name"].cast(pa.string()),
                "birth_date": facts["birth_date"],
            }
        )
        del facts

        def verify_rate() -> float:
            times = []
            for _ in range(args.rounds):
                t = time.perf_counter()
                registry.verify(claims, by="resident_code")
                times.append(time.perf_counter() - t)
            return args.claims / statistics.median(times)

        for rate in (1_000, 0):
            quiet = verify_rate()
            # Enough changes to outlast the measurement: 30 s at 1,000/s, or a full round.
            count = 30_000 if rate else args.changes
            table = moves_within(home, codes, sequence, count)
            sequence += count
            pq.write_table(table, tmp / "changes.parquet")
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    SUBMITTER,
                    str(cert[home]),
                    address,
                    str(tmp / "changes.parquet"),
                    str(rate),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            # Measured once the child's changes arrive.
            applied = registry.applied_changes
            while registry.applied_changes == applied and child.poll() is None:
                time.sleep(0.01)
            busy = verify_rate()
            still = child.poll() is None
            child.kill()
            child.wait()
            after = verify_rate()
            speed = f"at {rate:,} changes/s" if rate else "at full speed"
            print(
                f"verify while a child submits {speed}: {busy / 1e6:.2f} M claims/s = "
                f"{busy / statistics.mean([quiet, after]):.2f}x read-only beside it "
                f"({quiet / 1e6:.2f} before, {after / 1e6:.2f} after; the child was "
                f"{'still' if still else 'no longer'} submitting at the end) (goal >= 0.8)"
            )
        print(f"peak RSS {peak() / GIB:.2f} GiB; {registry.applied_changes:,} changes applied")
    finally:
        server.stop(grace=1)


def main() -> int:
    args = parse()
    try:
        run(args)
    finally:
        if args.snapshot is not None:  # the registry is closed: its log can go
            (args.snapshot / "changes.log").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
