"""The registry sharded over a real local Ray cluster (`ray start --head`, two worker CPUs): the
same answers as the single engine, row for row; an actor killed is restarted and the call still
answered whole; shard files from outside validated before use."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import ray
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from juki_engine import InvalidInput, Registry, _core, audit, certs, service
from juki_engine._proto import changes_pb2 as cpb
from juki_engine._proto import registry_pb2 as pb
from juki_engine._proto import registry_pb2_grpc as pb_grpc
from juki_engine._proto import residents_pb2 as rpb
from juki_engine._proto import residents_pb2_grpc as rpb_grpc
from juki_engine.audit import AuditTrail
from juki_engine.cli import main
from juki_engine.client import (
    AgencyTLS,
    BulkJob,
    acknowledge_notices,
    read_notices,
    request_context,
    stream_changes,
    submit_changes,
    watch,
)
from juki_engine.distributed import Routes, ShardedRegistry, ShardError, ShardSet, shard
from juki_engine.distributed.cluster import ShardUnavailable
from juki_engine.policy import Policy, example_path
from juki_engine.registry import scanned_through
from juki_engine.service.identity import BINDINGS, ResidentBindings, bind
from juki_engine.service.metrics import Metrics
from juki_engine.synthetic.changes import CHANGE_SCHEMA, generate_changes

SHARDS = 3


#: Residents made alike across shards (same names, readings and birth date): `(a, b)` rows.
TWINS = [(0, 4_500), (1, 2_500), (2_001, 2_002)]


@pytest.fixture(scope="module")
def registry() -> Registry:
    """6,000 residents, some alike across shards (and two alike within one)."""
    table = Registry.generate(population=6_000, seed=21).to_arrow()
    rows = table.to_pylist()
    for a, b in TWINS:
        for key in ("family_name", "family_name_kana", "given_name", "given_name_kana"):
            rows[b][key] = rows[a][key]
        rows[b]["birth_date"] = rows[a]["birth_date"]
    plain = pa.schema(
        [
            f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f
            for f in table.schema
        ]
    )
    return Registry.from_arrow(pa.Table.from_pylist(rows, plain))


@pytest.fixture(scope="module")
def shard_dir(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sharded") / "shards"
    shard(registry, SHARDS, out)
    return out


def processes_under(directory: str) -> list[int]:
    """The pids of the processes whose command line names `directory` (a Ray cluster's own)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and directory in (proc / "cmdline").read_text(errors="replace"):
                pids.append(int(proc.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A Ray head started as an operator would start it (`ray start --head`), in a short temp
    dir of its own (Ray's socket paths must stay short), and stopped by stopping the processes
    under its temp dir: never another cluster on the machine (`ray stop` would stop every
    one)."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0"}
    started = subprocess.run(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--num-cpus=2",
            "--object-store-memory=200000000",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
            "--port=0",
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    found = re.search(r"--address='([^']+)'", started.stdout + started.stderr)
    assert found, f"ray start --head printed no address: {started.stdout}"
    try:
        # "auto": the cluster `ray start` just recorded as this machine's current one, with its
        # token authentication (Ray's default), which a bare address would not carry.
        ray.init(address="auto", log_to_driver=False)
        yield found.group(1)
    finally:
        ray.shutdown()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in processes_under(temp):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(2)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def sharded(cluster: str, shard_dir: Path) -> ShardedRegistry:
    return ShardedRegistry.start(shard_dir)


def test_a_shard_directory_holds_contiguous_person_ranges_and_routes(
    registry: Registry, shard_dir: Path
) -> None:
    shards = ShardSet.load(shard_dir)
    assert [s.first_person for s in shards.shards] == [0, 2_000, 4_000]
    assert shards.rows == len(registry)
    # Each shard is a snapshot of its rows, opened like any other.
    first = Registry.open(shards.shards[1].path)
    assert first.to_arrow().equals(registry.to_arrow().slice(2_000, 2_000))
    routes = Routes.load(shard_dir / "routes.arrow", shards)
    for kind in ("my_number", "resident_code"):
        keys = registry.to_arrow([kind])[kind].combine_chunks().cast(pa.string())
        owner = routes.route(keys, kind)
        assert owner.tolist() == np.repeat(np.arange(SHARDS), 2_000).tolist()
        # An invalid key goes to shard 0, which says why; a key of no one to some shard, which
        # says not found (the property tests below compare those answers with one engine's).
        invalid = "12345678901" if kind == "my_number" else "1234567890"
        strays = pa.array([invalid, "x", None, "１２３"], pa.string())
        assert routes.route(strays, kind).tolist() == [0] * 4
        nobody = pa.array(["123456789018" if kind == "my_number" else "12345678903"] * 3)
        assert set(routes.route(nobody, kind).tolist()) < set(range(SHARDS))


def claims_table(registry: Registry, picks: list[tuple[int, str]], by: str) -> pa.Table:
    """Claims of the residents at `picks` (row, how the key is spoiled), claiming their family
    name and birth date, the odd one claimed wrongly."""
    rows = registry.to_arrow([by, "family_name", "birth_date"]).to_pylist()
    keys, family, birth = [], [], []
    for i, (row, spoil) in enumerate(picks):
        r = rows[row % len(rows)]
        key = r[by]
        key = {
            "": key,
            "nobody": "123456789018" if by == "my_number" else "12345678903",
            "short": key[:-1],
            "check": key[:-1] + str((int(key[-1]) + 1) % 10),
            "null": None,
            "wide": "１" + key[1:],
        }[spoil]
        keys.append(key)
        family.append(r["family_name"] if i % 3 else r["family_name"] + "x")
        birth.append(r["birth_date"])
    return pa.table(
        {
            by: pa.array(keys, pa.string()),
            "family_name": pa.array(family, pa.string()),
            "birth_date": pa.array(birth, pa.date32()),
        }
    )


SPOILS = st.sampled_from(["", "", "", "nobody", "short", "check", "null", "wide"])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    picks=st.lists(st.tuples(st.integers(0, 5_999), SPOILS), max_size=60),
    by=st.sampled_from(["my_number", "resident_code"]),
    first_row=st.integers(0, 10**6),
)
def test_sharded_verify_answers_as_the_single_engine_row_for_row(
    registry: Registry,
    sharded: ShardedRegistry,
    picks: list[tuple[int, str]],
    by: str,
    first_row: int,
) -> None:
    claims = claims_table(registry, picks, by)
    columns = ["person", "resident_code", "status"]
    one = registry.verify(claims, by=by, first_row=first_row, columns=columns)  # type: ignore[arg-type]
    many = sharded.verify(claims, by=by, first_row=first_row, columns=columns)
    assert many.schema == one.schema
    assert many.to_pylist() == one.to_pylist()


@pytest.mark.parametrize("by", ["my_number", "resident_code"])
def test_sharded_lookup_and_verify_above_exact_answer_as_the_single_engine(
    registry: Registry, sharded: ShardedRegistry, by: str
) -> None:
    picks = [(i * 97, "" if i % 5 else "nobody") for i in range(300)]
    claims = claims_table(registry, picks, by)
    columns = ["person", "family_name", "address_town", "card_state"]
    one = registry.lookup(claims[by], by=by, columns=columns)  # type: ignore[arg-type]
    assert sharded.lookup(claims[by], by=by, columns=columns).to_pylist() == one.to_pylist()
    spaced = claims.set_column(
        1, "family_name", pa.array([f + " " for f in claims["family_name"].to_pylist()])
    )
    one = registry.verify(spaced, by=by, match="normalised")  # type: ignore[arg-type]
    assert sharded.verify(spaced, by=by, match="normalised").to_pylist() == one.to_pylist()
    empty = claims.slice(0, 0)
    assert sharded.verify(empty, by=by).schema == registry.verify(empty, by=by).schema  # type: ignore[arg-type]


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    picks=st.lists(
        st.tuples(
            st.sampled_from([a for pair in TWINS for a in pair]) | st.integers(0, 5_999),
            st.sampled_from(["", "sex", "municipality", "stranger", "space"]),
        ),
        max_size=40,
    ),
    match=st.sampled_from(["exact", "normalised"]),
)
def test_a_sharded_search_answers_as_the_single_engine(
    registry: Registry,
    sharded: ShardedRegistry,
    picks: list[tuple[int, str]],
    match: str,
) -> None:
    """Every shard searches every claim; the merge counts candidates across shards (twins on
    two shards are ambiguous) and ranks them as one registry does."""
    people = registry.to_arrow(
        ["family_name", "given_name", "birth_date", "sex", "municipality_code"]
    ).to_pylist()
    facts: dict[str, list[Any]] = {
        k: [] for k in ("family_name", "given_name", "birth_date", "sex", "municipality_code")
    }
    for row, how in picks:
        p = people[row]
        facts["family_name"].append(
            p["family_name"] + ("　" if how == "space" else "" if how != "stranger" else "無")
        )
        facts["given_name"].append(p["given_name"])
        facts["birth_date"].append(p["birth_date"])
        facts["sex"].append(p["sex"] if how == "sex" else None)
        facts["municipality_code"].append(p["municipality_code"] if how == "municipality" else None)
    claims = pa.table(
        {
            "family_name": pa.array(facts["family_name"], pa.string()),
            "given_name": pa.array(facts["given_name"], pa.string()),
            "birth_date": pa.array(facts["birth_date"], pa.date32()),
            "sex": pa.array(facts["sex"], pa.int8()),
            "municipality_code": pa.array(facts["municipality_code"], pa.string()),
        }
    )
    for columns in (["resident_code", "family_name"], ["person", "status"]):
        one = registry.search(claims, match=match, columns=columns)
        many = sharded.search(claims, match=match, columns=columns)
        assert many.schema == one.schema
        assert many.to_pylist() == one.to_pylist()


def test_twins_on_two_shards_are_ambiguous(registry: Registry, sharded: ShardedRegistry) -> None:
    people = registry.to_arrow(["resident_code", "family_name", "given_name", "birth_date"])
    twin = people.slice(0, 1).drop_columns(["resident_code"])
    found = sharded.search(twin, columns=["resident_code"])
    assert found["outcome"].to_pylist() == ["ambiguous", "ambiguous"]
    codes = people["resident_code"].to_pylist()
    assert found["resident_code"].to_pylist() == [codes[0], codes[4_500]]


def test_a_killed_actor_is_restarted_and_the_call_answered_whole(
    registry: Registry, sharded: ShardedRegistry
) -> None:
    claims = claims_table(registry, [(i * 13, "") for i in range(400)], "my_number")
    expected = registry.verify(claims, by="my_number").to_pylist()
    victim = sharded.actors[1]
    pid = ray.get(victim.pid.remote())
    os.kill(pid, signal.SIGKILL)
    # Ray restarts the actor (it reopens its snapshot) and retries the call on it.
    assert sharded.verify(claims, by="my_number").to_pylist() == expected
    assert ray.get(victim.pid.remote()) != pid


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.1])
def test_an_actor_killed_during_a_call_gives_the_whole_answer(
    registry: Registry, sharded: ShardedRegistry, delay: float
) -> None:
    """Killed while a call is in flight (whenever: before its task ran, during, after), the
    actor is restarted and the call's task retried: the answer is whole and right."""
    picks = [(i * 7, "" if i % 9 else "check") for i in range(200_000)]
    claims = claims_table(registry, picks, "my_number")
    expected = registry.verify(claims, by="my_number")
    answer: list[pa.Table] = []
    call = threading.Thread(target=lambda: answer.append(sharded.verify(claims, by="my_number")))
    victim = sharded.actors[2]
    pid = ray.get(victim.pid.remote())
    call.start()
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    call.join(timeout=120)
    assert answer and answer[0].equals(expected)


