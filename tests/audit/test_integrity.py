"""Tamper evidence: the hash chain of segments, the signed manifest, and `verify` naming the first
file altered, removed outside retention or reordered."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from auditing import Clock, context, legacy_segment, residents, segments
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from juki_engine import audit
from juki_engine.audit import AuditTrail, integrity


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def chained(directory: Path, key: Ed25519PrivateKey, count: int = 4) -> list[Path]:
    """A signed trail of `count` segments (one per reopening), closed."""
    for index in range(count):
        with AuditTrail(directory, signing_key=key) as trail:
            trail.record(context(request_id=str(index)), residents(20, first=index), "disclosed")
    files = segments(directory)
    assert len(files) == count
    return files


def problems(directory: Path, key: Ed25519PrivateKey) -> list[str]:
    return integrity.verify(directory, key.public_key()).problems


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_an_untouched_trail_verifies(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    directory = tmp_path / "audit"
    chained(directory, key)
    report = integrity.verify(directory, key.public_key())
    assert report.intact, report.problems
    assert (report.segments, report.unsigned_bytes) == (4, 0)
    assert report.checkpoints == 4  # one at each close
    assert report.signatures_checked


def test_an_altered_byte_is_named(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    directory = tmp_path / "audit"
    files = chained(directory, key)
    flip(files[1], files[1].stat().st_size // 2)
    assert problems(directory, key)[0].startswith(f"{files[1].name} was altered")


def test_an_altered_byte_in_the_newest_segment_is_named(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    directory = tmp_path / "audit"
    files = chained(directory, key)
    flip(files[-1], files[-1].stat().st_size - 40)
    assert problems(directory, key) == [
        f"{files[-1].name} was altered (its first {files[-1].stat().st_size} bytes were signed)"
    ]


def test_a_removed_segment_is_named(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    directory = tmp_path / "audit"
    files = chained(directory, key)
    files[1].unlink()
    assert problems(directory, key) == [
        f"{files[1].name} was removed outside retention (named by {files[2].name})",
        f"{files[1].name} was removed outside retention (checkpointed)",
    ]
    files[-1].unlink()  # the newest: its checkpoint names it
    assert f"{files[-1].name} was removed outside retention (checkpointed)" in problems(
        directory, key
    )


def test_swapped_segments_are_reordered(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    directory = tmp_path / "audit"
    files = chained(directory, key)
    first, second = files[1].read_bytes(), files[2].read_bytes()
    files[1].write_bytes(second)
    files[2].write_bytes(first)
    found = problems(directory, key)
    assert found[0] == f"{files[1].name} follows {files[1].name}, not {files[0].name}: " + (
        "segments were reordered"
    )


def test_retention_is_removal_by_design(
    tmp_path: Path, key: Ed25519PrivateKey, clock: Clock
) -> None:
    directory = tmp_path / "audit"
    clock.now = datetime.now(UTC)
    with AuditTrail(directory, retention_days=30, signing_key=key) as trail:
        trail.record(context(request_id="old"), residents(1), "disclosed")
        clock.now += timedelta(days=31)  # a new segment, and the old one expires
        trail.record(context(request_id="new"), residents(1), "disclosed")
    report = integrity.verify(directory, key.public_key())
    assert report.intact, report.problems
    assert (report.segments, report.expired) == (1, 1)
    (expired,) = [
        json.loads(line)["entry"]
        for line in (directory / integrity.MANIFEST).read_text().splitlines()
        if json.loads(line)["entry"]["kind"] == "expired"
    ]
    assert "30 days" in expired["why"]


def test_manifest_tampering_is_named(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    directory = tmp_path / "audit"
    chained(directory, key)
    manifest = directory / integrity.MANIFEST
    lines = manifest.read_text().splitlines()

    altered = json.loads(lines[1])
    altered["entry"]["bytes"] += 1
    manifest.write_text("\n".join([lines[0], json.dumps(altered), *lines[2:]]) + "\n")
    assert problems(directory, key)[0] == f"{integrity.MANIFEST} line 2 has no valid signature " + (
        "(altered or forged)"
    )

    manifest.write_text("\n".join([lines[0], *lines[2:]]) + "\n")  # a line removed
    assert problems(directory, key)[0].startswith(f"{integrity.MANIFEST} line 2 does not follow")

    manifest.write_text("\n".join(lines[:1]) + "\n")  # the tail cut off
    assert any("lost entries" in p for p in problems(directory, key))

    manifest.write_text("\n".join(lines) + "\n")
    assert problems(directory, key) == []


def test_another_key_does_not_verify(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    directory = tmp_path / "audit"
    chained(directory, key, count=2)
    other = Ed25519PrivateKey.generate()
    assert problems(directory, other)[0].endswith("has no valid signature (altered or forged)")
    # Without a key the chain and the manifest's links are still checked.
    assert integrity.verify(directory, None).intact


def test_checkpoint_on_demand_is_an_operator_record(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    directory = tmp_path / "audit"
    with AuditTrail(directory, signing_key=key) as trail:
        trail.record(context(), residents(3), "disclosed")
        trail.checkpoint("op-root")
        report = integrity.verify(directory, key.public_key())
        assert report.intact and report.checkpoints == 1 and report.unsigned_bytes == 0
        trail.record(context(), residents(3), "disclosed")
        assert integrity.verify(directory, key.public_key()).unsigned_bytes > 0
    (row,) = audit.read(directory, agency="operator").to_pylist()
    assert (row["operator"], row["mode"], row["subject"]) == ("op-root", "checkpoint", None)


def test_a_daily_checkpoint_is_signed_without_being_asked(
    tmp_path: Path, key: Ed25519PrivateKey, clock: Clock
) -> None:
    directory = tmp_path / "audit"
    with AuditTrail(directory, signing_key=key, checkpoint_every_s=3600) as trail:
        trail.record(context(), residents(3), "disclosed")
        clock.now += timedelta(hours=2)
        trail.record(context(), residents(3), "disclosed")  # wakes the writer past the due time
        for _ in range(200):
            if integrity.verify(directory, None).checkpoints:
                break
            time.sleep(0.01)
        assert integrity.verify(directory, key.public_key()).checkpoints == 1


def test_segments_from_before_the_chain_are_counted_not_blamed(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    directory = tmp_path / "audit"
    legacy_segment(directory, "audit-20200101T000000.000000Z-000001.arrows", 2)
    last = legacy_segment(directory, "audit-20200102T000000.000000Z-000002.arrows", 2)
    for index in range(2):
        with AuditTrail(directory, signing_key=key) as trail:
            trail.record(context(request_id=str(index)), residents(3), "disclosed")
    report = integrity.verify(directory, key.public_key())
    assert report.intact, report.problems
    assert (report.unchained, report.segments) == (2, 4)
    # The first chained segment vouches for the last legacy one by hash.
    flip(last, last.stat().st_size // 2)
    assert problems(directory, key)[0].startswith(f"{last.name} was altered")
    # A segment without the chain after chained ones is not from before it.
    last.unlink()
    legacy_segment(directory, "audit-20991231T000000.000000Z-000099.arrows", 2)
    assert any("after segments that do" in p for p in problems(directory, key))
