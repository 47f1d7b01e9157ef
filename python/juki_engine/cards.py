"""My Number card statistics (個人番号カード交付状況): per municipality from the registry itself,
over time from the living registry's card-state changes, and the report `juki stats --report`
writes: a chart (PNG, matplotlib) and an HTML page beside it.

For the Toyama demo the per-municipality figures are the seed's table (the package's
`toyama_mynumber_cards_2017.csv`: 104,632 applications, 83,852 cards issued), since the
generator draws each municipality's card states to it; the report puts the two side by side.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from juki_engine.registry import Registry

CARD_REASONS = ("card_applied", "card_issued", "card_returned")
_SEED = "toyama_mynumber_cards_2017.csv"
# Changes read from the registry per call while counting them.
_BATCH = 100_000


def by_municipality(registry: Registry) -> pa.Table:
    """Per municipality, in code order: residents, applications (applied or issued: everyone
    who applied) and cards issued, as the registry holds them now."""
    table = registry.to_arrow(["municipality_code", "municipality_name", "card_state"])
    plain = pa.table({name: pc.cast(table[name], pa.string()) for name in table.column_names})
    keys = ["municipality_code", "municipality_name"]
    applied = pc.is_in(plain["card_state"], pa.array(["applied", "issued"]))
    issued = pc.equal(plain["card_state"], "issued")
    counted = pa.table(
        {
            **{k: plain[k] for k in keys},
            "applied": pc.cast(applied, pa.int64()),
            "issued": pc.cast(issued, pa.int64()),
        }
    )
    out = counted.group_by(keys).aggregate(
        [("applied", "count"), ("applied", "sum"), ("issued", "sum")]
    )
    out = out.rename_columns([*keys, "residents", "applications", "cards_issued"])
    return out.sort_by("municipality_code")


def seed_figures() -> pa.Table:
    """The seed's Toyama table, as shipped: municipality, code, applications, cards issued."""
    text = (resources.files("juki_engine") / "data" / _SEED).read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    return pa.table(
        {
            "municipality_code": [r["municipality_code"] for r in rows],
            "municipality_name": [r["municipality"] for r in rows],
            "applications": [int(r["card_applications"]) for r in rows],
            "cards_issued": [int(r["cards_issued"]) for r in rows],
        }
    )