def test_a_replica_answers_for_one_that_died_and_with_none_left_the_call_fails_whole(
    registry: Registry, cluster: str, shard_dir: Path
) -> None:
    """Replicas not restarted (restarts=0), so only the other replica can answer: with two a
    shard, every call is still answered after one dies; with one, a call to the dead shard is
    ShardUnavailable — never a partial answer."""
    claims = claims_table(registry, [(i * 17, "") for i in range(300)], "resident_code")
    expected = registry.verify(claims, by="resident_code").to_pylist()
    twice = ShardedRegistry.start(shard_dir, replicas=2, restarts=0)
    assert [len(r) for r in twice.replicas] == [2] * SHARDS
    os.kill(ray.get(twice.replicas[1][0].pid.remote()), signal.SIGKILL)
    for _ in range(4):  # calls go round the replicas: the dead one's turns fail over
        assert twice.verify(claims, by="resident_code").to_pylist() == expected
    once = ShardedRegistry.start(shard_dir, replicas=1, restarts=0)
    os.kill(ray.get(once.replicas[1][0].pid.remote()), signal.SIGKILL)
    with pytest.raises(ShardUnavailable):
        once.verify(claims, by="resident_code")
    twice.stop()
    once.stop()


def test_a_registry_with_changes_no_snapshot_holds_is_not_sharded(tmp_path: Path) -> None:
    r = Registry.generate(population=500, seed=3)
    person = r.to_arrow(["my_number", "municipality_code", "status"]).to_pylist()[0]
    death = {"municipality": person["municipality_code"], "sequence": 1, "reason": "death"}
    death |= {"my_number": person["my_number"]}
    day = dt.date(2025, 3, 1)
    r.apply(pa.Table.from_pylist([death | {"effective_date": day, "reported_date": day}]))
    with pytest.raises(InvalidInput, match="checkpoint it first"):
        shard(r, 2, tmp_path / "shards")


def flip(path: Path) -> None:
    """Damage `path`: one byte in its middle changed."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x55
    path.write_bytes(bytes(raw))


def forged(shard_dir: Path, tmp_path: Path, edit: Any) -> Path:
    copy = tmp_path / "forged"
    shutil.copytree(shard_dir, copy)
    edit(copy)
    return copy


HOSTILE: dict[str, Any] = {
    "manifest not json": lambda d: (d / "shards.json").write_text("{"),
    "another format": lambda d: (d / "shards.json").write_text('{"format": "x", "shards": []}'),
    "a gap between shards": lambda d: (d / "shards.json").write_text(
        json.dumps(
            {
                "format": "juki-shards/2",
                "shards": [
                    {"path": "shard-0", "first_person": 0, "rows": 2000},
                    {"path": "shard-1", "first_person": 2500, "rows": 2000},
                ],
            }
        )
    ),
    "no routes checksum": lambda d: (d / "shards.json").write_text(
        json.dumps(
            {
                k: v
                for k, v in json.loads((d / "shards.json").read_text()).items()
                if k != "routes_sha256"
            }
        )
    ),
    "no routing functions' checksums": lambda d: (d / "shards.json").write_text(
        json.dumps(
            {
                k: v
                for k, v in json.loads((d / "shards.json").read_text()).items()
                if k != "functions_sha256"
            }
        )
    ),
    "a routing function's checksum not hex": lambda d: (d / "shards.json").write_text(
        json.dumps(
            json.loads((d / "shards.json").read_text())
            | {"functions_sha256": {"my_number": "../x", "resident_code": "0" * 64}}
        )
    ),
    "the former identifiers' checksum not hex": lambda d: (d / "shards.json").write_text(
        json.dumps(json.loads((d / "shards.json").read_text()) | {"former_sha256": "../x"})
    ),
    "a path out of the directory": lambda d: (d / "shards.json").write_text(
        json.dumps(
            {
                "format": "juki-shards/2",
                "shards": [{"path": "../../etc", "first_person": 0, "rows": 6000}],
            }
        )
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_manifest_is_refused_naming_it(
    shard_dir: Path, tmp_path: Path, case: str
) -> None:
    with pytest.raises(ShardError, match=r"shards\.json"):
        ShardSet.load(forged(shard_dir, tmp_path, HOSTILE[case]))


def test_a_damaged_shard_is_refused_at_start_naming_it(
    cluster: str, shard_dir: Path, tmp_path: Path
) -> None:
    def damage(d: Path) -> None:
        version = d / "shard-1" / (d / "shard-1" / "CURRENT").read_text().strip()
        flip(version / "residents_family.arrow")

    with pytest.raises(ShardError, match=r"shard-1: its actor could not open it.*checksum"):
        ShardedRegistry.start(forged(shard_dir, tmp_path, damage))


def test_damaged_routes_are_refused_at_start_naming_them(
    cluster: str, shard_dir: Path, tmp_path: Path
) -> None:
    """A routing table that sent a key to the wrong shard would answer a resident as no one:
    its file is checked against the manifest's SHA-256 before it is read."""

    def damage(d: Path) -> None:
        flip(d / "routes.arrow")

    with pytest.raises(ShardError, match=r"routes\.arrow: SHA-256 [0-9a-f]+, shards\.json says"):
        ShardedRegistry.start(forged(shard_dir, tmp_path, damage))


def test_a_damaged_or_foreign_routing_function_is_refused_naming_it(
    registry: Registry, shard_dir: Path, tmp_path: Path
) -> None:
    """A routing function is checked against the manifest's SHA-256, then, with a manifest
    forged to match, by every person reaching a slot of their own."""

    def damage(d: Path) -> None:
        flip(d / "routes_resident_code.phast")

    with pytest.raises(ShardError, match=r"routes_resident_code\.phast: SHA-256 [0-9a-f]+"):
        ShardSet.load(forged(shard_dir, tmp_path, damage)).routes()

    def foreign(d: Path) -> None:
        # The function of another registry's resident codes, its checksum put in the manifest.
        other = Registry.generate(len(registry), seed=99).to_arrow(["resident_code"])
        path = d / "routes_resident_code.phast"
        path.write_bytes(
            _core.Router.function(
                other["resident_code"].combine_chunks().cast(pa.uint64()), "resident_code"
            )
        )
        manifest = json.loads((d / "shards.json").read_text())
        manifest["functions_sha256"]["resident_code"] = hashlib.sha256(
            path.read_bytes()
        ).hexdigest()
        (d / "shards.json").write_text(json.dumps(manifest))

    shutil.rmtree(tmp_path / "forged")
    with pytest.raises(ShardError, match="routing function of the resident_codes gives"):
        ShardSet.load(forged(shard_dir, tmp_path, foreign)).routes()


