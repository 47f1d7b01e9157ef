"""The gRPC front end (protos/juki/v1): agencies verify and retrieve 本人確認情報 over mutual TLS.

Each call goes the same way: the agency is identified by its client certificate → the purpose
policy grants (or refuses) the affair, key, mode and fields → the Rust core verifies and gathers
the granted fields in one probe (GIL released) → every record is audited, durably, before the
reply leaves → the reply holds only what the policy allows.
"""

from __future__ import annotations

import io
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from juki_engine import certs
from juki_engine._core import InvalidIdentifier, InvalidInput, JukiError
from juki_engine._proto import registry_pb2 as pb
from juki_engine._proto import registry_pb2_grpc as pb_grpc
from juki_engine.audit import (
    OUTCOMES,
    AuditContext,
    AuditTrail,
    AuditUnavailable,
    Commit,
    counts_since,
)
from juki_engine.policy import (
    Agency,
    Grant,
    NotPermitted,
    Policy,
    PolicyError,
    QuotaExhausted,
    Quotas,
    start_of_today,
)
from juki_engine.registry import Registry
from juki_engine.wire import (  # noqa: F401 (MAX_MESSAGE_BYTES, write_ipc: the server's wire)
    KEY_KINDS,
    KEY_NAMES,
    MAX_MESSAGE_BYTES,
    MESSAGE_OPTIONS,
    write_ipc,
)

log = logging.getLogger("juki.server")

# Rows in one claims message: a bound on the memory one message can make the server allocate.
MAX_BATCH_ROWS = 1 << 20
# Bulk results waiting for their audit commit while the next batch is computed.
PIPELINE_DEPTH = 4
# Threads serving calls. More do not serve more: the handlers hand the GIL to each other at every
# call into Arrow or the core, and on 2 cores 8 threads served typed calls ~25 % slower than 4.
RPC_WORKERS = 4
# Threads answering bulk messages, shared by all streams.
BULK_WORKERS = 2
# Audit records are kept seven years (by the day, with leap days).
RETENTION_DAYS = 7 * 366

STATUS_CODES = {
    NotPermitted: grpc.StatusCode.PERMISSION_DENIED,
    QuotaExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    InvalidIdentifier: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    AuditUnavailable: grpc.StatusCode.UNAVAILABLE,
}
SERVICES = (
    pb.DESCRIPTOR.services_by_name["IdentityVerification"].full_name,
    pb.DESCRIPTOR.services_by_name["BulkVerification"].full_name,
)


def status_code(error: JukiError) -> grpc.StatusCode:
    """The one gRPC status each class of error maps to."""
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL


def abort(context: grpc.ServicerContext, error: JukiError) -> NoReturn:
    context.abort(status_code(error), str(error))
    raise AssertionError("grpc's abort returns only by raising")  # pragma: no cover


@lru_cache(maxsize=1024)
def _subject_of(pem: bytes) -> str:
    return certs.certificate_subject(pem)


@dataclass(frozen=True, slots=True)
class Answer:
    """The reply to one batch of claims, and the audit commit it must wait for."""

    first_row: int
    results: pa.Table
    commit: Commit

    def released(self) -> pa.Table:
        """The results, once their audit records are durable."""
        self.commit.wait()
        return self.results


