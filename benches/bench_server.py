"""gRPC front end benchmark: the bulk stream and the typed per-record API, against the in-process
`verify` measured in the same run.

A real `juki serve` runs in its own process on loopback with mutual TLS and the audit trail on;
this process is the agency's client, so client and server share the machine's cores. Both map
the same snapshot (`--mmap`), so the registry's pages are held once.

    .venv/bin/python benches/bench_server.py                          # Toyama, 4 M claims
    .venv/bin/python benches/bench_server.py --registry /tmp/nation_snap --claims 40000000

It reports, as medians of the repeats:
- in-process `Registry.verify` of the same claims with the same retrieved columns (baseline);
- the same, one thread and one message's rows at a time: what each server worker does;
- the bulk stream (claims already in memory, results decoded, not written): records/s and its
  ratio to the baseline;
- the end-to-end pension job (Parquet in, stream, Parquet out: `juki verify --server`);
- for both jobs, the CPU each process spent per record, against the CPU per record that the
  target rate leaves the machine's cores (the rate alone moves with other tenants' load);
- the server's peak RSS, and the audit trail's size on disk;
- typed per-record Verify: p50/p99 latency at a fixed offered rate, and the most calls/s that
  a few client threads sustain;
- the floors under the two bulk targets, each measured alone: the transport (the job's real
  messages and replies over the same mutual TLS, to a server that does no work), the verify of
  one message on one thread, and the client's Parquet read and write. No front end can spend
  less CPU per record than their sum; the report sets each target's budget against it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq

from juki_engine import Registry, certs
from juki_engine._proto import registry_pb2 as pb
from juki_engine._proto import registry_pb2_grpc as pb_grpc
from juki_engine.bench import current_rss_bytes, gib, log, measure
from juki_engine.client.bulk import (
    AgencyTLS,
    BulkJob,
    _write_results,
    claim_batches,
    request_context,
    run_to_file,
    split_messages,
)
from juki_engine.policy import Policy, example_path
from juki_engine.samples import pension_claims
from juki_engine.service import RPC_WORKERS, ServerTLS
from juki_engine.service.wire import MESSAGE_OPTIONS, ResultStream, write_ipc

FIELDS = ["status", "status_date", "municipality_name", "address_town", "address_block"]
# The result columns the pension affair lets the client see, in the server's order.
KEPT = ["found", "error", "family_name_match", "given_name_match", "birth_date_match", *FIELDS]
# Claims measured per message (the in-process verify, the floors): the job's first 4 M.
FLOOR_CLAIMS = 4 << 20
# A floor is the least CPU a step took over this many repeats, each with the cores to itself.
FLOOR_REPEATS = 5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--registry", help="snapshot directory (default: generate Toyama in a tmp dir)")
    p.add_argument("--claims", type=int, default=4_000_000, help="pensioners in the job")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--rates", type=float, nargs="+", default=[1000.0, 500.0], help="typed calls/s offered"
    )
    p.add_argument("--seconds", type=float, default=5.0, help="duration of each typed test")
    p.add_argument("--threads", type=int, default=8, help="client threads for the max rate")
    p.add_argument("--workers", type=int, default=4, help="the server's call threads")
    p.add_argument(
        "--fields",
        default=",".join(FIELDS),
        help=f"fields the job retrieves (default {','.join(FIELDS)})",
    )
    p.add_argument("--json", help="also write every number to this file")
    p.add_argument("--echo-server", metavar="DIR", help=argparse.SUPPRESS)  # the transport floor
    return p.parse_args(argv)


def start_server(
    snapshot: Path, pki: Path, trail: Path, work: Path, workers: int = 4
) -> tuple[Any, int]:
    port_file = work / "port"
    # The shipped policy caps the pension affair at 60 M records a day; the repeats of a national
    # run go past that, so the benchmark lifts the cap (the quota check itself still runs).
    policy = work / "policy.toml"
    policy.write_text(
        (pki / "policy.toml").read_text().replace("daily_quota = 60_000_000", "daily_quota = 0")
    )
    # The child keeps its own copy of the log's descriptor; this process closes its own.
    with open(work / "server.log", "wb") as server_log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "juki_engine.cli",
                "serve",
                "--snapshot",
                str(snapshot),
                "--mmap",
                "--certs",
                str(pki),
                "--audit",
                str(trail),
                "--listen",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
                "--port-file",
                str(port_file),
                "--policy",
                str(policy),
                "--workers",
                str(workers),
            ],
            stdout=subprocess.DEVNULL,
            stderr=server_log,
        )
    deadline = time.monotonic() + 600
    while not port_file.exists():
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {(work / 'server.log').read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise SystemExit("server did not start")
        time.sleep(0.1)
    return proc, int(port_file.read_text())


def peak_rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_job(fn: Any, items: int, repeats: int, server_pid: int) -> dict[str, Any]:
    """`measure`, plus the CPU both processes spent per record: on a shared machine, what the
    cores must cover (less noisy than the rate when other tenants take the cores)."""
    before = process_cpu_seconds(server_pid)
    result = measure(fn, items, repeats)
    records = items * repeats
    result["server_cpu_ns"] = 1e9 * (process_cpu_seconds(server_pid) - before) / records
    result["client_cpu_ns"] = 1e9 * result["cpu_per_wall"] * sum(result["seconds"]) / records
    return result


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bulk_stream(tls: AgencyTLS, address: str, claims: pa.Table) -> int:
    """Stream every claim and decode every result; the number of results."""
    batches = claims.to_batches(max_chunksize=1 << 20)
    rows = 0
    with tls.channel(address) as channel:
        job = BulkJob(channel, request_context("pension-benefit", "bench"), "resident_code", FIELDS)
        for _, results in job.run(batches):
            rows += results.num_rows
    if rows != claims.num_rows:
        raise SystemExit(f"the job returned {rows:,} results for {claims.num_rows:,} claims")
    return rows


def end_to_end(tls: AgencyTLS, address: str, src: Path, out: Path) -> None:
    """The pension job as `juki verify --server` runs it: the same reader and writer."""
    _, batches = claim_batches(src, 1 << 20)
    with tls.channel(address) as channel:
        job = BulkJob(channel, request_context("pension-benefit", "bench"), "resident_code", FIELDS)
        run_to_file(job, batches, out)


def typed_requests(claims: pa.Table) -> list[pb.VerifyRequest]:
    rows = claims.to_pylist()
    return [
        pb.VerifyRequest(
            context=request_context("pension-benefit", "bench"),
            key=pb.Key(resident_code=r["resident_code"]),
            claims=pb.Claims(family_name=r["family_name"], birth_date=r["birth_date"].isoformat()),
        )
        for r in rows
    ]


def typed_latency(
    tls: AgencyTLS, address: str, requests: list[pb.VerifyRequest], rate: float, seconds: float
) -> dict[str, Any]:
    """Offer `rate` calls/s on a fixed schedule (open loop); latency from the scheduled send."""
    count = int(rate * seconds)
    latencies: list[float] = []
    lock = threading.Lock()
    done = threading.Semaphore(0)
    with tls.channel(address) as channel:
        stub = pb_grpc.IdentityVerificationServiceStub(channel)
        stub.Verify(requests[0], timeout=10)  # connect before timing
        start = time.perf_counter()
        for i in range(count):
            due = start + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            future = stub.Verify.future(requests[i % len(requests)], timeout=30)

            def finished(f: Any, due: float = due) -> None:
                f.result()
                with lock:
                    latencies.append(time.perf_counter() - due)
                done.release()

            future.add_done_callback(finished)
        for _ in range(count):
            done.acquire(timeout=60)
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "offered_per_s": rate,
        "achieved_per_s": len(latencies) / elapsed,
        "p50_ms": 1e3 * latencies[len(latencies) // 2],
        "p99_ms": 1e3 * latencies[int(len(latencies) * 0.99)],
    }


def typed_max_rate(
    tls: AgencyTLS, address: str, requests: list[pb.VerifyRequest], threads: int, seconds: float
) -> float:
    """Calls/s that `threads` closed-loop clients sustain."""
    stop = time.perf_counter() + seconds
    with tls.channel(address) as channel:
        stub = pb_grpc.IdentityVerificationServiceStub(channel)
        stub.Verify(requests[0], timeout=10)

        def client(k: int) -> int:
            calls = 0
            while time.perf_counter() < stop:
                stub.Verify(requests[(k + calls * threads) % len(requests)], timeout=30)
                calls += 1
            return calls

        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            total = sum(pool.map(client, range(threads)))
        return total / (time.perf_counter() - started)


@dataclass(frozen=True)
class FloorInputs:
    """What the floors replay: the job's first claims messages as the client sends them, one
    results message as the server sends it, and those messages' results as the client writes
    them."""

    messages: list[bytes]
    reply: bytes
    written: list[pa.Table]
    rows: int


def prepare(
    snapshot: Path, args: argparse.Namespace, results: dict[str, Any]
) -> tuple[pa.Table, list[pb.VerifyRequest], FloorInputs]:
    """The job's claims, the typed requests, the floors' inputs, and the in-process baseline. The
    registry opened here is dropped on return: the server maps the same snapshot, and this
    process's copy (4 GiB of packed rows for the nation) would only crowd the page cache that
    holds the server's pages."""
    registry = Registry.open(snapshot, mmap=True)
    results["population"] = len(registry)
    log(f"registry: {len(registry):,} residents; building {args.claims:,} pension claims")
    claims = pension_claims(registry, args.claims, seed=1)
    log("in-process verify (baseline)")
    columns = ["resident_code", *FIELDS]
    results["in_process_verify"] = measure(
        lambda: registry.verify(claims, "resident_code", columns=columns),
        args.claims,
        args.repeats,
    )
    # What one server worker does per claims message: one thread, a message at a time as the
    # client cuts them, the server's columns (the resident code is the key itself).
    head = claims.slice(0, FLOOR_CLAIMS)
    messages = [
        pa.Table.from_batches([m]) for m in split_messages(head.to_batches(max_chunksize=1 << 20))
    ]
    results["message_rows"] = messages[0].num_rows
    results["in_process_messages"] = measure(
        lambda: [registry.verify(m, "resident_code", columns=FIELDS) for m in messages],
        head.num_rows,
        max(args.repeats, FLOOR_REPEATS),
    )
    answers = [registry.verify(m, "resident_code", columns=FIELDS).select(KEPT) for m in messages]
    stream = ResultStream()
    replies = [stream.part(a) for a in answers[:2]]  # the first also carries the dictionaries
    floor = FloorInputs(
        messages=[write_ipc(m) for m in messages],
        reply=replies[-1],
        written=[
            a.add_column(0, "resident_code", m["resident_code"])
            for a, m in zip(answers, messages, strict=True)
        ],
        rows=head.num_rows,
    )
    typed = typed_requests(pension_claims(registry, 10_000, seed=2, bad_code_fraction=0.0))
    return claims, typed, floor


