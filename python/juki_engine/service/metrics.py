"""Prometheus metrics of a serving server, on an HTTP port of their own (`juki serve --metrics`).

What an operator watches, each from the one place it happens:

- `juki_records_total{agency,affair,mode,outcome}`: every audit record, counted where the front
  end appends it (`Frontend.audited`): calls and records by agency, affair, mode and outcome, and
  with `rate()` the bulk records a second;
- `juki_calls_total{method,code}` and `juki_call_duration_seconds{method}`: every RPC and its
  status, and the latency of typed (unary) calls, from a server interceptor;
- `juki_audit_commit_seconds`: how long replies wait for their audit records to be durable;
- at each scrape: quota used and remaining per agency and affair, the registry's residents,
  memory and changes applied, the move-in notices owed to each municipality and not yet
  acknowledged (`juki_notice_backlog`), the audit writer's state (`juki_audit_up`), and a
  sharded registry's replicas by shard and state (`juki_shard_replicas`).

A registry of its own per server (never the global one), so two servers in one process, or a
test's, never share counters.
"""

from __future__ import annotations

import time
import weakref
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from juki_engine._core import InvalidInput
from juki_engine.distributed.cluster import ShardedRegistry

if TYPE_CHECKING:
    from juki_engine.audit import AuditContext
    from juki_engine.service.frontend import Frontend

# Typed calls answer in a millisecond or so; bulk streams are not timed here.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The server's metrics: counters moved by the call path, gauges read at each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.records = Counter(
            "juki_records",
            "Audit records, by agency, affair, mode and outcome",
            ["agency", "affair", "mode", "outcome"],
            registry=self.registry,
        )
        self.calls = Counter(
            "juki_calls", "RPCs by method and status", ["method", "code"], registry=self.registry
        )
        self.call_seconds = Histogram(
            "juki_call_duration_seconds",
            "Latency of unary (typed) RPCs",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.audit_commit = Histogram(
            "juki_audit_commit_seconds",
            "How long a reply waited for its audit records to be durable",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._server: Any = None

    def count(self, context: AuditContext, outcomes: str | pa.Array, rows: int) -> None:
        """Count one audit append: `rows` records of one outcome, or one per row."""
        labels = (context.agency, context.affair, context.mode)
        if isinstance(outcomes, str):
            self.records.labels(*labels, outcomes).inc(rows)
            return
        if isinstance(outcomes, pa.ChunkedArray):
            outcomes = outcomes.combine_chunks()
        if pa.types.is_dictionary(outcomes.type):
            counts = pc.value_counts(outcomes.indices)
            names = outcomes.dictionary.to_pylist()
            for item in counts.to_pylist():
                self.records.labels(*labels, names[item["values"]]).inc(item["counts"])
            return
        for item in pc.value_counts(outcomes).to_pylist():
            self.records.labels(*labels, item["values"]).inc(item["counts"])

    def watch(self, frontend: Frontend) -> None:
        """Read the front end's quotas, registry and audit writer at each scrape."""
        self.registry.register(_Scraped(frontend))

    def serve(self, address: str) -> int:
        """Serve `/metrics` on `address` (HOST:PORT, port 0 picks one); the port bound."""
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            raise InvalidInput(f"metrics address {address!r} is not HOST:PORT")
        try:
            self._server, _ = start_http_server(
                int(port), addr=host or "127.0.0.1", registry=self.registry
            )
        except OSError as e:
            raise InvalidInput(
                f"cannot serve metrics on {address}: {e.strerror or e} (another server? give "
                "--metrics HOST:PORT, port 0 for any, or off)"
            ) from e
        return int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def interceptor(self) -> grpc.ServerInterceptor:
        return _Timing(self)


class _Scraped(Collector):
    """Gauges read from the server at each scrape, never kept."""

    def __init__(self, frontend: Frontend) -> None:
        # Weakly: the front end holds the metrics, and a cycle would keep the registry (and its
        # change log's lock) alive after the server stops, until a garbage collection.
        self._frontend = weakref.ref(frontend)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        f = self._frontend()
        if f is None:
            return
        used = GaugeMetricFamily(
            "juki_quota_used_records",
            "Records counted against today's quota (Japan time)",
            labels=["agency", "affair"],
        )
        left = GaugeMetricFamily(
            "juki_quota_remaining_records",
            "Records left of today's quota (affairs with a quota)",
            labels=["agency", "affair"],
        )
        counts = f.quotas.today()
        for agency in f.policy.agencies:
            for affair in agency.affairs.values():
                n = counts.get((agency.code, affair.code), 0)
                used.add_metric([agency.code, affair.code], n)
                if affair.daily_quota:
                    left.add_metric([agency.code, affair.code], max(affair.daily_quota - n, 0))
        yield used
        yield left
        registry = f.registry
        yield GaugeMetricFamily(
            "juki_registry_residents", "Rows of the registry served", value=len(registry)
        )
        yield GaugeMetricFamily(
            "juki_registry_memory_bytes",
            "Bytes held by the registry's columns and indexes",
            value=registry.memory_bytes,
        )
        yield GaugeMetricFamily(
            "juki_changes_applied",
            "Changes applied to the registry",
            value=registry.applied_changes,
        )
        if f.acknowledgements is not None and f.policy.municipalities:
            acked = {m.code: f.acknowledgements.get(m.code) for m in f.policy.municipalities}
            backlog = GaugeMetricFamily(
                "juki_notice_backlog",
                "Move-in notices owed to a municipality and not acknowledged yet",
                labels=["municipality"],
            )
            for code, owed in sorted(registry._notice_backlog(acked).items()):
                backlog.add_metric([code], owed)
            yield backlog
        if isinstance(registry, ShardedRegistry):
            replicas = GaugeMetricFamily(
                "juki_shard_replicas",
                "A sharded registry's replicas by shard and state (in_step; out: missed a "
                "batch or unreachable, caught up before the next; diverged: left out for good)",
                labels=["shard", "state"],
            )
            states = Tally((k, state) for k, _, state in registry.replica_states())
            for k in range(len(registry.replicas)):
                for state in ("in_step", "out", "diverged"):
                    replicas.add_metric([str(k), state], states[(k, state)])
            yield replicas
        yield GaugeMetricFamily(
            "juki_audit_up", "1 while the audit trail records, 0 once it failed closed",
            value=0 if f.audit.failed else 1,
        )  # fmt: skip


class _Timing(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types
    """Counts every RPC by method and status; times the unary ones."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            if handler is not None:
                self._metrics.calls.labels(handler_call_details.method, "started").inc()
            return handler
        method = handler_call_details.method
        inner = handler.unary_unary
        metrics = self._metrics

        def timed(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                return inner(request, context)
            finally:
                metrics.call_seconds.labels(method).observe(time.perf_counter() - started)
                code = context.code() or grpc.StatusCode.OK
                metrics.calls.labels(method, code.name).inc()

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
