"""The `juki` command line: generate, stats, lookup, verify (in-process and over gRPC), certs,
serve, audit, demo."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from juki_engine import Registry, audit, ids, service
from juki_engine._proto import registry_pb2 as pb
from juki_engine._proto import registry_pb2_grpc as pb_grpc
from juki_engine.cli import main
from juki_engine.client import AgencyTLS
from juki_engine.policy import Policy, example_path
from juki_engine.samples import pension_claims


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "snap"
    assert main(["generate", "--population", "3000", "--seed", "5", "--out", str(path)]) == 0
    return path


def claims_for(registry: Registry) -> pa.Table:
    rows = registry.to_arrow(["my_number", "family_name", "birth_date"]).slice(0, 50)
    keys = [*rows["my_number"].to_pylist(), "123456789010"]
    names = [*rows["family_name"].to_pylist(), "山田"]
    names[3] = "違う名前"
    return pa.table({"my_number": keys, "family_name": names})


def test_generate_writes_a_toyama_snapshot(snapshot: Path) -> None:
    registry = Registry.open(snapshot)
    assert len(registry) == 3000
    prefectures = set(registry.to_arrow(["prefecture"])["prefecture"].to_pylist())
    assert prefectures == {"富山県"}


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_verify_job(snapshot: Path, tmp_path: Path, fmt: str) -> None:
    claims = claims_for(Registry.open(snapshot))
    src = tmp_path / f"claims.{fmt}"
    if fmt == "parquet":
        pq.write_table(claims, src)
    else:
        pacsv.write_csv(claims, src)
    out = tmp_path / "results.parquet"
    argv = ["verify", "--registry", str(snapshot), "--input", str(src), "--out", str(out)]
    # One key is not a valid identifier: the job runs to the end and exits 1.
    assert main([*argv, "--batch-size", "16"]) == 1
    result = pq.read_table(out)
    assert result.num_rows == claims.num_rows
    assert result["found"].to_pylist() == [True] * 50 + [False]
    matches = result["family_name_match"].to_pylist()
    assert matches[3] is False and matches[:3] == [True] * 3 and matches[50] is None
    # rows are numbered across batches, not per batch
    assert result["error"].to_pylist()[50].startswith("row 50: my_number '123456789010'")


def test_bad_input_is_a_clear_error(
    snapshot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "claims.txt"
    src.write_text("x")
    argv = ["verify", "--registry", str(snapshot), "--input", str(src), "--out", "o.parquet"]
    assert main(argv) == 2
    assert "claims.txt" in capsys.readouterr().out
    assert main(["stats", str(tmp_path / "missing")]) == 2


def test_stats_lookup_and_demo(
    snapshot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stats", str(snapshot), "--report", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "富山市" in out and "issued" in out
    assert {p.name for p in (tmp_path / "report").iterdir()} == {"cards.png", "index.html"}
    key = Registry.open(snapshot).to_arrow(["my_number"])["my_number"][0].as_py()
    assert main(["lookup", str(snapshot), key, "--columns", "my_number", "status"]) == 0
    assert key[:6] in capsys.readouterr().out
    demo = tmp_path / "demo"
    assert main(["demo", "--path", str(demo), "--pensioners", "5000"]) == 0
    assert (demo / "CURRENT").exists()
    out = capsys.readouterr().out
    assert "5,000 claims" in out and "PERMISSION_DENIED" in out
    assert "signed checkpoints — intact" in out  # the demo's trail verified at its end
    assert "accesses to resident" in out  # and a resident read who looked at them
    # A variant name written the common way: no match exactly, a match at the normalised level,
    # and the same pensioner found by the four basic facts.
    assert "Verify at MATCH_LEVEL_EXACT: family_name no match" in out
    assert "Verify at MATCH_LEVEL_NORMALISED: family_name MATCH_LEVEL_NORMALISED" in out
    assert "Search: SEARCH_OUTCOME_UNIQUE" in out or "Search: SEARCH_OUTCOME_AMBIGUOUS" in out
    results = pq.read_table(tmp_path / "pension_results.parquet")
    assert results.num_rows == 5000
    assert {"resident_code", "found", "status", "address_town"} <= set(results.column_names)
    # Every disclosure of the job is in the demo's own trail, and so is the refusal.
    trail = audit.read(tmp_path / "demo-audit")
    job = trail.filter(pc.equal(trail["mode"], "verify+retrieve"))
    assert pc.sum(pc.equal(job["outcome"], "disclosed")).as_py() == pc.sum(results["found"]).as_py()
    # The names part: two typed Verify calls and a search, each in the trail with its level.
    assert {"verify", "verify@normalised", "search@normalised"} <= set(trail["mode"].to_pylist())
    assert trail.filter(pc.equal(trail["outcome"], "denied"))["agency"].to_pylist() == ["moj"]
    # A second run opens the registry instead of generating it, and reuses the certificates.
    assert main(["demo", "--path", str(demo), "--pensioners", "100"]) == 0
    assert "generated" not in capsys.readouterr().out


@pytest.fixture(scope="module")
def served(
    snapshot: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, Path]]:
    """A server over the CLI's snapshot: (address, certificate directory, audit directory)."""
    base = tmp_path_factory.mktemp("served")
    assert main(["certs", "--out", str(base / "certs"), "--audit", str(base / "audit")]) == 0
    policy = base / "certs" / "policy.toml"  # the example, bound to the demo CA by `juki certs`
    frontend = service.Frontend.open(Registry.open(snapshot), policy, base / "audit")
    running = service.start(frontend, service.ServerTLS.in_directory(base / "certs"))
    try:
        yield f"127.0.0.1:{running.port}", base / "certs", base / "audit"
    finally:
        running.stop(grace=1)