class Frontend:
    """What the services share: the registry, the policy (swapped on reload), quotas, audit."""

    def __init__(
        self, registry: Registry, policy: Policy, audit: AuditTrail, quotas: Quotas | None = None
    ) -> None:
        self.registry = registry
        self.policy = policy
        self.audit = audit
        self.quotas = quotas or Quotas()
        # Bulk messages in flight, answered while the stream handlers read and send.
        self.pool = futures.ThreadPoolExecutor(BULK_WORKERS, thread_name_prefix="juki-bulk")

    @classmethod
    def open(
        cls,
        registry: Registry,
        policy_path: str | Path,
        audit_dir: str | Path,
        retention_days: int = RETENTION_DAYS,
    ) -> Frontend:
        """Load the policy, open the audit trail and restore today's quota use from it."""
        policy = Policy.load(policy_path)
        audit = AuditTrail(audit_dir, retention_days=retention_days)
        return cls(registry, policy, audit, Quotas(counts_since(audit_dir, start_of_today())))

    def reload(self, path: str | Path) -> None:
        """Load the policy file again; a broken file leaves the running policy in force."""
        try:
            policy = Policy.load(path)
        except PolicyError as e:
            log.error("policy reload refused, keeping %s: %s", self.policy.source, e)
            return
        self.policy = policy
        log.info("policy reloaded from %s: %d agencies", path, len(policy.agencies))

    def caller(self, context: grpc.ServicerContext, request: pb.RequestContext | None) -> Agency:
        """The agency behind the call's client certificate; unknown ones are refused (audited)."""
        pems = context.auth_context().get("x509_pem_cert") or []
        subject = _subject_of(pems[0]) if pems else ""
        try:
            return self.policy.agency_for(subject)
        except NotPermitted:
            if request is not None:
                ctx = AuditContext(f"unregistered: {subject}", *_ids(request), "verify", ())
                self.audit.record(ctx, pa.nulls(1, pa.string()), "denied")
            raise

    def authorize(
        self,
        agency: Agency,
        request: pb.RequestContext,
        by: str,
        claimed: Sequence[str],
        retrieve: Sequence[str],
        subjects: pa.Array | None = None,
    ) -> Grant:
        """Check the request against the policy; a refusal is audited before it is raised."""
        try:
            if not request.operator_id or not request.request_id:
                missing = "operator_id" if not request.operator_id else "request_id"
                raise InvalidInput(f"context.{missing} is empty: every request names both")
            return self.policy.authorize(agency, request.affair, by, claimed, retrieve)
        except NotPermitted:
            asked = tuple(dict.fromkeys((*claimed, *retrieve)))
            mode = "+".join(m for m, a in (("verify", claimed), ("retrieve", retrieve)) if a)
            ctx = AuditContext(agency.code, *_ids(request), mode or "verify", asked)
            self.audit.record(ctx, self.subjects_of(by, subjects), "denied")
            raise

    def subjects_of(self, by: str, keys: pa.Array | None) -> pa.Array:
        """The resident codes behind a refused request's keys, for its audit records: null where
        a key names no resident, so the trail never holds a My Number or a client's raw key (one
        null record for a request without keys)."""
        if keys is None:
            return pa.nulls(1, pa.string())
        try:
            codes = self.registry.lookup(keys, by, columns=["resident_code"])["resident_code"]
        except JukiError:  # keys of no usable type: the refusal is still recorded, per row
            return pa.nulls(len(keys), pa.string())
        return codes.combine_chunks()

    def answer(
        self, grant: Grant, request: pb.RequestContext, by: str, claims: pa.Table, first_row: int
    ) -> Answer:
        """Verify one batch under `grant`, count it against the quota and audit it."""
        keys = claims[by]
        # Keyed by resident code as text, each found key *is* the subject's code (the parser
        # accepts only the canonical 11 digits), which saves gathering and rendering the column.
        from_key = by == "resident_code" and _is_text(keys.type)
        retrieved = [c for c in grant.retrieved if c != "resident_code"]
        out = self.registry.verify(
            claims,
            by,
            first_row=first_row,
            columns=retrieved if from_key else ["resident_code", *retrieved],
        )
        if from_key:
            subjects = pc.if_else(out["found"], keys, pa.scalar(None, keys.type))
            out = out.append_column("resident_code", subjects)
        subjects = out["resident_code"].combine_chunks()
        ctx = AuditContext(grant.agency.code, *_ids(request), grant.mode, grant.fields)
        self._take_quota(grant, ctx, subjects)
        commit = self.audit.append(ctx, subjects, _outcomes(out))
        return Answer(first_row, out.select(_kept(grant)), commit)

    def answer_one(
        self,
        grant: Grant,
        request: pb.RequestContext,
        by: str,
        key: str,
        claims: dict[str, str | int],
    ) -> dict[str, Any]:
        """A typed call's one result row, once its audit record is durable: `answer` for one
        claim, its bookkeeping done on Python values. A typed call costs its fixed per-call work,
        and every Arrow compute call on a one-row array can hand the GIL to another handler
        thread, a context switch each (BENCHMARKS.md)."""
        retrieved = [c for c in grant.retrieved if c != "resident_code"]
        row = self.registry.verify_one(key, by, claims, columns=["resident_code", *retrieved])
        if row["found"]:
            outcome = "disclosed"
        else:
            outcome = "not_found" if row["error"] is None else "invalid_key"
        subjects = pa.array([row["resident_code"]], pa.string())
        ctx = AuditContext(grant.agency.code, *_ids(request), grant.mode, grant.fields)
        self._take_quota(grant, ctx, subjects)
        self.audit.record(ctx, subjects, outcome)
        return {name: row[name] for name in _kept(grant)}

    def _take_quota(self, grant: Grant, ctx: AuditContext, subjects: pa.Array) -> None:
        """Count one record per subject against the grant's daily quota; a refusal is audited
        before it is raised."""
        try:
            self.quotas.take(grant, len(subjects))
        except QuotaExhausted:
            self.audit.record(ctx, subjects, "quota_exhausted")
            raise


