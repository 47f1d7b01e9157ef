"""The change log: `apply` returns only once a batch is durable; reopening a registry is its
snapshot plus the log's records; a crash (kill -9) loses no acknowledged change and applies none
twice; a torn last record is dropped, a damaged earlier one refuses to open."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
import xxhash

from juki_engine import Registry, SnapshotCorrupt
from juki_engine._core import JukiError
from juki_engine.synthetic.changes import CHANGE_SCHEMA

D = dt.date
TODAY = D(2025, 6, 30)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "registry"
    Registry.generate(population=2_000, seed=9).save(path)
    return path


def deaths(rows: list[dict[str, object]], first_sequence: int) -> pa.Table:
    """One death per resident, each with the next sequence number of its municipality."""
    counts: dict[str, int] = {}
    out = []
    for r in rows:
        m = str(r["municipality_code"])
        counts[m] = counts.get(m, first_sequence) + 1
        out.append(
            {
                "municipality": m,
                "sequence": counts[m],
                "reason": "death",
                "effective_date": D(2025, 3, 1),
                "reported_date": D(2025, 3, 2),
                "my_number": r["my_number"],
            }
        )
    return pa.Table.from_pylist(out)


def residents(registry: Registry, n: int) -> list[dict[str, object]]:
    rows = registry.to_arrow(["my_number", "municipality_code", "status", "birth_date"])
    return [
        r for r in rows.to_pylist() if r["status"] == "resident" and r["birth_date"] < D(2020, 1, 1)
    ][:n]


def statuses(registry: Registry, rows: list[dict[str, object]]) -> list[str]:
    keys = [str(r["my_number"]) for r in rows]
    return list(registry.lookup(keys, columns=["status"])["status"].to_pylist())


def test_changes_survive_reopening_and_stay_idempotent(saved: Path) -> None:
    registry = Registry.open(saved)
    people = residents(registry, 20)
    batch = deaths(people[:10], 0)
    first = registry.apply(batch, today=TODAY)
    assert first["outcome"].to_pylist() == ["applied"] * 10
    assert (saved / "changes.log").exists()
    del registry
    again = Registry.open(saved)
    assert statuses(again, people) == ["deceased"] * 10 + ["resident"] * 10
    assert again.applied_changes == 10
    assert again.apply(batch, today=TODAY)["outcome"].to_pylist() == ["duplicate"] * 10
    # Applying continues after a reopen, numbering batches on.
    again.apply(deaths(people[10:], 1_000), today=TODAY)
    del again
    assert statuses(Registry.open(saved), people) == ["deceased"] * 20


def test_a_torn_last_record_is_dropped_and_a_damaged_earlier_one_refuses(
    saved: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    registry = Registry.open(saved)
    people = residents(registry, 4)
    registry.apply(deaths(people[:2], 0), today=TODAY)
    registry.apply(deaths(people[2:], 1_000), today=TODAY)
    del registry
    log = saved / "changes.log"
    whole = log.read_bytes()
    # A crash in the middle of the second record's write: its last bytes never reached disk.
    log.write_bytes(whole[:-7])
    torn = Registry.open(saved)
    assert "torn" in capfd.readouterr().err
    assert statuses(torn, people) == ["deceased"] * 2 + ["resident"] * 2
    del torn
    # A flipped byte inside the first record, with an intact record after it: refuse.
    damaged = bytearray(whole)
    damaged[60] ^= 0xFF
    log.write_bytes(bytes(damaged))
    with pytest.raises(SnapshotCorrupt, match=r"changes\.log"):
        Registry.open(saved)


def test_a_second_writer_is_refused_while_the_first_holds_the_log(saved: Path) -> None:
    first = Registry.open(saved)
    second = Registry.open(saved)
    people = residents(first, 2)
    first.apply(deaths(people[:1], 0), today=TODAY)
    with pytest.raises(JukiError, match="already open for writing"):
        second.apply(deaths(people[1:], 1_000), today=TODAY)


def test_save_refuses_to_drop_applied_changes(saved: Path, tmp_path: Path) -> None:
    registry = Registry.open(saved)
    registry.apply(deaths(residents(registry, 1), 0), today=TODAY)
    with pytest.raises(JukiError, match="1 applied changes"):
        registry.save(tmp_path / "copy")


WRITER = textwrap.dedent(
    """
    import datetime as dt, json, sys
    import pyarrow as pa
    from juki_engine import Registry

    path, plan = sys.argv[1], json.loads(sys.argv[2])
    registry = Registry.open(path)
    print("ready", flush=True)
    for batch in plan:
        out = registry.apply(pa.Table.from_pylist(batch), today=dt.date(2025, 6, 30))
        # Acknowledged: durable from here on.
        print(json.dumps([[r["municipality"], r["sequence"]] for r in batch]), flush=True)
    """
)


def test_kill_9_loses_no_acknowledged_change_and_applies_none_twice(saved: Path) -> None:
    """A writer applying one-death batches is killed at several points; after each kill the
    registry holds every acknowledged change, and re-sending everything applies each change at
    most once (a re-sent acknowledged change is a duplicate)."""
    people = residents(Registry.open(saved), 900)
    rows = deaths(people, 0).to_pylist()
    for r in rows:
        r["effective_date"] = r["effective_date"].isoformat()
        r["reported_date"] = r["reported_date"].isoformat()
    plan = [[r] for r in rows]
    acked: set[tuple[str, int]] = set()
    sent = 0
    for kill_after in (0.0, 0.01, 0.03, 0.06, 0.1, 0.15):
        chunk = plan[sent : sent + 150]
        sent += len(chunk)
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(saved), json.dumps(chunk)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        time.sleep(kill_after)
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        for line in out.splitlines():
            acked.update((m, s) for m, s in json.loads(line))
        registry = Registry.open(saved)
        dead = {
            r["my_number"]
            for r, s in zip(people, statuses(registry, people), strict=True)
            if s == "deceased"
        }
        for batch in plan[:sent]:
            (r,) = batch
            if (r["municipality"], r["sequence"]) in acked:
                assert r["my_number"] in dead, "an acknowledged change was lost"
        del registry
    # Re-send everything: each change applies at most once.
    registry = Registry.open(saved)
    table = pa.Table.from_pylist(
        [r | {"effective_date": D(2025, 3, 1), "reported_date": D(2025, 3, 2)} for r in rows[:sent]]
    )
    outcomes = registry.apply(table, today=TODAY)["outcome"].to_pylist()
    for r, outcome in zip(rows[:sent], outcomes, strict=True):
        if (r["municipality"], r["sequence"]) in acked:
            assert outcome == "duplicate"
    history = registry.history([r["my_number"] for r in rows[:sent]])
    assert len(history) == sent  # one death each: none applied twice
    assert statuses(registry, people[:sent]) == ["deceased"] * sent


def test_a_checkpoint_folds_the_changes_in_and_keeps_their_history(saved: Path) -> None:
    registry = Registry.open(saved)
    people = residents(registry, 6)
    first = deaths(people[:2], 0)
    registry.apply(first, today=TODAY)
    m = str(people[2]["municipality_code"])
    code = registry.apply(
        pa.Table.from_pylist(
            [
                {
                    "municipality": m,
                    "sequence": 500,
                    "reason": "my_number_change",
                    "effective_date": D(2025, 4, 1),
                    "reported_date": D(2025, 4, 1),
                    "my_number": people[2]["my_number"],
                },
                {
                    "municipality": m,
                    "sequence": 501,
                    "reason": "death",
                    "effective_date": D(2025, 4, 1),
                    "reported_date": D(2025, 4, 1),
                    "my_number": "123456789018",
                },
            ]
        ),
        today=TODAY,
    ).to_pylist()
    new_number = code[0]["my_number"]
    assert registry.checkpoint() >= 3
    assert (saved / "changes.log").stat().st_size < 100  # emptied: its header only
    del registry
    again = Registry.open(saved)
    assert statuses(again, people[:2]) == ["deceased"] * 2
    assert again.lookup([people[0]["my_number"]], as_of=D(2025, 2, 1))["status"].to_pylist() == [
        "resident"
    ]
    old = again.lookup([people[2]["my_number"]], columns=["my_number"]).to_pylist()[0]
    assert old["replaced"] and old["my_number"] == new_number
    assert len(again.history([people[0]["my_number"]])) == 1
    # Idempotency survives: applied and rejected changes come back as duplicates.
    assert again.apply(first, today=TODAY)["outcome"].to_pylist() == ["duplicate"] * 2
    rejected = again.apply(
        pa.Table.from_pylist(
            [
                {
                    "municipality": m,
                    "sequence": 501,
                    "reason": "death",
                    "effective_date": D(2025, 4, 1),
                    "reported_date": D(2025, 4, 1),
                    "my_number": "123456789018",
                }
            ]
        ),
        today=TODAY,
    ).to_pylist()[0]
    assert rejected["outcome"] == "duplicate" and rejected["error"] == code[1]["error"]
    assert rejected["code"] == code[1]["code"] == "not_found"
    # Changes after the checkpoint land in the emptied log and are redone over the snapshot.
    again.apply(deaths(people[3:4], 1_000), today=TODAY)
    del again
    third = Registry.open(saved)
    assert statuses(third, people[:4]) == ["deceased", "deceased", "resident", "deceased"]


def test_a_crash_between_checkpoint_and_log_reset_applies_nothing_twice(saved: Path) -> None:
    registry = Registry.open(saved)
    people = residents(registry, 2)
    births = pa.Table.from_pylist(
        [
            {
                "municipality": str(people[0]["municipality_code"]),
                "sequence": 9,
                "reason": "birth",
                "effective_date": D(2025, 5, 1),
                "reported_date": D(2025, 5, 2),
                "family_name": "森",
                "family_name_kana": "モリ",
                "given_name": "新",
                "given_name_kana": "アラタ",
                "birth_date": D(2025, 5, 1),
                "sex": 1,
                "address_town": "町",
                "address_block": "1",
            }
        ]
    )
    born = registry.apply(births, today=TODAY).to_pylist()[0]
    log = saved / "changes.log"
    before_reset = log.read_bytes()
    registry.checkpoint()
    del registry
    log.write_bytes(before_reset)  # the reset never reached the disk
    again = Registry.open(saved)
    assert len(again.history([born["my_number"]])) == 1
    assert again.lookup([born["my_number"]])["found"].to_pylist() == [True]
    # The stale log is emptied by the next apply; the birth is not applied twice.
    again.apply(deaths(people[1:], 1_000), today=TODAY)
    del again
    third = Registry.open(saved)
    assert len(third.history([born["my_number"]])) == 1
    assert len(third) == 2_001


# ------------------------------------------------ a checkpoint's files, hostile behind checksums
# The manifest's checksums catch damage; these files are rewritten with valid checksums, so that
# what a forged or buggy snapshot holds reaches the checks behind them.


def checkpointed(saved: Path) -> tuple[Path, list[str]]:
    """`saved` after two deaths, one of them cancelled, were folded in: its version directory and
    the two residents' My Numbers."""
    registry = Registry.open(saved)
    people = residents(registry, 2)
    registry.apply(deaths(people, 0), today=TODAY)
    cancel = {"municipality": str(people[0]["municipality_code"]), "sequence": 700}
    cancel |= {"reason": "cancel", "cancels": 1}
    cancel |= {"effective_date": D(2025, 3, 3), "reported_date": D(2025, 3, 3)}
    (result,) = registry.apply(pa.Table.from_pylist([cancel]), today=TODAY).to_pylist()
    assert result["outcome"] == "applied", result
    registry.checkpoint()
    del registry
    return saved / (saved / "CURRENT").read_text().strip(), [str(r["my_number"]) for r in people]


