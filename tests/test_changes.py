"""The living registry: changes (異動) applied live, their rules, history and as-of reads.

Each test applies changes to a registry of its own (changes mutate it); docs/changes.md is the
contract these tests pin.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from town import TODAY, Town, stranger_to, table

from juki_engine import InvalidInput, Registry
from juki_engine._core import is_valid
from juki_engine.ids import local_government_code_check_digit

D = dt.date


@pytest.fixture
def town() -> Iterator[Town]:
    yield Town(Registry.generate(population=3_000, seed=5))


def test_a_death_is_seen_at_once_and_not_before_its_date(town: Town) -> None:
    r = town.resident()
    (out,) = town.apply(
        town.change(
            "death",
            r["municipality_code"],
            resident_code=r["resident_code"],
            effective_date=D(2025, 3, 1),
            reported_date=D(2025, 3, 3),
        )
    )
    assert out == {
        "outcome": "applied",
        "code": None,
        "error": None,
        "resident_code": r["resident_code"],
        "my_number": r["my_number"],
    }
    now = town.now(r["resident_code"])
    assert (now["status"], now["status_date"]) == ("deceased", D(2025, 3, 1))
    before = town.now(r["resident_code"], as_of=D(2025, 2, 28))
    assert (before["status"], before["status_date"]) == ("resident", None)
    verified = town.registry.verify(
        pa.table({"my_number": [r["my_number"]], "family_name": [r["family_name"]]})
    ).to_pylist()[0]
    assert verified["status"] == "deceased" and verified["family_name_match"]
    # Only the rest of the row changed: the same name and address.
    assert (now["family_name"], now["address_town"]) == (r["family_name"], r["address_town"])


def test_a_second_death_and_a_stranger_municipality_are_rejected(town: Town) -> None:
    r = town.resident()
    other = town.elsewhere(r["municipality_code"])
    rc = r["resident_code"]
    first, second, stranger = town.apply(
        town.change("death", r["municipality_code"], resident_code=rc),
        town.change("death", r["municipality_code"], resident_code=rc),
        town.change(
            "move_within",
            other,
            resident_code=stranger_to(town, other),
            address_town="本町",
            address_block="1-1",
        ),
    )
    assert first["outcome"] == "applied"
    assert second["outcome"] == "rejected" and "already deceased" in second["error"]
    assert second["error"].startswith("row 1: death") and second["code"] == "conflict"
    assert (stranger["outcome"], stranger["code"]) == ("rejected", "not_permitted")
    assert f"municipality {int(other)} does not hold this resident" in stranger["error"]
    assert "move_out then move_in" in stranger["error"]


def test_a_move_between_municipalities_needs_the_former_ones_move_out(town: Town) -> None:
    r = town.resident()
    home, new = r["municipality_code"], town.elsewhere(r["municipality_code"])
    rc = r["resident_code"]
    address = {"address_town": "新町", "address_block": "2番地"}
    (early,) = town.apply(town.change("move_in", new, resident_code=rc, **address))
    assert (early["outcome"], early["code"]) == ("rejected", "not_permitted")
    assert "no move_out (転出証明書)" in early["error"]
    # The refusal names nothing of the resident: not where they live, nor their status.
    assert home not in early["error"] and str(int(home)) not in early["error"]
    assert early["resident_code"] is None and early["my_number"] is None
    assert town.now(rc)["municipality_code"] == home
    out, into = town.apply(
        town.change(
            "move_out",
            home,
            resident_code=rc,
            moving_to=new,
            effective_date=D(2025, 3, 10),
            reported_date=D(2025, 3, 1),
        ),
        town.change(
            "move_in",
            new,
            resident_code=rc,
            effective_date=D(2025, 3, 10),
            reported_date=D(2025, 3, 12),
            **address,
        ),
    )
    assert (out["outcome"], into["outcome"]) == ("applied", "applied")
    now = town.now(rc)
    assert (now["municipality_code"], now["address_town"], now["address_block"]) == (
        new,
        "新町",
        "2番地",
    )
    # Verified against the address in force on the day asked about.
    claims = pa.table({"resident_code": [rc, rc], "municipality_code": [home, new]})
    january = town.registry.verify(claims, by="resident_code", as_of=D(2025, 1, 15))
    assert january["municipality_code_match"].to_pylist() == [True, False]
    april = town.registry.verify(claims, by="resident_code")
    assert april["municipality_code_match"].to_pylist() == [False, True]
    # The new municipality holds the resident now; the former one no longer does.
    (again,) = town.apply(town.change("move_within", home, resident_code=rc, **address))
    assert again["outcome"] == "rejected" and "does not hold" in again["error"]
    assert again["code"] == "not_permitted" and new not in again["error"]


def test_a_move_in_within_the_same_municipality_is_refused(town: Town) -> None:
    r = town.resident()
    (out,) = town.apply(
        town.change(
            "move_in",
            r["municipality_code"],
            resident_code=r["resident_code"],
            address_town="a",
            address_block="b",
        )
    )
    assert out["outcome"] == "rejected" and "move_within" in out["error"]


def test_a_birth_issues_codes_from_the_municipality_and_a_converted_number(town: Town) -> None:
    home = town.resident()["municipality_code"]
    birth = {
        "family_name": "髙橋",
        "family_name_kana": "タカハシ",
        "given_name": "未来翔",  # a given name the registry's dictionary may not hold
        "given_name_kana": "ミライト",
        "birth_date": D(2025, 4, 2),
        "sex": 1,
        "address_town": "誕生町",
        "address_block": "1-2-3",
        "effective_date": D(2025, 4, 2),
        "reported_date": D(2025, 4, 10),
    }
    a, b = town.apply(town.change("birth", home, **birth), town.change("birth", home, **birth))
    assert a["outcome"] == b["outcome"] == "applied"
    codes = {a["resident_code"], b["resident_code"]}
    numbers = {a["my_number"], b["my_number"]}
    assert len(codes) == len(numbers) == 2
    assert all(is_valid("resident_code", c) for c in codes)
    assert all(is_valid("my_number", n) for n in numbers)
    held = {r["resident_code"] for r in town.rows} | {r["my_number"] for r in town.rows}
    assert not (codes | numbers) & held
    by_number = town.now(a["my_number"], by="my_number")
    assert by_number["found"] and by_number["resident_code"] == a["resident_code"]
    assert (by_number["given_name"], by_number["address_town"]) == ("未来翔", "誕生町")
    assert (by_number["municipality_code"], by_number["status"]) == (home, "resident")
    assert not town.now(a["my_number"], by="my_number", as_of=D(2025, 4, 1))["found"]
    # A name the change brought is compared like any other, at every level.
    claims = pa.table(
        {
            "my_number": [a["my_number"]] * 2,
            "given_name": ["未来翔", "未来 翔"],
            "family_name": ["高橋", "髙橋"],
        }
    )
    exact = town.registry.verify(claims)
    assert exact["given_name_match"].to_pylist() == [True, False]
    assert exact["family_name_match"].to_pylist() == [False, True]
    normalised = town.registry.verify(claims, match="normalised")
    assert normalised["given_name_match"].to_pylist() == [True, True]
    assert normalised["family_name_level"].to_pylist() == ["normalised", "exact"]
    assert len(town.registry) == len(town.rows) + 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"resident_code": "00000000000"}, "a new person has no identifier yet"),
        ({"given_name": None}, "are required"),
        (
            {"effective_date": D(2025, 4, 3), "reported_date": D(2025, 4, 3)},
            "is not the birth_date",
        ),
        ({"sex": 3}, "sex 3 is not 1 (male) or 2 (female)"),
        ({"address_block": None}, "address_town and address_block are required"),
        ({"reported_date": D(2025, 4, 1)}, "is before the effective_date"),
        (
            {
                "effective_date": D(2025, 7, 2),
                "birth_date": D(2025, 7, 2),
                "reported_date": D(2025, 7, 2),
            },
            "lies in the future",
        ),
    ],
)
def test_a_birth_missing_or_contradicting_a_fact_is_rejected(
    town: Town, change: dict[str, Any], message: str
) -> None:
    birth = {
        "family_name": "佐藤",
        "family_name_kana": "サトウ",
        "given_name": "花",
        "given_name_kana": "ハナ",
        "birth_date": D(2025, 4, 2),
        "sex": 2,
        "address_town": "町",
        "address_block": "1",
        "effective_date": D(2025, 4, 2),
        "reported_date": D(2025, 4, 2),
    }
    (out,) = town.apply(
        town.change("birth", town.resident()["municipality_code"], **(birth | change))
    )
    assert out["outcome"] == "rejected" and message in out["error"], out
    assert len(town.registry) == len(town.rows)


def test_a_name_change_shows_in_verify_and_in_history(town: Town) -> None:
    r = town.resident()
    rc = r["resident_code"]
    (out,) = town.apply(
        town.change(
            "name_change",
            r["municipality_code"],
            resident_code=rc,
            family_name="渡邉",
            family_name_kana="ワタナベ",
        )
    )
    assert out["outcome"] == "applied"
    claims = pa.table({"resident_code": [rc, rc], "family_name": [r["family_name"], "渡邉"]})
    assert town.registry.verify(claims, by="resident_code")["family_name_match"].to_pylist() == [
        r["family_name"] == "渡邉",
        True,
    ]
    (h,) = town.registry.history([rc], by="resident_code").to_pylist()
    assert (h["reason"], h["municipality"], h["cancelled"]) == (
        "name_change",
        r["municipality_code"],
        False,
    )
    changed = {c["field"]: (c["old"], c["new"]) for c in h["changes"]}
    assert changed["family_name"] == (r["family_name"], "渡邉")
    assert changed["family_name_kana"] == (r["family_name_kana"], "ワタナベ")
    assert "given_name" not in changed  # unchanged fields are not listed


def test_replaced_identifiers_answer_replaced_and_numbers_never_repeat(town: Town) -> None:
    r = town.resident()
    m = r["municipality_code"]
    old_rc, old_mn = r["resident_code"], r["my_number"]
    (code,) = town.apply(town.change("resident_code_change", m, resident_code=old_rc))
    new_rc = code["resident_code"]
    assert new_rc != old_rc and code["my_number"] == old_mn  # the number is kept
    by_old = town.now(old_rc)
    assert by_old["found"] and by_old["replaced"] and by_old["resident_code"] == new_rc
    assert not town.now(new_rc)["replaced"]
    numbers = [old_mn]
    for _ in range(3):
        (out,) = town.apply(town.change("my_number_change", m, resident_code=new_rc))
        assert out["outcome"] == "applied"
        numbers.append(out["my_number"])
    assert len(set(numbers)) == 4 and all(is_valid("my_number", n) for n in numbers)
    looked = town.registry.lookup(numbers, columns=["my_number"]).to_pylist()
    assert [row["replaced"] for row in looked] == [True, True, True, False]
    assert {row["my_number"] for row in looked} == {numbers[-1]}
    # Without the identifier among the columns asked for, the new one is not disclosed.
    narrow = town.registry.lookup([old_mn], columns=["status"]).to_pylist()[0]
    assert narrow == {"found": True, "error": None, "replaced": True, "status": "resident"}
    # History follows the person through every identifier.
    assert len(town.registry.history([old_rc], by="resident_code")) == 4
    assert len(town.registry.history([numbers[2]])) == 4


def test_the_same_sequence_twice_changes_nothing_and_gives_the_first_result(town: Town) -> None:
    r, s = town.resident(), town.resident(1)
    rows = [
        town.change("death", r["municipality_code"], resident_code=r["resident_code"]),
        town.change("death", s["municipality_code"], resident_code="12345678901"),
    ]
    first = town.registry.apply(table(*rows), today=TODAY).to_pylist()
    assert first[0]["outcome"] == "applied" and first[1]["outcome"] == "rejected"
    again = town.registry.apply(table(*rows), today=TODAY).to_pylist()
    assert [a["outcome"] for a in again] == ["duplicate", "duplicate"]
    assert again[0] | {"outcome": "applied"} == first[0]
    assert again[1]["error"] == first[1]["error"]
    assert len(town.registry.history([r["resident_code"]], by="resident_code")) == 1


def test_a_cancel_restores_the_values_before_unless_a_later_change_followed(town: Town) -> None:
    r = town.resident()
    m, rc = r["municipality_code"], r["resident_code"]
    death = town.change("death", m, resident_code=rc)
    town.apply(death)
    (cancel,) = town.apply(town.change("cancel", m, cancels=death["sequence"]))
    assert cancel["outcome"] == "applied"
    assert town.now(rc)["status"] == "resident"
    history = town.registry.history([rc], by="resident_code").to_pylist()
    assert [(h["reason"], h["cancelled"]) for h in history] == [("death", True), ("cancel", False)]
    move = town.change("move_within", m, resident_code=rc, address_town="甲", address_block="1")
    later = town.change("move_within", m, resident_code=rc, address_town="乙", address_block="2")
    town.apply(move, later)
    (refused,) = town.apply(town.change("cancel", m, cancels=move["sequence"]))
    assert refused["outcome"] == "rejected" and "a later change touched" in refused["error"]
    (unknown,) = town.apply(town.change("cancel", m, cancels=99_999))
    assert unknown["outcome"] == "rejected" and "has no change 99999" in unknown["error"]
    town.apply(town.change("cancel", m, cancels=later["sequence"]))
    assert town.now(rc)["address_town"] == "甲"


def a_birth(
    town: Town, municipality: str, family: tuple[str, str], given: tuple[str, str]
) -> dict[str, Any]:
    """A girl born on 2025-02-01 in `municipality`, reported two days later."""
    return town.change(
        "birth",
        municipality,
        family_name=family[0],
        family_name_kana=family[1],
        given_name=given[0],
        given_name_kana=given[1],
        birth_date=D(2025, 2, 1),
        sex=2,
        address_town="町",
        address_block="1",
        effective_date=D(2025, 2, 1),
        reported_date=D(2025, 2, 3),
    )


def test_a_cancelled_birth_is_not_found(town: Town) -> None:
    m = town.resident()["municipality_code"]
    birth = a_birth(town, m, ("森", "モリ"), ("陽", "ヨウ"))
    (born,) = town.apply(birth)
    town.apply(town.change("cancel", m, cancels=birth["sequence"]))
    assert not town.now(born["my_number"], by="my_number")["found"]


@pytest.mark.parametrize(
    ("reason", "fields", "code", "message"),
    [
        (
            "death",
            {"effective_date": D(2025, 7, 1), "reported_date": D(2025, 7, 1)},
            "invalid",
            "effective_date 2025-07-01 lies in the future",
        ),
        ("death", {"effective_date": D(1800, 1, 1)}, "invalid", "is before the birth_date"),
        ("death", {"resident_code": "12345678900"}, "invalid", "check digit"),
        ("death", {"resident_code": "1234"}, "invalid", "resident_code"),
        ("death", {"resident_code": "12345678903"}, "not_found", "no resident has"),
        ("death", {"resident_code": None}, "invalid", "resident_code or my_number is required"),
        ("funeral", {}, "invalid", "reason 'funeral' is not one of"),
        ("name_change", {}, "invalid", "give family_name, given_name or a reading"),
        ("card_issued", {}, "conflict", "the card state is"),
        ("move_within", {}, "invalid", "address_town and address_block are required"),
    ],
)
def test_each_rejection_names_the_reason_and_what_was_wrong(
    town: Town, reason: str, fields: dict[str, Any], code: str, message: str
) -> None:
    r = town.resident()
    rc = {"resident_code": r["resident_code"]} if "resident_code" not in fields else {}
    (out,) = town.apply(town.change(reason, r["municipality_code"], **(rc | fields)))
    assert out["outcome"] == "rejected" and message in out["error"], out
    assert out["code"] == code, out
    assert out["error"].startswith("row 0: ")


def test_a_move_out_may_lie_ahead_and_a_row_without_a_valid_municipality_is_rejected(
    town: Town,
) -> None:
    r = town.resident()
    (ahead,) = town.apply(
        town.change(
            "move_out",
            r["municipality_code"],
            resident_code=r["resident_code"],
            effective_date=D(2025, 7, 20),
            reported_date=D(2025, 6, 20),
        )
    )
    assert ahead["outcome"] == "applied"
    bad = town.apply(
        {
            "municipality": "162010",
            "sequence": 1,
            "reason": "death",
            "resident_code": r["resident_code"],
        },
        {
            "municipality": "99999" + str(local_government_code_check_digit("99999")),
            "sequence": 1,
            "reason": "death",
            "resident_code": r["resident_code"],
        },
    )
    assert "municipality: " in bad[0]["error"] and "check digit" in bad[0]["error"]
    assert "is not a municipality of the registry" in bad[1]["error"]


def test_card_states_move_in_order_and_abroad_and_back_keeps_the_codes(town: Town) -> None:
    r = town.resident()
    m, rc = r["municipality_code"], r["resident_code"]
    if r["card_state"] != "none":
        town.apply(town.change("card_returned", m, resident_code=rc))
    outs = town.apply(
        town.change("card_applied", m, resident_code=rc),
        town.change("card_issued", m, resident_code=rc),
        town.change("move_abroad", m, resident_code=rc),
    )
    assert [o["outcome"] for o in outs] == ["applied"] * 3
    assert town.now(rc)["card_state"] == "issued"
    assert town.now(rc)["status"] == "moved_abroad"
    other = town.elsewhere(m)
    (back,) = town.apply(
        town.change(
            "return_from_abroad", other, resident_code=rc, address_town="港町", address_block="9"
        )
    )
    assert back == {
        "outcome": "applied",
        "code": None,
        "error": None,
        "resident_code": rc,
        "my_number": r["my_number"],
    }
    now = town.now(rc)
    assert (now["status"], now["municipality_code"]) == ("resident", other)


def test_removal_and_official_entry_and_correction(town: Town) -> None:
    r = town.resident()
    m, rc = r["municipality_code"], r["resident_code"]
    outs = town.apply(
        town.change("official_removal", m, resident_code=rc),
        town.change(
            "official_entry", m, resident_code=rc, address_town="役場前", address_block="1"
        ),
        town.change("official_correction", m, resident_code=rc, birth_date=D(1980, 1, 2), sex=2),
    )
    assert [o["outcome"] for o in outs] == ["applied"] * 3, outs
    now = town.now(rc)
    assert (now["status"], now["birth_date"], now["sex"]) == ("resident", D(1980, 1, 2), 2)


def test_a_late_report_changes_the_past_only_from_when_it_was_recorded(town: Town) -> None:
    """A move effective 1 March reported after a name change effective 20 March: as of 10 March
    the registry says new address, old name; as recorded before the late report, old address."""
    r = town.resident()
    m, rc = r["municipality_code"], r["resident_code"]
    town.apply(
        town.change(
            "name_change",
            m,
            resident_code=rc,
            family_name="新姓",
            effective_date=D(2025, 3, 20),
            reported_date=D(2025, 3, 20),
        )
    )
    between = dt.datetime.now(dt.UTC)
    town.apply(
        town.change(
            "move_within",
            m,
            resident_code=rc,
            address_town="後町",
            address_block="5",
            effective_date=D(2025, 3, 1),
            reported_date=D(2025, 4, 1),
        )
    )
    cols = ["family_name", "address_town"]
    march10 = town.now(rc, columns=cols, as_of=D(2025, 3, 10))
    assert (march10["family_name"], march10["address_town"]) == (r["family_name"], "後町")
    recorded = town.now(rc, columns=cols, as_of=D(2025, 3, 10), recorded_as_of=between)
    assert (recorded["family_name"], recorded["address_town"]) == (
        r["family_name"],
        r["address_town"],
    )
    now = town.now(rc, columns=cols)
    assert (now["family_name"], now["address_town"]) == ("新姓", "後町")
    # Recorded as of a moment before both: the registry as it was.
    before = town.now(rc, columns=cols, recorded_as_of=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    assert (before["family_name"], before["address_town"]) == (r["family_name"], r["address_town"])


def test_a_malformed_change_table_is_refused_whole(town: Town) -> None:
    r = town.resident()
    with pytest.raises(InvalidInput, match="changes column 'colour'"):
        town.registry.apply(pa.table({"colour": ["red"]}))
    with pytest.raises(InvalidInput, match="changes have no 'reason' column"):
        town.registry.apply(
            pa.table(
                {
                    "municipality": [r["municipality_code"]],
                    "sequence": [1],
                    "effective_date": [D(2025, 1, 1)],
                    "reported_date": [D(2025, 1, 1)],
                }
            )
        )
    with pytest.raises(InvalidInput, match="'sequence' must hold integers"):
        town.registry.apply(
            table().drop(["sequence"]).append_column("sequence", pa.array([], pa.string()))
        )
    assert town.registry.applied_changes == 0


def test_readers_see_a_batch_entirely_or_not_at_all(town: Town) -> None:
    """While batches of 200 deaths apply, every verify sees each batch whole."""
    people = [
        r for r in town.rows if r["status"] == "resident" and r["birth_date"] < D(2020, 1, 1)
    ][:1_000]
    batches = [people[i : i + 200] for i in range(0, len(people), 200)]
    claims = pa.table({"my_number": [p["my_number"] for p in people]})
    stop = threading.Event()
    torn: list[list[int]] = []

    def read() -> None:
        while not stop.is_set():
            status = town.registry.verify(claims)["status"].to_pylist()
            dead = [sum(s == "deceased" for s in status[i : i + 200]) for i in range(0, 1_000, 200)]
            if any(d not in (0, 200) for d in dead):
                torn.append(dead)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    for batch in batches:
        town.apply(
            *(town.change("death", p["municipality_code"], my_number=p["my_number"]) for p in batch)
        )
    stop.set()
    for t in readers:
        t.join()
    assert not torn
    assert town.registry.verify(claims)["status"].to_pylist() == ["deceased"] * 1_000


def test_a_search_discloses_a_candidates_current_values(town: Town) -> None:
    r = town.resident()
    m, rc = r["municipality_code"], r["resident_code"]
    town.apply(
        town.change("move_within", m, resident_code=rc, address_town="検索後町", address_block="7"),
        town.change("death", m, resident_code=rc),
    )
    facts = pa.table(
        {
            "family_name": [r["family_name"]],
            "given_name": [r["given_name"]],
            "birth_date": pa.array([r["birth_date"]], pa.date32()),
        }
    )
    found = town.registry.search(
        facts, match="exact", columns=["resident_code", "status", "address_town"]
    ).to_pylist()
    mine = [c for c in found if c["resident_code"] == rc]
    assert [(c["status"], c["address_town"]) for c in mine] == [("deceased", "検索後町")]


@pytest.mark.parametrize("name", ["", "長" * 129])
def test_a_name_empty_or_over_128_characters_is_rejected(town: Town, name: str) -> None:
    r = town.resident()
    (out,) = town.apply(
        town.change(
            "name_change",
            r["municipality_code"],
            resident_code=r["resident_code"],
            family_name=name,
        )
    )
    assert out["outcome"] == "rejected"
    assert "family_name must hold 1 to 128 characters" in out["error"]


def test_a_large_lookup_and_verify_over_changes_keep_every_row_in_place(town: Town) -> None:
    """Over many chunks on all cores, each row answers for its own key."""
    r = town.resident()
    town.apply(town.change("death", r["municipality_code"], resident_code=r["resident_code"]))
    keys = [row["my_number"] for row in town.rows] * 30  # 90,000 keys
    out = town.registry.lookup(keys, columns=["my_number", "status"])
    assert out["my_number"].to_pylist() == keys
    want = [
        "deceased" if k == r["my_number"] else s
        for k, s in zip(keys, [row["status"] for row in town.rows] * 30, strict=True)
    ]
    assert out["status"].to_pylist() == want
    verified = town.registry.verify(pa.table({"my_number": keys}), columns=["my_number"])
    assert verified["status"].to_pylist() == want
    assert verified["my_number"].to_pylist() == keys


def test_a_return_from_abroad_of_someone_living_here_names_not_their_status(town: Town) -> None:
    """Any municipality may register a return; its refusal tells it nothing more than no."""
    r = town.resident()
    other = town.elsewhere(r["municipality_code"])
    (out,) = town.apply(
        town.change(
            "return_from_abroad",
            other,
            resident_code=r["resident_code"],
            address_town="港町",
            address_block="1",
        )
    )
    assert (out["outcome"], out["code"]) == ("rejected", "conflict")
    assert "not recorded as moved_abroad" in out["error"] and "status" not in out["error"]


def _search(registry: Registry, family: str, given: str, birth: dt.date, level: str) -> list[str]:
    facts = pa.table(
        {
            "family_name": [family],
            "given_name": [given],
            "birth_date": pa.array([birth], pa.date32()),
        }
    )
    found = registry.search(facts, match=level, columns=["resident_code"]).to_pylist()
    return [c["resident_code"] for c in found if c["outcome"] != "not_found"]


@pytest.mark.parametrize("level", ["exact", "normalised"])
def test_a_search_finds_people_as_they_are_now(town: Town, level: str) -> None:
    """The 4情報 index is the snapshot's; a renamed person is found by the new name only, a
    person born since is found, a cancelled birth is not."""
    r = town.resident()
    m, rc = r["municipality_code"], r["resident_code"]
    old = (r["family_name"], r["given_name"], r["birth_date"])
    assert rc in _search(town.registry, *old, level)
    (renamed,) = town.apply(
        town.change(
            "name_change", m, resident_code=rc, family_name="髙橋", family_name_kana="タカハシ"
        )
    )
    assert renamed["outcome"] == "applied"
    assert rc not in _search(town.registry, *old, level)
    assert rc in _search(town.registry, "髙橋", r["given_name"], r["birth_date"], level)
    # At the normalised level the common spelling finds the registry's variant.
    by_common = _search(town.registry, "高橋", r["given_name"], r["birth_date"], level)
    assert (rc in by_common) == (level == "normalised")
    born = a_birth(town, m, ("新生", "シンセイ"), ("一花", "イチカ"))
    (baby,) = town.apply(born)
    assert _search(town.registry, "新生", "一花", D(2025, 2, 1), level) == [baby["resident_code"]]
    town.apply(town.change("cancel", m, cancels=born["sequence"]))
    assert _search(town.registry, "新生", "一花", D(2025, 2, 1), level) == []
    # A cancel of the name change: found by the former name again.
    town.apply(town.change("cancel", m, cancels=renamed_sequence(town, m, rc)))
    assert rc in _search(town.registry, *old, level)
    assert rc not in _search(town.registry, "髙橋", r["given_name"], r["birth_date"], level)


def renamed_sequence(town: Town, municipality: str, rc: str) -> int:
    """The sequence number of the resident's name change."""
    history = town.registry.history([rc], by="resident_code").to_pylist()
    return int(next(h["sequence"] for h in history if h["reason"] == "name_change"))