def test_held_identifiers_damaged_or_out_of_order_are_refused_naming_them(
    cluster: str, shard_dir: Path, tmp_path: Path
) -> None:
    """The identifiers no shard may issue are checked against the manifest by the front end,
    and for their order by each actor (a binary search over a disordered file would let a
    shard issue an identifier someone holds)."""

    def damage(d: Path) -> None:
        flip(d / "held_my_number.u64")

    with pytest.raises(ShardError, match=r"held_my_number\.u64: SHA-256 [0-9a-f]+"):
        ShardedRegistry.start(forged(shard_dir, tmp_path, damage))

    def disorder(d: Path) -> None:
        path = d / "held_resident_code.u64"
        values = np.fromfile(path, "<u8")
        values[[10, 11]] = values[[11, 10]]
        values.tofile(path)
        manifest = json.loads((d / "shards.json").read_text())
        manifest["held_sha256"]["resident_code"] = hashlib.sha256(path.read_bytes()).hexdigest()
        (d / "shards.json").write_text(json.dumps(manifest))

    shutil.rmtree(tmp_path / "forged")
    with pytest.raises(ShardError, match=r"held_resident_code\.u64: .*ascending order at 11"):
        ShardedRegistry.start(forged(shard_dir, tmp_path, disorder))


def first_format(d: Path) -> None:
    """Shards as format 1 wrote them: no routing functions, no held identifiers."""
    manifest = json.loads((d / "shards.json").read_text())
    del manifest["functions_sha256"], manifest["held_sha256"]
    (d / "shards.json").write_text(json.dumps(manifest | {"format": "juki-shards/1"}))
    for kind in ("my_number", "resident_code"):
        (d / f"routes_{kind}.phast").unlink()
        (d / f"held_{kind}.u64").unlink()


def test_shards_of_format_1_build_their_routing_functions_when_loaded(
    registry: Registry, shard_dir: Path, tmp_path: Path
) -> None:
    shards = ShardSet.load(forged(shard_dir, tmp_path, first_format))
    assert shards.functions_sha256 is None
    keys = registry.to_arrow(["my_number"])["my_number"].combine_chunks()
    expected = ShardSet.load(shard_dir).routes().route(keys, "my_number")
    assert shards.routes().route(keys, "my_number").tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (pa.table({"kind": ["my_number"], "value": pa.array([1], pa.int64())}), "must hold"),
        (
            pa.table(
                {
                    "kind": pa.array(["passport"], pa.string()),
                    "value": pa.array([1], pa.uint64()),
                    "person": pa.array([1], pa.uint32()),
                }
            ),
            "must hold",
        ),
        (
            pa.table(
                {
                    "kind": pa.array(["my_number"], pa.string()),
                    "value": pa.array([1], pa.uint64()),
                    "person": pa.array([6_000], pa.uint32()),
                }
            ),
            "past the split's persons",
        ),
    ],
)
def test_hostile_former_identifiers_are_refused_naming_them(
    shard_dir: Path, tmp_path: Path, table: pa.Table, message: str
) -> None:
    """A forged `routes_former.arrow` whose checksum the manifest agrees with: its schema,
    kinds and persons are checked before anything is routed by it."""

    def forge(d: Path) -> None:
        fields = [pa.field(f.name, f.type, nullable=False) for f in table.schema]
        with pa.OSFile(str(d / "routes_former.arrow"), "wb") as sink:
            with pa.ipc.new_file(sink, pa.schema(fields)) as w:
                w.write_table(table.cast(pa.schema(fields)))
        digest = hashlib.sha256((d / "routes_former.arrow").read_bytes()).hexdigest()
        manifest = json.loads((d / "shards.json").read_text()) | {"former_sha256": digest}
        (d / "shards.json").write_text(json.dumps(manifest))

    with pytest.raises(ShardError, match=message) as info:
        ShardSet.load(forged(shard_dir, tmp_path, forge)).routes()
    assert "routes_former.arrow" in str(info.value)


def test_hostile_routes_are_refused_naming_them(shard_dir: Path, tmp_path: Path) -> None:
    shards = ShardSet.load(shard_dir)
    table = pa.ipc.open_file(shard_dir / "routes.arrow").read_all()
    path = tmp_path / "routes.arrow"

    def write(t: pa.Table) -> None:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, t.schema) as w:
            w.write_table(t)

    numbers = table["my_number"].to_numpy().copy()
    numbers[7] = numbers[3]  # one My Number for two persons
    write(table.set_column(0, "my_number", pa.array(numbers)))
    with pytest.raises(ShardError, match=r"routes\.arrow.*appears in rows 3 and 7"):
        Routes.load(path, shards)
    write(table.slice(1))
    with pytest.raises(ShardError, match="one a person"):
        Routes.load(path, shards)
    write(table.set_column(0, "my_number", table["my_number"].cast(pa.int64())))
    with pytest.raises(ShardError, match="must be uint64"):
        Routes.load(path, shards)
    path.write_bytes(b"not arrow")
    with pytest.raises(ShardError, match="routing tables"):
        Routes.load(path, shards)


def test_juki_shard_splits_a_snapshot(registry: Registry, tmp_path: Path) -> None:
    snap = tmp_path / "snap"
    registry.save(snap)
    bind(snap, {"ab" * 32: 4_500})  # a resident's certificate, bound beside the snapshot
    assert main(["shard", str(snap), "--shards", "2", "--out", str(tmp_path / "out")]) == 0
    assert [s.rows for s in ShardSet.load(tmp_path / "out").shards] == [3_000, 3_000]
    # The binding moves with the split: person ids stay the registry's.
    assert ResidentBindings(tmp_path / "out" / BINDINGS).person_of("ab" * 32) == 4_500
    assert main(["shard", str(snap), "--shards", "2", "--out", str(tmp_path / "out")]) == 2


# ------------------------------------------------------------------ changes on shards

TODAY = dt.date(2026, 1, 1)
TOYAMA_ADDRESS = {"address_town": "中央町", "address_block": "1-1"}


@pytest.fixture
def living(cluster: str, shard_dir: Path, tmp_path: Path) -> Iterator[ShardedRegistry]:
    """The shards copied (changes write each shard's change log) and served by their actors."""
    shutil.copytree(shard_dir, tmp_path / "living")
    sharded = ShardedRegistry.start(tmp_path / "living")
    yield sharded
    sharded.stop()


def one_engine(registry: Registry, tmp_path: Path) -> Registry:
    """The single engine beside the shards: the same registry, opened with a change log."""
    registry.save(tmp_path / "one")
    return Registry.open(tmp_path / "one")


def change(person: dict[str, Any], sequence: int, reason: str, **fields: Any) -> dict[str, Any]:
    day = dt.date(2025, 3, 1)
    return {
        "municipality": person["municipality_code"],
        "sequence": sequence,
        "reason": reason,
        "effective_date": day,
        "reported_date": day,
        **fields,
    }


def newborn(parent: dict[str, Any], sequence: int) -> dict[str, Any]:
    """山田花子's birth, recorded by `parent`'s municipality."""
    return change(
        parent,
        sequence,
        "birth",
        family_name="山田",
        family_name_kana="ヤマダ",
        given_name="花子",
        given_name_kana="ハナコ",
        birth_date=dt.date(2025, 3, 1),
        sex=2,
        address_town="本町",
        address_block="1-1",
    )


def changes_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, CHANGE_SCHEMA)


def test_a_year_of_changes_on_shards_answers_as_the_single_engine_row_for_row(
    registry: Registry, living: ShardedRegistry, tmp_path: Path
) -> None:
    """A generated year (moves between municipalities on different shards, deaths, births,
    name and card changes, moves abroad and back), in batches: every row's outcome, refusal
    code and error is the single engine's; the residents read the same afterwards; the births'
    identifiers are new, unique, and answer through the shards."""
    one = one_engine(registry, tmp_path)
    year = generate_changes(registry, 2025, seed=3)
    assert {"birth", "move_in", "death", "return_from_abroad"} <= set(year["reason"].to_pylist())
    answers = []
    for start in range(0, year.num_rows, 300):
        batch = year.slice(start, 300)
        expected = one.apply(batch, today=TODAY, first_row=start)
        got = living.apply(batch, today=TODAY, first_row=start)
        for column in ("outcome", "code", "error"):
            assert got[column].to_pylist() == expected[column].to_pylist(), column
        answers.append(got)
    assert len(living) == len(one) > len(registry)
    assert living.applied_changes == one.applied_changes
    columns = ["status", "family_name", "address_town", "municipality_code", "card_state"]
    keys = registry.to_arrow(["my_number"])["my_number"]
    assert living.lookup(keys, columns=columns).equals(one.lookup(keys, columns=columns))

    births = pa.concat_tables(answers).filter(pc.equal(year["reason"], "birth"))
    held = registry.to_arrow(["resident_code", "my_number"])
    for kind in ("resident_code", "my_number"):
        issued = births[kind].to_pylist()
        assert len(set(issued)) == len(issued) and not set(issued) & set(held[kind].to_pylist())
        found = living.lookup(births[kind], by=kind, columns=["person", "resident_code"])
        assert found["resident_code"].to_pylist() == births["resident_code"].to_pylist()
    # A newborn's person id lies past every person of the split, and reads back by it.
    ids = found["person"].to_pylist()
    assert min(ids) >= len(registry) and len(set(ids)) == len(ids)
    assert (
        living._by_person(ids, ["my_number"])["my_number"].to_pylist()
        == births["my_number"].to_pylist()
    )
    assert_same_feeds(
        registry, one, living, pa.concat_tables(answers), set(year["reason"].to_pylist())
    )