# The floors -------------------------------------------------------------------------------


class EchoVerification(pb_grpc.BulkVerificationServiceServicer):
    """A bulk service that does no work: each claims message is taken out of its protobuf, as
    the real server does, and answered with the same recorded results message."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply

    def VerifyStream(self, requests: Any, context: grpc.ServicerContext) -> Any:
        for n, message in enumerate(requests):
            if message.WhichOneof("body") == "claims" and message.claims:
                yield pb.VerifyStreamResponse(first_row=n, results=self.reply)


def serve_echo(work: Path) -> int:
    """The transport floor's server process: `juki serve`'s gRPC settings and mutual TLS."""
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=RPC_WORKERS), options=MESSAGE_OPTIONS
    )
    reply = (work / "reply.bin").read_bytes()
    pb_grpc.add_BulkVerificationServiceServicer_to_server(EchoVerification(reply), server)
    tls = ServerTLS.in_directory(work / "pki")
    port = server.add_secure_port("127.0.0.1:0", tls.credentials())
    server.start()
    (work / "echo.port").write_text(str(port))
    server.wait_for_termination()
    return 0


def echo_job(tls: AgencyTLS, address: str, messages: list[bytes]) -> None:
    """Send the recorded claims messages and read every reply."""
    with tls.channel(address) as channel:
        stub = pb_grpc.BulkVerificationServiceStub(channel)

        def requests() -> Any:
            context = request_context("pension-benefit", "bench")
            yield pb.VerifyStreamRequest(
                header=pb.VerifyStreamHeader(context=context, key=pb.KEY_KIND_RESIDENT_CODE)
            )
            for message in messages:
                yield pb.VerifyStreamRequest(claims=message)

        replies = sum(1 for _ in stub.VerifyStream(requests()))
    if replies != len(messages):
        raise SystemExit(f"the echo server answered {replies} of {len(messages)} messages")


def write_results(tables: list[pa.Table], out: Path) -> None:
    """The job's own results writer, fed with recorded results."""
    pending: queue.Queue[pa.Table | None] = queue.Queue()
    for table in tables:
        pending.put(table)
    pending.put(None)
    failure: list[BaseException] = []
    _write_results(pending, out, "resident_code", failure)
    if failure:
        raise failure[0]


