"""`ResidentService`: a resident reads their own 本人確認情報 and who looked at it (the seed's
情報連携記録; マイナポータル's やりとり履歴).

The caller is their client certificate, issued by the residents' CA (`juki certs --residents`,
standing in for the My Number card's 利用者証明用電子証明書). Which person a certificate was issued
to is the engine's record (`ResidentBindings`, beside the registry's change log), never anything
the request says: the history is keyed by that person id, so it follows the resident through a
new resident code or My Number. A request that names another resident's My Number is refused
(PERMISSION_DENIED) and audited against the resident it named.

The history shows agencies' and municipalities' accesses, newest first; an access under an affair
the policy withholds from residents for a period (`withheld_from_residents_days`) is left out
until the period has passed, and nothing in the reply says that one was. A resident's own reads
are audited (agency `resident`) but not shown back to them.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from juki_engine import ids
from juki_engine._core import InvalidIdentifier, InvalidInput
from juki_engine._proto import residents_pb2 as rpb
from juki_engine._proto import residents_pb2_grpc as rpb_grpc
from juki_engine.audit import OPERATOR, RESIDENT, AuditContext, records
from juki_engine.audit.query import history
from juki_engine.policy import NotPermitted, Policy
from juki_engine.registry import Registry
from juki_engine.service.frontend import Call, Frontend, settle
from juki_engine.service.verification import resident_message
from juki_engine.service.wire import check_text

PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# A date or a time without an offset in a request is Japan time: the residents' own.
JAPAN = zoneinfo.ZoneInfo("Asia/Tokyo")
_TOKEN_PREFIX = "v1:"


class ResidentService(rpb_grpc.ResidentServiceServicer):
    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend

    def GetMyRecord(
        self, request: rpb.GetMyRecordRequest, context: grpc.ServicerContext
    ) -> rpb.GetMyRecordResponse:
        f = self.frontend
        call = Call("resident")
        with f.guard(context, call):
            person = f.identify_resident(context, call)
            own = _own_record(f, call, person, request.my_number)
            fields = tuple(Registry.column_names())
            ctx = AuditContext(RESIDENT, "", "", "own_record", "resident", fields)
            commit = f.audited(
                ctx, pa.array([own["resident_code"]]), "disclosed", persons=_one(person)
            )
            settle(f.audit, commit, f.audit_timeout)
            return rpb.GetMyRecordResponse(resident=resident_message(own, fields))

    def ListMyAccesses(
        self, request: rpb.ListMyAccessesRequest, context: grpc.ServicerContext
    ) -> rpb.ListMyAccessesResponse:
        f = self.frontend
        call = Call("resident")
        with f.guard(context, call):
            person = f.identify_resident(context, call)
            own = _own_record(f, call, person, request.my_number)
            size = request.page_size or PAGE_SIZE
            if size > MAX_PAGE_SIZE:
                raise InvalidInput(f"page_size is {size}, at most {MAX_PAGE_SIZE}")
            since = _moment(request.since, "since")
            until = _moment(request.until, "until")
            now = records.clock()
            bound, offset = _page(request.page_token, now)
            # The first page fixes the newest access the listing shows: accesses recorded while
            # the resident pages on do not shift the pages.
            until_us = bound if until is None else min(bound, records.micros(until))
            # A period reaching before 1970 (or ending there) is clamped to the trail's times.
            since_us = 0 if since is None else min(max(records.micros(since), 0), until_us)
            trail = history(
                f.audit.directory,
                person,
                since=records.EPOCH + dt.timedelta(microseconds=since_us),
                until=records.EPOCH + dt.timedelta(microseconds=max(until_us, 0)),
            )
            shown = _shown(trail, f.policy, now)
            page = shown.slice(offset, size)
            ctx = AuditContext(RESIDENT, "", "", "access_history", "resident", ())
            commit = f.audited(
                ctx, pa.array([own["resident_code"]]), "disclosed", persons=_one(person)
            )
            settle(f.audit, commit, f.audit_timeout)
            more = offset + page.num_rows < shown.num_rows
            return rpb.ListMyAccessesResponse(
                accesses=_accesses(page, f.policy),
                next_page_token=f"{_TOKEN_PREFIX}{bound}:{offset + size}" if more else "",
            )


def _one(person: int) -> pa.Array:
    return pa.array([person], pa.uint32())


def _own_record(f: Frontend, call: Call, person: int, my_number: str) -> dict[str, object]:
    """The caller's record now; a request naming someone else's My Number is refused, and
    audited against the resident it named."""
    if my_number:
        check_text(my_number, "my_number")
        try:
            ids.validate("my_number", my_number)
        except InvalidIdentifier as e:
            raise InvalidInput(f"my_number: {e}") from e
        named = f.registry._persons([my_number], "my_number")["person"][0].as_py()
        if named != person:
            code = None
            if named is not None:
                code = f.registry._by_person([named], ["resident_code"])["resident_code"][0]
            ctx = AuditContext(RESIDENT, "", "", "own_record", "resident", ())
            reason = "a resident may read only their own record and history"
            f.audited(ctx, pa.array([code], pa.string()), "denied", reason).wait()
            call.recorded = True
            raise NotPermitted(reason)
    rows: list[dict[str, object]] = f.registry._by_person([person]).to_pylist()
    own = rows[0]
    if own["resident_code"] is None:
        raise NotPermitted("the resident this certificate was issued to has no record")
    return own


def _moment(text: str, where: str) -> dt.datetime | None:
    """A request's ISO 8601 date or time; a date is its start, and either without an offset
    is Japan time."""
    if not text:
        return None
    check_text(text, where)
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            return dt.datetime(day.year, day.month, day.day, tzinfo=JAPAN)
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{where}: {text!r} is not an ISO 8601 date or time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=JAPAN)


def _page(token: str, now_us: int) -> tuple[int, int]:
    """A page token's bound (the first page's newest time, never past now) and offset; for no
    token, a bound just past now and offset 0."""
    if not token:
        return now_us + 1, 0
    check_text(token, "page_token")
    bound, _, offset = token.removeprefix(_TOKEN_PREFIX).partition(":")
    numbers = (bound + offset).isascii() and bound.isdigit() and offset.isdigit()
    if not (token.startswith(_TOKEN_PREFIX) and numbers and 0 < int(bound) <= now_us + 1):
        raise InvalidInput("page_token is not one this service gave: start again without one")
    return int(bound), int(offset)


def _shown(trail: pa.Table, policy: Policy, now_us: int) -> pa.Table:
    """The accesses a resident is shown: agencies' and municipalities' (not their own reads,
    not operators'), less those an affair withholds until its period has passed."""
    keep = pc.invert(pc.is_in(trail["agency"], pa.array([RESIDENT, OPERATOR])))
    withheld = [
        (agency.code, affair.code, affair.withheld_from_residents_days)
        for agency in policy.agencies
        for affair in agency.affairs.values()
        if affair.withheld_from_residents_days
    ]
    if withheld and trail.num_rows:
        times = trail["time"].cast(pa.int64()).to_numpy()
        agencies = np.asarray(trail["agency"].to_pylist(), dtype=object)
        affairs = np.asarray(trail["affair"].to_pylist(), dtype=object)
        hidden = np.zeros(trail.num_rows, bool)
        for agency, affair, days in withheld:
            recent = times > now_us - days * records.DAY_US
            hidden |= (agencies == agency) & (affairs == affair) & recent
        keep = pc.and_(keep, pa.array(~hidden))
    return trail.filter(keep)


def _accesses(page: pa.Table, policy: Policy) -> list[rpb.Access]:
    """A page of records as the resident reads them: who (by name), under which affair (its
    title and legal basis, from the policy in force), what, when."""
    agencies = {agency.code: agency for agency in policy.agencies}
    names = {m.code: m.name for m in policy.municipalities}
    names.update((code, agency.name) for code, agency in agencies.items())
    out = []
    for row in page.to_pylist():
        agency = agencies.get(row["agency"])
        affair = agency.affairs.get(row["affair"]) if agency is not None else None
        fields = row["fields"] or ""
        out.append(
            rpb.Access(
                time=row["time"].astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                agency=row["agency"],
                agency_name=names.get(row["agency"], ""),
                affair=row["affair"],
                affair_title=affair.title if affair else "",
                legal_basis=affair.legal_basis if affair else "",
                mode=row["mode"],
                fields=fields.split(",") if fields else [],
                outcome=row["outcome"],
            )
        )
    return out