def replace_file(version: Path, name: str, data: bytes) -> None:
    """Write `data` as the version's file `name`, with the manifest's size and checksum to match."""
    (version / name).write_bytes(data)
    path = version / "manifest.json"
    manifest = json.loads(path.read_text())
    for entry in manifest["files"]:
        if entry["name"] == name:
            entry["bytes"] = len(data)
            entry["xxh3"] = xxhash.xxh3_64_hexdigest(data)
    path.write_text(json.dumps(manifest))


def ipc_bytes(table: pa.Table, batch_rows: int | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=batch_rows)
    return bytes(sink.getvalue())


def with_column(table: pa.Table, name: str, values: list[object]) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


def history_table(version: Path) -> pa.Table:
    return pa.ipc.open_file(version / "history.arrow").read_all()


HOSTILE_HISTORY: dict[str, Callable[[pa.Table], bytes]] = {
    "not arrow": lambda t: b"not an arrow file at all",
    "a person of no row": lambda t: ipc_bytes(with_column(t, "person", [2**31] * t.num_rows)),
    "an unknown reason": lambda t: ipc_bytes(with_column(t, "reason", [250] * t.num_rows)),
    "a missing column": lambda t: ipc_bytes(t.drop_columns(["mask"])),
    "a name of no dictionary key": lambda t: ipc_bytes(
        with_column(t, "family", [2**31] * t.num_rows)
    ),
    "a cancel of a later entry": lambda t: ipc_bytes(
        with_column(t, "cancels", [t.num_rows + 5] * t.num_rows)
    ),
    # A shard's history numbers its changes (null for origins): checked as a log's numbers are.
    "a number on an origin": lambda t: ipc_bytes(
        t.append_column("number", pa.array(range(1, t.num_rows + 1), pa.uint64()))
    ),
    "numbers that do not ascend": lambda t: ipc_bytes(
        t.append_column("number", numbered_backwards(t))
    ),
    "numbers not uint64": lambda t: ipc_bytes(
        t.append_column("number", numbered_backwards(t).cast(pa.int64()))
    ),
}