def over_time(registry: Registry) -> pa.Table:
    """Card-state changes applied to the living registry, counted by the month they took
    effect and by reason (a cancelled change and its cancel counted out)."""
    persons = len(registry) + registry.applied_changes + 8  # every person id, with room
    watch = np.full((persons + 7) // 8, 0xFF, np.uint8).tobytes()
    pieces, after = [], 0
    while True:
        part = registry._watched_changes(watch, CARD_REASONS, after, _BATCH)
        if part.num_rows == 0:
            break
        pieces.append(part.select(["change", "reason", "cancels", "effective_date"]))
        after = int(part["change"][-1].as_py())
    schema = pa.schema([("month", pa.string()), ("reason", pa.string()), ("changes", pa.int64())])
    if not pieces:
        return schema.empty_table()
    changes = pa.concat_tables(pieces)
    cancelled = changes["cancels"].drop_null()
    kept = changes.filter(
        pc.and_(
            pc.is_null(changes["cancels"]),
            pc.invert(pc.is_in(changes["change"], cancelled)),
        )
    )
    months = pc.strftime(kept["effective_date"].cast(pa.timestamp("s")), "%Y-%m")
    counted = pa.table({"month": months, "reason": kept["reason"]})
    out = counted.group_by(["month", "reason"]).aggregate([([], "count_all")])
    out = out.rename_columns(["month", "reason", "changes"]).cast(schema)
    return out.sort_by([("month", "ascending"), ("reason", "ascending")])


def write_report(registry: Registry, directory: str | Path) -> list[Path]:
    """`cards.png` (per municipality, beside the seed's figures), `cards_over_time.png` (when
    the registry took card changes) and `index.html` in `directory`; the paths written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display
    import matplotlib.pyplot as plt

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = by_municipality(registry)
    seed = {r["municipality_code"]: r for r in seed_figures().to_pylist()}
    rows = now.to_pylist()
    written = []

    codes = [r["municipality_code"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.45 * len(rows) + 2), 5), dpi=110)
    ax.bar(x - 0.2, [r["applications"] for r in rows], 0.4, label="applications (registry)")
    ax.bar(x + 0.2, [r["cards_issued"] for r in rows], 0.4, label="cards issued (registry)")
    with_seed = [i for i, code in enumerate(codes) if code in seed]
    if with_seed:
        ax.scatter(
            x[with_seed] - 0.2,
            [seed[codes[i]]["applications"] for i in with_seed],
            marker="_",
            s=200,
            color="black",
            label="seed table (2017)",
            zorder=3,
        )
        ax.scatter(
            x[with_seed] + 0.2,
            [seed[codes[i]]["cards_issued"] for i in with_seed],
            marker="_",
            s=200,
            color="black",
            zorder=3,
        )
    ax.set_xticks(x, codes, rotation=90, fontsize=8)
    ax.set_xlabel("municipality code")  # the chart font has no kanji; the page names them
    ax.set_ylabel("residents")
    ax.set_title("My Number card applications and issuance per municipality")
    ax.legend()
    fig.tight_layout()
    written.append(out / "cards.png")
    fig.savefig(written[-1])
    plt.close(fig)

    timeline = over_time(registry)
    if timeline.num_rows:
        months = sorted(set(timeline["month"].to_pylist()))
        fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
        for reason in CARD_REASONS:
            part = {r["month"]: r["changes"] for r in timeline.to_pylist() if r["reason"] == reason}
            steps = np.arange(len(months))
            ax.plot(steps, [part.get(m, 0) for m in months], marker="o", label=reason)
        ax.set_xticks(np.arange(len(months)), months)
        ax.set_xlabel("month the change took effect")
        ax.set_ylabel("changes")
        ax.set_title("Card-state changes over time (living registry)")
        ax.tick_params(axis="x", rotation=45)
        ax.legend()
        fig.tight_layout()
        written.append(out / "cards_over_time.png")
        fig.savefig(written[-1])
        plt.close(fig)

    written.append(out / "index.html")
    written[-1].write_text(_page(rows, seed, timeline, [p.name for p in written[:-1]]))
    return written


def _page(
    rows: list[dict[str, Any]],
    seed: dict[str, dict[str, Any]],
    timeline: pa.Table,
    images: list[str],
) -> str:
    def cell(value: object) -> str:
        text = f"{value:,}" if isinstance(value, int) else html.escape(str(value))
        return f"<td>{text}</td>"

    header = (
        "<tr><th>code</th><th>municipality</th><th>residents</th><th>applications</th>"
        "<th>cards issued</th><th>issued %</th><th>seed: applications</th>"
        "<th>seed: cards issued</th></tr>"
    )
    body = []
    totals = {"residents": 0, "applications": 0, "cards_issued": 0}
    for r in rows:
        code = str(r["municipality_code"])
        s = seed.get(code, {})
        for k in totals:
            totals[k] += int(r[k])
        share = 100 * int(r["cards_issued"]) / max(int(r["residents"]), 1)
        body.append(
            "<tr>"
            + "".join(
                cell(v)
                for v in (
                    code,
                    r["municipality_name"],
                    r["residents"],
                    r["applications"],
                    r["cards_issued"],
                    f"{share:.2f}",
                    s.get("applications", ""),
                    s.get("cards_issued", ""),
                )
            )
            + "</tr>"
        )
    seed_totals = (
        sum(int(s["applications"]) for s in seed.values()),
        sum(int(s["cards_issued"]) for s in seed.values()),
    )
    body.append(
        "<tr><th></th><th>total</th>"
        + "".join(cell(totals[k]) for k in ("residents", "applications", "cards_issued"))
        + cell(f"{100 * totals['cards_issued'] / max(totals['residents'], 1):.2f}")
        + cell(seed_totals[0])
        + cell(seed_totals[1])
        + "</tr>"
    )
    months = ""
    if timeline.num_rows:
        months = "<h2>Card-state changes by month</h2><table><tr><th>month</th><th>reason</th>"
        months += "<th>changes</th></tr>"
        months += "".join(
            f"<tr>{cell(r['month'])}{cell(r['reason'])}{cell(r['changes'])}</tr>"
            for r in timeline.to_pylist()
        )
        months += "</table>"
    pictures = "".join(f'<p><img src="{html.escape(name)}" alt="{name}"></p>' for name in images)
    made = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return f"""<!doctype html>
<html lang="ja"><head><meta charset="utf-8">
<title>個人番号カード交付状況</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}img{{max-width:100%}}</style>
</head><body>
<h1>個人番号カード交付状況 (My Number card applications and issuance)</h1>
<p>From the registry itself, {made}; the seed's 2017 table beside it where it has the
municipality.</p>
{pictures}
<table>{header}{"".join(body)}</table>
{months}
</body></html>
"""