def test_persons_are_read_by_their_id_through_every_change(town: Town) -> None:
    r = town.resident()
    m = r["municipality_code"]
    (person,) = town.registry._persons([r["my_number"]])["person"].to_pylist()
    # The person id is what every read can return beside the public columns (never a public
    # column itself: no policy can grant it).
    assert "person" not in Registry.column_names()
    looked = town.registry.lookup([r["resident_code"]], "resident_code", ["person"])
    assert looked["person"].to_pylist() == [person]
    (renamed,) = town.apply(
        town.change("name_change", m, resident_code=r["resident_code"], family_name="改名")
    )
    (moved,) = town.apply(town.change("my_number_change", m, resident_code=r["resident_code"]))
    assert renamed["outcome"] == moved["outcome"] == "applied"
    verified = town.registry.verify(
        pa.table({"my_number": [r["my_number"], moved["my_number"]]}), columns=["person"]
    )
    assert verified["person"].to_pylist() == [person, person]  # the old number names them too
    (now,) = town.registry._by_person([person], ["family_name", "my_number"]).to_pylist()
    assert now == {"family_name": "改名", "my_number": moved["my_number"]}
    born = town.change("birth", m, family_name="森", given_name="光", birth_date=D(2025, 3, 1))
    born |= {"family_name_kana": "モリ", "given_name_kana": "ヒカリ", "sex": 2}
    born |= {"address_town": "誕生町", "address_block": "1"}
    (baby,) = town.apply(born)
    assert baby["outcome"] == "applied", baby["error"]
    (baby_person,) = town.registry._persons([baby["my_number"]])["person"].to_pylist()
    assert baby_person == len(town.rows)  # a new person takes the next id
    far = [baby_person, baby_person + 1, 2**32 - 1]
    shown = town.registry._by_person(far, ["resident_code"])["resident_code"].to_pylist()
    assert shown == [baby["resident_code"], None, None]