def numbered_backwards(t: pa.Table) -> pa.Array:
    """A `number` column for history `t`: null for origins, descending numbers for changes."""
    origin = t["reason"].to_pylist()[0]
    return pa.array(
        [None if r == origin else 100 - i for i, r in enumerate(t["reason"].to_pylist())],
        pa.uint64(),
    )


@pytest.mark.parametrize("case", list(HOSTILE_HISTORY))
def test_a_hostile_history_file_refuses_to_open_naming_it(saved: Path, case: str) -> None:
    version, _ = checkpointed(saved)
    replace_file(version, "history.arrow", HOSTILE_HISTORY[case](history_table(version)))
    with pytest.raises(SnapshotCorrupt) as info:
        Registry.open(saved)
    assert "history.arrow" in str(info.value), str(info.value)


HOSTILE_STATE: dict[str, Callable[[dict[str, object]], bytes]] = {
    "not json": lambda s: b"{not json",
    "another format": lambda s: json.dumps(s | {"format": "juki-changes/99"}).encode(),
    "counters for other municipalities": lambda s: json.dumps(s | {"issued": [0]}).encode(),
    "a code position beyond the designated codes": lambda s: json.dumps(
        s | {"issued": [2**63] * len(s["issued"])}  # type: ignore[arg-type]
    ).encode(),
    "an oversized rejection message": lambda s: json.dumps(
        s | {"rejections": [[1, "x" * 5000]]}
    ).encode(),
    "a missing field": lambda s: json.dumps({k: v for k, v in s.items() if k != "issued"}).encode(),
}


