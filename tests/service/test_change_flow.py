"""The change flow over a real server and real mutual TLS: municipalities submit changes
(`ChangeSubmissionService`) and read the move-in notices owed to them (`NoticeService`);
agencies subscribe to their residents' changes (`SubscriptionService`)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from calls import juki_serve, rpc_error, wait_for_port
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from juki_engine import Registry, audit, service
from juki_engine._proto import changes_pb2 as cpb
from juki_engine._proto import registry_pb2 as pb
from juki_engine.client import (
    AgencyTLS,
    acknowledge_notices,
    read_notices,
    stream_changes,
    submit_changes,
    watch,
)
from juki_engine.policy import Policy
from juki_engine.synthetic.changes import CHANGE_SCHEMA

TOYAMA, TAKAOKA, IMIZU = "162019", "162027", "162116"
D = dt.date
TODAY = dt.datetime.now(dt.UTC).date()
ADDRESS = {"address_town": "中央町", "address_block": "1-1"}

Row = dict[str, Any]


class Town:
    """A Toyama registry served by a server of its own, with its notice state."""

    def __init__(self, tmp: Path, pki: Path) -> None:
        self.registry = Registry.generate(population=4_000, seed=3, prefecture="富山県")
        self.rows = self.registry.to_arrow().to_pylist()
        self.frontend = service.Frontend.open(
            self.registry, pki / "policy.toml", tmp / "audit", state_dir=tmp
        )
        self.server = service.start(self.frontend, service.ServerTLS.in_directory(pki))
        self.pki = pki
        self.sequence = 0

    def channel(self, caller: str) -> grpc.Channel:
        tls = AgencyTLS.from_cert(self.pki / "agencies" / f"{caller}.pem")
        return tls.channel(f"127.0.0.1:{self.server.port}")

    def resident(self, municipality: str, i: int = 0) -> Row:
        found = [
            r
            for r in self.rows
            if r["municipality_code"] == municipality
            and r["status"] == "resident"
            and r["birth_date"] < D(2000, 1, 1)
        ]
        return found[i]

    def change(self, reason: int, **fields: Any) -> cpb.Change:
        self.sequence += 1
        today = TODAY.isoformat()
        dates = {"effective_date": today, "reported_date": today}
        return cpb.Change(sequence=self.sequence, reason=reason, **(dates | fields))

    def submit(self, municipality: str, *changes: cpb.Change | pa.Table) -> list[Row]:
        with self.channel(municipality) as ch:
            body = changes[0] if isinstance(changes[0], pa.Table) else list(changes)
            result: list[Row] = submit_changes(ch, body, "clerk-7", timeout=30).to_pylist()
            return result

    def notices(self, municipality: str, **kw: Any) -> list[cpb.StreamNoticesResponse]:
        with self.channel(municipality) as ch:
            return list(read_notices(ch, "clerk-8", timeout=30, **kw))

    def trail(self) -> pa.Table:
        return audit.read(self.frontend.audit.directory)


@pytest.fixture
def town(tmp_path: Path, pki: Path) -> Iterator[Town]:
    t = Town(tmp_path, pki)
    try:
        yield t
    finally:
        t.server.stop(grace=1)


def key(r: Row) -> pb.Key:
    return pb.Key(resident_code=r["resident_code"])


def test_a_death_is_applied_durably_and_a_resend_is_a_duplicate(town: Town) -> None:
    r = town.resident(TOYAMA)
    death = town.change(cpb.CHANGE_REASON_DEATH, key=key(r))
    (first,) = town.submit(TOYAMA, death)
    assert (first["outcome"], first["code"], first["error"]) == ("applied", None, None)
    assert first["resident_code"] == r["resident_code"] and first["row"] == 0
    now = town.registry.lookup([r["resident_code"]], by="resident_code", columns=["status"])
    assert now["status"].to_pylist() == ["deceased"]
    (again,) = town.submit(TOYAMA, death)
    assert again["outcome"] == "duplicate" and again["resident_code"] == r["resident_code"]
    # Who submitted what for whom: the municipality, its official, the reason and the subject.
    trail = town.trail().filter(pc.equal(town.trail()["mode"], "submit"))
    person = town.registry._persons([r["resident_code"]], "resident_code")["person"][0].as_py()
    columns = ["agency", "operator", "affair", "subject", "person", "outcome"]
    assert trail.select(columns).to_pylist() == [
        {
            "agency": TOYAMA,
            "operator": "clerk-7",
            "affair": "death",
            "subject": r["resident_code"],
            "person": person,
            "outcome": outcome,
        }
        for outcome in ("applied", "duplicate")
    ]


def test_a_birth_gets_codes_from_the_municipality(town: Town) -> None:
    birth = town.change(
        cpb.CHANGE_REASON_BIRTH,
        family_name="森",
        family_name_kana="モリ",
        given_name="陽",
        given_name_kana="ヒナタ",
        birth_date=TODAY.isoformat(),
        sex=pb.SEX_FEMALE,
        **ADDRESS,
    )
    (born,) = town.submit(TOYAMA, birth)
    assert born["outcome"] == "applied", born
    found = town.registry.lookup([born["my_number"]], columns=["resident_code", "family_name"])
    assert found.to_pylist()[0] | {"replaced": False} == {
        "found": True,
        "error": None,
        "replaced": False,
        "resident_code": born["resident_code"],
        "family_name": "森",
    }


def test_refusals_are_per_row_name_nothing_of_the_resident_and_never_end_the_stream(
    town: Town,
) -> None:
    theirs, ours = town.resident(TAKAOKA), town.resident(TOYAMA)
    results = town.submit(
        TOYAMA,
        town.change(cpb.CHANGE_REASON_DEATH, key=key(theirs)),  # held by 高岡市
        town.change(cpb.CHANGE_REASON_MOVE_IN, key=key(theirs), **ADDRESS),  # no move_out
        town.change(cpb.CHANGE_REASON_DEATH, effective_date="2025-13-01", key=key(ours)),
        town.change(cpb.CHANGE_REASON_DEATH, key=pb.Key(resident_code="12345678903")),
        town.change(cpb.CHANGE_REASON_DEATH, key=key(ours)),
    )
    assert [(r["outcome"], r["code"]) for r in results] == [
        ("rejected", "not_permitted"),
        ("rejected", "not_permitted"),
        ("rejected", "invalid"),
        ("rejected", "not_found"),
        ("applied", None),
    ]
    for r in results[:2]:
        assert TAKAOKA not in r["error"] and "高岡" not in r["error"], r["error"]
        assert r["resident_code"] is None and r["my_number"] is None
    assert "effective_date '2025-13-01' is not a date" in results[2]["error"]
    assert [r["row"] for r in results] == [0, 1, 2, 3, 4]
    held = town.registry.lookup([theirs["resident_code"]], by="resident_code", columns=["status"])
    assert held["status"].to_pylist() == ["resident"]
    # The attempt on another municipality's resident is in the trail, under that resident.
    trail = town.trail()
    refused = trail.filter(pc.equal(trail["outcome"], "rejected")).to_pylist()
    assert {(t["subject"], t["reason"]) for t in refused} >= {
        (theirs["resident_code"], "not_permitted")
    }


def test_a_table_row_naming_another_municipality_is_refused_and_not_remembered(
    town: Town,
) -> None:
    ours, theirs = town.resident(TOYAMA, 1), town.resident(TAKAOKA, 1)
    rows = [
        {"municipality": TAKAOKA, "sequence": 1, "reason": "death"}
        | {"resident_code": theirs["resident_code"]},
        {"municipality": None, "sequence": 2, "reason": "death"}
        | {"resident_code": ours["resident_code"]},
    ]
    table = pa.Table.from_pylist(
        [r | {"effective_date": TODAY, "reported_date": TODAY} for r in rows], schema=CHANGE_SCHEMA
    )
    forged, own = town.submit(TOYAMA, table)
    assert (forged["outcome"], forged["code"]) == ("rejected", "not_permitted")
    assert "a municipality submits its own changes" in forged["error"]
    assert own["outcome"] == "applied"
    # 高岡市's own sequence 1 is untouched: its first use applies.
    table = pa.Table.from_pylist(
        [rows[0] | {"effective_date": TODAY, "reported_date": TODAY}], schema=CHANGE_SCHEMA
    )
    (real,) = town.submit(TAKAOKA, table)
    assert real["outcome"] == "applied"


def test_an_agency_certificate_cannot_submit_and_a_municipality_cannot_verify(
    town: Town,
) -> None:
    r = town.resident(TOYAMA)
    with town.channel("nenkin") as ch:
        error = rpc_error(
            lambda: submit_changes(ch, [town.change(cpb.CHANGE_REASON_DEATH, key=key(r))], "x")
        )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not a registered municipality" in str(error.details())
    with town.channel(TOYAMA) as ch:
        from juki_engine._proto import registry_pb2_grpc as pb_grpc
        from juki_engine.client import request_context

        stub = pb_grpc.IdentityVerificationServiceStub(ch)
        request = pb.VerifyRequest(context=request_context("pension-benefit", "x"), key=key(r))
        error = rpc_error(lambda: stub.Verify(request, timeout=10))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not a registered agency" in str(error.details())


def move(town: Town, r: Row, to: str) -> None:
    """`r` moves out of their municipality (submitted by it) and into `to` (by `to`)."""
    out = town.change(cpb.CHANGE_REASON_MOVE_OUT, key=key(r), moving_to=to)
    (moved_out,) = town.submit(r["municipality_code"], out)
    (moved_in,) = town.submit(to, town.change(cpb.CHANGE_REASON_MOVE_IN, key=key(r), **ADDRESS))
    assert (moved_out["outcome"], moved_in["outcome"]) == ("applied", "applied"), moved_in


def backlog(town: Town) -> dict[str, float]:
    """`juki_notice_backlog` by municipality, as a scrape of the server's metrics reads it."""
    assert town.server.frontend.metrics is not None
    text = generate_latest(town.server.frontend.metrics.registry).decode()
    return {
        sample.labels["municipality"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "juki_notice_backlog"
    }


def test_the_former_municipality_alone_gets_its_notice_until_it_acknowledges(town: Town) -> None:
    r = town.resident(TOYAMA)
    move(town, r, TAKAOKA)
    (notice,) = town.notices(TOYAMA)
    assert notice.kind == "move_in" and notice.resident.resident_code == r["resident_code"]
    assert (notice.from_municipality_code, notice.to_municipality_code) == (TOYAMA, TAKAOKA)
    assert notice.to_address_town == "中央町" and notice.resident.family_name == r["family_name"]
    assert notice.from_address_town == r["address_town"]
    # Neither the new municipality nor a third one is sent it.
    assert town.notices(TAKAOKA) == [] and town.notices(IMIZU) == []
    # Not acknowledged: sent again; acknowledged: never again.
    assert [n.notice for n in town.notices(TOYAMA)] == [notice.notice]
    assert backlog(town) == {TOYAMA: 1, TAKAOKA: 0, IMIZU: 0}  # what the metrics show
    with town.channel(TOYAMA) as ch:
        assert acknowledge_notices(ch, notice.notice) == notice.notice
        assert acknowledge_notices(ch, notice.notice - 1) == notice.notice  # never undone
    assert town.notices(TOYAMA) == []
    assert backlog(town) == {TOYAMA: 0, TAKAOKA: 0, IMIZU: 0}
    assert [n.notice for n in town.notices(TOYAMA, after=notice.notice - 1)] == [notice.notice]
    # Each sending was a disclosure, audited under the resident.
    trail = town.trail()
    sent = trail.filter(pc.equal(trail["mode"], "notice"))
    assert sent["subject"].to_pylist() == [r["resident_code"]] * 3
    assert set(sent["agency"].to_pylist()) == {TOYAMA}


def test_an_acknowledgement_of_no_notice_owed_is_refused(town: Town) -> None:
    r = town.resident(TOYAMA)
    move(town, r, TAKAOKA)
    (notice,) = town.notices(TOYAMA)
    for through in (notice.notice + 1, 10**9):
        with town.channel(TOYAMA) as ch:
            error = rpc_error(lambda ch=ch, through=through: acknowledge_notices(ch, through))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not the number of a notice owed" in str(error.details())
    # 高岡市 cannot acknowledge 富山市's notice either: it is not owed to it.
    with town.channel(TAKAOKA) as ch:
        error = rpc_error(lambda: acknowledge_notices(ch, notice.notice))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [n.notice for n in town.notices(TOYAMA)] == [notice.notice]


def test_notices_come_in_order_and_a_following_stream_gets_new_ones(town: Town) -> None:
    movers = [town.resident(TOYAMA, i) for i in range(3)]
    move(town, movers[0], TAKAOKA)
    received: list[cpb.StreamNoticesResponse] = []
    done = threading.Event()

    def follow() -> None:
        with town.channel(TOYAMA) as ch:
            for n in read_notices(ch, "clerk", follow=True, timeout=60):
                received.append(n)
                if len(received) == 3:
                    done.set()
                    return

    reader = threading.Thread(target=follow)
    reader.start()
    move(town, movers[1], IMIZU)
    move(town, movers[2], TAKAOKA)
    assert done.wait(30), [n.notice for n in received]
    reader.join(10)
    assert [n.resident.resident_code for n in received] == [m["resident_code"] for m in movers]
    numbers = [n.notice for n in received]
    assert numbers == sorted(numbers)
    assert [n.to_municipality_code for n in received] == [TAKAOKA, IMIZU, TAKAOKA]


def test_a_revoked_or_unknown_municipality_is_refused(town: Town, pki: Path) -> None:
    policy = Policy.load(pki / "policy.toml")
    town.frontend.policy = Policy(
        policy.agencies, policy.source, policy.authorities, policy.municipalities[1:]
    )
    with town.channel(TOYAMA) as ch:
        error = rpc_error(lambda: list(read_notices(ch, "clerk", timeout=10)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not a registered municipality" in str(error.details())


# ------------------------------------------------------------------- kill -9 of the server


def test_kill_9_loses_no_acknowledged_change_applies_none_twice_and_keeps_notices(
    tmp_path: Path, pki: Path
) -> None:
    snapshot = tmp_path / "registry"
    registry = Registry.generate(population=4_000, seed=3, prefecture="富山県")
    registry.save(snapshot)
    rows = registry.to_arrow().to_pylist()
    movers = [
        r
        for r in rows
        if r["municipality_code"] == TOYAMA
        and r["status"] == "resident"
        and r["birth_date"] < D(2000, 1, 1)
    ][:6]
    del registry
    sequence = iter(range(1, 1_000))

    def change(reason: int, r: Row, **fields: Any) -> cpb.Change:
        today = TODAY.isoformat()
        return cpb.Change(
            sequence=next(sequence),
            reason=reason,
            effective_date=today,
            reported_date=today,
            key=key(r),
            **fields,
        )

    outs = [change(cpb.CHANGE_REASON_MOVE_OUT, r, moving_to=TAKAOKA) for r in movers]
    ins = [change(cpb.CHANGE_REASON_MOVE_IN, r, **ADDRESS) for r in movers]
    acknowledged: list[list[Row]] = []
    numbers: list[int] = []
    delivered = 0
    for attempt in range(3):
        port_file = tmp_path / f"port{attempt}"
        proc = juki_serve(snapshot, pki, tmp_path / "audit", port_file)
        address = f"127.0.0.1:{wait_for_port(port_file, proc)}"
        toyama = AgencyTLS.from_cert(pki / "agencies" / f"{TOYAMA}.pem")
        takaoka = AgencyTLS.from_cert(pki / "agencies" / f"{TAKAOKA}.pem")
        nenkin = AgencyTLS.from_cert(pki / "agencies" / "nenkin.pem")
        if attempt == 0:  # the pension service watches the movers (a durable watch list)
            with nenkin.channel(address) as ch:
                watch(ch, "pension-benefit", [r["my_number"] for r in movers], timeout=30)
        # Every attempt resends everything: what the last attempt applied comes back duplicate.
        with toyama.channel(address) as ch:
            first = submit_changes(ch, outs[: 2 * (attempt + 1)], "c", timeout=30).to_pylist()
        with takaoka.channel(address) as ch:
            second = submit_changes(ch, ins[: 2 * (attempt + 1)], "c", timeout=30).to_pylist()
        acknowledged.append(first + second)
        with toyama.channel(address) as ch:
            notices = list(read_notices(ch, "c", timeout=30))
            numbers = [n.notice for n in notices]
            if attempt == 1:
                acknowledge_notices(ch, numbers[0])
        with nenkin.channel(address) as ch:
            # Its subscription is told of each move_in (move_out is not among its reasons),
            # again until acknowledged, across the kills.
            told = list(stream_changes(ch, "pension-benefit", timeout=30))
            delivered += len(told)
        assert [c.reason for c in told] == ["move_in"] * 2 * (attempt + 1)
        assert [c.resident.my_number for c in told] == [r["my_number"] for r in movers][
            : 2 * (attempt + 1)
        ]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()
        applied_before = 2 * attempt
        expected = ["duplicate"] * applied_before + ["applied"] * 2
        assert [r["outcome"] for r in first] == expected, first
        assert [r["outcome"] for r in second] == expected, second
        # Notices owed so far, the one acknowledged (in attempt 1) no longer sent.
        skipped = 1 if attempt == 2 else 0
        assert len(numbers) == 2 * (attempt + 1) - skipped
    reopened = Registry.open(snapshot)
    now = reopened.lookup(
        [r["resident_code"] for r in movers], by="resident_code", columns=["municipality_code"]
    )
    assert now["municipality_code"].to_pylist() == [TAKAOKA] * 6
    # Each move applied once: one move_out and one move_in in each history.
    history = reopened.history([r["resident_code"] for r in movers], by="resident_code")
    assert sorted(history["reason"].to_pylist()) == ["move_in"] * 6 + ["move_out"] * 6
    assert len(reopened.notices(TOYAMA)) == 6
    # No change reached the subscriber without its audit record.
    trail = audit.read(tmp_path / "audit")
    told_records = trail.filter(pc.equal(trail["mode"], "subscribe"))
    assert told_records.num_rows == delivered


def test_a_cancelled_submission_ends_quietly_with_what_it_sent_applied(town: Town) -> None:
    from juki_engine._proto import changes_pb2_grpc as cpb_grpc

    r = town.resident(TOYAMA, 2)
    sent = threading.Event()

    def requests() -> Iterator[cpb.SubmitChangesRequest]:
        header = cpb.SubmitChangesHeader(operator_id="clerk", request_id="cancelled-1")
        yield cpb.SubmitChangesRequest(header=header)
        death = town.change(cpb.CHANGE_REASON_DEATH, key=key(r))
        yield cpb.SubmitChangesRequest(changes=cpb.Changes(changes=[death]))
        sent.set()
        threading.Event().wait(30)  # the client never sends more; it cancels instead

    with town.channel(TOYAMA) as ch:
        replies = cpb_grpc.ChangeSubmissionServiceStub(ch).SubmitChanges(requests(), timeout=30)
        first = next(replies)
        assert [res.outcome for res in first.results] == [cpb.CHANGE_OUTCOME_APPLIED]
        replies.cancel()
    town.server.stop(grace=5)
    trail = town.trail()
    # The death is applied and audited once; the cancel is no fault of the server.
    assert trail.filter(pc.equal(trail["request_id"], "cancelled-1"))["outcome"].to_pylist() == [
        "applied"
    ]
    assert "failed" not in trail["outcome"].to_pylist()


# --------------------------------------------------------------- agencies' subscriptions

PENSION = "pension-benefit"


def subscribe(town: Town, keys: list[str], by: str = "my_number", **kw: Any) -> Any:
    from juki_engine.client import watch

    with town.channel("nenkin") as ch:
        return watch(ch, PENSION, keys, by, timeout=30, **kw)


def changes(town: Town, agency: str = "nenkin", **kw: Any) -> list[cpb.StreamChangesResponse]:
    from juki_engine.client import stream_changes

    with town.channel(agency) as ch:
        return list(stream_changes(ch, kw.pop("affair", PENSION), timeout=30, **kw))


def test_a_subscription_is_told_of_its_residents_changes_only_in_its_affairs_fields(
    town: Town,
) -> None:
    dies, moves, unwatched = (town.resident(TOYAMA, i) for i in range(3))
    card = town.resident(TOYAMA, 3)
    reply = subscribe(town, [dies["my_number"], moves["my_number"], card["my_number"]])
    assert (reply.changed, reply.not_found, reply.invalid, reply.watched) == (3, 0, 0, 3)
    # Card events are not among the affair's reasons; the unwatched resident's death is not sent.
    town.submit(
        TOYAMA,
        town.change(cpb.CHANGE_REASON_DEATH, key=key(dies)),
        town.change(cpb.CHANGE_REASON_DEATH, key=key(unwatched)),
        town.change(cpb.CHANGE_REASON_CARD_APPLIED, key=key(card)),
        town.change(cpb.CHANGE_REASON_MOVE_WITHIN, key=key(moves), **ADDRESS),
    )
    sent = changes(town)
    assert [(c.reason, c.resident.my_number) for c in sent] == [
        ("death", dies["my_number"]),
        ("move_within", moves["my_number"]),
    ]
    death, move_within = sent
    assert list(death.fields) == ["status", "status_date"]
    assert death.resident.status == pb.RESIDENT_STATUS_DECEASED
    assert death.resident.status_date == TODAY.isoformat()
    assert death.resident.resident_code == dies["resident_code"]
    assert not death.resident.HasField("family_name")  # not what the change set
    assert list(move_within.fields) == [
        "municipality_code",
        "municipality_name",
        "prefecture",
        "address_town",
        "address_block",
    ]
    assert (move_within.resident.address_town, move_within.resident.address_block) == (
        "中央町",
        "1-1",
    )
    assert move_within.resident.municipality_name == "富山市"
    assert death.change < move_within.change
    # Each sending was a disclosure, audited under its resident before it left.
    trail = town.trail()
    told = trail.filter(pc.equal(trail["mode"], "subscribe"))
    assert told["subject"].to_pylist() == [dies["resident_code"], moves["resident_code"]]
    assert set(told["outcome"].to_pylist()) == {"disclosed"}


def test_a_change_is_sent_again_until_acknowledged_and_counted_once(town: Town) -> None:
    from juki_engine.client import acknowledge_changes

    r = town.resident(TOYAMA, 4)
    subscribe(town, [r["resident_code"]], by="resident_code")
    town.submit(TOYAMA, town.change(cpb.CHANGE_REASON_DEATH, key=key(r)))
    (first,) = changes(town)
    (again,) = changes(town)
    assert again.change == first.change
    assert town.frontend.quotas.used("nenkin", PENSION) == 1  # the redelivery is free
    trail = town.trail()
    told = trail.filter(pc.equal(trail["mode"], "subscribe"))
    assert told["outcome"].to_pylist() == ["disclosed", "redelivered"]
    with town.channel("nenkin") as ch:
        error = rpc_error(lambda: acknowledge_changes(ch, PENSION, first.change + 1))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert acknowledge_changes(ch, PENSION, first.change) == first.change
    assert changes(town) == []
    assert [c.change for c in changes(town, after=first.change - 1)] == [first.change]


def test_a_subscription_follows_its_resident_through_a_new_number(town: Town) -> None:
    r = town.resident(TOYAMA, 5)
    subscribe(town, [r["my_number"]])
    (renumbered,) = town.submit(TOYAMA, town.change(cpb.CHANGE_REASON_MY_NUMBER_CHANGE, key=key(r)))
    town.submit(TOYAMA, town.change(cpb.CHANGE_REASON_DEATH, key=key(r)))
    # 個人番号変更 is not among the affair's reasons; the death is, under the new number.
    (death,) = changes(town)
    assert death.reason == "death"
    assert death.resident.my_number == renumbered["my_number"] != r["my_number"]


def test_an_affair_without_subscribe_or_a_municipality_cannot_subscribe(town: Town) -> None:
    from juki_engine.client import watch

    r = town.resident(TOYAMA)
    with town.channel("moj") as ch:
        error = rpc_error(lambda: watch(ch, "bar-exam", [r["resident_code"]], "resident_code"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "does not allow subscribe" in str(error.details())
    with town.channel(TOYAMA) as ch:
        error = rpc_error(lambda: watch(ch, PENSION, [r["my_number"]]))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not a registered agency" in str(error.details())


def test_a_watch_list_counts_what_it_could_not_watch_and_can_be_shrunk(town: Town) -> None:
    a, b = town.resident(TOYAMA, 6), town.resident(TOYAMA, 7)
    reply = subscribe(town, [a["my_number"], b["my_number"], "123456789018", "12345"])
    assert (reply.changed, reply.not_found, reply.invalid, reply.watched) == (2, 1, 1, 2)
    reply = subscribe(town, [b["my_number"]], remove=True)
    assert (reply.changed, reply.watched) == (1, 1)
    town.submit(
        TOYAMA,
        town.change(cpb.CHANGE_REASON_DEATH, key=key(a)),
        town.change(cpb.CHANGE_REASON_DEATH, key=key(b)),
    )
    assert [c.resident.my_number for c in changes(town)] == [a["my_number"]]


def test_a_spent_quota_pauses_delivery_and_drops_nothing(town: Town, pki: Path) -> None:
    policy = Policy.load(pki / "policy.toml")
    nenkin = next(a for a in policy.agencies if a.code == "nenkin")
    import dataclasses

    affair = dataclasses.replace(nenkin.affairs[PENSION], daily_quota=2)
    tight = dataclasses.replace(nenkin, affairs={**nenkin.affairs, PENSION: affair})
    others = [a for a in policy.agencies if a.code != "nenkin"]
    town.frontend.policy = Policy(
        [tight, *others], policy.source, policy.authorities, policy.municipalities
    )
    people = [town.resident(TOYAMA, i) for i in range(8, 11)]
    subscribe(town, [p["my_number"] for p in people])
    town.submit(TOYAMA, *(town.change(cpb.CHANGE_REASON_DEATH, key=key(p)) for p in people))
    from juki_engine.client import stream_changes

    received = []
    with town.channel("nenkin") as ch:
        stream = stream_changes(ch, PENSION, timeout=30)
        error = rpc_error(lambda: received.extend(stream))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "none is dropped" in str(error.details())
    assert [c.resident.my_number for c in received] == [p["my_number"] for p in people[:2]]
    # The next day (a fresh count) the third arrives, after the two sent again for free.
    town.frontend.quotas = service.frontend.Quotas()
    again = changes(town)
    assert [c.resident.my_number for c in again] == [p["my_number"] for p in people]
    assert town.frontend.quotas.used("nenkin", PENSION) == 1


def test_a_watch_list_larger_than_a_message_goes_in_several(town: Town) -> None:
    numbers = [r["my_number"] for r in town.rows if r["status"] == "resident"]
    keys = pa.array(numbers * (200_000 // len(numbers) + 1), pa.string())
    assert keys.nbytes > 2 << 20  # more than one 2 MiB message
    reply = subscribe(town, keys)
    assert (reply.changed, reply.watched, reply.not_found, reply.invalid) == (
        len(numbers),
        len(numbers),
        0,
        0,
    )


@pytest.mark.parametrize("kill_after", [1, 4, 9])
def test_kill_9_during_a_submission_stream_loses_no_acknowledged_change(
    tmp_path: Path, pki: Path, kill_after: int
) -> None:
    """The server is killed while a stream of 12 messages is in flight, after the client has
    received `kill_after` replies; a resend of everything then applies each change once: the
    acknowledged ones come back duplicate."""
    from juki_engine._proto import changes_pb2_grpc as cpb_grpc

    snapshot = tmp_path / "registry"
    registry = Registry.generate(population=4_000, seed=3, prefecture="富山県")
    registry.save(snapshot)
    people = [
        r["resident_code"]
        for r in registry.to_arrow(["resident_code", "municipality_code", "status"]).to_pylist()
        if r["municipality_code"] == TOYAMA and r["status"] == "resident"
    ][:300]
    del registry
    today = TODAY.isoformat()
    changes = [
        cpb.Change(
            sequence=i + 1,
            reason=cpb.CHANGE_REASON_MOVE_WITHIN,
            effective_date=today,
            reported_date=today,
            key=pb.Key(resident_code=people[i % len(people)]),
            address_town=f"町{i}",
            address_block="1",
        )
        for i in range(1_200)
    ]
    messages = [changes[i : i + 100] for i in range(0, len(changes), 100)]

    def requests() -> Iterator[cpb.SubmitChangesRequest]:
        yield cpb.SubmitChangesRequest(
            header=cpb.SubmitChangesHeader(operator_id="c", request_id="r")
        )
        for m in messages:
            yield cpb.SubmitChangesRequest(changes=cpb.Changes(changes=m))

    acknowledged: list[int] = []
    port_file = tmp_path / "port"
    proc = juki_serve(snapshot, pki, tmp_path / "audit", port_file)
    address = f"127.0.0.1:{wait_for_port(port_file, proc)}"
    tls = AgencyTLS.from_cert(pki / "agencies" / f"{TOYAMA}.pem")
    with tls.channel(address) as ch:
        replies = cpb_grpc.ChangeSubmissionServiceStub(ch).SubmitChanges(requests(), timeout=60)
        try:
            for i, reply in enumerate(replies):
                acknowledged += [
                    r.row for r in reply.results if r.outcome == cpb.CHANGE_OUTCOME_APPLIED
                ]
                if i + 1 == kill_after:
                    os.kill(proc.pid, signal.SIGKILL)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE
    proc.wait(10)
    assert proc.stderr is not None
    proc.stderr.close()
    assert len(acknowledged) >= 100 * kill_after
    port_file.unlink()
    proc = juki_serve(snapshot, pki, tmp_path / "audit", port_file)
    try:
        address = f"127.0.0.1:{wait_for_port(port_file, proc)}"
        with tls.channel(address) as ch:
            again = submit_changes(ch, changes, "c", timeout=60).to_pylist()
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()
    for row in acknowledged:
        assert again[row]["outcome"] == "duplicate", again[row]
    assert {r["outcome"] for r in again} <= {"applied", "duplicate"}
    # Every change is in the registry exactly once.
    history = Registry.open(snapshot).history(people, by="resident_code")
    assert len(history) == len(changes)


# ------------------------------------------------------ hostile input at the new services


def refusals(town: Town, mode: str) -> list[dict[str, Any]]:
    trail = town.trail()
    rows: list[dict[str, Any]] = trail.filter(pc.equal(trail["mode"], mode)).to_pylist()
    return [r for r in rows if r["outcome"] in ("invalid_request", "denied")]


def raw_submit(town: Town, caller: str, messages: list[cpb.SubmitChangesRequest]) -> Any:
    from juki_engine._proto import changes_pb2_grpc as cpb_grpc

    with town.channel(caller) as ch:
        stub = cpb_grpc.ChangeSubmissionServiceStub(ch)
        return rpc_error(lambda: list(stub.SubmitChanges(iter(messages), timeout=30)))


def ipc_of(table: pa.Table) -> bytes:
    from juki_engine.service.wire import write_ipc

    return write_ipc(table)


HEADER = cpb.SubmitChangesRequest(
    header=cpb.SubmitChangesHeader(operator_id="clerk", request_id="hostile")
)


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([cpb.SubmitChangesRequest(changes=cpb.Changes())], "starts with a SubmitChangesHeader"),
        (
            [
                cpb.SubmitChangesRequest(
                    header=cpb.SubmitChangesHeader(operator_id="x" * 5_000, request_id="r")
                )
            ],
            "header.operator_id is 5,000 characters",
        ),
        ([HEADER, cpb.SubmitChangesRequest(table=b"not arrow at all")], "message 1"),
        ([HEADER, cpb.SubmitChangesRequest(header=HEADER.header)], "later messages hold changes"),
        (
            [HEADER, cpb.SubmitChangesRequest(table=ipc_of(pa.table({"salary": [1]})))],
            "salary",
        ),
        (
            [
                HEADER,
                cpb.SubmitChangesRequest(changes=cpb.Changes(changes=[cpb.Change()] * 10_001)),
            ],
            "10,001 changes in one message",
        ),
    ],
)
def test_a_malformed_submission_is_refused_bounded_and_audited(
    town: Town, messages: list[cpb.SubmitChangesRequest], message: str
) -> None:
    error = raw_submit(town, TOYAMA, messages)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    details = str(error.details())
    assert message in details and len(details) <= 1_100, details
    (record,) = refusals(town, "submit")
    assert record["agency"] == TOYAMA and record["outcome"] == "invalid_request"
    assert len(record["operator"]) <= 130


def test_a_hostile_record_is_refused_alone_with_a_bounded_echo(town: Town) -> None:
    r = town.resident(TOYAMA)
    long = "長" * 10_000
    results = town.submit(
        TOYAMA,
        town.change(cpb.CHANGE_REASON_NAME_CHANGE, key=key(r), family_name=long),
        town.change(cpb.CHANGE_REASON_DEATH, key=key(r), effective_date="9" * 5_000),
        town.change(cpb.CHANGE_REASON_DEATH, key=pb.Key(resident_code="1" * 5_000)),
        town.change(cpb.CHANGE_REASON_MOVE_OUT, key=key(r), moving_to="x" * 5_000),
    )
    assert [(x["outcome"], x["code"]) for x in results] == [("rejected", "invalid")] * 4
    for x in results:
        assert len(x["error"]) <= 300, x["error"]
    assert town.registry.lookup([r["resident_code"]], by="resident_code")["found"].to_pylist() == [
        True
    ]


def test_a_stranger_and_a_malformed_watch_are_refused_and_audited(town: Town) -> None:
    from juki_engine._proto import changes_pb2_grpc as cpb_grpc
    from juki_engine.client import request_context

    with town.channel("stranger") as ch:
        error = rpc_error(lambda: list(read_notices(ch, "x", timeout=10)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    (denied,) = refusals(town, "notice")
    assert denied["agency"].startswith("unregistered: ") and denied["outcome"] == "denied"
    header = cpb.WatchHeader(context=request_context(PENSION, "op"), key=pb.KEY_KIND_MY_NUMBER)
    two_columns = ipc_of(pa.table({"my_number": ["1"], "resident_code": ["2"]}))
    with town.channel("nenkin") as ch:
        stub = cpb_grpc.SubscriptionServiceStub(ch)
        error = rpc_error(
            lambda: stub.Watch(
                iter([cpb.WatchRequest(header=header), cpb.WatchRequest(keys=two_columns)]),
                timeout=10,
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "one column of keys, named my_number" in str(error.details())
        long = cpb.StreamChangesRequest(context=request_context(PENSION, "o" * 5_000))
        error = rpc_error(lambda: list(stub.StreamChanges(long, timeout=10)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(str(error.details())) <= 1_100
    assert [r["outcome"] for r in refusals(town, "watch")] == ["invalid_request"]
    assert [r["outcome"] for r in refusals(town, "subscribe")] == ["invalid_request"]
    # Nothing was added to the watch list by the refused call.
    assert changes(town) == []
