"""Tests for snapshots: save/open, atomic replacement, corruption detection (rust/snapshot.rs)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from juki_engine import JukiError, Registry, SnapshotCorrupt, SnapshotIOError

MMAP = pytest.mark.parametrize("mmap", [False, True], ids=["read", "mmap"])

#: The row columns format 3 saves a file each (`residents_<name>.arrow`).
ROW_COLUMNS = [
    "resident_code",
    "my_number",
    "family",
    "given",
    "birth_date",
    "sex",
    "municipality",
    "town",
    "block",
    "status",
    "status_date",
    "card",
]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.generate(population=3_000, seed=5)


@pytest.fixture(scope="module")
def other() -> Registry:
    return Registry.generate(population=2_000, seed=6)


@pytest.fixture(scope="module")
def saved(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine snapshot of `registry`; tests copy it before damaging it."""
    path = tmp_path_factory.mktemp("pristine") / "snap"
    registry.save(path)
    return path


@pytest.fixture
def snap(saved: Path, tmp_path: Path) -> Path:
    path = tmp_path / "snap"
    shutil.copytree(saved, path)
    return path


def current_version(path: Path) -> Path:
    return path / (path / "CURRENT").read_text().strip()


def sample_keys(registry: Registry) -> dict[str, pa.Array]:
    table = registry.to_arrow(["my_number", "resident_code"])
    return {
        kind: table[kind].combine_chunks().cast(pa.string())[::37]
        for kind in ("my_number", "resident_code")
    }


def assert_same(opened: Registry, original: Registry) -> None:
    assert len(opened) == len(original)
    assert opened.to_arrow().equals(original.to_arrow())
    for kind, keys in sample_keys(original).items():
        probe = pa.concat_arrays([keys, pa.array(["123456789018", "bad", None], keys.type)])
        assert opened.lookup(probe, by=kind).equals(original.lookup(probe, by=kind))


# ----------------------------------------------------------------------------- round trip


@MMAP
def test_round_trip(registry: Registry, snap: Path, mmap: bool) -> None:
    opened = Registry.open(snap, mmap=mmap)
    assert_same(opened, registry)
    claims = registry.to_arrow(["my_number", "family_name", "birth_date", "sex"])
    assert opened.verify(claims).equals(registry.verify(claims))


def test_open_accepts_str_paths(registry: Registry, snap: Path) -> None:
    assert_same(Registry.open(str(snap)), registry)


def test_layout(snap: Path) -> None:
    assert (snap / "CURRENT").read_text() == "v-1\n"
    version = current_version(snap)
    manifest = json.loads((version / "manifest.json").read_text())
    listed = {entry["name"] for entry in manifest["files"]}
    columns = {f"residents_{c}.arrow" for c in ROW_COLUMNS}
    assert columns <= listed and "residents.arrow" not in listed
    assert {"index_my_number.u64", "index_resident_code.u64"} <= listed
    assert listed | {"manifest.json"} == {p.name for p in version.iterdir()}
    assert manifest["rows"] == 3_000
    assert manifest["format"] == "juki-snapshot/3"
    for name in columns:  # each file holds its one column, every row
        table = pa.ipc.open_file(version / name).read_all()
        assert table.column_names == [name.removeprefix("residents_").removesuffix(".arrow")]
        assert table.num_rows == 3_000


def test_save_twice_keeps_only_the_newest(registry: Registry, other: Registry, snap: Path) -> None:
    other.save(snap)
    assert sorted(p.name for p in snap.iterdir()) == ["CURRENT", "v-2"]
    assert (snap / "CURRENT").read_text().strip() == "v-2"
    assert_same(Registry.open(snap), other)
    registry.save(snap)
    assert sorted(p.name for p in snap.iterdir()) == ["CURRENT", "v-3"]
    assert_same(Registry.open(snap, mmap=True), registry)


def test_mapped_registry_survives_a_newer_save(
    registry: Registry, other: Registry, snap: Path
) -> None:
    mapped = Registry.open(snap, mmap=True)
    other.save(snap)  # removes v-1, which `mapped` still maps
    assert_same(mapped, registry)


def test_save_into_a_new_nested_directory(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "snap"
    registry.save(path)
    assert_same(Registry.open(path), registry)


# ----------------------------------------------------------------------------- corruption


def truncate(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))


