"""Search by the four basic facts (4情報): every answer checked against a brute-force search of
the same registry; ambiguity is reported, never resolved by a guess."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import xxhash

from juki_engine import InvalidInput, Registry, SnapshotCorrupt, names

COLUMNS = ["resident_code", "family_name", "given_name", "birth_date", "sex", "municipality_code"]


@pytest.fixture(scope="module")
def table() -> pa.Table:
    """A registry table where two residents share name and birth date (one of each sex), and
    one holds a variant form (髙橋)."""
    base = Registry.generate(30_000, seed=11).to_arrow()
    rows = base.to_pylist()
    twin = dict(rows[1])
    twin.update(family_name=rows[0]["family_name"], family_name_kana=rows[0]["family_name_kana"])
    twin.update(given_name=rows[0]["given_name"], given_name_kana=rows[0]["given_name_kana"])
    twin.update(birth_date=rows[0]["birth_date"], sex=3 - rows[0]["sex"])
    rows[1] = twin
    rows[2]["family_name"] = "髙橋"
    plain = pa.Table.from_pylist(rows)
    return plain.cast(
        pa.schema(
            [
                f.with_type(f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                for f in plain.schema
            ]
        )
    )


@pytest.fixture(scope="module")
def registry(table: pa.Table) -> Registry:
    return Registry.from_arrow(table)


def brute_force(table: pa.Table, claim: dict[str, Any], match: str) -> list[str]:
    """The resident codes agreeing with every supplied fact of `claim`, by a scan."""

    def fold(text: str) -> str:
        return names.fold(text, "normalised") if match == "normalised" else text

    family, given = fold(claim["family_name"]), fold(claim["given_name"])
    out = []
    for row in table.filter(pc.equal(table["birth_date"], claim["birth_date"])).to_pylist():
        if (
            fold(row["family_name"]) == family
            and fold(row["given_name"]) == given
            and claim.get("sex") in (None, row["sex"])
            and claim.get("municipality_code") in (None, row["municipality_code"])
        ):
            out.append(row["resident_code"])
    return out


@pytest.mark.parametrize("match", ["exact", "normalised"])
def test_every_answer_agrees_with_a_scan(registry: Registry, table: pa.Table, match: str) -> None:
    sample = table.slice(0, 60).select(COLUMNS).to_pylist()
    claims = [
        {k: r[k] for k in ("family_name", "given_name", "birth_date")}
        | ({"sex": r["sex"]} if i % 2 else {})
        | ({"municipality_code": r["municipality_code"]} if i % 3 == 0 else {})
        for i, r in enumerate(sample)
    ]
    # Columns present in every claim: absent optional facts are nulls.
    claims_table = pa.Table.from_pylist(
        claims,
        pa.schema(
            [
                ("family_name", pa.string()),
                ("given_name", pa.string()),
                ("birth_date", pa.date32()),
                ("sex", pa.int64()),
                ("municipality_code", pa.string()),
            ]
        ),
    )
    out = registry.search(claims_table, match=match, columns=["resident_code"])
    for i, claim in enumerate(claims):
        mine = out.filter(pc.equal(out["claim"], i)).to_pylist()
        supplied = 3 + sum(claim.get(k) is not None for k in ("sex", "municipality_code"))
        agreeing = sorted(r["resident_code"] for r in mine if r["agreed"] == supplied)
        assert agreeing == sorted(brute_force(table, claim, match)), (i, claim, mine)
        assert mine[0]["outcome"] == {0: "not_found", 1: "unique"}.get(len(agreeing), "ambiguous")
        assert all(r["candidates"] == len(agreeing) for r in mine)
        assert [r["agreed"] for r in mine] == sorted((r["agreed"] for r in mine), reverse=True)


def test_two_residents_alike_are_ambiguous_until_a_fact_tells_them_apart(
    registry: Registry, table: pa.Table
) -> None:
    first = table.slice(0, 1).to_pylist()[0]
    claim = {k: first[k] for k in ("family_name", "given_name", "birth_date")}
    out = registry.search(pa.Table.from_pylist([claim]), columns=["resident_code"])
    assert out["outcome"].to_pylist() == ["ambiguous", "ambiguous"]
    assert sorted(out["resident_code"].to_pylist()) == sorted(
        table["resident_code"].to_pylist()[:2]
    )
    with_sex = pa.Table.from_pylist([claim | {"sex": first["sex"]}])
    out = registry.search(with_sex, columns=["resident_code"])
    # Both are still listed, the one agreeing on every fact first.
    assert out["outcome"].to_pylist() == ["unique", "unique"]
    assert out["agreed"].to_pylist() == [4, 3]
    assert out["resident_code"][0].as_py() == first["resident_code"]


def test_a_variant_spelling_is_found_at_the_normalised_level_only(
    registry: Registry, table: pa.Table
) -> None:
    holder = table.slice(2, 1).to_pylist()[0]
    assert holder["family_name"] == "髙橋"
    claim = pa.Table.from_pylist(
        [
            {
                "family_name": "高橋",
                "given_name": holder["given_name"] + "　",
                "birth_date": holder["birth_date"],
            }
        ]
    )
    found = registry.search(claim, columns=["resident_code"])
    assert found["outcome"].to_pylist() == ["unique"]
    assert found["resident_code"].to_pylist() == [holder["resident_code"]]
    exact = registry.search(claim, match="exact", columns=["resident_code"])
    assert exact["outcome"].to_pylist() == ["not_found"]
    assert exact["resident_code"].to_pylist() == [None]


def test_claims_that_name_no_one_or_lack_a_fact_are_not_found(registry: Registry) -> None:
    claims = pa.table(
        {
            "family_name": ["存在しない", None],
            "given_name": ["名前", "太郎"],
            "birth_date": pa.array([0, 0], pa.date32()),
        }
    )
    out = registry.search(claims)
    assert out["claim"].to_pylist() == [0, 1]
    assert out["outcome"].to_pylist() == ["not_found", "not_found"]
    assert out["candidates"].to_pylist() == [0, 0]


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        (pa.table({"family_name": ["x"], "given_name": ["y"]}), "needs the claims columns"),
        (
            pa.table({"family_name": ["x"], "given_name": ["y"], "birth_date": ["2001-01-01"]}),
            "'birth_date' must hold dates",
        ),
        (
            pa.table(
                {
                    "family_name": ["x"],
                    "given_name": ["y"],
                    "birth_date": pa.array([0], pa.date32()),
                    "address": ["z"],
                }
            ),
            "'address' is not one of the 4情報 search's",
        ),
    ],
)
def test_bad_claims_are_refused_naming_what_is_wrong(
    registry: Registry, claims: pa.Table, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        registry.search(claims)


def test_the_reading_level_is_not_a_search_level(registry: Registry) -> None:
    claims = pa.table(
        {"family_name": ["x"], "given_name": ["y"], "birth_date": pa.array([0], pa.date32())}
    )
    with pytest.raises(InvalidInput, match="exact or the normalised level"):
        registry.search(claims, match="reading")


def test_claims_in_several_batches_are_numbered_across_them(
    registry: Registry, table: pa.Table
) -> None:
    rows = table.slice(5, 4).select(["family_name", "given_name", "birth_date"])
    batches = pa.Table.from_batches(rows.to_batches(max_chunksize=1))
    assert batches.num_rows == 4 and len(batches.to_batches()) == 4
    out = registry.search(batches, columns=["resident_code"])
    full = out.filter(pc.equal(out["agreed"], 3))
    assert sorted(set(full["claim"].to_pylist())) == [0, 1, 2, 3]
    codes = table.slice(5, 4)["resident_code"].to_pylist()
    for claim, code in zip(
        full["claim"].to_pylist(), full["resident_code"].to_pylist(), strict=True
    ):
        assert code == codes[claim] or len(full.filter(pc.equal(full["claim"], claim))) > 1


def test_a_sex_no_resident_has_is_a_fact_that_does_not_agree(
    registry: Registry, table: pa.Table
) -> None:
    row = table.slice(7, 1).to_pylist()[0]
    facts = {k: [row[k]] for k in ("family_name", "given_name")}
    facts["birth_date"] = pa.array([row["birth_date"]], pa.date32())
    for sex in (pa.array([2**63 + 1], pa.uint64()), pa.array([-1], pa.int64())):
        out = registry.search(pa.table({**facts, "sex": sex}))
        assert out["outcome"].to_pylist()[0] == "not_found", sex
        assert out["agreed"].to_pylist()[0] == 3
    # A column of nulls claims nothing.
    out = registry.search(pa.table({**facts, "sex": pa.nulls(1)}))
    assert out["outcome"][0].as_py() in ("unique", "ambiguous")


def test_a_name_that_is_not_utf8_names_no_one(registry: Registry, table: pa.Table) -> None:
    row = table.slice(8, 1).to_pylist()[0]
    name = row["family_name"].encode()
    raw = pa.Array.from_buffers(
        pa.string(),
        1,
        [
            None,
            pa.py_buffer(np.array([0, len(name) + 1], np.int32).tobytes()),
            pa.py_buffer(b"\xff" + name),
        ],
    )
    claims = pa.table(
        {
            "family_name": raw,
            "given_name": [row["given_name"]],
            "birth_date": pa.array([row["birth_date"]], pa.date32()),
        }
    )
    for match in ("exact", "normalised"):
        out = registry.search(claims, match=match)
        assert out["outcome"].to_pylist() == ["not_found"]


# ------------------------------------------------------------ the index kept in the snapshot


def search_index_file(snap: Path) -> Path:
    return snap / (snap / "CURRENT").read_text().strip() / "search_normalised.u64"


def forge(snap: Path, name: str, data: bytes) -> None:
    """Write `data` as the version's file `name`, with the manifest's size and checksum to match:
    what a forged or buggy snapshot holds reaches the checks behind the checksums."""
    version = snap / (snap / "CURRENT").read_text().strip()
    (version / name).write_bytes(data)
    manifest = json.loads((version / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["name"] == name:
            entry["bytes"] = len(data)
            entry["xxh3"] = xxhash.xxh3_64_hexdigest(data)
    (version / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def snap(registry: Registry, tmp_path: Path) -> Path:
    path = tmp_path / "snap"
    registry.save(path)
    return path


def claims_of(table: pa.Table, n: int) -> pa.Table:
    return table.slice(0, n).select(["family_name", "given_name", "birth_date"])


def test_a_saved_snapshot_keeps_the_normalised_index_and_searches_alike(
    registry: Registry, table: pa.Table, snap: Path
) -> None:
    file = search_index_file(snap)
    assert file.stat().st_size == 16 + 8 * len(registry)  # a header, then 8 bytes a resident
    claims = claims_of(table, 300)
    for mmap in (False, True):
        opened = Registry.open(snap, mmap=mmap)
        for match in ("normalised", "exact"):
            assert opened.search(claims, match=match, columns=COLUMNS).equals(
                registry.search(claims, match=match, columns=COLUMNS)
            )


def test_the_first_search_reads_the_saved_index(table: pa.Table, snap: Path) -> None:
    """Entries in order, each row once, but every hash forged to 0: the file passes its checks
    and is read (searches find no one at that level), and it can only hide residents, never
    name a false candidate (each is compared on its folded names and birth date)."""
    raw = search_index_file(snap).read_bytes()
    rows = (len(raw) - 16) // 8
    forge(snap, "search_normalised.u64", raw[:16] + np.arange(rows, dtype="<u8").tobytes())
    found = Registry.open(snap).search(claims_of(table, 50), columns=COLUMNS)
    assert set(found["outcome"].to_pylist()) == {"not_found"}
    assert found["resident_code"].null_count == len(found)
    # The exact level's index is built, not read: it finds them.
    exact = Registry.open(snap).search(claims_of(table, 50), match="exact", columns=COLUMNS)
    assert "not_found" not in exact["outcome"].to_pylist()


def test_an_index_of_another_folding_table_is_built_again(
    registry: Registry, table: pa.Table, snap: Path
) -> None:
    raw = bytearray(search_index_file(snap).read_bytes())
    raw[8:16] = bytes(8)  # the fingerprint of a table that is not the installed one
    forge(snap, "search_normalised.u64", bytes(raw))
    claims = claims_of(table, 100)
    assert (
        Registry.open(snap)
        .search(claims, columns=COLUMNS)
        .equals(registry.search(claims, columns=COLUMNS))
    )


HOSTILE_INDEX: dict[str, Any] = {
    "not an index": lambda raw: b"garbage!" + raw[8:],
    "too short": lambda raw: raw[:-8],
    "out of order": lambda raw: raw[:16] + raw[24:32] + raw[16:24] + raw[32:],
    "a row twice": lambda raw: raw[:16] + raw[16:24] * 2 + raw[32:],
    "a row out of range": lambda raw: raw[:-8] + (2**27).to_bytes(8, "little"),
}


@pytest.mark.parametrize("case", list(HOSTILE_INDEX))
def test_a_hostile_index_file_is_refused_naming_it(table: pa.Table, snap: Path, case: str) -> None:
    raw = search_index_file(snap).read_bytes()
    forge(snap, "search_normalised.u64", HOSTILE_INDEX[case](raw))
    opened = Registry.open(snap)  # read at the first search, not at open
    with pytest.raises(SnapshotCorrupt, match=r"search_normalised\.u64"):
        opened.search(claims_of(table, 5))
    exact = opened.search(claims_of(table, 5), match="exact")  # its own index, built
    assert "not_found" not in exact["outcome"].to_pylist()


def test_a_damaged_index_file_is_refused_by_its_checksum(table: pa.Table, snap: Path) -> None:
    file = search_index_file(snap)
    raw = bytearray(file.read_bytes())
    raw[len(raw) // 2] ^= 0x55
    file.write_bytes(bytes(raw))
    with pytest.raises(SnapshotCorrupt, match=r"search_normalised\.u64.*checksum"):
        Registry.open(snap).search(claims_of(table, 5))
