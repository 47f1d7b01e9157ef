"""The card statistics and their report: the numbers behind the pictures."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.compute as pc
from town import Town

from juki_engine import Registry, cards


def test_toyama_per_municipality_is_the_seed_table(toyama: Registry) -> None:
    registry = cards.by_municipality(toyama)
    seed = cards.seed_figures()
    assert registry["municipality_code"].to_pylist() == seed["municipality_code"].to_pylist()
    assert registry["applications"].to_pylist() == seed["applications"].to_pylist()
    assert registry["cards_issued"].to_pylist() == seed["cards_issued"].to_pylist()
    assert pc.sum(registry["applications"]).as_py() == 104_632
    assert pc.sum(registry["cards_issued"]).as_py() == 83_852
    assert pc.sum(registry["residents"]).as_py() == len(toyama)


def test_the_report_shows_those_numbers(toyama: Registry, tmp_path: Path) -> None:
    written = cards.write_report(toyama, tmp_path / "report")
    assert [p.name for p in written] == ["cards.png", "index.html"]  # no changes: no timeline
    png = written[0].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    page = written[1].read_text()
    assert "104,632" in page and "83,852" in page
    assert all(name in page for name in cards.seed_figures()["municipality_name"].to_pylist())
    assert '<img src="cards.png"' in page


def test_issuance_over_time_counts_the_living_registrys_card_changes(tmp_path: Path) -> None:
    town = Town(Registry.generate(population=3_000, seed=9))
    people = [town.resident(i) for i in range(3)]
    march, april = dt.date(2025, 3, 10), dt.date(2025, 4, 2)

    def card(reason: str, person: dict, day: dt.date) -> dict:
        return town.change(
            reason,
            person["municipality_code"],
            resident_code=person["resident_code"],
            effective_date=day,
            reported_date=day,
        )

    applied = [card("card_applied", p, march) for p in people[:3]]
    results = town.apply(*applied, card("card_issued", people[0], april))  # after applying
    assert {r["outcome"] for r in results} == {"applied"}, results
    cancel = town.change("cancel", people[2]["municipality_code"], cancels=applied[2]["sequence"])
    assert town.apply(cancel)[0]["outcome"] == "applied"
    assert cards.over_time(town.registry).to_pylist() == [
        {"month": "2025-03", "reason": "card_applied", "changes": 2},  # one cancelled
        {"month": "2025-04", "reason": "card_issued", "changes": 1},
    ]
    written = cards.write_report(town.registry, tmp_path)
    assert [p.name for p in written] == ["cards.png", "cards_over_time.png", "index.html"]
    assert "2025-04" in written[-1].read_text()