def drop_last_byte(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


DAMAGE: dict[str, tuple[str, Callable[[Path], None]]] = {
    "truncate-residents": ("residents_my_number.arrow", truncate),
    "truncate-index-my-number": ("index_my_number.u64", truncate),
    "truncate-index-resident-code": ("index_resident_code.u64", drop_last_byte),
    "flip-residents": ("residents_family.arrow", flip_byte),
    "flip-status-date": ("residents_status_date.arrow", flip_byte),
    "flip-index": ("index_resident_code.u64", flip_byte),
    "flip-dictionary": ("dict_family.arrow", flip_byte),
    "delete-residents": ("residents_card.arrow", Path.unlink),
    "delete-index": ("index_my_number.u64", Path.unlink),
    "delete-dictionary": ("dict_town.arrow", Path.unlink),
    "empty-residents": ("residents_town.arrow", lambda p: p.write_bytes(b"")),
    "garbage-manifest": ("manifest.json", lambda p: p.write_text("{not json")),
    "empty-manifest": ("manifest.json", lambda p: p.write_bytes(b"")),
    "wrong-manifest": ("manifest.json", lambda p: p.write_text('{"format": "x"}')),
    "delete-manifest": ("manifest.json", Path.unlink),
}


@MMAP
@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_file_is_named(snap: Path, case: str, mmap: bool) -> None:
    name, damage = DAMAGE[case]
    damage(current_version(snap) / name)
    with pytest.raises(SnapshotCorrupt) as info:
        Registry.open(snap, mmap=mmap)
    assert name in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "content", [b"", b"garbage", b"v-\n", b"v-x\n", b"../v-1\n", b"\xff\xfe\x00", b"v-99\n"]
)
def test_bad_current_is_named(snap: Path, content: bytes) -> None:
    (snap / "CURRENT").write_bytes(content)
    with pytest.raises(SnapshotCorrupt) as info:
        Registry.open(snap)
    message = str(info.value)
    assert "CURRENT" in message or "v-99" in message, message


def test_missing_current_is_named(snap: Path) -> None:
    (snap / "CURRENT").unlink()
    with pytest.raises(SnapshotCorrupt, match="CURRENT"):
        Registry.open(snap)


@pytest.mark.parametrize("mmap", [False, True])
def test_missing_path(tmp_path: Path, mmap: bool) -> None:
    path = tmp_path / "no-such-snapshot"
    with pytest.raises(SnapshotIOError) as info:
        Registry.open(path, mmap=mmap)
    assert str(path) in str(info.value)
    assert isinstance(info.value, JukiError)
    assert not isinstance(info.value, SnapshotCorrupt)


def test_path_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "a-file"
    path.write_text("x")
    with pytest.raises(JukiError) as info:
        Registry.open(path)
    assert str(path) in str(info.value)


def test_save_over_a_file_is_an_io_error(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "a-file"
    path.write_text("x")
    with pytest.raises(SnapshotIOError) as info:
        registry.save(path)
    assert str(path) in str(info.value)
    assert path.read_text() == "x"  # nothing already stored is lost


# ----------------------------------------------------------------------------- crash mid-save


def junk_version(path: Path) -> None:
    path.mkdir()
    (path / "residents.arrow").write_bytes(b"ARROW1\x00\x00partial")
    (path / "manifest.json").write_text('{"format": "juki-snap')
    (path / "index_my_number.u64").write_bytes(os.urandom(100))


@pytest.mark.parametrize(
    "leftover",
    [
        "v-2.tmp",  # crashed while writing the new version
        "v-2",  # crashed after renaming the version, before replacing CURRENT
        "v-7.tmp",
    ],
)
def test_crash_mid_save_keeps_the_previous_snapshot(
    registry: Registry, other: Registry, snap: Path, leftover: str
) -> None:
    junk_version(snap / leftover)
    (snap / "CURRENT.tmp").write_text("v-2")  # a CURRENT replacement that never landed
    assert_same(Registry.open(snap), registry)
    assert_same(Registry.open(snap, mmap=True), registry)

    other.save(snap)
    assert_same(Registry.open(snap), other)
    names = sorted(p.name for p in snap.iterdir())
    version = (snap / "CURRENT").read_text().strip()
    assert names == sorted(["CURRENT", version]), names  # junk and old versions cleaned up


def test_open_ignores_files_not_in_the_version(registry: Registry, snap: Path) -> None:
    (current_version(snap) / "stray.txt").write_text("x")
    (snap / "notes.txt").write_text("x")
    assert_same(Registry.open(snap), registry)


# ----------------------------------------------------------------------------- earlier formats

#: 200 residents of 鳥取県 saved in format 1 by the build before the index slots were quotiented
#: (commit ae3439f): `Registry.generate(population=200, seed=11, prefecture="鳥取県")`, passed
#: through `from_arrow` with its dictionary columns cast to plain strings, which keeps only the
#: names in use (64 KiB).
SNAPSHOT_V1 = Path(__file__).parent / "data" / "snapshot_v1"

#: Residents of the fixture as that build read them: My Number, resident code, family name,
#: given name (rows 0, 1, 57, 123 and 199).
V1_RESIDENTS = [
    ("267853505583", "46759343646", "成田", "鉄矢"),
    ("627471591907", "24486946942", "高橋", "麗那"),
    ("365764031596", "32152754573", "神崎", "寿郎"),
    ("449027390746", "81038693034", "鈴木", "佳壽子"),
    ("186507450209", "55163830689", "大川", "仁恵"),
]
#: Valid identifiers of no one in the fixture.
V1_ABSENT = {"my_number": "123456789018", "resident_code": "12345678903"}


def assert_v1_residents(opened: Registry) -> None:
    assert len(opened) == 200
    columns = ["my_number", "resident_code", "family_name", "given_name"]
    for position, kind in enumerate(columns[:2]):
        keys = [resident[position] for resident in V1_RESIDENTS] + [V1_ABSENT[kind]]
        found = opened.lookup(pa.array(keys), by=kind, columns=columns).to_pylist()
        assert [row["found"] for row in found] == [True] * len(V1_RESIDENTS) + [False]
        assert [row["error"] for row in found] == [None] * len(keys)
        names = [tuple(row[c] for c in columns) for row in found]
        assert names == [*V1_RESIDENTS, (None, None, None, None)]


@MMAP
def test_format_1_opens_with_rebuilt_indexes(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], mmap: bool
) -> None:
    snap = tmp_path / "snap"
    shutil.copytree(SNAPSHOT_V1, snap)
    manifest = json.loads((current_version(snap) / "manifest.json").read_text())
    assert manifest["format"] == "juki-snapshot/1"
    capfd.readouterr()

    opened = Registry.open(snap, mmap=mmap)
    note = capfd.readouterr().err
    assert note.count("\n") == 1, note
    assert str(snap) in note and "juki-snapshot/1" in note, note
    assert "indexes were rebuilt" in note and "saving it writes juki-snapshot/3" in note, note
    assert_v1_residents(opened)

    opened.save(snap)
    manifest = json.loads((current_version(snap) / "manifest.json").read_text())
    assert manifest["format"] == "juki-snapshot/3"
    reopened = Registry.open(snap, mmap=mmap)
    assert capfd.readouterr().err == ""
    assert_v1_residents(reopened)
    assert reopened.to_arrow().equals(opened.to_arrow())


