"""転入通知 in the core: a move_in owes the former municipality a notice, created with the change,
numbered for good (restarts and checkpoints keep the numbers), and owed to no one else."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest
from town import Town, table

from juki_engine import InvalidInput, Registry
from juki_engine.ids import local_government_code_check_digit

D = dt.date
ADDRESS = {"address_town": "新町", "address_block": "2番地"}


def move(town: Town, r: dict[str, object], to: str, **dates: dt.date) -> list[dict[str, object]]:
    """Resident `r` moves out of their municipality and into `to`; the results of both rows."""
    home, rc = str(r["municipality_code"]), r["resident_code"]
    return town.apply(
        town.change("move_out", home, resident_code=rc, moving_to=to, **dates),
        town.change("move_in", to, resident_code=rc, **ADDRESS, **dates),
    )


def test_a_move_in_owes_the_former_municipality_one_notice_and_no_one_else() -> None:
    town = Town(Registry.generate(population=3_000, seed=5))
    r = town.resident()
    home = r["municipality_code"]
    new = town.elsewhere(home)
    assert town.registry.notices(home).num_rows == 0
    assert [o["outcome"] for o in move(town, r, new)] == ["applied", "applied"]
    (notice,) = town.registry.notices(home).to_pylist()
    assert notice["kind"] == "move_in" and notice["notice"] >= 1
    assert notice["resident_code"] == r["resident_code"]
    assert (notice["family_name"], notice["given_name"]) == (r["family_name"], r["given_name"])
    assert (notice["birth_date"], notice["sex"]) == (r["birth_date"], r["sex"])
    assert (
        notice["from_municipality_code"],
        notice["from_address_town"],
        notice["from_address_block"],
    ) == (home, r["address_town"], r["address_block"])
    assert (
        notice["to_municipality_code"],
        notice["to_address_town"],
        notice["to_address_block"],
    ) == (new, "新町", "2番地")
    assert notice["recorded_by"] == new and notice["effective_date"] == D(2025, 3, 1)
    # Owed to the former municipality only; the new one and a third are owed nothing.
    assert town.registry.notices(new).num_rows == 0
    third = next(
        str(x["municipality_code"]) for x in town.rows if x["municipality_code"] not in (home, new)
    )
    assert town.registry.notices(third).num_rows == 0
    # After its number, nothing more is owed until another move.
    assert town.registry.notices(home, after=notice["notice"]).num_rows == 0


def test_notices_come_in_order_resume_after_a_number_and_stop_at_the_limit() -> None:
    town = Town(Registry.generate(population=3_000, seed=5))
    adults = [r for r in town.rows if r["status"] == "resident" and r["birth_date"] < D(2000, 1, 1)]
    home = Counter(r["municipality_code"] for r in adults).most_common(1)[0][0]
    movers = [r for r in adults if r["municipality_code"] == home]
    new = town.elsewhere(home)
    assert len(movers) >= 8
    for r, other in zip(movers[:4], movers[4:8], strict=True):
        # Unrelated changes between them: notice numbers are change numbers, not dense.
        town.apply(town.change("death", home, resident_code=other["resident_code"]))
        move(town, r, new)
    notices = town.registry.notices(home).to_pylist()
    assert [n["resident_code"] for n in notices] == [r["resident_code"] for r in movers[:4]]
    numbers = [n["notice"] for n in notices]
    assert numbers == sorted(numbers) and len(set(numbers)) == 4
    assert numbers[1] - numbers[0] > 1
    assert town.registry.notices(home, after=numbers[1]).to_pylist() == notices[2:]
    assert town.registry.notices(home, after=numbers[0], limit=2).to_pylist() == notices[1:3]
    assert town.registry.notices(home, limit=0).num_rows == 0
    # The backlog the metrics show: what is owed after each municipality's acknowledgement.
    backlog = town.registry._notice_backlog
    assert backlog({home: 0, new: 0}) == {home: 4, new: 0}
    assert backlog({home: numbers[1]}) == {home: 2}
    assert backlog({home: numbers[-1], "999999": 0}) == {home: 0, "999999": 0}
    assert backlog({}) == {}


def test_a_cancelled_move_in_owes_a_second_notice_and_a_refused_one_none() -> None:
    town = Town(Registry.generate(population=3_000, seed=5))
    r, other = town.resident(0), town.resident(1)
    home, rc = r["municipality_code"], r["resident_code"]
    new = town.elsewhere(home)
    move(town, r, new)
    move_in_sequence = town.sequence[new]
    (cancel,) = town.apply(town.change("cancel", new, cancels=move_in_sequence))
    assert cancel["outcome"] == "applied"
    kinds = [(n["kind"], n["resident_code"]) for n in town.registry.notices(home).to_pylist()]
    assert kinds == [("move_in", rc), ("move_in_cancelled", rc)]
    cancelled = town.registry.notices(home).to_pylist()[1]
    assert (cancelled["from_municipality_code"], cancelled["to_municipality_code"]) == (home, new)
    # A move_in refused (no move_out pending) owes nothing.
    (refused,) = town.apply(
        town.change("move_in", new, resident_code=other["resident_code"], **ADDRESS)
    )
    assert refused["outcome"] == "rejected"
    assert town.registry.notices(other["municipality_code"]).num_rows == (
        2 if other["municipality_code"] == home else 0
    )


def test_notice_numbers_survive_reopening_and_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "registry"
    Registry.generate(population=3_000, seed=5).save(path)
    town = Town(Registry.open(path))
    first, second = town.resident(0), town.resident(1)
    home = first["municipality_code"]
    move(town, first, town.elsewhere(home))
    before = town.registry.notices(first["municipality_code"])
    town.registry = Registry.open(path)  # the log redone
    assert town.registry.notices(home).equals(before)
    town.registry.checkpoint()
    town.registry = Registry.open(path)  # the history loaded from the snapshot
    assert town.registry.notices(home).equals(before)
    move(town, second, town.elsewhere(second["municipality_code"]))
    after = town.registry.notices(second["municipality_code"]).to_pylist()[-1]
    town.registry.checkpoint()
    town.registry = Registry.open(path)
    assert town.registry.notices(home).equals(before)
    assert town.registry.notices(second["municipality_code"]).to_pylist()[-1] == after
    assert after["notice"] > before["notice"][0].as_py()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("16201", "6"),
        ("162010", "check digit"),
        ("99999" + str(local_government_code_check_digit("99999")), "not a municipality"),
    ],
)
def test_a_municipality_not_of_the_registry_is_named(code: str, message: str) -> None:
    registry = Registry.generate(population=500, seed=1)
    with pytest.raises(InvalidInput) as info:
        registry.notices(code)
    assert message in str(info.value), str(info.value)


def test_a_read_says_how_far_it_looked_so_a_quiet_reader_starts_there_next_time() -> None:
    town = Town(Registry.generate(population=3_000, seed=5))
    r = town.resident()
    home, new = r["municipality_code"], town.elsewhere(r["municipality_code"])
    third = next(
        str(x["municipality_code"]) for x in town.rows if x["municipality_code"] not in (home, new)
    )
    move(town, r, new)
    (notice,) = town.registry.notices(home).to_pylist()
    # A municipality owed nothing still learns it looked through the notice that was not its.
    quiet = town.registry.notices(third)
    assert quiet.num_rows == 0
    assert int(quiet.schema.metadata[b"juki.scanned_through"]) == notice["notice"]
    # A subscription watching no one looked through every change.
    changes = town.registry._watched_changes(b"", ["death", "move_in"])
    assert changes.num_rows == 0
    assert int(changes.schema.metadata[b"juki.scanned_through"]) == notice["notice"]
    # Asked after that, nothing is left to look through.
    again = town.registry.notices(third, after=notice["notice"])
    assert int(again.schema.metadata[b"juki.scanned_through"]) == notice["notice"]


def test_a_shard_numbers_its_changes_as_its_front_end_says_and_keeps_the_numbers(
    tmp_path: Path,
) -> None:
    """A shard's changes carry the numbers its front end gives (numbers of the whole sharded
    registry's changes, with gaps): its notices and its change feed use them, its change log and
    its checkpoints keep them, and a batch that would break their order is refused, saying
    why."""
    path = tmp_path / "shard"
    Registry.generate(population=3_000, seed=5).save(path)
    town = Town(Registry.open(path))
    r, other = town.resident(0), town.resident(1)
    home, new = str(r["municipality_code"]), town.elsewhere(str(r["municipality_code"]))
    rc = r["resident_code"]
    rows = [
        town.change("move_out", home, resident_code=rc, moving_to=new),
        town.change("move_in", new, resident_code=rc, **ADDRESS),
        town.change("death", home, resident_code="12345678903"),  # no one: rejected
    ]
    out = town.registry._apply(table(*rows), numbers=[10, 11, 12], rows=[3, 7, 9])
    assert out["outcome"].to_pylist() == ["applied", "applied", "rejected"]
    # Messages name the rows as the front end that split its caller's table numbers them.
    assert out["error"][2].as_py().startswith("row 9: ")
    (notice,) = town.registry.notices(home).to_pylist()
    assert notice["notice"] == 11
    # A rejected row's number is a gap: the newest change is the move_in's.
    assert town.registry._last_change() == 11
    death = town.change(
        "death", str(other["municipality_code"]), resident_code=other["resident_code"]
    )
    town.registry._apply(table(death), numbers=[40])
    watch = bytes([0xFF]) * (3_000 // 8 + 1)
    feed = town.registry._watched_changes(watch, ["move_out", "move_in", "death"])
    assert feed["change"].to_pylist() == [10, 11, 40]
    assert town.registry._watched_changes(watch, ["death"], after=11)["change"].to_pylist() == [40]
    assert town.registry.notices(home, after=11).num_rows == 0
    # The change log keeps the numbers.
    before = town.registry.notices(home)
    town.registry = again = Registry.open(path)
    assert again.notices(home).equals(before)
    assert again._last_change() == 40
    third = town.resident(2)
    later = town.change(
        "death", str(third["municipality_code"]), resident_code=third["resident_code"]
    )
    cases = [
        (None, "numbered by its front end"),
        ([40], "40 does not follow the newest change, 40"),
        ([41, 42], "2 numbers for 1 rows"),
    ]
    for numbers, message in cases:
        with pytest.raises(InvalidInput, match=message):
            again._apply(table(later), numbers=numbers)
    with pytest.raises(InvalidInput, match="rows: 2 row numbers for 1 rows"):
        again._apply(table(later), numbers=[41], rows=[1, 2])
    with pytest.raises(InvalidInput, match="not ascending at 1: 50 then 50"):
        again._apply(table(later, later | {"sequence": later["sequence"] + 1}), numbers=[50, 50])
    # Nothing of the refused batches was applied; a right one is.
    assert again._apply(table(later), numbers=[41])["outcome"].to_pylist() == ["applied"]
    # A checkpoint keeps the numbers in the history: reopened, the notices, the change feed
    # and the newest number are the same, and numbering goes on after it.
    feed = again._watched_changes(watch, ["move_out", "move_in", "death"])
    notices = again.notices(home)
    again.checkpoint()
    town.registry = again = Registry.open(path)
    assert again.notices(home).equals(notices)
    assert again._watched_changes(watch, ["move_out", "move_in", "death"]).equals(feed)
    assert again._last_change() == 41
    with pytest.raises(InvalidInput, match="41 does not follow the newest change, 41"):
        again._apply(table(later), numbers=[41])
    fourth = town.resident(3)
    last = town.change(
        "death", str(fourth["municipality_code"]), resident_code=fourth["resident_code"]
    )
    assert again._apply(table(last), numbers=[90])["outcome"].to_pylist() == ["applied"]
    assert again._watched_changes(watch, ["death"], after=41)["change"].to_pylist() == [90]
    # A registry that numbers its own changes takes no numbered batch.
    plain = Town(Registry.generate(population=3_000, seed=5))
    plain.apply(plain.change("death", home, resident_code=rc))
    with pytest.raises(InvalidInput, match="numbers its 1 changes by position"):
        plain.registry._apply(table(later), numbers=[100])