def _kept(grant: Grant) -> list[str]:
    """The result columns a grant lets the caller see."""
    return ["found", "error", *(f"{c}_match" for c in grant.claimed), *grant.retrieved]


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def _ids(request: pb.RequestContext) -> tuple[str, str, str]:
    return request.operator_id, request.request_id, request.affair


_OUTCOME_VALUES = pa.array(["disclosed", "not_found", "invalid_key"])
assert set(_OUTCOME_VALUES.to_pylist()) <= set(OUTCOMES)


def _outcomes(out: pa.Table) -> pa.DictionaryArray:
    """Per record: disclosed (found), invalid_key (rejected key) or not_found."""
    found = out["found"].combine_chunks().to_numpy(zero_copy_only=False)
    invalid = out["error"].combine_chunks().is_valid().to_numpy(zero_copy_only=False)
    codes = np.where(found, 0, np.where(invalid, 2, 1)).astype(np.int8)
    return pa.DictionaryArray.from_arrays(codes, _OUTCOME_VALUES)


def read_claims(payload: bytes, message: int) -> pa.Table:
    """One claims message: a complete Arrow IPC stream; anything else names the message."""
    try:
        table = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
        raise InvalidInput(f"message {message}: claims are not an Arrow IPC stream: {e}") from e
    if table.num_rows > MAX_BATCH_ROWS:
        raise InvalidInput(
            f"message {message}: {table.num_rows:,} rows, at most {MAX_BATCH_ROWS:,} per message"
        )
    return table


class ResultStream:
    """A job's results as one Arrow IPC stream, cut into one part per claims message.

    Retrieved fields are dictionary-encoded against the registry's dictionaries (1.6 MiB of town
    names for the nation): one stream sends each dictionary once per job, where a stream per
    message would resend it with every message.
    """

    def __init__(self) -> None:
        self._sink = io.BytesIO()
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None

    def part(self, results: pa.Table) -> bytes:
        """The bytes that carry `results` as one record batch (after the schema, if first)."""
        if self._writer is None:
            self._writer = pa.ipc.new_stream(self._sink, results.schema)
        batches = results.combine_chunks().to_batches()
        if batches:
            self._writer.write_batch(batches[0])
        else:
            empty = [pa.array([], type=f.type) for f in results.schema]
            self._writer.write_batch(pa.RecordBatch.from_arrays(empty, schema=results.schema))
        part = self._sink.getvalue()
        self._sink.seek(0)
        self._sink.truncate()
        return part


# Typed per-record API ----------------------------------------------------------------------


def _claims(claims: pb.Claims) -> dict[str, str | int]:
    """A typed call's claimed fields, in the message's field order."""
    return {
        field.name: int(value) if field.name == "sex" else value
        for field, value in claims.ListFields()
    }


def _key(key: pb.Key) -> tuple[str, str]:
    which = key.WhichOneof("value")
    if which is None:
        raise InvalidInput("key: set my_number or resident_code")
    return which, getattr(key, which)


def _single(row: dict[str, Any], by: str) -> dict[str, Any]:
    """The one result row of a typed call; a rejected key is INVALID_ARGUMENT naming it."""
    if row["error"] is not None:
        raise InvalidIdentifier(f"key.{by}: {row['error'].split(': ', 1)[1]}")
    return row


_ENUMS: dict[str, Callable[[Any], int]] = {
    "sex": lambda v: int(v),
    "status": lambda v: pb.ResidentStatus.Value(v.upper()),
    "card_state": lambda v: pb.CardState.Value(v.upper()),
}


def _resident(row: dict[str, Any], fields: Sequence[str]) -> pb.Resident:
    resident = pb.Resident()
    for field in fields:
        value = row[field]
        if value is None:
            continue
        if field in _ENUMS:
            value = _ENUMS[field](value)
        setattr(resident, field, value)
    return resident