def test_unknown_format_is_named(snap: Path) -> None:
    path = current_version(snap) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format"] = "juki-snapshot/9"
    path.write_text(json.dumps(manifest))
    with pytest.raises(SnapshotCorrupt) as info:
        Registry.open(snap)
    message = str(info.value)
    assert "juki-snapshot/9" in message and "manifest.json" in message, message


@pytest.mark.parametrize("name", ["../residents.arrow", "sub/residents.arrow", "/etc/passwd"])
def test_a_manifest_may_name_only_files_of_its_version(snap: Path, name: str) -> None:
    """A listed name outside the version directory is never read: it is the snapshot's damage."""
    path = current_version(snap) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"][0]["name"] = name
    path.write_text(json.dumps(manifest))
    with pytest.raises(SnapshotCorrupt) as info:
        Registry.open(snap)
    assert name in str(info.value) and "manifest.json" in str(info.value), str(info.value)


#: The same 200 residents saved in format 2 (every row column in one `residents.arrow`) by the
#: build before the columns got a file each (commit 2572a83), after these changes were applied
#: and checkpointed into it (so it holds `history.arrow` in one record batch, and `changes.json`):
#: 成田 鉄矢 died; 高橋 麗那 died and that death was cancelled; 和田 寛和's My Number was replaced
#: (635601609105 → 759532099176). Made with `tests/data/make_snapshot_v2.py`.
SNAPSHOT_V2 = Path(__file__).parent / "data" / "snapshot_v2"
V2_TODAY = dt.date(2025, 6, 30)


def assert_v2_state(opened: Registry) -> None:
    rows = opened.lookup(
        ["267853505583", "627471591907", "635601609105"], columns=["my_number", "status"]
    ).to_pylist()
    assert [(r["status"], r["replaced"], r["my_number"]) for r in rows] == [
        ("deceased", False, "267853505583"),
        ("resident", False, "627471591907"),
        ("resident", True, "759532099176"),
    ]
    history = opened.history(["627471591907"]).to_pylist()
    assert [(h["reason"], h["cancelled"], h["sequence"]) for h in history] == [
        ("death", True, 2),
        ("cancel", False, 4),
    ]


@MMAP
def test_format_2_opens_with_its_history_and_checkpoints_as_format_3(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], mmap: bool
) -> None:
    snap = tmp_path / "snap"
    shutil.copytree(SNAPSHOT_V2, snap)
    version = current_version(snap)
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["format"] == "juki-snapshot/2" and (version / "residents.arrow").exists()
    capfd.readouterr()

    opened = Registry.open(snap, mmap=mmap)
    assert capfd.readouterr().err == ""  # format 2 is read as it is: nothing rebuilt
    assert len(opened) == 200
    assert_v2_state(opened)
    # Its writer state came with it: the first change again is a duplicate, not a second death.
    again = {"municipality": "312011", "sequence": 1, "reason": "death"}
    again |= {"effective_date": dt.date(2025, 3, 1), "reported_date": dt.date(2025, 3, 2)}
    again |= {"my_number": "267853505583"}
    (result,) = opened.apply(pa.Table.from_pylist([again]), today=V2_TODAY).to_pylist()
    assert result["outcome"] == "duplicate", result
    before = opened.to_arrow()

    opened.checkpoint()
    version = current_version(snap)
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["format"] == "juki-snapshot/3"
    assert {"history.arrow", "changes.json", "residents_status.arrow"} <= {
        f["name"] for f in manifest["files"]
    }
    reopened = Registry.open(snap, mmap=mmap)
    assert reopened.to_arrow().equals(before)
    assert_v2_state(reopened)