def least_cpu_ns(result: dict[str, Any]) -> float:
    """The least CPU (this process, all threads) per item over a `measure` result's repeats."""
    return 1e9 * min(result["cpu_seconds"]) / result["items"]


def measure_floors(
    work: Path, src: Path, tls: AgencyTLS, floor: FloorInputs, claims: int
) -> dict[str, float]:
    """The least CPU per record of each step a bulk job cannot do without, each measured alone
    (the machine is shared: the least of the repeats is the closest to what the step costs)."""
    log("floor: reading the claims Parquet, writing the results Parquet")
    read = measure(
        lambda: sum(b.num_rows for b in claim_batches(src, 1 << 20)[1]), claims, FLOOR_REPEATS
    )
    write = measure(
        lambda: write_results(floor.written, work / "floor.parquet"), floor.rows, FLOOR_REPEATS
    )
    log("floor: the transport, to a server that does no work")
    (work / "reply.bin").write_bytes(floor.reply)
    echo = subprocess.Popen(
        [sys.executable, __file__, "--echo-server", str(work)],
        stderr=open(work / "echo.log", "wb"),
    )
    try:
        while not (work / "echo.port").exists():
            if echo.poll() is not None:
                raise SystemExit(f"echo server exited: {(work / 'echo.log').read_text()[-2000:]}")
            time.sleep(0.1)
        address = f"127.0.0.1:{(work / 'echo.port').read_text()}"
        runs = [
            measure_job(lambda: echo_job(tls, address, floor.messages), floor.rows, 1, echo.pid)
            for _ in range(FLOOR_REPEATS)
        ]
    finally:
        echo.terminate()
        echo.wait(timeout=60)
    transport = min(runs, key=lambda run: run["server_cpu_ns"] + run["client_cpu_ns"])
    return {
        "transport_server_ns": transport["server_cpu_ns"],
        "transport_client_ns": transport["client_cpu_ns"],
        "parquet_read_ns": least_cpu_ns(read),
        "parquet_write_ns": least_cpu_ns(write),
    }


