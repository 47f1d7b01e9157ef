"""`NoticeService`: a municipality reads the move-in notices (転入通知) owed to it, in order, and
acknowledges them; a notice is sent again on every stream until it is acknowledged (at least
once, across restarts and crashes). The notices themselves are the registry's
(`Registry.notices`): created and made durable with the change that owes them.

Each notice sent is a disclosure of the resident who moved: it is audited, durably, before it
leaves. A municipality is only ever sent its own notices: the query is keyed by the
municipality its certificate names, never by anything the request says.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import grpc

from juki_engine._core import InvalidInput
from juki_engine._proto import changes_pb2 as cpb
from juki_engine._proto import changes_pb2_grpc as cpb_grpc
from juki_engine._proto import registry_pb2 as pb
from juki_engine.audit import AuditContext
from juki_engine.registry import scanned_through
from juki_engine.service.bulk import JobSlots
from juki_engine.service.frontend import Call, Frontend, settle
from juki_engine.service.wire import check_text

# Notices read, audited and sent per round.
NOTICE_BATCH = 500
# How long a following stream waits for a change before it looks again (changes applied in this
# process by other means than the service wake no one).
FOLLOW_POLL_S = 0.5
# Notice streams one server follows at once; each holds a server thread while it waits.
MAX_FOLLOWERS = 4
# The fields a notice discloses, as its audit records list them.
NOTICE_FIELDS = (
    "resident_code",
    "family_name",
    "family_name_kana",
    "given_name",
    "given_name_kana",
    "birth_date",
    "sex",
    "municipality_code",
    "municipality_name",
    "address_town",
    "address_block",
)


class NoticeService(cpb_grpc.NoticeServiceServicer):
    def __init__(self, frontend: Frontend, max_followers: int = MAX_FOLLOWERS) -> None:
        self.frontend = frontend
        self.followers = JobSlots(max_followers)

    def StreamNotices(
        self, request: cpb.StreamNoticesRequest, context: grpc.ServicerContext
    ) -> Iterator[cpb.StreamNoticesResponse]:
        f = self.frontend
        call = Call("notice", request=pb.RequestContext(operator_id=request.operator_id))
        with f.guard(context, call), ExitStack() as held:
            municipality = f.identify_municipality(context, call)
            check_text(request.operator_id, "operator_id")
            acks = _acknowledgements(f)
            after = request.after if request.HasField("after") else acks.get(municipality.code)
            if request.follow:
                held.enter_context(self.followers.held())
            ctx = AuditContext(
                municipality.code,
                request.operator_id,
                "",
                "move_in_notice",
                "notice",
                NOTICE_FIELDS,
            )
            while context.is_active():
                # The policy and trust in force now: a revoked certificate stops here.
                municipality = f.municipality_of(call)
                notices = f.registry.notices(municipality.code, after=after, limit=NOTICE_BATCH)
                # Next time after what this read examined, ours or not: a quiet municipality
                # does not scan the same tail at every wake-up.
                after = max(after, scanned_through(notices))
                if notices.num_rows:
                    commit = f.audited(ctx, notices["resident_code"], "disclosed")
                    settle(f.audit, commit, f.audit_timeout)
                    for row in notices.to_pylist():
                        yield notice_message(row)
                    continue
                if not request.follow:
                    return
                with f.changed:
                    f.changed.wait(FOLLOW_POLL_S)

    def AcknowledgeNotices(
        self, request: cpb.AcknowledgeNoticesRequest, context: grpc.ServicerContext
    ) -> cpb.AcknowledgeNoticesResponse:
        f = self.frontend
        call = Call("acknowledge")
        with f.guard(context, call):
            municipality = f.identify_municipality(context, call)
            acks = _acknowledgements(f)
            through = request.through
            if through > acks.get(municipality.code):
                # Only a number of a notice owed to this municipality: a typo must not skip
                # notices not yet sent.
                owed = f.registry.notices(municipality.code, after=through - 1, limit=1)
                if not owed.num_rows or owed["notice"][0].as_py() != through:
                    raise InvalidInput(
                        f"through {through} is not the number of a notice owed to municipality "
                        f"{municipality.code}"
                    )
            acknowledged = acks.advance(municipality.code, through)
            call.recorded = True  # an acknowledgement discloses nothing: only refusals are audited
            return cpb.AcknowledgeNoticesResponse(acknowledged=acknowledged)


def _acknowledgements(f: Frontend) -> Any:
    if f.acknowledgements is None:
        raise InvalidInput("this server keeps no notice state (serve a snapshot)")
    return f.acknowledgements


def notice_message(row: dict[str, Any]) -> cpb.StreamNoticesResponse:
    """One notice row of `Registry.notices` as its message."""
    resident = pb.Resident(
        resident_code=row["resident_code"],
        family_name=row["family_name"],
        family_name_kana=row["family_name_kana"],
        given_name=row["given_name"],
        given_name_kana=row["given_name_kana"],
        birth_date=row["birth_date"].isoformat(),
        sex=row["sex"],
        municipality_code=row["to_municipality_code"],
        municipality_name=row["to_municipality_name"],
        address_town=row["to_address_town"],
        address_block=row["to_address_block"],
    )
    recorded: dt.datetime = row["recorded_at"]
    return cpb.StreamNoticesResponse(
        notice=row["notice"],
        kind=row["kind"],
        resident=resident,
        from_municipality_code=row["from_municipality_code"],
        from_address_town=row["from_address_town"],
        from_address_block=row["from_address_block"],
        to_municipality_code=row["to_municipality_code"],
        to_municipality_name=row["to_municipality_name"],
        to_address_town=row["to_address_town"],
        to_address_block=row["to_address_block"],
        effective_date=row["effective_date"].isoformat(),
        reported_date=row["reported_date"].isoformat(),
        recorded_at=recorded.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
    )
