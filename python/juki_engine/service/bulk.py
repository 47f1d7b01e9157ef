"""The columnar streaming API (`BulkVerificationService`): a job's claims (`VerifyStream`) or
4情報 facts (`SearchStream`) stream in as Arrow IPC messages, results stream out in order, each
message authorized against the policy and the trust store in force when it arrives."""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.compute as pc

from juki_engine._core import Claims, InvalidInput
from juki_engine._proto import registry_pb2 as pb
from juki_engine._proto import registry_pb2_grpc as pb_grpc
from juki_engine.service.frontend import Answer, Call, Frontend, Refused, ServerBusy, bounded
from juki_engine.service.wire import (
    KEY_NAMES,
    SEARCH_REQUIRED,
    ResultStream,
    column_of,
    echo,
    read_claims,
)

log = logging.getLogger("juki.server")

# Bulk results waiting for their audit commit while the next batch is computed.
PIPELINE_DEPTH = 4
# Threads answering bulk messages, shared by all streams.
BULK_WORKERS = 2
# Bulk jobs one server runs at once; each holds a server thread for its whole life.
MAX_BULK_JOBS = 4
# Bytes of results in one response, well inside grpc's message limit (MAX_MESSAGE_BYTES).
RESPONSE_BYTES = 4 << 20


class JobSlots:
    """A limit on concurrent bulk jobs, so they can never take every server thread."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self.running = 0
        """Bulk jobs running now."""

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            if self.running >= self.limit:
                raise ServerBusy(f"{self.limit} bulk jobs are running, the most this server takes")
            self.running += 1
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1


class BulkVerificationService(pb_grpc.BulkVerificationServiceServicer):
    def __init__(self, frontend: Frontend, max_jobs: int = MAX_BULK_JOBS) -> None:
        self.frontend = frontend
        self.slots = JobSlots(max_jobs)
        # Bulk messages in flight, answered while the stream handlers read and send.
        self.pool = futures.ThreadPoolExecutor(BULK_WORKERS, thread_name_prefix="juki-bulk")

    def VerifyStream(
        self, request_iterator: Iterator[pb.VerifyStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.VerifyStreamResponse]:
        f = self.frontend
        call = Call("verify")
        with f.guard(context, call):
            first = next(request_iterator, None)
            if first is not None and first.WhichOneof("body") == "header":
                call.request = first.header.context
                call.mode = "retrieve" if first.header.retrieve_fields else "verify"
                call.fields = tuple(first.header.retrieve_fields)
            agency = f.identify(context, call)
            if first is None or first.WhichOneof("body") != "header":
                raise InvalidInput("message 0: a bulk job starts with a VerifyStreamHeader")
            header = first.header
            if header.key not in KEY_NAMES:
                raise InvalidInput("header.key: set KEY_KIND_MY_NUMBER or KEY_KIND_RESIDENT_CODE")
            by = KEY_NAMES[header.key]
            retrieve = list(header.retrieve_fields)
            # Refuse what the header alone already rules out before any claim arrives.
            f.authorize(call, agency, header.context, by, (), retrieve, header.match_level)
            handler = functools.partial(self._message, call, header, by, retrieve)
            yield from self._job(
                handler, request_iterator, "claims", {by: "the key"}, pb.VerifyStreamResponse
            )

    def SearchStream(
        self, request_iterator: Iterator[pb.SearchStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.SearchStreamResponse]:
        f = self.frontend
        call = Call("search")
        with f.guard(context, call):
            first = next(request_iterator, None)
            if first is not None and first.WhichOneof("body") == "header":
                call.request = first.header.context
                call.fields = tuple(first.header.fields)
            agency = f.identify(context, call)
            if first is None or first.WhichOneof("body") != "header":
                raise InvalidInput("message 0: a bulk search starts with a SearchStreamHeader")
            header = first.header
            affair = agency.affairs.get(header.context.affair)
            fields = list(header.fields) or (list(affair.fields) if affair else [])
            # Refuse what the header alone already rules out before any facts arrive.
            f.authorize_search(call, agency, header.context, (), fields, header.match_level)
            handler = functools.partial(self._search_message, call, header, fields)
            required = {name: "a fact every search needs" for name in SEARCH_REQUIRED}
            yield from self._job(
                handler, request_iterator, "facts", required, pb.SearchStreamResponse
            )

    def _job(
        self,
        handler: Callable[[int, Claims, int], Answer],
        requests: Iterator[Any],
        body: str,
        required: dict[str, str],
        response: Any,
    ) -> Iterator[Any]:
        """Run one bulk job in a job slot: its messages answered by `handler` (see `_BulkJob`),
        the answers sent in order as `response`s once durable."""
        with self.slots.held():
            job = _BulkJob(self.pool, handler, requests, body, required)
            stream = ResultStream()
            try:
                while (answer := job.next_answer()) is not None:
                    yield from _bulk_responses(
                        answer, stream, self.frontend.audit_timeout, response
                    )
            finally:
                job.stop()

    def _search_message(
        self,
        call: Call,
        header: pb.SearchStreamHeader,
        fields: list[str],
        n: int,
        facts: Claims,
        first_row: int,
    ) -> Answer:
        """Identify, authorize, search and audit one facts message; log one line."""
        f = self.frontend
        started = time.perf_counter()
        try:
            agency = f.agency_of(call)
            grant = f.authorize_search(
                call, agency, header.context, facts.column_names, fields, header.match_level
            )
            answer = f.answer_search(grant, header.context, facts.to_arrow(), first_row)
        except Exception as e:
            raise Refused(e, pa.nulls(facts.num_rows, pa.string())) from e
        ms = (time.perf_counter() - started) * 1e3
        request_id = bounded(header.context.request_id)
        log.info(
            "%s %s request=%s search message=%d rows=%d results=%d %.1f ms",
            agency.code,
            grant.affair.code,
            echo(request_id),
            n,
            facts.num_rows,
            answer.results.num_rows,
            ms,
            extra={
                "agency": agency.code,
                "affair": grant.affair.code,
                "request_id": request_id,
                "mode": "search",
                "message_number": n,
                "rows": facts.num_rows,
                "results": answer.results.num_rows,
                "ms": round(ms, 3),
            },
        )
        return answer

    def _message(
        self,
        call: Call,
        header: pb.VerifyStreamHeader,
        by: str,
        retrieve: list[str],
        n: int,
        claims: Claims,
        first_row: int,
    ) -> Answer:
        """Identify, authorize, answer and audit one claims message; log one line. A refusal
        carries the message's subjects, so its records name the residents it concerned."""
        f = self.frontend
        started = time.perf_counter()
        request = header.context
        claimed = [c for c in claims.column_names if c != by]
        try:
            # The policy and revocations in force now: a revoked agency stops here.
            agency = f.agency_of(call)
            grant = f.authorize(call, agency, request, by, claimed, retrieve, header.match_level)
            answer = f.answer(grant, request, by, claims, first_row)
        except Exception as e:
            raise Refused(e, f.subjects_of(by, column_of(claims, by).combine_chunks())) from e
        ms = (time.perf_counter() - started) * 1e3
        found = pc.sum(answer.results["found"]).as_py() or 0
        request_id = bounded(request.request_id)
        log.info(
            "%s %s request=%s message=%d rows=%d found=%d %.1f ms",
            agency.code,
            grant.affair.code,
            echo(request_id),
            n,
            claims.num_rows,
            found,
            ms,
            extra={
                "agency": agency.code,
                "affair": grant.affair.code,
                "request_id": request_id,
                "mode": grant.audit_mode,
                "message_number": n,
                "rows": claims.num_rows,
                "found": found,
                "ms": round(ms, 3),
            },
        )
        return answer


