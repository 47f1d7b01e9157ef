"""The `juki` command line: generate, stats, lookup, verify (Parquet/CSV in, Parquet out), demo."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from juki_engine import Registry
from juki_engine.cli import main


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
    assert main([*argv, "--batch-size", "16"]) == 0
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
    assert main(["stats", str(snapshot)]) == 0
    out = capsys.readouterr().out
    assert "富山市" in out and "issued" in out
    key = Registry.open(snapshot).to_arrow(["my_number"])["my_number"][0].as_py()
    assert main(["lookup", str(snapshot), key, "--columns", "my_number", "status"]) == 0
    assert key[:6] in capsys.readouterr().out
    demo = tmp_path / "demo"
    assert main(["demo", "--path", str(demo)]) == 0
    assert (demo / "CURRENT").exists()
    assert main(["demo", "--path", str(demo)]) == 0  # second run opens instead of generating