@pytest.mark.parametrize("case", list(HOSTILE_STATE))
def test_a_hostile_writer_state_refuses_to_open_naming_it(saved: Path, case: str) -> None:
    version, _ = checkpointed(saved)
    state = json.loads((version / "changes.json").read_text())
    replace_file(version, "changes.json", HOSTILE_STATE[case](state))
    with pytest.raises(SnapshotCorrupt) as info:
        Registry.open(saved)
    assert "changes.json" in str(info.value), str(info.value)


@pytest.mark.parametrize("name", ["history.arrow", "changes.json"])
def test_a_manifest_listing_half_of_the_history_refuses_to_open(saved: Path, name: str) -> None:
    version, _ = checkpointed(saved)
    path = version / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"] = [f for f in manifest["files"] if f["name"] != name]
    path.write_text(json.dumps(manifest))
    with pytest.raises(SnapshotCorrupt) as info:
        Registry.open(saved)
    assert "history.arrow" in str(info.value) and "changes.json" in str(info.value)


@pytest.mark.parametrize("batch_rows", [None, 1, 2], ids=["one-batch", "batches-of-1", "of-2"])
def test_a_rewritten_history_of_the_same_entries_opens_the_same(
    saved: Path, batch_rows: int | None
) -> None:
    """The rewriting above is sound on its own: the same entries, rewritten, open as before, in
    one record batch or in many (a checkpoint writes a large history in batches; a cancel and
    the entry it cancels then lie in different batches)."""
    version, keys = checkpointed(saved)
    before = Registry.open(saved)
    history = before.history(keys)
    assert [(h["reason"], h["cancelled"]) for h in history.to_pylist()] == [
        ("death", True),
        ("cancel", False),
        ("death", False),
    ]
    replace_file(version, "history.arrow", ipc_bytes(history_table(version), batch_rows))
    after = Registry.open(saved)
    assert after.history(keys).equals(history)
    assert after.to_arrow().equals(before.to_arrow())


