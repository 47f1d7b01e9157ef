"""What every service shares: the registry, the policy (swapped on reload), the trust store,
quotas and the audit trail, and the one discipline every call follows.

A call goes the same way whatever the service: the caller is identified by its client
certificate → the request's strings are checked against the contract's limits → the policy
grants (or refuses) the affair, key, mode and fields → the quota is reserved → the Rust core
answers (GIL released) → every record is audited, durably, before the reply leaves → the reply
holds only what the policy allows. `Frontend.guard` closes every call: a refusal or a fault is
audited (one record per subject, or one for the call) and answered with one status; nothing
raised beneath it escapes as UNKNOWN or a traceback.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from juki_engine import _core
from juki_engine._core import Claims, InvalidIdentifier, InvalidInput, JukiError
from juki_engine._proto import registry_pb2 as pb
from juki_engine.audit import (
    OPERATOR,
    OUTCOMES,
    RESIDENT,
    AuditContext,
    AuditTrail,
    AuditUnavailable,
    Commit,
    counts_since,
)
from juki_engine.distributed.cluster import NotSharded, ShardedRegistry, ShardUnavailable
from juki_engine.policy import (
    Agency,
    Grant,
    Municipality,
    NotPermitted,
    Policy,
    PolicyError,
    QuotaExhausted,
    Quotas,
    start_of_today,
)
from juki_engine.registry import Registry
from juki_engine.service.acknowledgements import Acknowledgements, WatchLists
from juki_engine.service.identity import (
    BINDINGS,
    PeerCertificate,
    ResidentAuthority,
    ResidentBindings,
    TrustStore,
)
from juki_engine.service.metrics import Metrics
from juki_engine.service.wire import (
    MAX_TEXT_CHARS,
    check_facts,
    check_fields,
    check_text,
    column_of,
    match_level,
)

log = logging.getLogger("juki.server")

# Audit records are kept seven years (by the day, with leap days).
RETENTION_DAYS = 7 * 366
# How long a reply waits for its audit records to be durable before it answers UNAVAILABLE.
AUDIT_TIMEOUT_S = 10.0
# Characters of a status message: far inside grpc's metadata limit, whatever it names.
MAX_STATUS_CHARS = 1024


class ServerBusy(JukiError):
    """The server is at a configured capacity (e.g. concurrent bulk jobs); retry later."""


# One gRPC status per class of error; the first class in an error's MRO that is listed wins.
STATUS_CODES: dict[type[BaseException], grpc.StatusCode] = {
    NotPermitted: grpc.StatusCode.PERMISSION_DENIED,
    QuotaExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ServerBusy: grpc.StatusCode.RESOURCE_EXHAUSTED,
    _core.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    InvalidIdentifier: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    AuditUnavailable: grpc.StatusCode.UNAVAILABLE,
    _core.SnapshotIOError: grpc.StatusCode.UNAVAILABLE,
    ShardUnavailable: grpc.StatusCode.UNAVAILABLE,
    NotSharded: grpc.StatusCode.UNIMPLEMENTED,
}
# The audit outcome of a call refused with each status.
_REFUSALS = {
    grpc.StatusCode.PERMISSION_DENIED: "denied",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_request",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.INTERNAL: "failed",
}


def status_code(error: BaseException) -> grpc.StatusCode:
    """The one gRPC status each class of error maps to; INTERNAL for anything unexpected."""
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL


class Refused(Exception):
    """A refusal whose audit records name the subjects it concerned (a bulk message's keys)."""

    def __init__(self, error: BaseException, subjects: pa.Array) -> None:
        super().__init__(str(error))
        self.error = error
        self.subjects = subjects


@dataclass(slots=True)
class Call:
    """One RPC as its audit records will describe it, filled in as the call learns it."""

    mode: str
    """The mode the RPC asks for (one of `audit.MODES`)."""
    caller: str = "unidentified"
    """The agency code, or what was known of a caller no agency matched."""
    request: pb.RequestContext | None = None
    fields: tuple[str, ...] = ()
    peer: PeerCertificate | None = None
    recorded: bool = False
    """The call's answer is in the trail already (a typed call's one record)."""

    def context(self) -> AuditContext:
        operator, request_id, affair = ("", "", "")
        if self.request is not None:
            operator, request_id, affair = (
                bounded(self.request.operator_id),
                bounded(self.request.request_id),
                bounded(self.request.affair),
            )
        fields = tuple(bounded(f).replace(",", "_") for f in self.fields)
        return AuditContext(self.caller, operator, request_id, affair, self.mode, fields)


def bounded(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """A client-influenced string as a record or status keeps it: cut at `limit`."""
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True, slots=True)
class Answer:
    """The reply to one batch of claims, and the audit commit it must wait for."""

    first_row: int
    results: pa.Table
    commit: Commit
    audit: AuditTrail = field(repr=False)

    def released(self, timeout: float = AUDIT_TIMEOUT_S) -> pa.Table:
        """The results, once their audit records are durable (see `settle`)."""
        settle(self.audit, self.commit, timeout)
        return self.results

    def withdraw(self, reason: str) -> None:
        """This reply will not leave (see `withdraw`)."""
        withdraw(self.audit, self.commit, reason)


def until_cancelled(messages: Iterator[Any]) -> Iterator[Any]:
    """A client stream's messages until it ends, or until the client cancels it: a cancelled
    stream ends quietly (what was answered so far was durable and audited; the message in
    flight, if any, is done and audited and its answer has no one to go to), not as a fault."""
    try:
        yield from messages
    except grpc.RpcError:
        return


def settle(audit: AuditTrail, commit: Commit, timeout: float) -> None:
    """Wait for a reply's audit records to be durable; AuditUnavailable if they are not within
    `timeout` seconds, the records then rewritten as `unavailable` (see `withdraw`)."""
    try:
        commit.wait(timeout)
    except AuditUnavailable as e:
        withdraw(audit, commit, str(e))
        raise


def withdraw(audit: AuditTrail, commit: Commit, reason: str) -> None:
    """A reply will not leave: its records say `unavailable` where the writer has not taken
    them yet; the log says so where it has."""
    if not audit.withdraw(commit, "unavailable", reason):
        log.error("records of a reply not sent were already written as answered: %s", reason)


class Frontend:
    """What the services share: registry, policy (swapped on reload), trust, quotas, audit."""

    def __init__(
        self,
        registry: Registry | ShardedRegistry,
        policy: Policy,
        audit: AuditTrail,
        quotas: Quotas | None = None,
        trust: TrustStore | None = None,
        audit_timeout: float = AUDIT_TIMEOUT_S,
        acknowledgements: Acknowledgements | None = None,
        subscriptions: WatchLists | None = None,
        resident_bindings: ResidentBindings | None = None,
    ) -> None:
        self.registry = registry
        self.policy = policy
        self.audit = audit
        self.quotas = quotas or Quotas()
        self.trust = trust
        self.audit_timeout = audit_timeout
        self.acknowledgements = acknowledgements
        """Each municipality's last acknowledged notice; None: notices are not served."""
        self.subscriptions = subscriptions
        """Agencies' watch lists and cursors; None: subscriptions are not served."""
        self.resident_bindings = resident_bindings
        """Which person each residents' certificate was issued to; None: no residents' view."""
        self.residents: ResidentAuthority | None = None
        """The residents' CA and those bindings, once the server trusts that CA."""
        self.metrics: Metrics | None = None
        """What the server counts for Prometheus, once `start` serves it."""
        self.changed = threading.Condition()
        """Notified once changes submitted here are durable (notice streams wait on it)."""

    @classmethod
    def open(
        cls,
        registry: Registry | ShardedRegistry,
        policy_path: str | Path,
        audit_dir: str | Path,
        retention_days: int = RETENTION_DAYS,
        state_dir: str | Path | None = None,
        signing_key: Ed25519PrivateKey | None = None,
    ) -> Frontend:
        """Load the policy, open the audit trail (its checkpoints and manifest signed with
        `signing_key`) and restore today's quota use from it; with `state_dir` (the snapshot's
        directory, beside its change log), serve move-in notices and subscriptions, keeping
        their cursors (`notices/`) and watch lists (`subscriptions/`) there."""
        policy = Policy.load(policy_path)
        audit = AuditTrail(audit_dir, retention_days=retention_days, signing_key=signing_key)
        quotas = Quotas(counts_since(audit_dir, start_of_today()))
        if state_dir is None:
            return cls(registry, policy, audit, quotas)
        state = Path(state_dir)
        return cls(
            registry,
            policy,
            audit,
            quotas,
            acknowledgements=Acknowledgements(state / "notices"),
            subscriptions=WatchLists(state / "subscriptions"),
            resident_bindings=ResidentBindings(state / BINDINGS),
        )

    def reload(self, path: str | Path, by: str = "SIGHUP") -> None:
        """Load the policy (and the revocation list) again; a broken file leaves what is in
        force. Either way the reload is an operator record in the trail (`by` names who)."""
        context = AuditContext(OPERATOR, by, "", "policy", "reload", ())
        try:
            policy = Policy.load(path)
            if self.trust is not None:
                self.trust.check_policy(policy)
                self.trust.reload()
        except PolicyError as e:
            log.error("reload refused, keeping %s: %s", self.policy.source, e)
            self._record_operator(context, "rejected", f"kept {self.policy.source}: {e}")
            return
        self.policy = policy
        log.info("policy reloaded from %s: %d agencies", path, len(policy.agencies))
        self._record_operator(context, "applied", f"{path}: {len(policy.agencies)} agencies")

    def _record_operator(self, context: AuditContext, outcome: str, reason: str) -> None:
        try:
            self.audit.record(context, pa.nulls(1, pa.string()), outcome, reason)
        except AuditUnavailable as e:
            log.error("an operator's action could not be audited (%s): %s", e, reason)

    def audited(
        self,
        context: AuditContext,
        subjects: pa.Array,
        outcomes: str | pa.Array,
        reason: str | None = None,
        persons: pa.Array | None = None,
    ) -> Commit:
        """Append records of `subjects` (resident codes) to the trail, keyed on their person
        ids: `persons` where the caller has them from the same read, else looked up (a former
        code still names its person)."""
        if persons is None:
            persons = self.persons_of(subjects)
        commit = self.audit.append(context, subjects, outcomes, reason, persons)
        if self.metrics is not None:
            self.metrics.count(context, outcomes, len(subjects))
        return commit

    def persons_of(self, codes: pa.Array) -> pa.Array | None:
        """The person ids behind resident codes (null where none; None if none can be read)."""
        if isinstance(codes, pa.ChunkedArray):
            codes = codes.combine_chunks()
        if pa.types.is_null(codes.type) or codes.null_count == len(codes):
            return None
        try:
            return self.registry._persons(codes, "resident_code")["person"].combine_chunks()
        except JukiError:
            return None

    # -- the call discipline ------------------------------------------------------------------

    @contextmanager
    def guard(self, context: grpc.ServicerContext, call: Call) -> Iterator[None]:
        """Close the call: a refusal or fault raised inside is audited and answered with its one
        status (INTERNAL with an error id for faults; the id is in the log and the record)."""
        try:
            yield
        except Exception as raised:  # every refusal and fault ends here, with a status
            error: BaseException = raised
            subjects = None
            if isinstance(raised, Refused):
                error, subjects = raised.error, raised.subjects
            code = status_code(error)
            if code == grpc.StatusCode.INTERNAL:
                error_id = uuid.uuid4().hex[:12]
                ctx = call.context()
                log.error(
                    "internal error %s in %s call",
                    error_id,
                    call.caller,
                    exc_info=error,
                    extra={
                        "error_id": error_id,
                        "agency": ctx.agency,
                        "affair": ctx.affair,
                        "request_id": ctx.request_id,
                        "mode": ctx.mode,
                    },
                )
                message = f"internal error {error_id}"
            else:
                message = bounded(str(error), MAX_STATUS_CHARS)
            outcome = (
                "quota_exhausted"
                if isinstance(error, QuotaExhausted)
                else _REFUSALS.get(code, "unavailable")
            )
            if not call.recorded:
                self._record_refusal(call, subjects, outcome, message)
            _abort(context, code, message)

    def _record_refusal(
        self, call: Call, subjects: pa.Array | None, outcome: str, reason: str
    ) -> None:
        if subjects is None:
            subjects = pa.nulls(1, pa.string())
        try:
            self.audited(call.context(), subjects, outcome, reason).wait()
        except AuditUnavailable as e:
            log.error("a refusal could not be audited (%s): %s", e, reason)

    def identify(self, context: grpc.ServicerContext, call: Call) -> Agency:
        """The agency behind the call's client certificate under the policy in force now."""
        self._read_peer(context, call)
        return self.agency_of(call)

    def agency_of(self, call: Call) -> Agency:
        """`identify` again for a call whose certificate is known (every bulk message)."""
        peer = self._trusted_peer(call)
        agency = self.policy.agency_for(peer.subject, peer.issuer, peer.key_pin)
        call.caller = agency.code
        return agency

    def identify_municipality(self, context: grpc.ServicerContext, call: Call) -> Municipality:
        """The municipality behind the call's client certificate under the policy in force."""
        self._read_peer(context, call)
        return self.municipality_of(call)

    def municipality_of(self, call: Call) -> Municipality:
        """`identify_municipality` again for a call whose certificate is known (every message
        of a stream, so a revocation or a policy change stops it at its next message)."""
        peer = self._trusted_peer(call)
        municipality = self.policy.municipality_for(peer.subject, peer.issuer, peer.key_pin)
        call.caller = municipality.code
        return municipality

    def identify_resident(self, context: grpc.ServicerContext, call: Call) -> int:
        """The person behind the call's certificate: issued by the residents' CA, not revoked,
        bound by the engine to a person."""
        if self.residents is None:
            raise NotPermitted("this server has no residents' certificate authority")
        self._read_peer(context, call)
        peer = self._trusted_peer(call)
        if peer.issuer != self.residents.ca_fingerprint:
            raise NotPermitted("the residents' service answers residents' certificates only")
        person = self.residents.bindings.person_of(peer.fingerprint)
        if person is None:
            raise NotPermitted("this certificate is bound to no resident")
        call.caller = RESIDENT
        return person

    def _read_peer(self, context: grpc.ServicerContext, call: Call) -> None:
        """Read the call's certificate once, at its first identification."""
        if call.peer is None and self.trust is not None:
            call.peer = self.trust.peer(context)

    def _trusted_peer(self, call: Call) -> PeerCertificate:
        """The call's certificate, issued by a trusted CA and not revoked."""
        peer = call.peer
        if peer is None:
            raise NotPermitted("the call carries no client certificate")
        call.caller = f"unregistered: {bounded(peer.subject)}"
        assert self.trust is not None
        self.trust.check(peer)
        return peer

    def authorize(
        self,
        call: Call,
        agency: Agency,
        request: pb.RequestContext,
        by: str,
        claimed: Sequence[str],
        retrieve: Sequence[str],
        level: int = 0,
    ) -> Grant:
        """Check the request's strings and match level (a `MatchLevel`) against the contract,
        then against the policy."""
        _check_request(call, request, claimed, retrieve)
        check_fields(claimed, retrieve)
        return self.policy.authorize(
            agency, request.affair, by, claimed, retrieve, match_level(level)
        )

    def subjects_of(self, by: str, keys: pa.Array) -> pa.Array:
        """The resident codes behind a refused request's keys, for its audit records: null where
        a key names no resident, so the trail never holds a My Number or a client's raw key."""
        try:
            codes = self.registry.lookup(keys, by, columns=["resident_code"])["resident_code"]
        except JukiError:  # keys of no usable type: the refusal is still recorded, per row
            return pa.nulls(len(keys), pa.string())
        return codes.combine_chunks()

    @contextmanager
    def reserved(self, grant: Grant, records: int) -> Iterator[None]:
        """Reserve `records` of the grant's daily quota for the work inside; returned if it
        fails, so a refused or failed call costs nothing."""
        self.quotas.take(grant, records)
        try:
            yield
        except BaseException:
            self.quotas.give_back(grant, records)
            raise

    # -- answers ------------------------------------------------------------------------------

    def answer(
        self,
        grant: Grant,
        request: pb.RequestContext,
        by: str,
        claims: pa.Table | Claims,
        first_row: int,
    ) -> Answer:
        """Verify one batch under `grant` (its quota reserved first) and audit it."""
        keys = column_of(claims, by)
        # Keyed by resident code as text, each found key *is* the subject's code (the parser
        # accepts only the canonical 11 digits), which saves gathering and rendering the column.
        from_key = by == "resident_code" and _is_text(keys.type)
        retrieved = [c for c in grant.retrieved if c != "resident_code"]
        with self.reserved(grant, claims.num_rows):
            out = self.registry.verify(
                claims,
                by,
                first_row=first_row,
                columns=[*retrieved, "person"]
                if from_key
                else ["resident_code", *retrieved, "person"],
                match=grant.level,
            )
            if from_key:
                subjects = pc.if_else(out["found"], keys, pa.scalar(None, keys.type))
                out = out.append_column("resident_code", subjects)
            subjects = out["resident_code"].combine_chunks()
            results = out.select(_kept(grant))
            ctx = AuditContext(grant.agency.code, *_ids(request), grant.audit_mode, grant.fields)
            commit = self.audited(ctx, subjects, _outcomes(out), persons=out["person"])
        return Answer(first_row, results, commit, self.audit)

    def authorize_search(
        self,
        call: Call,
        agency: Agency,
        request: pb.RequestContext,
        facts: Sequence[str],
        fields: Sequence[str],
        level: int,
    ) -> Grant:
        """`authorize` for a 4情報 search: the request's strings and fields against the
        contract, then the policy's search grant. An unset level is the closest the affair
        allows up to normalised."""
        _check_request(call, request, facts, fields)
        if facts:  # a bulk job's header names no facts yet: its messages do
            check_facts(facts)
        check_fields((), fields)
        named = None if level == pb.MATCH_LEVEL_UNSPECIFIED else match_level(level)
        if named == "reading":
            raise InvalidInput("a 4情報 search compares names at the exact or normalised level")
        return self.policy.authorize_search(agency, request.affair, facts, fields, named)

    def answer_search(
        self, grant: Grant, request: pb.RequestContext, facts: pa.Table, first_row: int
    ) -> Answer:
        """Search one batch of facts under `grant` and audit it: per claim, the residents
        agreeing on every fact given (one `disclosed` record each), or, where none does, the
        partial candidates the affair allows (`search_partial_candidates`, most facts agreeing
        first; each `disclosed`), or else one row without a resident (`not_found`). Claims are
        numbered job-wide."""
        retrieved = [c for c in grant.retrieved if c != "resident_code"]
        out = self.registry.search(
            facts, match=grant.level, columns=["resident_code", *retrieved, "person"]
        )
        claim = out["claim"].to_numpy()
        starts = np.flatnonzero(np.r_[True, claim[1:] != claim[:-1]])
        rank = np.arange(len(claim)) - np.repeat(starts, np.diff(np.r_[starts, len(claim)]))
        candidates = out["candidates"].to_numpy()
        # The first `candidates` rows of a claim agree on every fact; where there are none, the
        # rows after are partial candidates (ranked), a row without one has no resident at all.
        partial = (candidates == 0) & (rank < grant.affair.search_partial_candidates)
        partial &= out["resident_code"].is_valid().to_numpy(zero_copy_only=False)
        found = (rank < candidates) | partial
        keep = found | (rank == 0)
        out = out.filter(pa.array(keep))
        found = pa.array(found[keep])
        hidden = pc.invert(found)
        shown = [
            pc.if_else(hidden, pa.scalar(None, out[c].type), out[c])
            for c in ("resident_code", *retrieved)
        ]
        results = pa.table(
            {
                "claim": pc.add(out["claim"].cast(pa.uint64()), first_row),
                "outcome": out["outcome"],
                "candidates": out["candidates"],
                "agreed": pc.if_else(hidden, pa.scalar(0, pa.uint8()), out["agreed"]),
                **dict(zip(("resident_code", *retrieved), shown, strict=True)),
            }
        ).select(["claim", "outcome", "candidates", "agreed", *grant.retrieved])
        with self.reserved(grant, results.num_rows):
            outcomes = pc.if_else(found, "disclosed", "not_found")
            ctx = AuditContext(grant.agency.code, *_ids(request), grant.audit_mode, grant.fields)
            persons = pc.if_else(hidden, pa.scalar(None, pa.uint32()), out["person"])
            commit = self.audited(ctx, shown[0].combine_chunks(), outcomes, persons=persons)
        return Answer(first_row, results, commit, self.audit)

    def answer_one(
        self,
        call: Call,
        grant: Grant,
        request: pb.RequestContext,
        by: str,
        key: str,
        claims: dict[str, str | int],
    ) -> dict[str, Any]:
        """A typed call's one result row, once its audit record is durable: `answer` for one
        claim, its bookkeeping done on Python values (Arrow compute calls on one-row arrays
        cost more than the check, BENCHMARKS.md)."""
        retrieved = [c for c in grant.retrieved if c != "resident_code"]
        with self.reserved(grant, 1):
            row = self.registry.verify_one(
                key, by, claims, columns=["resident_code", *retrieved, "person"], match=grant.level
            )
            if row["found"]:
                outcome = "disclosed"
            else:
                outcome = "not_found" if row["error"] is None else "invalid_key"
            kept = {name: row[name] for name in _kept(grant)}
            subjects = pa.array([row["resident_code"]], pa.string())
            persons = pa.array([row["person"]], pa.uint32())
            ctx = AuditContext(grant.agency.code, *_ids(request), grant.audit_mode, grant.fields)
            commit = self.audited(ctx, subjects, outcome, persons=persons)
            call.recorded = True
        settle(self.audit, commit, self.audit_timeout)
        return kept


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("grpc's abort returns only by raising")  # pragma: no cover


def _check_request(
    call: Call, request: pb.RequestContext, compared: Sequence[str], disclosed: Sequence[str]
) -> None:
    """Note the request on the call (what its audit records will say) and check its client
    strings against the contract's limits."""
    call.request = request
    call.fields = tuple(dict.fromkeys((*compared, *disclosed)))
    check_text(request.operator_id, "context.operator_id")
    check_text(request.request_id, "context.request_id")
    check_text(request.affair, "context.affair")
    for name in call.fields:
        check_text(name, "field name")


def _kept(grant: Grant) -> list[str]:
    """The result columns a grant lets the caller see: above the exact match level, each claimed
    field's level beside its match."""
    levels = grant.level != "exact"
    claimed = [
        column
        for c in grant.claimed
        for column in ((f"{c}_match", f"{c}_level") if levels else (f"{c}_match",))
    ]
    return ["found", "error", *claimed, *grant.retrieved]


def _is_text(t: pa.DataType) -> bool:
    """Keys whose found values can stand for the subjects as they are (pyarrow's `if_else` has
    no kernel for string views, which take the gathered column instead)."""
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _ids(request: pb.RequestContext) -> tuple[str, str, str]:
    return request.operator_id, request.request_id, request.affair


_OUTCOME_VALUES = pa.array(["disclosed", "not_found", "invalid_key"])
assert set(_OUTCOME_VALUES.to_pylist()) <= set(OUTCOMES)


def _outcomes(out: pa.Table) -> pa.DictionaryArray:
    """Per record: disclosed (found), invalid_key (rejected key) or not_found."""
    # On the bitmaps, without unpacking them to numpy: 1.9 ns a record against 4.4.
    invalid = out["error"].combine_chunks().is_valid()
    missed = pc.if_else(invalid, np.int8(2), np.int8(1))
    codes = pc.if_else(out["found"].combine_chunks(), np.int8(0), missed)
    return pa.DictionaryArray.from_arrays(codes, _OUTCOME_VALUES)
