"""The server's memory under a stream of hostile claims messages, against the same number of valid
messages of the same size in the same run.

A `juki serve` child serves a small registry; one bulk job per kind streams `--messages`
messages, each within grpc's message limit but built to make a careless server allocate far
more than it received: every row viewing one long string, dictionaries pointing every row at
one long value, compressed bodies declaring a terabyte, offsets past the end, random bytes. The
report gives, per kind, what the server answered and its RSS growth (VmRSS after the job and
VmHWM, the peak) against the valid job's.

    .venv/bin/python benches/bench_hostile.py                     # 200 messages per kind
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa

from juki_engine import Registry, certs
from juki_engine._proto import registry_pb2 as pb
from juki_engine._proto import registry_pb2_grpc as pb_grpc
from juki_engine.client import AgencyTLS, request_context
from juki_engine.policy import Policy, example_path
from juki_engine.service.wire import write_ipc


def views_of_one(value: bytes, rows: int) -> pa.Array:
    views = np.zeros((rows, 4), np.uint32)  # length, prefix, buffer index, offset
    views[:, 0] = len(value)
    views[:, 1] = int.from_bytes(value[:4], "little")
    return pa.Array.from_buffers(
        pa.string_view(), rows, [None, pa.py_buffer(views.tobytes()), pa.py_buffer(value)]
    )


def valid(codes: list[str]) -> bytes:
    return write_ipc(pa.table({"resident_code": codes}))


def views(_: list[str]) -> bytes:
    # 60,000 rows viewing one 60 KiB string: 3.6 GB if each were read out.
    return write_ipc(pa.table({"resident_code": views_of_one(b"9" * (60 << 10), 60_000)}))


def dictionary(_: list[str]) -> bytes:
    # Every row a dictionary index of one 1 MiB value; the rejected key's echo would repeat it.
    keys = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(200_000, np.int32)), pa.array(["9" * (1 << 20)])
    )
    return write_ipc(pa.table({"resident_code": keys}))


def compressed(codes: list[str]) -> bytes:
    table = pa.table({"resident_code": codes})
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    payload = bytearray(sink.getvalue().to_pybytes())
    declared = (11 * len(codes)).to_bytes(8, "little")
    at = payload.find(declared)
    payload[at : at + 8] = (1 << 40).to_bytes(8, "little")  # "decompresses to 1 TiB"
    return bytes(payload)


def offsets(codes: list[str]) -> bytes:
    payload = bytearray(valid(codes))
    last = (11 * len(codes)).to_bytes(4, "little")
    at = payload.rfind(last)
    payload[at : at + 4] = (1 << 30).to_bytes(4, "little")
    return bytes(payload)


def noise(codes: list[str]) -> bytes:
    return random.Random(len(codes)).randbytes(len(valid(codes)))


KINDS: dict[str, Callable[[list[str]], bytes]] = {
    "valid": valid,
    "views": views,
    "dictionary": dictionary,
    "compressed": compressed,
    "offsets": offsets,
    "noise": noise,
}


def rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def run_kind(tls: AgencyTLS, address: str, payload: bytes, messages: int) -> tuple[int, str]:
    """Stream `messages` copies of one payload, a job per message so a refusal does not end the
    run; returns (messages answered, the last refusal's status)."""
    answered, status = 0, "-"
    with tls.channel(address) as ch:
        stub = pb_grpc.BulkVerificationServiceStub(ch)
        for _ in range(messages):
            header = pb.VerifyStreamRequest(
                header=pb.VerifyStreamHeader(
                    context=request_context("pension-benefit", "bench"),
                    key=pb.KEY_KIND_RESIDENT_CODE,
                )
            )
            requests: Iterator[pb.VerifyStreamRequest] = iter(
                [header, pb.VerifyStreamRequest(claims=payload)]
            )
            try:
                answered += len(list(stub.VerifyStream(requests, timeout=60)))
            except grpc.RpcError as e:
                status = e.code().name
    return answered, status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=200, help="messages per kind")
    p.add_argument("--population", type=int, default=100_000)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="juki-hostile-") as tmp:
        work = Path(tmp)
        registry = Registry.generate(population=args.population, seed=1)
        registry.save(work / "snap")
        codes = registry.to_arrow(["resident_code"])["resident_code"].to_pylist()[:50_000]
        agencies = {a.code: a.certificate_subject for a in Policy.load(example_path()).agencies}
        certs.create_demo(work / "pki", agencies)
        certs.write_demo_policy(work / "pki", example_path())
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "juki_engine.cli", "serve", "--snapshot"),
                *(str(work / "snap"), "--certs", str(work / "pki"), "--audit"),
                *(str(work / "audit"), "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"),
                "--port-file",
                str(work / "port"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while not (work / "port").exists():
                if proc.poll() is not None:
                    raise SystemExit("server exited")
                time.sleep(0.1)
            address = f"127.0.0.1:{int((work / 'port').read_text())}"
            tls = AgencyTLS.from_cert(work / "pki" / "agencies" / "nenkin.pem")
            run_kind(tls, address, valid(codes), 5)  # warm up: segment open, threads started
            base_rss, _ = rss(proc.pid)
            print(f"server RSS after warm-up: {base_rss / 2**20:,.0f} MiB")
            print(
                f"{'kind':<11}{'payload':>10}{'answered':>10}{'status':>20}"
                f"{'RSS +MiB':>10}{'peak +MiB':>11}{'s':>7}"
            )
            growth: dict[str, float] = {}
            for kind, make in KINDS.items():
                payload = make(codes)
                before, _ = rss(proc.pid)
                started = time.perf_counter()
                answered, status = run_kind(tls, address, payload, args.messages)
                seconds = time.perf_counter() - started
                after, peak = rss(proc.pid)
                growth[kind] = (peak - base_rss) / 2**20
                print(
                    f"{kind:<11}{len(payload) / 2**20:>9.1f}M{answered:>10}{status:>20}"
                    f"{(after - before) / 2**20:>10.1f}{(peak - base_rss) / 2**20:>11.1f}"
                    f"{seconds:>7.1f}"
                )
            worst = max(v for k, v in growth.items() if k != "valid")
            print(
                f"peak RSS growth over warm-up: worst hostile kind {worst:,.1f} MiB, valid "
                f"{growth['valid']:,.1f} MiB (ratio {worst / max(growth['valid'], 1):.2f}×)"
            )
        finally:
            proc.terminate()
            proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
