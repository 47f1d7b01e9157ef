"""Fixtures of the service tests: a demo PKI and a running server on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from calls import STRANGER

from juki_engine import Registry, certs, service
from juki_engine.audit import AuditTrail
from juki_engine.policy import Policy, example_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    policy = Policy.load(example_path())
    callers = {a.code: a.certificate_subject for a in policy.agencies}
    callers |= {m.code: m.certificate_subject for m in policy.municipalities}
    certs.create_demo(directory, {**callers, "stranger": STRANGER})
    certs.write_demo_policy(directory, example_path())
    return directory


@pytest.fixture(scope="module")
def running(
    small: Registry, pki: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[service.Server]:
    trail = AuditTrail(tmp_path_factory.mktemp("audit"))
    frontend = service.Frontend(small, Policy.load(pki / "policy.toml"), trail)
    srv = service.start(frontend, service.ServerTLS.in_directory(pki))
    try:
        yield srv
    finally:
        srv.stop(grace=1)


@pytest.fixture
def policy(running: service.Server) -> Iterator[service.Frontend]:
    """The running frontend; whatever policy a test installs is put back afterwards."""
    frontend = running.frontend
    saved = frontend.policy
    try:
        yield frontend
    finally:
        frontend.policy = saved
