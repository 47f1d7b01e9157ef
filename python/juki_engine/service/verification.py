"""The typed per-record API (`IdentityVerificationService`): Verify, Retrieve, Search (by the four
basic facts) and ListAffairs, one resident (or one search) a call, as ordinary clients ask."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import pyarrow as pa

from juki_engine._core import InvalidIdentifier, InvalidInput
from juki_engine._proto import registry_pb2 as pb
from juki_engine._proto import registry_pb2_grpc as pb_grpc
from juki_engine.names import LEVELS
from juki_engine.service.frontend import Call, Frontend
from juki_engine.service.wire import KEY_KINDS, MATCH_LEVEL_NAMES, MAX_TEXT_CHARS, echo


def _date(value: str | int) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput(f"facts.birth_date: {echo(value)} is not a date (YYYY-MM-DD)") from None


def _claims(claims: pb.Claims) -> dict[str, str | int]:
    """A typed call's claimed fields, in the message's field order."""
    out: dict[str, str | int] = {}
    for field, value in claims.ListFields():
        if field.name == "sex":
            out[field.name] = int(value)
            continue
        if len(value) > MAX_TEXT_CHARS:
            raise InvalidInput(
                f"claims.{field.name} is {len(value):,} characters, at most {MAX_TEXT_CHARS}"
            )
        out[field.name] = value
    return out


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
    "status": lambda v: pb.ResidentStatus.Value(f"RESIDENT_STATUS_{v.upper()}"),
    "card_state": lambda v: pb.CardState.Value(f"CARD_STATE_{v.upper()}"),
}


def resident_message(row: dict[str, Any], fields: Sequence[str]) -> pb.Resident:
    """A result row's `fields` as a `Resident` message (enums and dates as the contract has
    them; a null value stays unset)."""
    resident = pb.Resident()
    for field in fields:
        value = row[field]
        if value is None:
            continue
        if field in _ENUMS:
            value = _ENUMS[field](value)
        elif isinstance(value, dt.date):  # from Arrow (a search); typed rows carry ISO text
            value = value.isoformat()
        setattr(resident, field, value)
    return resident


def _level(agreed: str | None) -> str:
    """A field's `FieldMatch.level`: the level it agreed at (a verify above the exact level
    says), unset where it did not agree or the call asked at the exact level."""
    return MATCH_LEVEL_NAMES.get(agreed or "", "MATCH_LEVEL_UNSPECIFIED")


class IdentityVerificationService(pb_grpc.IdentityVerificationServiceServicer):
    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend

    def Verify(self, request: pb.VerifyRequest, context: grpc.ServicerContext) -> pb.VerifyResponse:
        f = self.frontend
        call = Call("verify", request=request.context)
        with f.guard(context, call):
            agency = f.identify(context, call)
            claims = _claims(request.claims)
            claimed = list(claims)
            by, key = _key(request.key)
            grant = f.authorize(call, agency, request.context, by, claimed, (), request.match_level)
            row = _single(f.answer_one(call, grant, request.context, by, key, claims), by)
            matches = [
                pb.FieldMatch(
                    field=c,
                    match=row[f"{c}_match"],
                    level=_level(row.get(f"{c}_level")),
                )
                for c in claimed
            ]
            return pb.VerifyResponse(found=row["found"], matches=matches if row["found"] else [])

    def Retrieve(
        self, request: pb.RetrieveRequest, context: grpc.ServicerContext
    ) -> pb.RetrieveResponse:
        f = self.frontend
        call = Call("retrieve", request=request.context, fields=tuple(request.fields))
        with f.guard(context, call):
            agency = f.identify(context, call)
            by, key = _key(request.key)
            affair = agency.affairs.get(request.context.affair)
            fields = list(request.fields) or (list(affair.fields) if affair else [])
            grant = f.authorize(call, agency, request.context, by, (), fields)
            row = _single(f.answer_one(call, grant, request.context, by, key, {}), by)
            if not row["found"]:
                return pb.RetrieveResponse(found=False)
            return pb.RetrieveResponse(
                found=True, resident=resident_message(row, grant.retrieved), fields=grant.retrieved
            )

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        f = self.frontend
        call = Call("search", request=request.context, fields=tuple(request.fields))
        with f.guard(context, call):
            agency = f.identify(context, call)
            facts = _claims(request.facts)
            affair = agency.affairs.get(request.context.affair)
            fields = list(request.fields) or (list(affair.fields) if affair else [])
            grant = f.authorize_search(
                call, agency, request.context, list(facts), fields, request.match_level
            )
            table = pa.table(
                {
                    name: [value] if name != "birth_date" else pa.array([_date(value)], pa.date32())
                    for name, value in facts.items()
                }
            )
            answer = f.answer_search(grant, request.context, table, 0)
            call.recorded = True
            results = answer.released(f.audit_timeout)
            # Every row disclosing a resident agrees on the names and birth date at least; on a
            # not_found claim these are the partial candidates the affair allows.
            found = [r for r in results.to_pylist() if r["agreed"] > 0]
            if results["outcome"][0].as_py() == "not_found":
                outcome = pb.SEARCH_OUTCOME_NOT_FOUND
            elif len(found) == 1:
                outcome = pb.SEARCH_OUTCOME_UNIQUE
            else:
                outcome = pb.SEARCH_OUTCOME_AMBIGUOUS
            return pb.SearchResponse(
                outcome=outcome,
                candidates=[
                    pb.SearchCandidate(
                        agreed=row["agreed"], resident=resident_message(row, grant.retrieved)
                    )
                    for row in found
                ],
                fields=grant.retrieved,
            )

    def ListAffairs(
        self, request: pb.ListAffairsRequest, context: grpc.ServicerContext
    ) -> pb.ListAffairsResponse:
        f = self.frontend
        call = Call("list_affairs")
        with f.guard(context, call):
            agency = f.identify(context, call)
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
                        match_levels=[
                            MATCH_LEVEL_NAMES[lv] for lv in LEVELS if lv in a.match_levels
                        ],
                    )
                    for a in agency.affairs.values()
                ],
            )
