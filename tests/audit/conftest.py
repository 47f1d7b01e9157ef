"""Fixtures of the audit trail's tests: the trail's clock, and an open trail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from auditing import Clock

from juki_engine.audit import AuditTrail, records


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(records, "clock", clock.micros)
    return clock


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[AuditTrail]:
    with AuditTrail(tmp_path / "audit") as trail:
        yield trail