def assert_same_feeds(
    registry: Registry,
    one: Registry,
    living: ShardedRegistry,
    answers: pa.Table,
    reasons: set[str],
) -> None:
    """Every municipality's move-in notices and a watch list's changes read through the shards
    as from the single engine, in the same order: the shards number a change by its row among
    every row submitted (`answers`, from a fresh start), the single engine by its place among
    the changes applied."""
    applied = np.flatnonzero(pc.equal(answers["outcome"], "applied").to_numpy(False)) + 1
    as_rows = {int(n): int(row) for n, row in enumerate(applied, start=1)}

    def rows_of(table: pa.Table, *columns: str) -> list[dict[str, Any]]:
        out = table.drop_columns(["recorded_at"]).to_pylist()
        for row in out:
            for c in columns:
                row[c] = None if row[c] is None else as_rows[row[c]]
        return out

    codes = sorted(set(registry.to_arrow(["municipality_code"])["municipality_code"].to_pylist()))
    everything = 1_000_000
    counts = {}
    for code in codes:
        expected = one.notices(code, limit=everything)
        got = living.notices(code, limit=everything)
        assert got.drop_columns(["recorded_at"]).to_pylist() == rows_of(expected, "notice"), code
        counts[code] = got.num_rows
    assert living._notice_backlog(dict.fromkeys(codes, 0)) == counts
    busiest = max(counts, key=lambda c: counts[c])
    assert counts[busiest] >= 3 and sum(counts.values()) > 20
    # Read in small pages from a cursor, as the notice service reads: the same notices, once.
    pages, after = [], 0
    while True:
        page = living.notices(busiest, after=after, limit=2)
        assert page.num_rows <= 2
        pages.append(page)
        if not page.num_rows and scanned_through(page) == after:
            break
        after = scanned_through(page)
    assert pa.concat_tables(pages).equals(living.notices(busiest, limit=everything))
    # A watch list over persons of the split: the same changes, numbered as their rows.
    bits = np.zeros(len(registry), np.uint8)
    bits[::7] = 1
    watch = np.packbits(bits, bitorder="little").tobytes()
    expected = one._watched_changes(watch, sorted(reasons - {"cancel"}), 0, everything)
    got = living._watched_changes(watch, sorted(reasons - {"cancel"}), 0, everything)
    assert got.num_rows > 100
    assert got.drop_columns(["recorded_at"]).to_pylist() == rows_of(expected, "change", "cancels")
    pages, after = [], 0
    while page := living._watched_changes(watch, ["move_in", "death"], after, 9):
        pages.append(page)
        if not page.num_rows and scanned_through(page) == after:
            break
        after = scanned_through(page)
    assert pa.concat_tables(pages).equals(
        living._watched_changes(watch, ["move_in", "death"], 0, everything)
    )


def test_an_identifier_change_routes_the_new_identifier_and_keeps_the_former(
    registry: Registry, living: ShardedRegistry
) -> None:
    rows = registry.to_arrow(["resident_code", "my_number", "municipality_code"]).to_pylist()
    a, b = rows[2_100], rows[5_500]  # on shards 1 and 2
    out = living.apply(
        changes_table(
            [
                change(a, 1, "resident_code_change", resident_code=a["resident_code"]),
                change(b, 1, "my_number_change", my_number=b["my_number"]),
                # A later row naming the resident by the identifier just replaced.
                change(a, 2, "card_applied", resident_code=a["resident_code"]),
            ]
        ),
        today=TODAY,
    )
    assert out["outcome"].to_pylist() == ["applied"] * 3
    new_code, new_number = out["resident_code"][0].as_py(), out["my_number"][1].as_py()
    assert new_code != a["resident_code"] and new_number != b["my_number"]
    # The new identifiers answer at once; the former ones still reach their persons.
    now = living.lookup([new_code, a["resident_code"]], by="resident_code", columns=["card_state"])
    assert now["found"].to_pylist() == [True, True]
    assert now["replaced"].to_pylist() == [False, True]
    assert now["card_state"].to_pylist() == ["applied", "applied"]
    now = living.lookup([new_number, b["my_number"]], by="my_number", columns=["resident_code"])
    assert now["resident_code"].to_pylist() == [b["resident_code"]] * 2
    assert now["replaced"].to_pylist() == [False, True]


def test_a_change_is_remembered_across_shards_and_a_cancel_finds_its_change(
    registry: Registry, living: ShardedRegistry
) -> None:
    rows = registry.to_arrow(["resident_code", "municipality_code"]).to_pylist()
    a = rows[2_200]  # shard 1
    b = rows[4_500]  # shard 2
    death = change(a, 7, "death", resident_code=a["resident_code"])
    first = living.apply(changes_table([death]), today=TODAY)
    assert first["outcome"].to_pylist() == ["applied"]
    # The same (municipality, sequence) naming a resident of another shard: a duplicate,
    # answered with the first result; nothing happens to the other resident.
    again = living.apply(changes_table([death | {"resident_code": b["resident_code"]}]))
    assert again["outcome"].to_pylist() == ["duplicate"]
    assert again["resident_code"].to_pylist() == [a["resident_code"]]
    status = living.lookup(
        [a["resident_code"], b["resident_code"]], by="resident_code", columns=["status"]
    )
    assert status["status"].to_pylist() == ["deceased", "resident"]
    # A cancel carries no resident: it reaches the shard that applied the change it cancels.
    cancel = change(a, 8, "cancel", cancels=7)
    assert living.apply(changes_table([cancel]), today=TODAY)["outcome"].to_pylist() == ["applied"]
    status = living.lookup([a["resident_code"]], by="resident_code", columns=["status"])
    assert status["status"].to_pylist() == ["resident"]
    # One of a change no shard applied is not found, as the single engine says.
    missing = living.apply(changes_table([change(a, 9, "cancel", cancels=1234)]), today=TODAY)
    assert missing["code"].to_pylist() == ["not_found"]


def test_a_shard_killed_after_changes_reopens_with_them_and_a_new_front_end_routes_them(
    registry: Registry, living: ShardedRegistry
) -> None:
    rows = registry.to_arrow(["resident_code", "municipality_code"]).to_pylist()
    a = rows[2_300]
    birth = newborn(a, 1)
    out = living.apply(
        changes_table([change(a, 2, "death", resident_code=a["resident_code"]), birth]),
        today=TODAY,
    )
    assert out["outcome"].to_pylist() == ["applied"] * 2
    baby = out["resident_code"][1].as_py()
    for k in range(SHARDS):
        os.kill(ray.get(living.actors[k].pid.remote()), signal.SIGKILL)
    # Ray restarts each from its snapshot and its change log.
    found = living.lookup([a["resident_code"], baby], by="resident_code", columns=["status"])
    assert found["status"].to_pylist() == ["deceased", "resident"]
    # A front end started afresh learns the newborn's identifiers from the shards' logs.
    again = ShardedRegistry.start(living.shards.directory)
    try:
        found = again.lookup([baby], by="resident_code", columns=["family_name"])
        assert found["family_name"].to_pylist() == ["山田"]
        # And the changes already seen stay remembered.
        out = again.apply(changes_table([birth]), today=TODAY)
        assert out["outcome"].to_pylist() == ["duplicate"]
        assert out["resident_code"].to_pylist() == [baby]
    finally:
        again.stop()


def test_notices_stay_in_order_across_shards_restarted_and_a_new_front_end(
    registry: Registry, living: ShardedRegistry, tmp_path: Path
) -> None:
    """The shards log each change's number with it: actors killed and restarted give the
    same notices, and a front end started afresh numbers its changes after every one before,
    so each municipality's notices still read in the order they were recorded."""
    one = one_engine(registry, tmp_path)
    year = generate_changes(registry, 2025, seed=5)
    half = year.num_rows // 2
    for start in range(0, half, 500):
        batch = year.slice(start, min(500, half - start))
        one.apply(batch, today=TODAY, first_row=start)
        living.apply(batch, today=TODAY, first_row=start)
    codes = sorted(set(year["municipality"].to_pylist()))
    before = {code: living.notices(code, limit=10_000) for code in codes}
    for k in range(SHARDS):
        os.kill(ray.get(living.actors[k].pid.remote()), signal.SIGKILL)
    assert all(living.notices(code, limit=10_000).equals(before[code]) for code in codes)
    again = ShardedRegistry.start(living.shards.directory)
    try:
        for start in range(half, year.num_rows, 500):
            batch = year.slice(start, 500)
            one.apply(batch, today=TODAY, first_row=start)
            again.apply(batch, today=TODAY, first_row=start)
        later = 0
        for code in codes:
            got, expected = again.notices(code, limit=10_000), one.notices(code, limit=10_000)
            numbers = got["notice"].to_pylist()
            assert numbers == sorted(set(numbers)), code
            assert got.drop_columns(["notice", "recorded_at"]).equals(
                expected.drop_columns(["notice", "recorded_at"])
            ), code
            assert got.slice(0, before[code].num_rows).equals(before[code])
            later += got.num_rows - before[code].num_rows
        assert later > 5
    finally:
        again.stop()