@pytest.mark.parametrize("checkpoint", [False, True])
def test_a_renamed_person_is_searched_by_the_new_name_after_reopening(
    saved: Path, checkpoint: bool
) -> None:
    registry = Registry.open(saved)
    (r,) = residents(registry, 1)
    rows = registry.lookup([r["my_number"]], columns=["given_name"]).to_pylist()
    given = rows[0]["given_name"]
    change = {
        "municipality": str(r["municipality_code"]),
        "sequence": 77,
        "reason": "name_change",
        "effective_date": D(2025, 4, 1),
        "reported_date": D(2025, 4, 1),
        "my_number": r["my_number"],
        "family_name": "改名",
        "family_name_kana": "カイメイ",
    }
    registry.apply(pa.Table.from_pylist([change]), today=TODAY)
    if checkpoint:
        registry.checkpoint()
    del registry
    again = Registry.open(saved)
    facts = pa.table(
        {
            "family_name": ["改名"],
            "given_name": [given],
            "birth_date": pa.array([r["birth_date"]], pa.date32()),
        }
    )
    found = again.search(facts, match="exact", columns=["my_number"]).to_pylist()
    assert [(c["outcome"], c["my_number"]) for c in found] == [("unique", r["my_number"])]


def test_a_checkpoint_writes_the_registry_as_it_stands(saved: Path) -> None:
    """Folded column by column, indexes built from the base and the changed identifiers: the
    reopened snapshot holds what `to_arrow` of the living registry gave, births (one cancelled)
    and a replaced number included, and both numbers still find the person."""
    registry = Registry.open(saved)
    people = residents(registry, 3)
    m = str(people[0]["municipality_code"])
    day = {"effective_date": D(2025, 4, 2), "reported_date": D(2025, 4, 3)}
    birth = {"municipality": m, "reason": "birth", **day}
    birth |= {"family_name": "新生", "family_name_kana": "シンセイ", "given_name": "一"}
    birth |= {"given_name_kana": "ハジメ", "birth_date": D(2025, 4, 2), "sex": 1}
    birth |= {"address_town": "誕生町", "address_block": "1-1"}
    changes = [
        birth | {"sequence": 900},
        birth | {"sequence": 901, "given_name": "二", "given_name_kana": "ジ"},
        {"municipality": m, "sequence": 902, "reason": "cancel", "cancels": 901, **day},
        {"municipality": m, "sequence": 903, "reason": "my_number_change", **day}
        | {"my_number": people[0]["my_number"]},
    ]
    table = pa.Table.from_pylist(changes, schema=CHANGE_SCHEMA)
    results = registry.apply(table, today=TODAY).to_pylist()
    assert [r["outcome"] for r in results] == ["applied"] * 4, results
    registry.apply(deaths(people[1:3], 1_000), today=TODAY)
    before = registry.to_arrow().to_pylist()
    assert len(before) == 2_002  # both births keep their rows; the cancelled one reads as no one
    registry.checkpoint()
    del registry
    again = Registry.open(saved)
    assert again.to_arrow().to_pylist() == before
    new_number = results[3]["my_number"]
    for key in (people[0]["my_number"], new_number):
        row = again.lookup([key], columns=["my_number"]).to_pylist()[0]
        assert row["found"] and row["my_number"] == new_number
    born = again.lookup([results[0]["my_number"]], columns=["given_name"]).to_pylist()[0]
    assert born["found"] and born["given_name"] == "一"
    assert not again.lookup([results[1]["my_number"]]).to_pylist()[0]["found"]


