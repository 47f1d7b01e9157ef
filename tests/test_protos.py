"""protos/ is the only source of the wire contract: the committed stubs must match it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from juki_engine._proto import registry_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
RELEASED = PROTOS / "released" / "juki.v1.json"
BUF = str(Path(sysconfig.get_path("scripts")) / "buf")


def buf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BUF, *args], capture_output=True, text=True, check=False)


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
    services = {"IdentityVerificationService", "BulkVerificationService"}
    assert set(pb.DESCRIPTOR.services_by_name) == services
    bulk = pb.DESCRIPTOR.services_by_name["BulkVerificationService"]
    bulk = bulk.methods_by_name["VerifyStream"]
    assert bulk.client_streaming and bulk.server_streaming


def test_resident_fields_are_the_public_schema() -> None:
    from juki_engine import Registry

    assert [f.name for f in pb.Resident.DESCRIPTOR.fields] == Registry.column_names()
    assert all(f.has_presence for f in pb.Resident.DESCRIPTOR.fields)


def test_the_contract_follows_bufs_standard_rules() -> None:
    done = buf("lint", str(PROTOS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_contract_keeps_the_released_one() -> None:
    done = buf("breaking", str(PROTOS), "--against", str(RELEASED))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("old", "new", "check", "found"),
    [
        # Renumbering a field breaks every client that sends it.
        (
            "string affair = 1;",
            "string affair = 9;",
            "breaking",
            'field "1" with name "affair" on message "RequestContext" was deleted',
        ),
        # Removing an enum value breaks clients that send it.
        ("  SEX_FEMALE = 2;\n", "", "breaking", 'enum value "2" on enum "Sex" was deleted'),
        # A value without its enum's prefix is against the style.
        ("  SEX_FEMALE = 2;", "  FEMALE = 2;", "lint", 'should be prefixed with "SEX_"'),
    ],
)
def test_a_change_against_the_rules_fails(
    tmp_path: Path, old: str, new: str, check: str, found: str
) -> None:
    copy = tmp_path / "protos"
    shutil.copytree(PROTOS, copy, ignore=shutil.ignore_patterns("*.py", "released"))
    proto = copy / "juki" / "v1" / "registry.proto"
    text = proto.read_text()
    assert old in text
    proto.write_text(text.replace(old, new))
    against = ("--against", str(RELEASED)) if check == "breaking" else ()
    done = buf(check, str(copy), *against)
    assert done.returncode != 0
    assert found in done.stdout + done.stderr, done.stdout + done.stderr
