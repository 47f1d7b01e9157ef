"""protos/ is the only source of the wire contract: the committed stubs must match it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from juki_engine._proto import registry_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent


def test_regenerating_the_stubs_changes_nothing() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_contract_is_package_juki_v1() -> None:
    assert pb.DESCRIPTOR.package == "juki.v1"
    assert set(pb.DESCRIPTOR.services_by_name) == {"IdentityVerification", "BulkVerification"}
    bulk = pb.DESCRIPTOR.services_by_name["BulkVerification"].methods_by_name["VerifyStream"]
    assert bulk.client_streaming and bulk.server_streaming


def test_resident_fields_are_the_public_schema() -> None:
    from juki_engine import Registry

    assert [f.name for f in pb.Resident.DESCRIPTOR.fields] == Registry.column_names()
    assert all(f.has_presence for f in pb.Resident.DESCRIPTOR.fields)