def test_a_replica_keeps_its_own_log_and_catches_up_by_records_shipped_from_another(
    saved: Path,
) -> None:
    """Two replicas of one snapshot, each with its own change log: the same batches at the same
    commit time make the same registry; one that missed batches takes the other's records
    (log shipping), durable in its own log, and then reads the same, reopened too. Records
    that do not continue its batches, or are damaged, are refused, naming them."""
    leader = Registry.open(saved, log="changes.replica-0.log")
    people = residents(leader, 30)
    behind = Registry.open(saved, log="changes.replica-1.log")
    first, second = deaths(people[:10], 0), deaths(people[10:20], 100)
    for replica in (leader, behind):
        replica._apply(first, TODAY, recorded=1_750_000_000_000_000)
    leader._apply(second, TODAY, recorded=1_750_000_000_000_001)
    leader._apply(deaths(people[20:], 200), TODAY)
    assert (leader._last_batch(), behind._last_batch()) == (3, 1)
    assert statuses(behind, people) == ["deceased"] * 10 + ["resident"] * 20
    shipped = leader._log_since(behind._last_batch())
    assert len(shipped) == 2 and leader._log_since(3) == []
    # Out of order, or damaged: refused, and nothing of them applied.
    with pytest.raises(JukiError, match=r"shipped record 0 is of batch 3, .* next batch is 2"):
        behind._redo_shipped(shipped[1:])
    damaged = bytearray(shipped[0])
    damaged[4:8] = (2).to_bytes(4, "little")
    with pytest.raises(SnapshotCorrupt, match="shipped record 0"):
        behind._redo_shipped([bytes(damaged[:-9])])
    assert behind._last_batch() == 1
    assert behind._redo_shipped(shipped) == 2
    columns = ["status", "status_date", "municipality_code"]
    keys = [str(r["my_number"]) for r in people]
    assert behind.lookup(keys, columns=columns).equals(leader.lookup(keys, columns=columns))
    assert behind.history(keys).equals(leader.history(keys))
    # Durable in its own log: reopened, it is the same; the leader's log is untouched by it.
    del behind
    again = Registry.open(saved, log="changes.replica-1.log")
    assert again.history(keys).equals(leader.history(keys))
    assert (saved / "changes.replica-0.log").stat().st_size == (
        saved / "changes.replica-1.log"
    ).stat().st_size
    assert not (saved / "changes.log").exists()


@pytest.mark.parametrize(
    "name", ["../changes.log", "changes", ".log", "x/y.log", "a" * 70 + ".log"]
)
def test_a_change_log_name_that_is_not_a_plain_file_name_is_refused(saved: Path, name: str) -> None:
    with pytest.raises(JukiError, match="is not a change log's file name"):
        Registry.open(saved, log=name)


def test_a_checkpoint_by_the_shards_own_replica_covers_the_others_logs(saved: Path) -> None:
    """The shard's own replica (its `changes.log`) checkpoints: another replica reopened skips
    the records of its own log that the snapshot holds and redoes the rest; one behind the
    checkpoint cannot be shipped what the snapshot holds (it reopens from it), and a log is
    emptied as covered only at the snapshot's batch."""
    own = Registry.open(saved)
    other = Registry.open(saved, log="changes.replica-1.log")
    people = residents(own, 30)
    for i, replica in enumerate((own, other)):
        replica._apply(deaths(people[:10], 0), TODAY, recorded=1_750_000_000_000_000 + i)
    behind = other._last_batch()
    for replica in (own, other):
        replica._apply(deaths(people[10:20], 100), TODAY, recorded=1_750_000_000_000_005)
    own.checkpoint()
    with pytest.raises(JukiError, match=r"begins after batch 1 .* up to 2"):
        own._log_since(behind)
    with pytest.raises(JukiError, match="last batch is 2, not 1"):
        other._log_covered(1)
    # Crashed before emptying its log, it reopens from the new snapshot, skipping both records.
    keys = [str(r["my_number"]) for r in people]
    del other
    reopened = Registry.open(saved, log="changes.replica-1.log")
    assert reopened._last_batch() == 2
    assert reopened.history(keys).equals(own.history(keys))
    # Taking the next batch in step, and then emptied as covered, it keeps only what follows.
    for replica in (own, reopened):
        replica._apply(deaths(people[20:], 200), TODAY, recorded=1_750_000_000_000_009)
    reopened._log_covered(3)
    assert (saved / "changes.replica-1.log").stat().st_size == 28