def test_a_living_registry_split_after_a_checkpoint_answers_as_it_did(
    registry: Registry, cluster: str, tmp_path: Path
) -> None:
    """A registry that took a year's first changes (births, moves, identifier changes, a
    rejection), checkpointed, then split: the shards answer as it does — residents, their
    history, former identifiers (`replaced`), every municipality's notices with the same
    numbers —, remember its changes (a resend is a duplicate, a rejection too), take a cancel
    of one, and issue identifiers no one held."""
    one = one_engine(registry, tmp_path)
    rows = registry.to_arrow(["resident_code", "my_number", "municipality_code"]).to_pylist()
    a, b = rows[2_100], rows[5_500]
    year = generate_changes(registry, 2025, seed=11).slice(0, 1_500)
    extra = changes_table(
        [
            change(a, 900_001, "resident_code_change", resident_code=a["resident_code"]),
            change(b, 900_001, "my_number_change", my_number=b["my_number"]),
            change(a, 900_002, "death", resident_code="12345678903"),  # no one: rejected
        ]
    )
    for start in range(0, year.num_rows, 500):
        one.apply(year.slice(start, 500), today=TODAY, first_row=start)
    before = one.apply(extra, today=TODAY)
    assert before["outcome"].to_pylist() == ["applied", "applied", "rejected"]
    with pytest.raises(InvalidInput, match="checkpoint it first"):
        shard(one, SHARDS, tmp_path / "refused")
    one.checkpoint()
    one = Registry.open(tmp_path / "one")
    shard(one, SHARDS, tmp_path / "split")
    split = ShardedRegistry.start(tmp_path / "split")
    try:
        people = one.to_arrow(["my_number", "resident_code"])
        columns = ["status", "family_name", "address_town", "municipality_code", "card_state"]
        assert split.lookup(people["my_number"], columns=columns).equals(
            one.lookup(people["my_number"], columns=columns)
        )
        assert split.history(people["my_number"]).equals(one.history(people["my_number"]))
        # The identifiers replaced before the split still find their persons.
        for key, by in ((a["resident_code"], "resident_code"), (b["my_number"], "my_number")):
            found = split.lookup([key], by=by, columns=["status"])
            assert found.equals(one.lookup([key], by=by, columns=["status"]))
            assert found["replaced"].to_pylist() == [True]
        codes = sorted(set(one.to_arrow(["municipality_code"])["municipality_code"].to_pylist()))
        assert sum(one.notices(code, limit=10_000).num_rows for code in codes) > 10
        for code in codes:
            assert split.notices(code, limit=10_000).equals(one.notices(code, limit=10_000))
        # Changes made before the split are remembered: sent again, duplicates with their
        # first results; a rejection too.
        again = split.apply(pa.concat_tables([year.slice(0, 200), extra]), today=TODAY)
        assert set(again["outcome"].to_pylist()) == {"duplicate"}
        assert again["code"].to_pylist()[-1] == "not_found"
        # A cancel of a change made before the split, and births after it.
        undo = changes_table([change(b, 900_004, "cancel", cancels=900_001)])
        assert split.apply(undo, today=TODAY).equals(one.apply(undo, today=TODAY))
        numbers = [b["my_number"], before["my_number"][1].as_py()]
        assert split.lookup(numbers, columns=["status"]).equals(
            one.lookup(numbers, columns=["status"])
        )
        out = split.apply(changes_table([newborn(a, 900_003)]), today=TODAY)
        assert out["outcome"].to_pylist() == ["applied"]
        ever = set(people["resident_code"].to_pylist()) | {a["resident_code"]}
        baby = out["resident_code"][0].as_py()
        assert baby not in ever
        assert split.lookup([baby], by="resident_code")["found"].to_pylist() == [True]
    finally:
        split.stop()
    # The former identifiers' file is checked as the other routes are.
    damaged = forged(tmp_path / "split", tmp_path, lambda d: flip(d / "routes_former.arrow"))
    with pytest.raises(ShardError, match=r"routes_former\.arrow: SHA-256"):
        ShardSet.load(damaged).routes()


def test_hostile_change_batches_get_the_single_engines_answers(
    registry: Registry, living: ShardedRegistry, tmp_path: Path
) -> None:
    """Rows that route nowhere sensible (no or a bad municipality, a sequence out of range,
    keys malformed or of no one, an unknown reason, a change twice in one batch, a cancel of a
    change in the same batch) are answered row for row as by the single engine, and batches
    of columns of the wrong type are refused as it refuses them."""
    one = one_engine(registry, tmp_path)
    rows = registry.to_arrow(["resident_code", "my_number", "municipality_code"]).to_pylist()
    a, b = rows[100], rows[5_000]
    batch = changes_table(
        [
            change(a, 1, "death", resident_code=a["resident_code"]),
            change(a, 1, "death", resident_code=b["resident_code"]),  # the same change again
            change(a, 2, "cancel", cancels=1),  # of the change just above
            change(b, 3, "name_change", my_number=b["my_number"], family_name="川"),
            change(a, 4, "death", resident_code="12345678903"),  # no one
            change(a, 5, "death", resident_code="１２３"),
            change(a, 6, "death", my_number="x"),
            change(a, 2**50, "death", resident_code=a["resident_code"]),
            change(a, 7, "marriage", resident_code=a["resident_code"]),
            change(a, 8, "death"),  # no identifier: a new person's shard, which refuses it
            {**change(a, 9, "death", resident_code=b["resident_code"]), "municipality": None},
            {**change(a, 10, "death", resident_code=b["resident_code"]), "municipality": "999"},
            {**change(a, 11, "death", resident_code=b["resident_code"]), "sequence": None},
        ]
    )
    expected = one.apply(batch, today=TODAY, first_row=40)
    got = living.apply(batch, today=TODAY, first_row=40)
    assert got.equals(expected)
    assert living.apply(batch, today=TODAY, first_row=40).equals(
        one.apply(batch, today=TODAY, first_row=40)
    )
    for hostile in (
        batch.set_column(1, "sequence", batch["sequence"].cast(pa.string())),
        batch.drop_columns(["reason"]),
        pa.table({"x": [1]}),
    ):
        with pytest.raises(Exception) as single:
            one.apply(hostile, today=TODAY)
        with pytest.raises(type(single.value), match=re.escape(str(single.value))):
            living.apply(hostile, today=TODAY)


def test_juki_apply_takes_a_change_file_to_shards(
    registry: Registry, cluster: str, shard_dir: Path, tmp_path: Path
) -> None:
    """`juki apply DIR changes.parquet` on a shard directory: each change to its shard, durable
    in the shards' logs; `juki checkpoint DIR` folds them into the shards' snapshots, which
    actors started afterwards open."""
    shutil.copytree(shard_dir, tmp_path / "shards")
    rows = registry.to_arrow(["resident_code", "municipality_code"]).to_pylist()
    a, b = rows[1_000], rows[4_000]  # shards 0 and 2
    file = tmp_path / "changes.parquet"
    pq.write_table(
        changes_table(
            [
                change(a, 1, "death", resident_code=a["resident_code"]),
                change(
                    b,
                    1,
                    "move_within",
                    resident_code=b["resident_code"],
                    address_town="本町",
                    address_block="2-3",
                ),
                change(b, 2, "death", resident_code="12345678903"),  # no one: rejected
            ]
        ),
        file,
    )
    status = main(["apply", str(tmp_path / "shards"), str(file), "--today", "2026-01-01"])
    assert status == 1  # done, with a row rejected (docs/outcomes.md)
    # `juki checkpoint DIR` folds each shard's log into its snapshot.
    assert main(["checkpoint", str(tmp_path / "shards")]) == 0
    for k in range(SHARDS):
        assert (tmp_path / "shards" / f"shard-{k}" / "changes.log").stat().st_size == 28
    again = ShardedRegistry.start(tmp_path / "shards")
    try:
        found = again.lookup(
            [a["resident_code"], b["resident_code"]],
            by="resident_code",
            columns=["status", "address_town"],
        )
        assert found["status"].to_pylist() == ["deceased", "resident"]
        assert found["address_town"].to_pylist()[1] == "本町"
    finally:
        again.stop()


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1])  # the batch takes ~0.2 s unharmed
def test_a_shard_killed_during_a_change_batch_applies_it_once(
    registry: Registry, living: ShardedRegistry, tmp_path: Path, delay: float
) -> None:
    """Killed while a batch is in flight (before its task ran, or during it), the actor is
    restarted from its snapshot and log and the task retried: each row's answer is the single
    engine's, or, where the first attempt had made the shard's rows durable, `duplicate` with
    the same code and error; sent again, every row is a duplicate; the residents end as the
    single engine leaves them."""
    one = one_engine(registry, tmp_path)
    rows = registry.to_arrow(["resident_code", "municipality_code"]).to_pylist()
    batch = changes_table(
        [
            change(
                rows[2_000 + i % 2_000],
                i,
                "death",
                resident_code=rows[2_000 + i % 2_000]["resident_code"],
            )
            for i in range(60_000)
        ]
    )
    expected = one.apply(batch, today=TODAY)
    answer: list[pa.Table] = []
    call = threading.Thread(target=lambda: answer.append(living.apply(batch, today=TODAY)))
    pid = ray.get(living.actors[1].pid.remote())
    call.start()
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    call.join(timeout=120)
    assert answer, "the batch got no answer"
    got = answer[0]
    first = got["outcome"].to_pylist()
    assert set(first) <= {"applied", "rejected"} or set(first) == {"duplicate"}
    if first[0] != "duplicate":
        assert first == expected["outcome"].to_pylist()
    assert got["code"].to_pylist() == expected["code"].to_pylist()
    assert got["error"].to_pylist() == expected["error"].to_pylist()
    again = living.apply(batch, today=TODAY)
    assert set(again["outcome"].to_pylist()) == {"duplicate"}
    keys = [r["resident_code"] for r in rows[2_000:4_000]]
    assert living.lookup(keys, by="resident_code", columns=["status"]).equals(
        one.lookup(keys, by="resident_code", columns=["status"])
    )