class IdentityVerification(pb_grpc.IdentityVerificationServicer):
    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend

    def Verify(self, request: pb.VerifyRequest, context: grpc.ServicerContext) -> pb.VerifyResponse:
        f = self.frontend
        try:
            agency = f.caller(context, request.context)
            by, key = _key(request.key)
            claims = _claims(request.claims)
            claimed = list(claims)
            grant = f.authorize(agency, request.context, by, claimed, ())
            row = _single(f.answer_one(grant, request.context, by, key, claims), by)
        except JukiError as e:
            abort(context, e)
        matches = [pb.FieldMatch(field=c, match=row[f"{c}_match"]) for c in claimed]
        return pb.VerifyResponse(found=row["found"], matches=matches if row["found"] else [])

    def Retrieve(
        self, request: pb.RetrieveRequest, context: grpc.ServicerContext
    ) -> pb.RetrieveResponse:
        f = self.frontend
        try:
            agency = f.caller(context, request.context)
            by, key = _key(request.key)
            affair = agency.affairs.get(request.context.affair)
            fields = list(request.fields) or (list(affair.fields) if affair else [])
            grant = f.authorize(agency, request.context, by, (), fields)
            row = _single(f.answer_one(grant, request.context, by, key, {}), by)
        except JukiError as e:
            abort(context, e)
        if not row["found"]:
            return pb.RetrieveResponse(found=False)
        return pb.RetrieveResponse(
            found=True, resident=_resident(row, grant.retrieved), fields=grant.retrieved
        )

    def ListAffairs(
        self, request: pb.ListAffairsRequest, context: grpc.ServicerContext
    ) -> pb.ListAffairsResponse:
        f = self.frontend
        try:
            agency = f.caller(context, None)
        except JukiError as e:
            abort(context, e)
        return pb.ListAffairsResponse(
            agency_code=agency.code,
            agency_name=agency.name,
            affairs=[
                pb.Affair(
                    code=a.code,
                    title=a.title,
                    legal_basis=a.legal_basis,
                    keys=sorted(KEY_KINDS[k] for k in a.keys),
                    modes=sorted(a.modes),
                    fields=a.fields,
                    daily_quota=a.daily_quota,
                    used_today=f.quotas.used(agency.code, a.code),
                )
                for a in agency.affairs.values()
            ],
        )


# Columnar streaming API --------------------------------------------------------------------


class BulkVerification(pb_grpc.BulkVerificationServicer):
    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend

    def VerifyStream(
        self, request_iterator: Iterator[pb.BulkRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.BulkResponse]:
        f = self.frontend
        try:
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("body") != "header":
                raise InvalidInput("message 0: a bulk job starts with a BulkHeader")
            header = first.header
            agency = f.caller(context, header.context)
            if header.key not in KEY_NAMES:
                raise InvalidInput("header.key: set MY_NUMBER or RESIDENT_CODE")
            by = KEY_NAMES[header.key]
            retrieve = list(header.retrieve_fields)
            # Refuse what the header alone already rules out before any claim arrives.
            f.authorize(agency, header.context, by, (), retrieve)
        except JukiError as e:
            abort(context, e)
        job = _BulkJob(self, agency, header.context, by, retrieve, request_iterator)
        stream = ResultStream()
        try:
            while (answer := job.next_answer()) is not None:
                yield _bulk_response(answer, stream)
        except JukiError as e:
            abort(context, e)
        finally:
            job.stop()

    def _message(
        self,
        agency: Agency,
        request: pb.RequestContext,
        by: str,
        retrieve: list[str],
        n: int,
        claims: pa.Table,
        first_row: int,
    ) -> Answer:
        """Authorize, answer and audit one claims message; log one line."""
        f = self.frontend
        started = time.perf_counter()
        claimed = [c for c in claims.column_names if c != by]
        grant = f.authorize(agency, request, by, claimed, retrieve, claims[by].combine_chunks())
        answer = f.answer(grant, request, by, claims, first_row)
        log.info(
            "%s %s request=%s message=%d rows=%d found=%d %.1f ms",
            agency.code,
            grant.affair.code,
            request.request_id,
            n,
            claims.num_rows,
            pc.sum(answer.results["found"]).as_py() or 0,
            (time.perf_counter() - started) * 1e3,
        )
        return answer


class _BulkJob:
    """One bulk call's claims, read by a thread of their own.

    The reader takes each claims message off the wire as soon as it arrives and hands it to the
    shared pool, up to PIPELINE_DEPTH messages ahead of the replies, while the call's own thread
    sends the replies in order. Receiving, answering and sending overlap: a handler that read
    the next message only after sending the last reply left the cores idle ~8 % of a national
    job (~4 % now).
    """

    def __init__(
        self,
        service: BulkVerification,
        agency: Agency,
        request: pb.RequestContext,
        by: str,
        retrieve: list[str],
        requests: Iterator[pb.BulkRequest],
    ) -> None:
        self._service = service
        self._by = by
        self._args = (agency, request, by, retrieve)
        self._requests = requests
        # Futures of answers in message order; then None (the end) or the error that ended it.
        self._answers: queue.Queue[futures.Future[Answer] | Exception | None] = queue.Queue()
        self._room = threading.Semaphore(PIPELINE_DEPTH)
        self._stopped = threading.Event()
        self._reader = threading.Thread(target=self._read, name="juki-bulk-reader", daemon=True)
        self._reader.start()

    def next_answer(self) -> Answer | None:
        """The next message's answer, in order; None at the end. An error in the claims is
        raised after the answers to the messages before it."""
        item = self._answers.get()
        if item is None:
            return None
        if isinstance(item, Exception):
            raise item
        answer = item.result()
        self._room.release()
        return answer

    def stop(self) -> None:
        """End the job early or late: the reader stops taking messages, queued ones are dropped."""
        self._stopped.set()
        self._room.release()  # wake a reader waiting for room
        while True:
            try:
                item = self._answers.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, futures.Future):
                item.cancel()

    def _read(self) -> None:
        pool = self._service.frontend.pool
        by = self._by
        row = 0
        columns: list[str] | None = None
        try:
            for n, message in enumerate(self._requests, start=1):
                if message.WhichOneof("body") != "claims":
                    raise InvalidInput(f"message {n}: only the first message is a header")
                claims = read_claims(message.claims, n)
                if by not in claims.column_names:
                    raise InvalidInput(f"message {n}: claims have no '{by}' column (the key)")
                if columns is None:
                    columns = claims.column_names
                elif claims.column_names != columns:
                    raise InvalidInput(
                        f"message {n}: columns {claims.column_names} differ from the job's "
                        f"first claims {columns}"
                    )
                self._room.acquire()
                if self._stopped.is_set():
                    return
                # Answered on the shared pool, several messages at a time (the core releases
                # the GIL); the replies leave in order once their audit records are durable.
                self._answers.put(pool.submit(self._service._message, *self._args, n, claims, row))
                row += claims.num_rows
            self._answers.put(None)
        except grpc.RpcError:
            self._answers.put(None)  # the call ended (cancelled); the sender sees it too
        except Exception as e:  # bad claims (JukiError), or a fault: the sender raises it
            self._answers.put(e)