def test_to_arrow_is_the_registry_as_it_stands(town: Town) -> None:
    """The whole table, as a checkpoint would write it: changed rows with their current values
    (new names the changes brought included), persons created appended, cancelled ones kept as
    their creation left them (reading them finds no one)."""
    before = town.registry.to_arrow()
    r, s = town.resident(0), town.resident(1)
    rename = town.change(
        "name_change", r["municipality_code"], resident_code=r["resident_code"]
    ) | {"family_name": "渡邉", "family_name_kana": "ワタナベ"}
    death = town.change("death", s["municipality_code"], resident_code=s["resident_code"])
    birth = town.change("birth", r["municipality_code"]) | {
        "family_name": "髙橋",
        "family_name_kana": "タカハシ",
        "given_name": "未来翔",
        "given_name_kana": "ミライト",
        "birth_date": D(2025, 4, 2),
        "sex": 2,
        "address_town": "誕生町",
        "address_block": "1-2-3",
        "effective_date": D(2025, 4, 2),
        "reported_date": D(2025, 4, 10),
    }
    renamed, died, born = town.apply(rename, death, birth)
    assert {renamed["outcome"], died["outcome"], born["outcome"]} == {"applied"}
    now = town.registry.to_arrow()
    assert now.num_rows == before.num_rows + 1
    assert now.schema == before.schema
    rows = {row["resident_code"]: row for row in now.to_pylist()}
    assert (rows[r["resident_code"]]["family_name"], rows[r["resident_code"]]["given_name"]) == (
        "渡邉",
        r["given_name"],
    )
    assert rows[s["resident_code"]]["status"] == "deceased"
    new = rows[born["resident_code"]]
    assert (new["given_name"], new["address_town"], new["my_number"]) == (
        "未来翔",
        "誕生町",
        born["my_number"],
    )
    # Every other row is as it was; a column chosen alone is the same column.
    changed = {r["resident_code"], s["resident_code"], born["resident_code"]}
    same = [row for row in now.to_pylist() if row["resident_code"] not in changed]
    assert same == [row for row in before.to_pylist() if row["resident_code"] not in changed]
    assert town.registry.to_arrow(["family_name"])["family_name"].equals(now["family_name"])
