"""How `snapshot_v2` was made: run with the build of commit 2572a83 (which saved format 2).

    python tests/data/make_snapshot_v2.py tests/data/snapshot_v2

200 residents of 鳥取県, passed through `from_arrow` with plain string columns (which keeps only
the names in use), three changes and a cancel applied, then checkpointed.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
from pathlib import Path

import pyarrow as pa

from juki_engine import Registry

D = dt.date
TODAY = D(2025, 6, 30)


def main(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    t = Registry.generate(population=200, seed=11, prefecture="鳥取県").to_arrow()
    plain = {
        n: (c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c)
        for n, c in zip(t.column_names, t.columns, strict=True)
    }
    Registry.from_arrow(pa.table(plain)).save(out)
    r = Registry.open(out)
    rows = r.to_arrow(["my_number", "municipality_code", "status", "birth_date"]).to_pylist()
    people = [x for x in rows if x["status"] == "resident" and x["birth_date"] < D(2000, 1, 1)]

    def change(p: dict[str, object], seq: int, reason: str) -> dict[str, object]:
        return {
            "municipality": str(p["municipality_code"]),
            "sequence": seq,
            "reason": reason,
            "effective_date": D(2025, 3, 1),
            "reported_date": D(2025, 3, 2),
            "my_number": p["my_number"],
        }

    changes = [
        change(people[0], 1, "death"),
        change(people[1], 2, "death"),
        change(people[2], 3, "my_number_change"),
    ]
    print(r.apply(pa.Table.from_pylist(changes), today=TODAY).to_pylist())
    cancel = {"municipality": str(people[1]["municipality_code"]), "sequence": 4}
    cancel |= {"reason": "cancel", "cancels": 2}
    cancel |= {"effective_date": D(2025, 3, 3), "reported_date": D(2025, 3, 3)}
    print(r.apply(pa.Table.from_pylist([cancel]), today=TODAY).to_pylist())
    print(r.checkpoint(), "history entries")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