def replica_answers(sharded: ShardedRegistry, k: int, call: Any) -> list[Any]:
    """Each replica's own answer of shard k to `call(actor)` (a remote call)."""
    return [ray.get(call(actor)) for actor in sharded.replicas[k]]


def test_replicas_take_changes_and_each_answers_as_the_single_engine(
    registry: Registry, cluster: str, shard_dir: Path, tmp_path: Path
) -> None:
    """Shards with two replicas each: every replica applies its shard's rows (the same rows,
    numbers, day and commit time), each in its own change log, and reads as every other: the
    answers, the residents, their history and the notices are the single engine's."""
    one = one_engine(registry, tmp_path)
    shutil.copytree(shard_dir, tmp_path / "twice")
    twice = ShardedRegistry.start(tmp_path / "twice", replicas=2)
    try:
        year = generate_changes(registry, 2025, seed=7).slice(0, 1_500)
        for start in range(0, year.num_rows, 500):
            batch = year.slice(start, 500)
            expected = one.apply(batch, today=TODAY, first_row=start)
            got = twice.apply(batch, today=TODAY, first_row=start)
            assert got.select(["outcome", "code", "error"]).equals(
                expected.select(["outcome", "code", "error"])
            )
        keys = registry.to_arrow(["my_number"])["my_number"].combine_chunks()
        columns = ["status", "family_name", "address_town", "municipality_code"]
        for k in range(SHARDS):
            mine = keys.take(np.flatnonzero(twice.routes.route(keys, "my_number") == k))
            a, b = replica_answers(
                twice, k, lambda r, mine=mine: r.lookup.remote(mine, "my_number", columns)
            )
            assert a.equals(b) and a.equals(one.lookup(mine, columns=columns))
            notices = replica_answers(twice, k, lambda r: r.notices.remote("131041", 0, 10_000))
            assert notices[0].equals(notices[1])
            logs = [
                twice.shards.shards[k].path / name
                for name in ("changes.log", "changes.replica-1.log")
            ]
            assert logs[0].read_bytes()[28:] == logs[1].read_bytes()[28:]  # past the header
        codes = sorted(set(year["municipality"].to_pylist()))
        got = [
            twice.notices(c, limit=10_000).drop_columns(["notice", "recorded_at"]) for c in codes
        ]
        assert got == [
            one.notices(c, limit=10_000).drop_columns(["notice", "recorded_at"]) for c in codes
        ]
    finally:
        twice.stop()


def test_a_replica_that_logged_a_batch_unlike_its_peer_is_left_out_as_diverged(
    registry: Registry, cluster: str, shard_dir: Path, tmp_path: Path
) -> None:
    """Replicas in step log the same bytes: one whose record of their last batch differs
    (here: each took another change, bypassing the front end) is found at start, left out for
    good and shown so, and reads go to its peer."""
    shutil.copytree(shard_dir, tmp_path / "twice")
    twice = ShardedRegistry.start(tmp_path / "twice", replicas=2)
    a = registry.to_arrow(["resident_code", "municipality_code"]).to_pylist()[2_300]  # shard 1
    death = changes_table([change(a, 1, "death", resident_code=a["resident_code"])])
    moved = changes_table(
        [change(a, 2, "move_within", resident_code=a["resident_code"], **TOYAMA_ADDRESS)]
    )
    try:
        for replica, batch in zip(twice.replicas[1], (death, moved), strict=True):
            out = ray.get(replica.apply.remote(batch, TODAY, [1], 1_750_000_000_000_000, [0]))
            assert out["outcome"].to_pylist() == ["applied"]
    finally:
        twice.stop()
    again = ShardedRegistry.start(tmp_path / "twice", replicas=2)
    try:
        assert (1, 1, "diverged") in again.replica_states()
        assert (1, 0, "in_step") in again.replica_states()
        for _ in range(3):
            found = again.lookup([a["resident_code"]], by="resident_code", columns=["status"])
            assert found["status"].to_pylist() == ["deceased"]
    finally:
        again.stop()


def test_a_checkpoint_of_shards_with_replicas_keeps_their_changes_numbers_and_routes(
    registry: Registry, cluster: str, shard_dir: Path, tmp_path: Path
) -> None:
    """Every shard's own replica folds its changes into a new snapshot (history and change
    numbers kept) and the other replicas empty their logs; a front end started afresh routes
    the identifiers issued before it, reads the same notices and history, numbers on, and
    the replicas stay in step."""
    shutil.copytree(shard_dir, tmp_path / "twice")
    twice = ShardedRegistry.start(tmp_path / "twice", replicas=2)
    full = generate_changes(registry, 2025, seed=9)
    year = full.slice(0, 1_200)
    codes = sorted(set(full["municipality"].to_pylist()))
    try:
        answers = pa.concat_tables(
            [twice.apply(year.slice(s, 400), today=TODAY, first_row=s) for s in (0, 400, 800)]
        )
        births = answers.filter(pc.equal(year["reason"], "birth"))
        assert births.num_rows > 0
        notices = {c: twice.notices(c, limit=10_000) for c in codes}
        keys = registry.to_arrow(["my_number"])["my_number"].combine_chunks()
        history = twice.lookup(keys, columns=["status", "municipality_code"])
        last = twice._next_number
        entries = twice.checkpoint()
        assert (
            entries >= answers.num_rows - pc.sum(pc.equal(answers["outcome"], "rejected")).as_py()
        )
    finally:
        twice.stop()
    for info in twice.shards.shards:
        assert (info.path / "changes.log").stat().st_size == 28  # the header alone
        assert (info.path / "changes.replica-1.log").stat().st_size == 28
    again = ShardedRegistry.start(tmp_path / "twice", replicas=2)
    try:
        assert again._next_number >= last - 400
        found = again.lookup(births["resident_code"], by="resident_code", columns=["status"])
        assert found["found"].to_pylist() == [True] * births.num_rows
        assert again.lookup(keys, columns=["status", "municipality_code"]).equals(history)
        assert all(again.notices(c, limit=10_000).equals(notices[c]) for c in codes)
        more = again.apply(full.slice(1_200, 300), today=TODAY, first_row=1_200)
        assert "applied" in more["outcome"].to_pylist()
        for c in codes:
            numbers = again.notices(c, limit=10_000)["notice"].to_pylist()
            assert numbers == sorted(set(numbers))
        for k in range(SHARDS):
            logs = [
                again.shards.shards[k].path / n for n in ("changes.log", "changes.replica-1.log")
            ]
            assert logs[0].read_bytes()[28:] == logs[1].read_bytes()[28:]
    finally:
        again.stop()