def main(argv: list[str] | None = None) -> int:
    global FIELDS, KEPT
    args = parse_args(argv)
    FIELDS = args.fields.split(",")
    KEPT = [*KEPT[: KEPT.index("birth_date_match") + 1], *FIELDS]
    if args.echo_server:
        return serve_echo(Path(args.echo_server))
    results: dict[str, Any] = {"claims": args.claims, "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="juki-bench-") as tmp:
        work = Path(tmp)
        if args.registry:
            snapshot = Path(args.registry)
        else:
            snapshot = work / "toyama"
            log("generating Toyama")
            Registry.generate(prefecture="富山県").save(snapshot)
        claims, requests, floor = prepare(snapshot, args, results)
        src = work / "pensioners.parquet"
        pq.write_table(claims, src)
        pki = work / "pki"
        agencies = {a.code: a.certificate_subject for a in Policy.load(example_path()).agencies}
        certs.create_demo(pki, agencies)
        certs.write_demo_policy(pki, example_path())
        tls = AgencyTLS.from_cert(pki / "agencies" / "nenkin.pem")
        # Before the server starts: each floor is measured with the cores to itself.
        results["floors"] = measure_floors(work, src, tls, floor, args.claims)
        results["floors"]["verify_ns"] = least_cpu_ns(results["in_process_messages"])
        del floor
        trail = work / "audit"
        log("starting juki serve")
        proc, port = start_server(snapshot, pki, trail, work, args.workers)
        address = f"127.0.0.1:{port}"
        try:
            log("bulk stream")
            results["bulk_stream"] = measure_job(
                lambda: bulk_stream(tls, address, claims), args.claims, args.repeats, proc.pid
            )
            log("end-to-end job: Parquet in, Parquet out")
            results["end_to_end"] = measure_job(
                lambda: end_to_end(tls, address, src, work / "results.parquet"),
                args.claims,
                args.repeats,
                proc.pid,
            )
            results["typed_latency"] = []
            for rate in args.rates:
                log(f"typed Verify at {rate:.0f}/s")
                results["typed_latency"].append(
                    typed_latency(tls, address, requests, rate, args.seconds)
                )
            log(f"typed Verify, {args.threads} closed-loop threads")
            results["typed_max_per_s"] = typed_max_rate(
                tls, address, requests, args.threads, args.seconds
            )
            results["server_peak_rss_bytes"] = peak_rss(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        results["audit_bytes"] = dir_bytes(trail)
        results["client_rss_bytes"] = current_rss_bytes()
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


def report(r: dict[str, Any]) -> None:
    base = r["in_process_verify"]["rate_per_s"]
    stream = r["bulk_stream"]["rate_per_s"]
    e2e = r["end_to_end"]
    print(f"\n{r['claims']:,} pension claims against {r['population']:,} residents")
    print(f"  in-process verify      {base / 1e6:8.2f} M/s (baseline)")
    per = r["in_process_messages"]["rate_per_s"]
    calls = f"one thread, {r['message_rows']:,}-row messages"
    print(f"  in-process, per message {per / 1e6:8.2f} M/s ({calls})")
    print(f"  bulk stream (mTLS+audit){stream / 1e6:7.2f} M/s   = {stream / base:.2f}× in-process")
    print(
        f"  end-to-end job         {e2e['rate_per_s'] / 1e6:8.2f} M/s   "
        f"({statistics.median(e2e['seconds']):.2f} s median)"
    )
    # The targets as CPU budgets: what the machine's cores can spend per record; the floors as
    # the least any front end spends: the steps each job cannot do without, each measured alone.
    f = r["floors"]
    transport = f["transport_server_ns"] + f["transport_client_ns"]
    print(
        f"  floors, CPU a record    transport {transport:4.0f} (server "
        f"{f['transport_server_ns']:.0f} + client {f['transport_client_ns']:.0f}), verify "
        f"{f['verify_ns']:.0f}, Parquet read {f['parquet_read_ns']:.0f} + write "
        f"{f['parquet_write_ns']:.0f}"
    )
    cores = os.cpu_count() or 1
    stream_floor = transport + f["verify_ns"]
    e2e_floor = stream_floor + f["parquet_read_ns"] + f["parquet_write_ns"]
    for name, job, budget, target, floor in (
        ("bulk stream", r["bulk_stream"], cores * 1e9 / 5e6, "5 M/s", stream_floor),
        ("end-to-end", e2e, cores * 10e9 / 40e6, "40 M in 10 s", e2e_floor),
    ):
        spent = job["server_cpu_ns"] + job["client_cpu_ns"]
        print(
            f"  {name + ' CPU':22s} server {job['server_cpu_ns']:4.0f} + client "
            f"{job['client_cpu_ns']:4.0f} = {spent:4.0f} ns/record = {spent / floor:.2f}× its "
            f"floor of {floor:.0f}; {target} on {cores} cores allows {budget:.0f} = "
            f"{budget / floor:.2f}× the floor"
        )
    print(f"  server peak RSS        {gib(r['server_peak_rss_bytes'])}")
    print(f"  audit trail on disk    {r['audit_bytes'] / 2**20:8.1f} MiB")
    for lat in r["typed_latency"]:
        print(
            f"  typed Verify at {lat['offered_per_s']:.0f}/s: p50 {lat['p50_ms']:.2f} ms, "
            f"p99 {lat['p99_ms']:.2f} ms (achieved {lat['achieved_per_s']:.0f}/s)"
        )
    print(f"  typed Verify max       {r['typed_max_per_s']:8.0f} calls/s")
    print(f"  load average at start  {r['load_average']}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