class _BulkJob:
    """One bulk call's messages, read by a thread of their own.

    The reader takes each message off the wire as soon as it arrives and hands it to the shared
    pool (`handler(n, table, first_row)` answers it), up to PIPELINE_DEPTH messages ahead of the
    replies, while the call's own thread sends the replies in order, so receiving, answering
    and sending overlap. `body` names the messages' table field (claims, facts); `required`
    the columns every message must have, each with what it is.
    """

    def __init__(
        self,
        pool: futures.ThreadPoolExecutor,
        handler: Callable[[int, Claims, int], Answer],
        requests: Iterator[Any],
        body: str,
        required: dict[str, str],
    ) -> None:
        self._pool = pool
        self._handler = handler
        self._requests = requests
        self._body = body
        self._required = required
        # Futures of answers in message order; then None (the end) or the error that ended it.
        self._answers: queue.Queue[futures.Future[Answer] | BaseException | None] = queue.Queue()
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
        if isinstance(item, BaseException):
            raise item
        answer = item.result()
        self._room.release()
        return answer

    def stop(self) -> None:
        """End the job early or late: the reader stops taking messages; answers computed but
        not sent are withdrawn from the audit trail where their records are not yet written."""
        self._stopped.set()
        self._room.release()  # wake a reader waiting for room
        while True:
            try:
                item = self._answers.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, futures.Future) and not item.cancel():
                try:
                    item.result().withdraw("the job ended before this reply was sent")
                except Exception:
                    pass

    def _read(self) -> None:
        body = self._body
        row = 0
        columns: list[str] | None = None
        try:
            for n, message in enumerate(self._requests, start=1):
                if message.WhichOneof("body") != body:
                    raise InvalidInput(f"message {n}: only the first message is a header")
                table = read_claims(getattr(message, body), n)
                for name, what in self._required.items():
                    if name not in table.column_names:
                        raise InvalidInput(f"message {n}: {body} have no '{name}' column ({what})")
                if columns is None:
                    columns = table.column_names
                elif table.column_names != columns:
                    raise InvalidInput(
                        f"message {n}: columns {[echo(c) for c in table.column_names]} differ "
                        f"from the job's first {body} {[echo(c) for c in columns]}"
                    )
                self._room.acquire()
                if self._stopped.is_set():
                    return
                # Answered on the shared pool, several messages at a time (the core releases
                # the GIL); the replies leave in order once their audit records are durable.
                self._answers.put(self._pool.submit(self._handler, n, table, row))
                row += table.num_rows
            self._answers.put(None)
        except grpc.RpcError:
            self._answers.put(None)  # the call ended (cancelled); the sender sees it too
        except BaseException as e:  # bad claims, or a fault: the sender raises it in its call
            self._answers.put(e)


def _bulk_responses(
    answer: Answer, stream: ResultStream, timeout: float, response: Any
) -> Iterator[Any]:
    """One message's results, once durable, as responses of at most RESPONSE_BYTES each: the
    bytes of one record batch of the job's stream may span several responses (a message of a
    million rejected keys has a long `error` column), which the client reads as one stream."""
    part = stream.part(answer.released(timeout))
    if len(part) <= RESPONSE_BYTES:  # the common case: one response, no copy
        yield response(first_row=answer.first_row, results=part)
        return
    view = memoryview(part)
    for start in range(0, len(part), RESPONSE_BYTES):
        yield response(
            first_row=answer.first_row, results=bytes(view[start : start + RESPONSE_BYTES])
        )