def _bulk_response(answer: Answer, stream: ResultStream) -> pb.BulkResponse:
    return pb.BulkResponse(first_row=answer.first_row, results=stream.part(answer.released()))


# Serving -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """The server's certificate and key, and the CA whose client certificates it accepts."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def in_directory(cls, directory: str | Path) -> ServerTLS:
        """`server.pem`, `server.key` and `ca.pem` in a directory (as `juki certs` writes it)."""
        d = Path(directory)
        tls = cls(d / "server.pem", d / "server.key", d / "ca.pem")
        missing = [str(p) for p in (tls.cert, tls.key, tls.ca) if not p.exists()]
        if missing:
            raise InvalidInput(f"certificate directory {d}: missing {', '.join(missing)}")
        return tls

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.ca.read_bytes(),
            require_client_auth=True,
        )


@dataclass
class Server:
    """A running server: its port, and how to stop it gracefully."""

    grpc_server: grpc.Server
    port: int
    frontend: Frontend
    health: health.HealthServicer

    def stop(self, grace: float = 10.0) -> None:
        """Refuse new calls, let calls in flight finish, then close the audit trail."""
        self.health.enter_graceful_shutdown()
        self.grpc_server.stop(grace).wait()
        self.frontend.pool.shutdown()
        self.frontend.audit.close()


def start(
    frontend: Frontend, tls: ServerTLS, address: str = "127.0.0.1:0", workers: int = RPC_WORKERS
) -> Server:
    """Start serving on `address` (port 0 picks a free one) with mutual TLS, health checking
    and reflection."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="juki-rpc"),
        options=MESSAGE_OPTIONS,
    )
    pb_grpc.add_IdentityVerificationServicer_to_server(IdentityVerification(frontend), server)
    pb_grpc.add_BulkVerificationServicer_to_server(BulkVerification(frontend), server)
    checker = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    for name in ("", *SERVICES):
        checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_secure_port(address, tls.credentials())
    if port == 0:
        raise InvalidInput(f"cannot listen on {address}")
    server.start()
    return Server(server, port, frontend, checker)


def serve_forever(server: Server, policy_path: str | Path) -> None:
    """Block until SIGTERM or SIGINT, then stop gracefully; SIGHUP reloads the policy."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGHUP, lambda *_: server.frontend.reload(policy_path))
    while not stopping.wait(0.5):
        pass
    log.info("shutting down: finishing calls in flight")
    server.stop()
    log.info("stopped")