def scraped(sharded: ShardedRegistry) -> dict[tuple[str, str], float]:
    """`juki_shard_replicas` by (shard, state), as a scrape of a server's metrics reads it."""
    frontend = service.Frontend(
        sharded, Policy.load(example_path()), AuditTrail(tempfile.mkdtemp(prefix="audit-"))
    )
    metrics = Metrics()
    metrics.watch(frontend)
    try:
        text = generate_latest(metrics.registry).decode()
    finally:
        frontend.audit.close()
    return {
        (sample.labels["shard"], sample.labels["state"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "juki_shard_replicas"
    }


def test_a_replica_that_missed_a_batch_is_left_out_and_caught_up_by_log_shipping(
    registry: Registry, cluster: str, shard_dir: Path, tmp_path: Path
) -> None:
    """A replica dead during a batch (Ray not restarting it): the batch is answered by the
    shard's other replica and reads go there; a front end started afresh ships the records the
    replica missed from the other's change log before serving, and both read the same."""
    shutil.copytree(shard_dir, tmp_path / "twice")
    twice = ShardedRegistry.start(tmp_path / "twice", replicas=2, restarts=0)
    rows = registry.to_arrow(["resident_code", "municipality_code"]).to_pylist()
    a, b = rows[2_300], rows[2_400]  # shard 1
    try:
        first = twice.apply(
            changes_table([change(a, 1, "death", resident_code=a["resident_code"])]), today=TODAY
        )
        assert first["outcome"].to_pylist() == ["applied"]
        os.kill(ray.get(twice.replicas[1][1].pid.remote()), signal.SIGKILL)
        second = twice.apply(
            changes_table([change(b, 2, "death", resident_code=b["resident_code"]), newborn(b, 3)]),
            today=TODAY,
        )
        assert second["outcome"].to_pylist() == ["applied"] * 2
        baby = second["resident_code"][1].as_py()
        assert (1, 1, "out") in twice.replica_states()
        assert scraped(twice)[("1", "out")] == 1 and scraped(twice)[("0", "in_step")] == 2
        for _ in range(4):  # every turn of the replicas: the one left out is never asked
            now = twice.lookup([b["resident_code"], baby], by="resident_code", columns=["status"])
            assert now["status"].to_pylist() == ["deceased", "resident"]
    finally:
        twice.stop()
    logs = [twice.shards.shards[1].path / n for n in ("changes.log", "changes.replica-1.log")]
    assert logs[1].stat().st_size < logs[0].stat().st_size
    again = ShardedRegistry.start(tmp_path / "twice", replicas=2)
    try:
        assert logs[0].read_bytes()[28:] == logs[1].read_bytes()[28:]
        keys = pa.array([a["resident_code"], b["resident_code"], baby])
        both = replica_answers(
            again, 1, lambda r: r.lookup.remote(keys, "resident_code", ["status", "given_name"])
        )
        assert both[0].equals(both[1])
        assert both[1]["status"].to_pylist() == ["deceased", "deceased", "resident"]
        # Both take the next batch in step.
        out = again.apply(changes_table([change(a, 4, "cancel", cancels=1)]), today=TODAY)
        assert out["outcome"].to_pylist() == ["applied"]
        assert logs[0].read_bytes()[28:] == logs[1].read_bytes()[28:]
    finally:
        again.stop()


# ------------------------------------------------------------------ the gRPC contract on shards


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    policy = Policy.load(example_path())
    callers = {a.code: a.certificate_subject for a in policy.agencies}
    callers |= {m.code: m.certificate_subject for m in policy.municipalities}
    certs.create_demo(directory, callers)
    certs.write_demo_policy(directory, example_path())
    return directory


def serving(registry: Any, pki: Path, audit_dir: Path) -> service.Server:
    frontend = service.Frontend(registry, Policy.load(pki / "policy.toml"), AuditTrail(audit_dir))
    return service.start(frontend, service.ServerTLS.in_directory(pki))


def test_the_grpc_contract_answers_from_shards_as_from_one_registry(
    registry: Registry, sharded: ShardedRegistry, pki: Path, tmp_path: Path
) -> None:
    """`juki serve --shards`: typed calls, a bulk job and a search give the single engine's
    answers; each disclosure is audited with the person's registry-wide id."""
    one, many = serving(registry, pki, tmp_path / "a"), serving(sharded, pki, tmp_path / "b")
    rows = registry.to_arrow(["resident_code", "family_name", "given_name", "birth_date"])
    claims = rows.take(pa.array([5, 1_999, 2_000, 4_321, 5_999, 0]))
    bulk = pa.table(
        {
            "resident_code": [*claims["resident_code"].to_pylist(), "12345678903", "bad"],
            "family_name": [*claims["family_name"].cast(pa.string()).to_pylist(), "x", "y"],
        }
    )
    answers = []
    try:
        for server in (one, many):
            ch = AgencyTLS.from_cert(pki / "agencies" / "nenkin.pem").channel(
                f"127.0.0.1:{server.port}"
            )
            with ch:
                stub = pb_grpc.IdentityVerificationServiceStub(ch)
                typed = stub.Retrieve(
                    pb.RetrieveRequest(
                        context=request_context("pension-benefit", "op", "typed"),
                        key=pb.Key(resident_code=claims["resident_code"][2].as_py()),
                        fields=["family_name", "address_town"],
                    ),
                    timeout=30,
                )
                job = BulkJob(
                    ch,
                    request_context("pension-benefit", "op", "bulk"),
                    "resident_code",
                    retrieve=["status"],
                )
                results = pa.concat_tables([r for _, r in job.run(bulk.to_batches())])
                found = stub.Search(
                    pb.SearchRequest(
                        context=request_context("pension-benefit", "op", "search"),
                        facts=pb.Claims(
                            family_name=rows["family_name"][0].as_py(),
                            given_name=rows["given_name"][0].as_py(),
                            birth_date=rows["birth_date"][0].as_py().isoformat(),
                        ),
                        fields=["resident_code"],
                    ),
                    timeout=30,
                )
            trail = audit.read(server.frontend.audit.directory)
            answers.append(
                (
                    typed,
                    results.to_pylist(),
                    found,
                    sorted(
                        zip(
                            trail["request_id"].to_pylist(),
                            trail["person"].to_pylist(),
                            strict=True,
                        ),
                        key=str,
                    ),
                )
            )
        assert answers[0] == answers[1]
        assert answers[1][2].outcome == pb.SEARCH_OUTCOME_AMBIGUOUS  # twins on two shards
        assert len(answers[1][1]) == 8 and answers[1][1][-1]["error"].startswith("row 7: ")
    finally:
        one.stop(grace=1)
        many.stop(grace=1)


def refusals(server: service.Server, request_id: str) -> list[tuple[str, str]]:
    trail = audit.read(server.frontend.audit.directory)
    rows = [r for r in trail.to_pylist() if r["request_id"] == request_id]
    return [(r["outcome"], r["reason"]) for r in rows]


def test_a_sharded_server_refuses_changes_to_replicas_and_dead_shards_and_audits_both(
    registry: Registry, cluster: str, shard_dir: Path, pki: Path, tmp_path: Path
) -> None:
    """The refusals a sharded server adds: a municipality's change to shards of the first
    format (UNIMPLEMENTED: split them again) and a shard whose actor cannot answer
    (UNAVAILABLE) each end the call with its status and an audit record saying why; the reply
    carries nothing."""
    person = registry.to_arrow(["resident_code"])["resident_code"][2_500].as_py()
    death = cpb.Change(
        sequence=1,
        reason=cpb.CHANGE_REASON_DEATH,
        effective_date="2025-03-01",
        reported_date="2025-03-01",
        key=pb.Key(resident_code=person),
    )
    toyama = AgencyTLS.from_cert(pki / "agencies" / "162019.pem")
    old = ShardedRegistry.start(forged(shard_dir, tmp_path, first_format))
    server = serving(old, pki, tmp_path / "first-format")
    try:
        with toyama.channel(f"127.0.0.1:{server.port}") as ch, pytest.raises(grpc.RpcError) as e:
            submit_changes(ch, [death], "clerk", request_id="change-1", timeout=30)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "split it again" in (e.value.details() or "")
        [(outcome, reason)] = refusals(server, "change-1")
        assert outcome == "unavailable" and "takes no changes" in reason
    finally:
        server.stop(grace=1)
        old.stop()

    fragile = ShardedRegistry.start(shard_dir, restarts=0)
    server = serving(fragile, pki, tmp_path / "audit")
    try:
        os.kill(ray.get(fragile.replicas[1][0].pid.remote()), signal.SIGKILL)
        nenkin = AgencyTLS.from_cert(pki / "agencies" / "nenkin.pem")
        with nenkin.channel(f"127.0.0.1:{server.port}") as ch, pytest.raises(grpc.RpcError) as e:
            pb_grpc.IdentityVerificationServiceStub(ch).Retrieve(
                pb.RetrieveRequest(
                    context=request_context("pension-benefit", "op", "dead-shard"),
                    key=pb.Key(resident_code=person),
                    fields=["family_name"],
                ),
                timeout=30,
            )
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        [(outcome, reason)] = refusals(server, "dead-shard")
        assert outcome == "unavailable" and "a shard could not answer" in reason
    finally:
        server.stop(grace=1)
        fragile.stop()


def test_a_municipality_submits_changes_to_a_sharded_server(
    registry: Registry, living: ShardedRegistry, pki: Path, tmp_path: Path
) -> None:
    """富山市 records a death and a birth over gRPC: each result arrives applied (the birth's
    new identifiers in it) once its shard made it durable, each is audited, and the newborn
    answers at once."""
    person = registry.to_arrow(["resident_code", "municipality_code"]).to_pylist()[2_793]
    assert person["municipality_code"] == "162019"
    death = cpb.Change(
        sequence=1,
        reason=cpb.CHANGE_REASON_DEATH,
        effective_date="2025-03-01",
        reported_date="2025-03-02",
        key=pb.Key(resident_code=person["resident_code"]),
    )
    birth = changes_table([newborn(person, 2)])
    server = serving(living, pki, tmp_path / "audit")
    toyama = AgencyTLS.from_cert(pki / "agencies" / "162019.pem")
    try:
        with toyama.channel(f"127.0.0.1:{server.port}") as ch:
            died = submit_changes(ch, [death], "clerk", request_id="death", timeout=30)
            born = submit_changes(
                ch, birth.drop_columns(["municipality"]), "clerk", request_id="birth", timeout=30
            )
        assert died["outcome"].to_pylist() == born["outcome"].to_pylist() == ["applied"]
        baby = born["resident_code"][0].as_py()
        trail = audit.read(server.frontend.audit.directory).to_pylist()
        assert {(r["request_id"], r["outcome"], r["subject"]) for r in trail} >= {
            ("death", "applied", person["resident_code"]),
            ("birth", "applied", baby),
        }
        found = living.lookup(
            [person["resident_code"], baby], by="resident_code", columns=["status", "given_name"]
        )
        assert found["status"].to_pylist() == ["deceased", "resident"]
        assert found["given_name"].to_pylist()[1] == "花子"
    finally:
        server.stop(grace=1)


def test_a_sharded_server_sends_notices_and_watched_changes_in_the_order_recorded(
    registry: Registry, living: ShardedRegistry, pki: Path, tmp_path: Path
) -> None:
    """Three 富山市 residents, one on each shard, move to 高岡市 in the order shard 2, 0, 1 (an
    agency watching them): 富山市 is sent the three notices in that order, acknowledges them
    once across shards, and the agency is sent their changes in the same order."""
    rows = registry.to_arrow().to_pylist()

    def adult(first: int) -> dict[str, Any]:
        return next(
            r
            for r in rows[first:]
            if r["status"] == "resident" and r["birth_date"] < dt.date(2000, 1, 1)
        )

    movers = [adult(4_100), adult(100), adult(2_796)]  # shards 2, 0, 1
    # Only shard 1 holds residents of 富山市 (the policy's municipality): two move there first.
    for i, m in enumerate(movers[:2]):
        moved = living.apply(
            changes_table(
                [
                    change(m, 1, "move_out", resident_code=m["resident_code"], moving_to="162019"),
                    change(m, 1, "move_in", resident_code=m["resident_code"], **TOYAMA_ADDRESS)
                    | {"municipality": "162019", "sequence": 50 + i},
                ]
            ),
            today=TODAY,
        )
        assert moved["outcome"].to_pylist() == ["applied"] * 2, moved["error"]
        m["municipality_code"] = "162019"
    assert movers[2]["municipality_code"] == "162019"
    frontend = service.Frontend.open(
        living, pki / "policy.toml", tmp_path / "audit", state_dir=tmp_path / "state"
    )
    server = service.start(frontend, service.ServerTLS.in_directory(pki))
    address = f"127.0.0.1:{server.port}"

    def channel(caller: str) -> grpc.Channel:
        return AgencyTLS.from_cert(pki / "agencies" / f"{caller}.pem").channel(address)

    today = dt.datetime.now(dt.UTC).date().isoformat()
    try:
        with channel("nenkin") as ch:
            reply = watch(ch, "pension-benefit", [m["my_number"] for m in movers], timeout=30)
        assert reply.watched == 3
        for i, m in enumerate(movers):
            key = pb.Key(resident_code=m["resident_code"])
            for caller, message in (
                ("162019", cpb.Change(reason=cpb.CHANGE_REASON_MOVE_OUT, moving_to="162027")),
                (
                    "162027",
                    cpb.Change(
                        reason=cpb.CHANGE_REASON_MOVE_IN,
                        address_town="中央町",
                        address_block="1-1",
                    ),
                ),
            ):
                message.MergeFrom(
                    cpb.Change(sequence=100 + i, key=key, effective_date=today, reported_date=today)
                )
                with channel(caller) as ch:
                    out = submit_changes(ch, [message], "clerk", timeout=30)
                assert out["outcome"].to_pylist() == ["applied"]
        with channel("162019") as ch:
            notices = list(read_notices(ch, "clerk", timeout=30))
            assert [n.resident.resident_code for n in notices] == [
                m["resident_code"] for m in movers
            ]
            numbers = [n.notice for n in notices]
            assert numbers == sorted(numbers)
            assert acknowledge_notices(ch, numbers[1]) == numbers[1]
            assert [n.notice for n in read_notices(ch, "clerk", timeout=30)] == numbers[2:]
            assert living._notice_backlog({"162019": numbers[1]}) == {"162019": 1}
        with channel("162027") as ch:
            assert list(read_notices(ch, "clerk", timeout=30)) == []
        with channel("nenkin") as ch:
            sent = list(stream_changes(ch, "pension-benefit", timeout=30))
        # The affair is told of move_ins (not move_outs): the two into 富山市 first.
        assert [(c.reason, c.resident.my_number) for c in sent] == [
            ("move_in", m["my_number"]) for m in [*movers[:2], *movers]
        ]
        assert [c.change for c in sent] == sorted(c.change for c in sent)
        trail = audit.read(frontend.audit.directory)
        told = trail.filter(pc.equal(trail["mode"], "notice"))
        assert told["subject"].to_pylist() == [
            *(m["resident_code"] for m in movers),
            movers[2]["resident_code"],
        ]
    finally:
        server.stop(grace=1)


def test_a_resident_reads_their_own_record_and_accesses_from_shards(
    registry: Registry, living: ShardedRegistry, pki: Path, tmp_path: Path
) -> None:
    """The residents' view on a sharded server: a resident of shard 2, bound by person id,
    reads their own record from the shards and who looked at them, through a change of My
    Number applied by their shard; a resident of shard 0 sees none of it."""
    own_pki = tmp_path / "pki"
    shutil.copytree(pki, own_pki)
    fingerprints = certs.issue_residents(own_pki, ["alice", "bob"])
    alice, bob = (registry.to_arrow().to_pylist()[i] for i in (4_500, 10))
    state = tmp_path / "state"
    bind(state, {fingerprints["alice"]: 4_500, fingerprints["bob"]: 10})
    frontend = service.Frontend.open(
        living, own_pki / "policy.toml", tmp_path / "audit", state_dir=state
    )
    server = service.start(frontend, service.ServerTLS.in_directory(own_pki))
    address = f"127.0.0.1:{server.port}"

    def resident(name: str) -> rpb_grpc.ResidentServiceStub:
        tls = AgencyTLS.from_cert(
            own_pki / "residents" / "issued" / f"{name}.pem", ca=own_pki / "ca.pem"
        )
        return rpb_grpc.ResidentServiceStub(tls.channel(address))

    def verify(my_number: str) -> None:
        with AgencyTLS.from_cert(own_pki / "agencies" / "nenkin.pem").channel(address) as ch:
            reply = pb_grpc.IdentityVerificationServiceStub(ch).Verify(
                pb.VerifyRequest(
                    context=request_context("pension-benefit", "op"),
                    key=pb.Key(my_number=my_number),
                    claims=pb.Claims(family_name="誰か"),
                ),
                timeout=30,
            )
        assert reply.found

    try:
        verify(alice["my_number"])
        changed = living.apply(
            changes_table([change(alice, 1, "my_number_change", my_number=alice["my_number"])]),
            today=TODAY,
        )
        new_number = changed["my_number"][0].as_py()
        assert new_number != alice["my_number"]
        verify(new_number)
        record = resident("alice").GetMyRecord(rpb.GetMyRecordRequest(), timeout=30).resident
        assert (record.resident_code, record.my_number) == (alice["resident_code"], new_number)
        seen = resident("alice").ListMyAccesses(rpb.ListMyAccessesRequest(), timeout=30)
        assert [(a.agency, a.mode) for a in seen.accesses] == [("nenkin", "verify")] * 2
        theirs = resident("bob").ListMyAccesses(rpb.ListMyAccessesRequest(), timeout=30)
        assert list(theirs.accesses) == []
        assert (
            resident("bob").GetMyRecord(rpb.GetMyRecordRequest(), timeout=30).resident.my_number
            == bob["my_number"]
        )
    finally:
        server.stop(grace=1)


def test_a_sharded_search_reply_carries_no_value_of_a_resident_it_does_not_disclose(
    registry: Registry, sharded: ShardedRegistry, pki: Path, tmp_path: Path
) -> None:
    """Twins on two shards, searched with the wrong sex: neither agrees on every fact, and
    neither one's town rides in the reply's merged dictionaries."""
    people = registry.to_arrow(
        ["family_name", "given_name", "birth_date", "sex", "address_town"]
    ).to_pylist()
    twin = people[0]
    facts = pa.table(
        {
            "family_name": [twin["family_name"]],
            "given_name": [twin["given_name"]],
            "birth_date": pa.array([twin["birth_date"]], pa.date32()),
            "sex": pa.array([3 - twin["sex"]], pa.int8()),
        }
    )
    header = pb.SearchStreamRequest(
        header=pb.SearchStreamHeader(
            context=request_context("pension-benefit", "op", "hidden"),
            fields=["address_town", "family_name"],
        )
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, facts.schema) as w:
        w.write_table(facts)
    messages = [header, pb.SearchStreamRequest(facts=sink.getvalue().to_pybytes())]
    server = serving(sharded, pki, tmp_path / "audit")
    try:
        nenkin = AgencyTLS.from_cert(pki / "agencies" / "nenkin.pem")
        with nenkin.channel(f"127.0.0.1:{server.port}") as ch:
            replies = list(
                pb_grpc.BulkVerificationServiceStub(ch).SearchStream(iter(messages), timeout=30)
            )
    finally:
        server.stop(grace=1)
    payload = b"".join(r.results for r in replies)
    results = pa.ipc.open_stream(payload).read_all()
    assert results["outcome"].to_pylist() == ["not_found"]
    for town in {people[0]["address_town"], people[4_500]["address_town"]}:
        assert town.encode() not in payload