def test_certs_writes_a_ca_server_and_one_certificate_per_agency_and_municipality(
    served: tuple[str, Path, Path],
) -> None:
    _, pki, trail = served
    assert {p.name for p in pki.iterdir()} >= {"ca.pem", "ca.key", "server.pem", "server.key"}
    names = {p.stem for p in (pki / "agencies").glob("*.pem")}
    policy = Policy.load(example_path())
    assert names == {a.code for a in policy.agencies} | {m.code for m in policy.municipalities}
    # Issuing them was an operator's action, in the trail the server serves with.
    operators = audit.read(trail, agency="operator").to_pylist()
    (issued,) = [r for r in operators if r["mode"] == "certify"]
    assert f"in {pki}" in issued["reason"]


@pytest.mark.parametrize("fields", [None, "all", "status,address_town"])
def test_verify_over_grpc(
    served: tuple[str, Path, Path],
    snapshot: Path,
    tmp_path: Path,
    fields: str | None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    address, pki, trail = served
    registry = Registry.open(snapshot)
    claims = pension_claims(registry, 3000, seed=3)
    src = tmp_path / "pensioners.csv"
    pacsv.write_csv(claims, src)
    out = tmp_path / "results.parquet"
    argv = ["verify", "--server", address, "--cert", str(pki / "agencies" / "nenkin.pem")]
    argv += ["--affair", "pension-benefit", "--input", str(src), "--out", str(out)]
    argv += ["--request-id", f"cli-{fields}", "--batch-size", "700"]
    expected = registry.verify(claims, by="resident_code")
    # The sample job holds a few keys that are not valid identifiers: exit 1, as in-process.
    rejected = expected.num_rows - expected["error"].null_count
    assert rejected > 0
    assert main([*argv, *(["--fields", fields] if fields else [])]) == 1
    out_text = capsys.readouterr().out
    assert "3,000 claims" in out_text
    assert f"│ invalid_key         │ {rejected:>7} │" in out_text
    results = pq.read_table(out)
    assert results["resident_code"].to_pylist() == claims["resident_code"].to_pylist()
    assert results["found"].to_pylist() == expected["found"].to_pylist()
    assert results["family_name_match"].to_pylist() == expected["family_name_match"].to_pylist()
    retrieved = set(results.column_names) - set(expected.column_names) - {"resident_code"}
    if fields is None:
        assert retrieved == set()
    elif fields == "all":
        nenkin = Policy.load(example_path()).agency("nenkin")
        assert retrieved | {"status", "resident_code"} == set(
            nenkin.affairs["pension-benefit"].fields
        )
    else:
        assert retrieved == {"address_town"} and "status" in results.column_names
        # The registry's dictionary columns stay dictionaries in Parquet (no min/max kept over
        # them); the key column is plain and uncompressed, with statistics.
        meta = pq.ParquetFile(out).metadata.row_group(0)
        chunks = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
        assert "RLE_DICTIONARY" in chunks["address_town"].encodings
        assert not chunks["address_town"].is_stats_set
        assert chunks["address_town"].compression == "SNAPPY"
        assert "RLE_DICTIONARY" not in chunks["resident_code"].encodings
        assert chunks["resident_code"].is_stats_set
        assert chunks["resident_code"].compression == "UNCOMPRESSED"
        town = registry.verify(claims, by="resident_code", columns=["address_town"])
        assert results["address_town"].to_pylist() == town["address_town"].to_pylist()
    logged = audit.read(trail)
    assert logged.filter(pc.equal(logged["request_id"], f"cli-{fields}")).num_rows == 3000


def test_verify_over_grpc_refused(
    served: tuple[str, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address, pki, _ = served
    src = tmp_path / "claims.parquet"
    pq.write_table(pa.table({"resident_code": ["12345678903"]}), src)
    argv = ["verify", "--server", address, "--cert", str(pki / "agencies" / "mofa.pem")]
    argv += ["--affair", "pension-benefit", "--input", str(src)]
    assert main([*argv, "--out", str(tmp_path / "o.parquet")]) == 2
    out = capsys.readouterr().out
    assert "PERMISSION_DENIED" in out and "pension-benefit" in out


def test_audit_queries(
    served: tuple[str, Path, Path],
    snapshot: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    address, pki, trail = served
    subject = Registry.open(snapshot).to_arrow(["resident_code"])["resident_code"][5].as_py()
    src = tmp_path / "one.parquet"
    pq.write_table(pa.table({"resident_code": [subject]}), src)
    argv = ["verify", "--server", address, "--cert", str(pki / "agencies" / "soumu.pem")]
    argv += ["--affair", "onkyu", "--input", str(src), "--out", str(tmp_path / "o.parquet")]
    assert main([*argv, "--fields", "status"]) == 0
    capsys.readouterr()
    assert (
        main(["audit", "--dir", str(trail), "--subject", subject, "--snapshot", str(snapshot)]) == 0
    )
    out = capsys.readouterr().out
    assert "soumu" in out and "onkyu" in out
    assert (
        main(
            [
                "audit",
                "--dir",
                str(trail),
                "--agency",
                "soumu",
                "--out",
                str(tmp_path / "a.parquet"),
            ]
        )
        == 0
    )
    by_agency = pq.read_table(tmp_path / "a.parquet")
    assert set(by_agency["agency"].to_pylist()) == {"soumu"}
    assert subject in by_agency["subject"].to_pylist()
    future = "2999-01-01"
    assert (
        main(
            ["audit", "--dir", str(trail), "--since", future, "--out", str(tmp_path / "b.parquet")]
        )
        == 0
    )
    assert pq.read_table(tmp_path / "b.parquet").num_rows == 0
    assert main(["audit", "--dir", str(trail), "--since", "yesterday"]) == 2


def juki_serve(
    snapshot: Path, pki: Path, work: Path, *options: str
) -> tuple[subprocess.Popen[str], int]:
    """`juki serve` in a child (its audit trail in `work/audit`, any free ports), once it
    listens: the process (stderr piped, as text) and its port."""
    port_file = work / "port"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "juki_engine.cli", "serve", "--snapshot", str(snapshot)),
            *("--certs", str(pki), "--audit", str(work / "audit"), "--listen", "127.0.0.1:0"),
            *("--metrics", "127.0.0.1:0", "--port-file", str(port_file), *options),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not port_file.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def test_serve_reloads_on_sighup_and_stops_on_sigterm(
    snapshot: Path, served: tuple[str, Path, Path], tmp_path: Path
) -> None:
    _, pki, _ = served
    policy = tmp_path / "policy.toml"
    policy.write_text((pki / "policy.toml").read_text())
    deadline = time.monotonic() + 120
    proc, port = juki_serve(snapshot, pki, tmp_path, "--policy", str(policy))
    try:
        tls = AgencyTLS.from_cert(pki / "agencies" / "moj.pem")
        with tls.channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.IdentityVerificationServiceStub(ch)
            assert [
                a.code for a in stub.ListAffairs(pb.ListAffairsRequest(), timeout=10).affairs
            ] == ["bar-exam"]
            policy.write_text(
                policy.read_text().replace('code = "bar-exam"', 'code = "bar-exam-2"')
            )
            proc.send_signal(signal.SIGHUP)
            while [
                a.code for a in stub.ListAffairs(pb.ListAffairsRequest(), timeout=10).affairs
            ] != ["bar-exam-2"]:
                assert time.monotonic() < deadline, "the policy was not reloaded"
                time.sleep(0.05)
        proc.send_signal(signal.SIGUSR1)  # a checkpoint of the audit trail, on demand
        manifest = tmp_path / "audit" / "manifest.jsonl"
        while "checkpoint" not in (manifest.read_text() if manifest.exists() else ""):
            assert time.monotonic() < deadline, "no checkpoint was signed"
            time.sleep(0.05)
        # The hourly compaction ran once at the start, in a child process of its own.
        while not (tmp_path / "audit" / "store" / "compaction.lock").exists():
            assert time.monotonic() < deadline, "no compaction ran"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert proc.stderr is not None
        log = proc.stderr.read()
        assert "policy reloaded" in log and "stopped" in log
        assert "checkpoint signed" in log
        # Both were operators' actions, in the trail.
        done = audit.read(tmp_path / "audit", agency="operator")["mode"].to_pylist()
        assert {"reload", "checkpoint"} <= set(done)
        public = pki / "audit-signing.pub"
        assert (
            main(["audit", "verify", "--dir", str(tmp_path / "audit"), "--public-key", str(public)])
            == 0
        )
        # Every line starts with its time in ISO 8601, UTC, the zone written out.
        stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
        assert all(stamp.match(line) for line in log.splitlines()), log
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


# -- as a newcomer meets it: formats, exit statuses, refusals that say what to do ----------------


def first_keys(snapshot: Path, n: int = 2) -> list[str]:
    keys: list[str] = Registry.open(snapshot).to_arrow(["my_number"])["my_number"][:n].to_pylist()
    return keys


def test_lookup_at_80_columns_shows_every_value_and_exits_1_on_a_rejected_key(
    snapshot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = first_keys(snapshot, 1)[0]
    absent = "12345678901" + str(ids.my_number_check_digit("12345678901"))
    assert main(["lookup", str(snapshot), key, absent, "12345"]) == 1
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out  # nothing cut
    # One block per record: every column of the registry, the key as asked, and the reason.
    assert out.count("record ") == 3
    assert f"my_number (asked)  {absent}" in out
    assert "my_number '12345': must be exactly 12 ASCII digits" in out  # the reason, whole
    assert "1 found, 1 not_found, 1 invalid_key" in out


def test_lookup_as_json_and_csv_for_scripts(
    snapshot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = first_keys(snapshot)
    columns = ["--columns", "family_name", "birth_date"]
    assert main(["lookup", str(snapshot), *keys, *columns, "--format", "json"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("[") :])
    assert [r["my_number (asked)"] for r in rows] == keys
    assert all(r["found"] and r["error"] is None and r["birth_date"] for r in rows)
    assert main(["lookup", str(snapshot), *keys, *columns, "--format", "csv"]) == 0
    out = capsys.readouterr().out
    table = pacsv.read_csv(pa.py_buffer(out[out.index('"my_number (asked)"') :].encode()))
    assert table.column_names == [
        "my_number (asked)",
        "found",
        "error",
        "replaced",
        "family_name",
        "birth_date",
    ]
    assert table.num_rows == 2


def test_lookup_normalizes_keys_typed_with_full_width_digits_on_request(
    snapshot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = first_keys(snapshot, 1)[0]
    typed = "".join(chr(ord(c) + 0xFEE0) for c in key[:4]) + "-" + key[4:8] + " " + key[8:]
    assert main(["lookup", str(snapshot), typed]) == 1
    capsys.readouterr()
    assert main(["lookup", str(snapshot), typed, "--normalize", "--format", "json"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("[") :])
    assert rows[0]["found"] and rows[0]["my_number (asked)"] == typed


@pytest.mark.parametrize(("suffix", "read"), [(".csv", pacsv.read_csv), (".arrow", None)])
def test_verify_writes_the_format_its_out_extension_names(
    snapshot: Path, tmp_path: Path, suffix: str, read: Any
) -> None:
    claims = claims_for(Registry.open(snapshot))
    src = tmp_path / "claims.parquet"
    pq.write_table(claims, src)
    out = tmp_path / f"results{suffix}"
    argv = ["verify", "--registry", str(snapshot), "--input", str(src), "--out", str(out)]
    assert main(argv) == 1
    result = read(out) if read else pa.ipc.open_file(out).read_all()
    assert result.num_rows == claims.num_rows
    assert result["found"].to_pylist() == [True] * 50 + [False]
    # An existing file is replaced only with --force; an unknown extension is refused.
    assert main(argv) == 2
    assert main([*argv, "--force"]) == 1
    assert main([*argv[:-1], str(tmp_path / "results.txt")]) == 2


def test_generate_refuses_to_replace_a_snapshot_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "snap"
    argv = ["generate", "--population", "500", "--out", str(out)]
    assert main(argv) == 0
    assert main([*argv, "--seed", "1"]) == 2
    assert "exists; pass --force" in capsys.readouterr().out
    assert len(Registry.open(out)) == 500
    assert main([*argv, "--seed", "1", "--force"]) == 0


def test_stats_prints_totals_and_what_its_figures_stand_for(
    snapshot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stats", str(snapshot), "--limit", "3", "--format", "json"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("[") : out.rindex("]") + 1])
    assert len(rows) == 4 and rows[-1]["municipality"].startswith("total (")
    assert rows[-1]["residents"] == 3000
    assert main(["stats", str(snapshot), "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert "card figures: 富山県" in out and "2017" in out and "more municipalities" in out


def test_the_demo_runs_beside_a_server_holding_its_audit_trail(
    snapshot: Path, tmp_path: Path
) -> None:
    import shutil

    demo = tmp_path / "demo"
    shutil.copytree(snapshot, demo)
    # What `juki serve` holds by default beside the demo's registry.
    serving = audit.AuditTrail(tmp_path / "audit")
    try:
        assert main(["demo", "--path", str(demo), "--pensioners", "200"]) == 0
        with pytest.raises(audit.AuditUnavailable, match="stop that process or give this one"):
            audit.AuditTrail(tmp_path / "audit")
    finally:
        serving.close()


def test_audit_takes_a_my_number_and_shows_times_in_the_chosen_zone(
    served: tuple[str, Path, Path],
    snapshot: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    address, pki, trail = served
    row = Registry.open(snapshot).to_arrow(["resident_code", "my_number"]).slice(7, 1)
    code, number = row["resident_code"][0].as_py(), row["my_number"][0].as_py()
    src = tmp_path / "one.parquet"
    pq.write_table(pa.table({"resident_code": [code]}), src)
    argv = ["verify", "--server", address, "--cert", str(pki / "agencies" / "soumu.pem")]
    argv += ["--affair", "onkyu", "--input", str(src), "--out", str(tmp_path / "o.parquet")]
    assert main(argv) == 0
    capsys.readouterr()
    query = ["audit", "--dir", str(trail), "--format", "json"]
    assert main([*query, "--subject", number, "--snapshot", str(snapshot), "--tz", "UTC"]) == 0
    out = capsys.readouterr().out
    by_number = json.loads(out[out.index("[") :])
    assert by_number and all(r["subject"] == code for r in by_number)
    assert all(r["time (UTC)"].endswith("+00:00") for r in by_number)
    assert main([*query, "--subject", code, "--tz", "Asia/Tokyo"]) == 0
    out = capsys.readouterr().out
    by_code = json.loads(out[out.index("[") :])
    assert len(by_code) == len(by_number)
    assert all(r["time (Asia/Tokyo)"].endswith("+09:00") for r in by_code)
    assert main([*query, "--subject", number, "--snapshot", str(tmp_path)]) == 2
    assert "needs the registry" in capsys.readouterr().out
    assert main([*query, "--subject", "123"]) == 2
    assert main([*query, "--subject", code, "--tz", "Mars/Olympus"]) == 2


def test_affairs_lists_what_the_certificate_may_ask(
    served: tuple[str, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    address, pki, _ = served
    argv = ["affairs", "--server", address, "--cert", str(pki / "agencies" / "moj.pem")]
    assert main([*argv, "--format", "json"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("[") :])
    assert [r["affair"] for r in rows] == ["bar-exam"]
    assert rows[0]["modes"] == "verify"


def test_policy_check_validates_without_serving(
    served: tuple[str, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, pki, _ = served
    bound = pki / "policy.toml"
    assert main(["policy", "check", str(bound), "--ca", str(pki / "ca.pem")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "loads; its certificate authorities are all in" in out and "pension-benefit" in out
    # The shipped example is bound to a placeholder CA: it loads, but no server trusts it.
    assert main(["policy", "check", str(example_path())]) == 0
    assert main(["policy", "check", str(example_path()), "--ca", str(pki / "ca.pem")]) == 2
    assert "not in the server's trust bundle" in " ".join(capsys.readouterr().out.split())
    broken = tmp_path / "broken.toml"
    broken.write_text(bound.read_text().replace('modes = ["verify"]', 'modes = ["delete"]', 1))
    assert main(["policy", "check", str(broken)]) == 2
    assert "delete" in capsys.readouterr().out


def test_verify_at_a_match_level_adds_each_fields_level(snapshot: Path, tmp_path: Path) -> None:
    claims = claims_for(Registry.open(snapshot))
    names = claims["family_name"].to_pylist()
    names[0] += "　"  # a full-width space more: the same name at the normalised level
    claims = claims.set_column(1, "family_name", pa.array(names))
    src = tmp_path / "claims.parquet"
    pq.write_table(claims, src)
    out = tmp_path / "results.parquet"
    argv = ["verify", "--registry", str(snapshot), "--input", str(src), "--out", str(out)]
    assert main([*argv, "--match", "normalised"]) == 1  # the invalid key still counts
    result = pq.read_table(out)
    assert result["family_name_match"][0].as_py() is True
    assert result["family_name_level"].to_pylist()[:4] == ["normalised", "exact", "exact", "none"]


def test_search_finds_a_resident_by_the_four_facts(
    snapshot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    row = (
        Registry.open(snapshot)
        .to_arrow(["resident_code", "family_name", "given_name", "birth_date"])
        .slice(4, 1)
        .to_pylist()[0]
    )
    argv = ["search", str(snapshot), "--family-name", row["family_name"] + " "]
    argv += ["--given-name", row["given_name"], "--birth-date", row["birth_date"].isoformat()]
    assert main([*argv, "--format", "json"]) == 0
    out = capsys.readouterr().out
    found = json.loads(out[out.index("[") :])
    assert row["resident_code"] in [r["resident_code"] for r in found]
    assert found[0]["outcome"] in ("unique", "ambiguous")
    assert main([*argv, "--match", "exact", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("[") :])[0]["outcome"] == "not_found"
    assert main([*argv[:-1], "1950-13-01"]) == 2


def test_search_over_grpc_under_the_agencys_grant(
    served: tuple[str, Path, Path], snapshot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address, pki, _ = served
    people = Registry.open(snapshot).to_arrow(
        ["resident_code", "family_name", "given_name", "birth_date"]
    )
    row = people.slice(9, 1).to_pylist()[0]
    argv = ["search", "--server", address, "--affair", "pension-benefit"]
    argv += ["--family-name", row["family_name"], "--given-name", row["given_name"]]
    argv += ["--birth-date", row["birth_date"].isoformat(), "--columns", "resident_code"]
    nenkin = ["--cert", str(pki / "agencies" / "nenkin.pem")]
    assert main([*argv, *nenkin, "--format", "json"]) == 0
    out = capsys.readouterr().out
    found = json.loads(out[out.index("[") :])
    assert row["resident_code"] in [r["resident_code"] for r in found]
    # 法務省's affair grants no search: refused, exit 2.
    assert main([*argv, "--cert", str(pki / "agencies" / "moj.pem")]) == 2
    assert "PERMISSION_DENIED" in capsys.readouterr().out
    assert main(argv) == 2  # no certificate


# ------------------------------------------------------------ a municipality: submit, notices


@pytest.fixture
def toyama_served(served: tuple[str, Path, Path], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Toyama registry served with notice state: (address, certificate directory)."""
    _, pki, _ = served
    registry = Registry.generate(population=3_000, seed=3, prefecture="富山県")
    frontend = service.Frontend.open(
        registry, pki / "policy.toml", tmp_path / "audit", state_dir=tmp_path
    )
    running = service.start(frontend, service.ServerTLS.in_directory(pki))
    try:
        yield f"127.0.0.1:{running.port}", pki
    finally:
        running.stop(grace=1)


def test_a_municipality_submits_a_file_and_reads_its_notices(
    toyama_served: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import datetime as dt

    from juki_engine.synthetic.changes import CHANGE_SCHEMA

    address, pki = toyama_served
    registry = Registry.generate(population=3_000, seed=3, prefecture="富山県")
    rows = registry.to_arrow(["resident_code", "municipality_code", "status"]).to_pylist()
    mover = next(
        r for r in rows if r["municipality_code"] == "162019" and r["status"] == "resident"
    )
    today = dt.datetime.now(dt.UTC).date()
    common = {
        "effective_date": today,
        "reported_date": today,
        "resident_code": mover["resident_code"],
    }
    files = {}
    for name, record in {
        "out": {"municipality": "162019", "sequence": 1, "reason": "move_out"},
        "in": {"municipality": "162027", "sequence": 1, "reason": "move_in"}
        | {"address_town": "末広町", "address_block": "1"},
    }.items():
        files[name] = tmp_path / f"{name}.csv"
        pacsv.write_csv(pa.Table.from_pylist([record | common], schema=CHANGE_SCHEMA), files[name])
    client = ["--server", address, "--certs", str(pki)]
    capsys.readouterr()
    assert main(["submit", str(files["out"]), "--municipality", "162019", *client]) == 0
    # 高岡市 cannot submit 富山市's file: the row names another municipality.
    assert main(["submit", str(files["out"]), "--municipality", "162027", *client]) == 1
    out = capsys.readouterr().out
    assert "is not the caller's" in out, out
    assert main(["submit", str(files["in"]), "--municipality", "162027", *client]) == 0
    capsys.readouterr()
    notices = tmp_path / "notices.parquet"
    argv = ["notices", "--municipality", "162019", *client, "--ack", "--out", str(notices)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert mover["resident_code"] in out and "acknowledged through" in out
    table = pq.read_table(notices)
    assert table["resident_code"].to_pylist() == [mover["resident_code"]]
    assert table["kind"].to_pylist() == ["move_in"]
    # Acknowledged: not sent again.
    assert main(["notices", "--municipality", "162019", *client]) == 0
    assert "0 notices" in capsys.readouterr().out


def test_audit_verify_checkpoint_and_keygen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "signing.key"
    assert main(["audit", "keygen", str(key)]) == 0
    assert main(["audit", "keygen", str(key)]) == 2  # never replaced in place
    trail = tmp_path / "trail"
    signed = ["--dir", str(trail), "--audit-key", str(key), "--operator", "op-9"]
    for _ in range(3):  # three checkpoints, three segments: a chain to check
        assert main(["audit", "checkpoint", *signed]) == 0
    check = ["audit", "verify", "--dir", str(trail), "--public-key", str(key.with_suffix(".pub"))]
    capsys.readouterr()
    assert main(check) == 0
    assert "intact" in capsys.readouterr().out
    # Queries are operators' actions too, recorded beside the server's records.
    assert main(["audit", *signed, "--agency", "operator", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [r["mode"] for r in shown] == ["checkpoint"] * 3
    assert {r["operator"] for r in shown} == {"op-9"}
    queried = audit.read(trail, agency="operator").to_pylist()
    assert queried[-1]["mode"] == "query" and "--agency operator: 3" in queried[-1]["reason"]
    assert main(check) == 0

    segments = sorted(trail.glob("audit-*.arrows"))
    data = bytearray(segments[0].read_bytes())
    data[len(data) // 2] ^= 1
    segments[0].write_bytes(bytes(data))
    capsys.readouterr()
    assert main(check) == 1
    assert f"{segments[0].name} was altered" in capsys.readouterr().out


def test_certs_for_residents_are_bound_to_them(
    snapshot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography import x509

    from juki_engine.certs import fingerprint
    from juki_engine.service.identity import BINDINGS, ResidentBindings

    argv = ["certs", "--out", str(tmp_path / "certs"), "--audit", str(tmp_path / "audit")]
    argv += ["--residents", "2"]
    assert main([*argv, "--snapshot", str(snapshot), "--format", "json"]) == 0
    out = capsys.readouterr().out
    issued = json.loads(out[out.index("[\n") :])
    assert len(issued) == 2
    # Bound beside the snapshot, by certificate fingerprint, to the person each names.
    bindings = ResidentBindings(snapshot / BINDINGS)
    registry = Registry.open(snapshot)
    for row in issued:
        cert = x509.load_pem_x509_certificate(Path(row["certificate"]).read_bytes())
        person = registry._persons([row["resident_code"]], "resident_code")["person"][0].as_py()
        assert bindings.person_of(fingerprint(cert)) == person
        assert row["resident_code"] not in cert.subject.rfc4514_string()  # names no one
    assert main([*argv[:-1], "0", "--snapshot", str(snapshot)]) == 0  # none asked: none issued


def test_serve_logs_json_lines_with_the_audit_trails_request_ids(
    snapshot: Path, served: tuple[str, Path, Path], tmp_path: Path
) -> None:
    _, pki, _ = served
    trail = tmp_path / "audit"
    proc, port = juki_serve(snapshot, pki, tmp_path, "--log-format", "json", "--no-compaction")
    try:
        claims = pension_claims(Registry.open(snapshot), 500, seed=4)
        src = tmp_path / "claims.parquet"
        pq.write_table(claims, src)
        argv = ["verify", "--server", f"127.0.0.1:{port}"]
        argv += ["--cert", str(pki / "agencies" / "nenkin.pem"), "--affair", "pension-benefit"]
        argv += ["--input", str(src), "--out", str(tmp_path / "out.parquet")]
        assert main([*argv, "--request-id", "job-json-1", "--batch-size", "200"]) in (0, 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert proc.stderr is not None
        lines = [json.loads(line) for line in proc.stderr.read().splitlines()]
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    messages = [line for line in lines if line.get("request_id") == "job-json-1"]
    assert sorted(m["message_number"] for m in messages) == [1, 2, 3]  # pipelined: any order
    assert {(m["agency"], m["affair"], m["mode"]) for m in messages} == {
        ("nenkin", "pension-benefit", "verify")
    }
    assert sum(m["rows"] for m in messages) == 500
    assert all(line["time"].endswith("Z") and line["level"] for line in lines)
    # The same request id the trail records for the job's records.
    recorded = audit.read(trail, agency="nenkin")["request_id"].to_pylist()
    assert set(recorded) == {"job-json-1"} and len(recorded) == 500


def test_audit_subject_follows_the_person_through_a_new_resident_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import datetime as dt

    from juki_engine.audit import AuditContext, AuditTrail
    from juki_engine.synthetic.changes import CHANGE_SCHEMA

    snap = tmp_path / "snap"
    Registry.generate(population=2_000, seed=4).save(snap)
    registry = Registry.open(snap)
    row = registry.to_arrow(["resident_code", "municipality_code", "person"]).to_pylist()[10]
    old = row["resident_code"]
    context = AuditContext("nenkin", "op", "before-the-change", "pension-benefit", "verify", ())
    with AuditTrail(tmp_path / "audit") as trail:
        trail.record(context, pa.array([old]), "disclosed", persons=pa.array([row["person"]]))
    change = {
        "municipality": row["municipality_code"],
        "sequence": 1,
        "reason": "resident_code_change",
        "effective_date": dt.date(2025, 3, 1),
        "reported_date": dt.date(2025, 3, 1),
        "resident_code": old,
    }
    (done,) = registry.apply(pa.Table.from_pylist([change], schema=CHANGE_SCHEMA)).to_pylist()
    new = done["resident_code"]
    assert done["outcome"] == "applied" and new != old
    del registry  # its change log is durable; the command opens the snapshot itself
    query = ["audit", "--dir", str(tmp_path / "audit"), "--snapshot", str(snap)]
    assert main([*query, "--subject", new, "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [r["request_id"] for r in shown] == ["before-the-change"]
    assert shown[0]["subject"] == old  # as it was when the record was made
