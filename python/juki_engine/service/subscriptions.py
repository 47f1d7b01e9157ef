"""`SubscriptionService`: an agency whose affair the policy grants the subscribe mode keeps a
watch list of residents (`Watch`) and is sent their changes (`StreamChanges`) — only changes of
the reasons the policy lists (and the cancels of such changes), only the fields the affair may
disclose, in order, again until acknowledged (`AcknowledgeChanges`).

A subscription is the pair (agency, affair): its watch list is a bitmap over the registry's
person ids, which follow a resident through every change of identifier; watching costs nothing
when changes are applied (the feed is read from the subscription's cursor when it is streamed).
Every change sent is a disclosure: audited before it leaves, and counted against the affair's
daily quota once (a change sent again, not acknowledged, is audited `redelivered` and not counted
again). When the quota is spent the stream ends RESOURCE_EXHAUSTED after what it could send;
nothing is dropped: the next stream starts after the last acknowledged change.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import grpc
import numpy as np
import pyarrow as pa

from juki_engine._core import InvalidInput
from juki_engine._proto import changes_pb2 as cpb
from juki_engine._proto import changes_pb2_grpc as cpb_grpc
from juki_engine._proto import registry_pb2 as pb
from juki_engine.audit import AuditContext
from juki_engine.policy import Grant, QuotaExhausted
from juki_engine.registry import Registry, scanned_through
from juki_engine.service.acknowledgements import WatchLists
from juki_engine.service.bulk import JobSlots
from juki_engine.service.frontend import Call, Frontend, settle, until_cancelled
from juki_engine.service.notices import FOLLOW_POLL_S, MAX_FOLLOWERS
from juki_engine.service.verification import resident_message
from juki_engine.service.wire import KEY_NAMES, check_text, column_of, read_claims

# Changes read, audited and sent per round.
CHANGE_BATCH = 500
_SCHEMA_ORDER = {name: i for i, name in enumerate(Registry.column_names())}


def subscription_name(agency: str, affair: str) -> str:
    """The file name of the subscription (agency, affair): a digest, never a client string."""
    return hashlib.sha256(f"{agency}\0{affair}".encode()).hexdigest()[:40]


def _sent_name(name: str) -> str:
    """Where the highest change ever sent to a subscription is kept (what its quota counted)."""
    return f"{name}s"


class SubscriptionService(cpb_grpc.SubscriptionServiceServicer):
    def __init__(self, frontend: Frontend, max_followers: int = MAX_FOLLOWERS) -> None:
        self.frontend = frontend
        self.followers = JobSlots(max_followers)

    def Watch(
        self, request_iterator: Iterator[cpb.WatchRequest], context: grpc.ServicerContext
    ) -> cpb.WatchResponse:
        f = self.frontend
        call = Call("watch")
        with f.guard(context, call):
            messages = until_cancelled(request_iterator)
            first = next(messages, None)
            header = first.header if first is not None else cpb.WatchHeader()
            call.request = header.context
            agency = f.identify(context, call)
            if first is None or first.WhichOneof("body") != "header":
                raise InvalidInput("message 0: a watch list starts with a WatchHeader")
            _check_context(header.context)
            if header.key not in KEY_NAMES:
                raise InvalidInput("header.key: set KEY_KIND_MY_NUMBER or KEY_KIND_RESIDENT_CODE")
            by = KEY_NAMES[header.key]
            call.fields = (by,)
            f.policy.authorize_subscription(agency, header.context.affair, by)
            lists = _lists(f)
            persons: list[np.ndarray] = []
            not_found = invalid = 0
            for i, message in enumerate(messages, start=1):
                # Under the policy and trust in force when each message arrives.
                f.policy.authorize_subscription(f.agency_of(call), header.context.affair, by)
                if message.WhichOneof("body") != "keys":
                    raise InvalidInput(f"message {i}: a watch list's later messages hold keys")
                claims = read_claims(message.keys, i)
                if claims.to_arrow().column_names != [by]:
                    raise InvalidInput(f"message {i}: one column of keys, named {by}")
                keys = column_of(claims, by)
                named = f.registry._persons(keys, by)
                found = named["person"].combine_chunks()
                invalid += len(keys) - named["valid"].combine_chunks().true_count
                not_found += found.null_count
                persons.append(found.drop_null().to_numpy())
            watched = np.concatenate(persons) if persons else np.zeros(0, np.uint32)
            not_found -= invalid
            name = subscription_name(agency.code, header.context.affair)
            changed, total = lists.update(name, watched.astype(np.uint32), header.remove)
            ctx = AuditContext(
                agency.code,
                header.context.operator_id,
                header.context.request_id,
                header.context.affair,
                "watch",
                (by,),
            )
            reason = f"{'removed' if header.remove else 'added'} {changed}, watching {total}"
            f.audit.record(ctx, pa.nulls(1, pa.string()), "applied", reason)
            call.recorded = True
            return cpb.WatchResponse(
                changed=changed, not_found=not_found, invalid=invalid, watched=total
            )

    def StreamChanges(
        self, request: cpb.StreamChangesRequest, context: grpc.ServicerContext
    ) -> Iterator[cpb.StreamChangesResponse]:
        f = self.frontend
        call = Call("subscribe", request=request.context)
        with f.guard(context, call), ExitStack() as held:
            agency = f.identify(context, call)
            _check_context(request.context)
            affair = request.context.affair
            grant = f.policy.authorize_subscription(agency, affair)
            call.fields = grant.fields
            lists = _lists(f)
            name = subscription_name(agency.code, affair)
            after = request.after if request.HasField("after") else lists.get(name)
            if request.follow:
                held.enter_context(self.followers.held())
            while context.is_active():
                # The policy and trust in force now: a revoked certificate or a narrowed
                # affair stops (or masks) the stream from here on.
                grant = f.policy.authorize_subscription(f.agency_of(call), affair)
                changes = f.registry._watched_changes(
                    lists.watch(name), sorted(grant.affair.subscribe_reasons), after, CHANGE_BATCH
                )
                # What this read examined, the subscription's or not: where the next one starts
                # once all of it has been sent, so a quiet subscription does not scan the same
                # tail at every wake-up.
                scanned = scanned_through(changes)
                if changes.num_rows:
                    read = changes.num_rows
                    changes = self._counted(grant, lists, name, changes)
                    rows = changes.to_pylist()
                    messages = [change_message(row, grant) for row in rows]
                    # Audited before anything leaves: first deliveries, then redeliveries.
                    sent = lists.get(_sent_name(name))
                    first = [r["resident_code"] for r in rows if r["change"] > sent]
                    again = [r["resident_code"] for r in rows if r["change"] <= sent]
                    ctx = AuditContext(
                        agency.code,
                        request.context.operator_id,
                        request.context.request_id,
                        affair,
                        "subscribe",
                        grant.fields,
                    )
                    for subjects, outcome in ((first, "disclosed"), (again, "redelivered")):
                        if subjects:
                            commit = f.audited(ctx, pa.array(subjects, pa.string()), outcome)
                            settle(f.audit, commit, f.audit_timeout)
                    lists.advance(_sent_name(name), messages[-1].change)
                    yield from messages
                    after = scanned if len(messages) == read else messages[-1].change
                    continue
                after = max(after, scanned)
                if not request.follow:
                    return
                with f.changed:
                    f.changed.wait(FOLLOW_POLL_S)

    def _counted(self, grant: Grant, lists: WatchLists, name: str, changes: pa.Table) -> pa.Table:
        """The changes of this round the daily quota allows: redeliveries always (their first
        delivery was counted), first deliveries while the quota lasts, each taken from it.
        QuotaExhausted once nothing more may be sent today."""
        sent = lists.get(_sent_name(name))
        numbers = changes["change"].to_numpy()
        new = numbers > sent
        limit = grant.affair.daily_quota
        if limit:
            left = max(0, limit - self.frontend.quotas.used(grant.agency.code, grant.affair.code))
            allowed = np.cumsum(new) <= left
            changes = changes.filter(pa.array(allowed))
            new = new[allowed]
            if not changes.num_rows:
                raise QuotaExhausted(
                    f"affair '{grant.affair.code}' of agency '{grant.agency.code}': the daily "
                    f"quota of {limit:,} records is spent; changes wait, none is dropped"
                )
        self.frontend.quotas.take(grant, int(new.sum()))
        return changes

    def AcknowledgeChanges(
        self, request: cpb.AcknowledgeChangesRequest, context: grpc.ServicerContext
    ) -> cpb.AcknowledgeChangesResponse:
        f = self.frontend
        call = Call("subscribe", request=request.context)
        with f.guard(context, call):
            agency = f.identify(context, call)
            _check_context(request.context)
            f.policy.authorize_subscription(agency, request.context.affair)
            lists = _lists(f)
            name = subscription_name(agency.code, request.context.affair)
            if request.through > lists.get(_sent_name(name)):
                raise InvalidInput(
                    f"through {request.through} is after the last change sent to this "
                    "subscription: only changes received can be acknowledged"
                )
            acknowledged = lists.advance(name, request.through)
            call.recorded = True  # an acknowledgement discloses nothing: only refusals are audited
            return cpb.AcknowledgeChangesResponse(acknowledged=acknowledged)


def _lists(f: Frontend) -> WatchLists:
    if f.subscriptions is None:
        raise InvalidInput("this server keeps no subscription state (serve a snapshot)")
    return f.subscriptions


def _check_context(context: pb.RequestContext) -> None:
    check_text(context.operator_id, "context.operator_id")
    check_text(context.request_id, "context.request_id")
    check_text(context.affair, "context.affair")


def change_message(row: dict[str, Any], grant: Grant) -> cpb.StreamChangesResponse:
    """One row of `Registry._watched_changes` as its message, masked to the grant's fields."""
    allowed = set(grant.fields)
    values = {p["field"]: p["value"] for p in row["fields"] if p["field"] in allowed}
    named = sorted(values, key=lambda f: _SCHEMA_ORDER.get(f, len(_SCHEMA_ORDER)))
    for key in ("resident_code", "my_number"):
        if key in allowed:
            values.setdefault(key, row[key])
    recorded: dt.datetime = row["recorded_at"]
    return cpb.StreamChangesResponse(
        change=row["change"],
        reason=row["reason"],
        cancels=row["cancels"] or 0,
        resident=resident_message(values, list(values)),
        fields=named,
        effective_date=row["effective_date"].isoformat(),
        reported_date=row["reported_date"].isoformat(),
        recorded_at=recorded.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
    )
