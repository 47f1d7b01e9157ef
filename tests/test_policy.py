"""Tests for the purpose policy: loading and checking policy files, agencies by certificate
subject, authorizing requests, and daily quotas (juki_engine.policy)."""

from __future__ import annotations

import copy
import datetime as dt
import re
import tomllib
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from juki_engine import JukiError, Registry, policy
from juki_engine.certs import canonical_subject
from juki_engine.policy import (
    CLAIMABLE,
    JST,
    KEYS,
    MODES,
    Agency,
    Grant,
    NotPermitted,
    Policy,
    PolicyError,
    QuotaExhausted,
    Quotas,
    example_path,
)

COLUMNS = tuple(Registry.column_names())
EXAMPLE_AGENCIES = {
    "nenkin": "日本年金機構",
    "moj": "法務省",
    "mofa": "外務省",
    "mlit": "国土交通省",
    "soumu": "総務省",
    "toyama-pref": "富山県",
    "npa": "警察庁",
}


def affair(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "code": "pension-benefit",
        "title": "年金である給付の支給に関する事務",
        "legal_basis": "住基法 別表第一の七十七",
        "keys": ["resident_code"],
        "modes": ["verify", "retrieve"],
        "fields": ["family_name", "given_name", "birth_date", "address_town"],
        "daily_quota": 100,
    }
    entry.update(changes)
    return entry


# The example policy's placeholder CA, and the binding every document here is loaded with.
DEMO = "0" * 64


def bound(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with the demo CA declared (as every policy declares its CAs)."""
    return {"certificate_authorities": {"demo": DEMO}, **document}


def agency(code: str = "nenkin", **changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "code": code,
        "name": "日本年金機構",
        "certificate_subject": f"CN={code},O=日本年金機構,C=JP",
        "certificate_issuer": "demo",
        "affair": [affair()],
    }
    entry.update(changes)
    return entry


def single(**affair_changes: Any) -> Agency:
    """The one agency of a policy holding one affair, `affair()` changed as given."""
    (only,) = Policy.from_dict(
        bound({"agency": [agency(affair=[affair(**affair_changes)])]})
    ).agencies
    return only


def schema_order(fields: Any) -> tuple[str, ...]:
    wanted = set(fields)
    return tuple(c for c in COLUMNS if c in wanted)


@pytest.fixture(scope="module")
def example() -> Policy:
    return Policy.load(example_path())


# ----------------------------------------------------------------------------- the shipped example


def test_example_lists_the_agencies(example: Policy) -> None:
    assert example.source == str(example_path())
    assert {a.code: a.name for a in example.agencies} == EXAMPLE_AGENCIES
    for a in example.agencies:
        assert a.certificate_subject == f"CN={a.code},O={a.name},C=JP"
        assert a.certificate_subject == canonical_subject(a.certificate_subject)
        assert example.agency_for(a.certificate_subject, DEMO) is a
        assert a.affairs, a.code


def test_example_discloses_my_number_only_to_nenkin(example: Policy) -> None:
    with_my_number = {
        (a.code, code)
        for a in example.agencies
        for code, x in a.affairs.items()
        if "my_number" in x.fields or "my_number" in x.keys
    }
    assert with_my_number == {("nenkin", "pension-benefit")}
    pension = example.agency_for("CN=nenkin,O=日本年金機構,C=JP", DEMO).affairs["pension-benefit"]
    assert pension.keys == frozenset(KEYS)
    assert "my_number" in pension.fields


def test_example_affairs_are_well_formed(example: Policy) -> None:
    for a in example.agencies:
        for code, x in a.affairs.items():
            assert x.code == code
            # The one affair outside 住基法 別表 is the example of one withheld from residents.
            basis = "刑事訴訟法" if x.withheld_from_residents_days else "住基法 別表"
            assert x.legal_basis.startswith(basis), (a.code, code)
            assert x.title.strip()
            assert x.keys and x.keys <= set(KEYS)
            assert x.modes and x.modes <= set(MODES)
            assert x.fields == schema_order(x.fields), (a.code, code)
            assert len(set(x.fields)) == len(x.fields)
            assert x.daily_quota > 0
            assert "card_state" not in x.fields


def test_example_same_affair_code_under_two_agencies(example: Policy) -> None:
    mofa = example.agency_for("CN=mofa,O=外務省,C=JP", DEMO).affairs["passport"]
    toyama = example.agency_for("CN=toyama-pref,O=富山県,C=JP", DEMO).affairs["passport"]
    assert mofa != toyama
    assert "prefecture" in mofa.fields
    assert "prefecture" not in toyama.fields
    assert toyama.legal_basis.startswith("住基法 別表第五")


def test_fields_come_back_in_schema_order() -> None:
    written = ["address_town", "resident_code", "birth_date", "family_name", "address_town"]
    (x,) = single(fields=written).affairs.values()
    assert x.fields == ("resident_code", "family_name", "birth_date", "address_town")


def test_policy_errors_are_juki_errors() -> None:
    assert issubclass(PolicyError, JukiError)
    assert issubclass(NotPermitted, JukiError)
    assert issubclass(QuotaExhausted, JukiError)


# ----------------------------------------------------------------------------- malformed policies


def broken(where: str, **changes: Any) -> dict[str, Any]:
    """A one-agency policy with `changes` applied to the agency (where="agency") or its affair."""
    if where == "agency":
        return {"agency": [agency(**changes)]}
    return {"agency": [agency(affair=[affair(**changes)])]}


MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    (
        "unknown top-level key",
        {"agency": [agency()], "agencies": []},
        r"policy <memory>: unknown top-level keys \['agencies'\]",
    ),
    (
        "agency not an array",
        {"agency": agency()},
        r"policy <memory>: 'agency' must be an array of tables",
    ),
    ("agency not a table", {"agency": ["nenkin"]}, r"policy <memory>: agency #1 must be a table"),
    (
        "unknown agency key",
        broken("agency", subject="CN=x"),
        r"policy <memory>: agency #1: unknown keys \['subject'\]",
    ),
    (
        "agency without code",
        {"agency": [{k: v for k, v in agency().items() if k != "code"}]},
        r"policy <memory>: agency #1: 'code' must be a non-empty string",
    ),
    (
        "agency without name",
        {"agency": [{k: v for k, v in agency().items() if k != "name"}]},
        r"policy <memory>: agency 'nenkin': 'name' must be a non-empty string",
    ),
    (
        "agency without issuer",
        {"agency": [{k: v for k, v in agency().items() if k != "certificate_issuer"}]},
        r"agency 'nenkin': 'certificate_issuer' must be a non-empty string",
    ),
    (
        "issuer not declared",
        broken("agency", certificate_issuer="elsewhere"),
        r"agency 'nenkin': 'certificate_issuer' 'elsewhere' is not one of the policy's "
        r"certificate_authorities \['demo'\]",
    ),
    (
        "one key pin",
        broken("agency", key_pins=["ab" * 32]),
        r"agency 'nenkin': 'key_pins': pin two different keys or more",
    ),
    (
        "the same key pinned twice (with colons, in capitals): still one pin",
        broken("agency", key_pins=["ab" * 32, ":".join(["AB"] * 32)]),
        r"agency 'nenkin': 'key_pins': pin two different keys or more",
    ),
    (
        "a pin that is no digest",
        broken("agency", key_pins=["ab" * 32, "xyz"]),
        r"agency 'nenkin': 'key_pins': \['xyz'\] are not SHA-256 digests",
    ),
    (
        "agency without subject",
        {"agency": [{k: v for k, v in agency().items() if k != "certificate_subject"}]},
        r"policy <memory>: agency 'nenkin': 'certificate_subject' must be a non-empty string",
    ),
    (
        "affair not an array",
        broken("agency", affair=affair()),
        r"policy <memory>: agency 'nenkin': 'affair' must be an array of tables",
    ),
    (
        "unknown affair key",
        broken("affair", purpose="x"),
        r"policy <memory>: agency 'nenkin', affair #1: unknown keys \['purpose'\]",
    ),
    (
        "unknown field",
        broken("affair", fields=["family_name", "income"]),
        r"agency 'nenkin', affair 'pension-benefit': 'fields': unknown \['income'\]",
    ),
    (
        "fields not strings",
        broken("affair", fields=["family_name", 3]),
        r"agency 'nenkin', affair 'pension-benefit': 'fields' must be a list of strings",
    ),
    (
        "unknown mode",
        broken("affair", modes=["verify", "update"]),
        r"affair 'pension-benefit': 'modes': unknown \['update'\]",
    ),
    (
        "modes missing",
        {"agency": [agency(affair=[{k: v for k, v in affair().items() if k != "modes"}])]},
        r"affair 'pension-benefit': 'modes' must be a list of strings",
    ),
    (
        "unknown key kind",
        broken("affair", keys=["passport_number"]),
        r"affair 'pension-benefit': 'keys': unknown \['passport_number'\]",
    ),
    (
        "keys a string",
        broken("affair", keys="resident_code"),
        r"affair 'pension-benefit': 'keys' must be a list of strings",
    ),
    (
        "negative quota",
        broken("affair", daily_quota=-1),
        r"agency 'nenkin', affair 'pension-benefit': 'daily_quota' must be a whole number",
    ),
    (
        "boolean quota",
        broken("affair", daily_quota=True),
        r"affair 'pension-benefit': 'daily_quota' must be a whole number",
    ),
    (
        "float quota",
        broken("affair", daily_quota=100.0),
        r"affair 'pension-benefit': 'daily_quota' must be a whole number",
    ),
    (
        "string quota",
        broken("affair", daily_quota="100"),
        r"affair 'pension-benefit': 'daily_quota' must be a whole number",
    ),
    (
        "negative withholding",
        broken("affair", withheld_from_residents_days=-1),
        r"affair 'pension-benefit': 'withheld_from_residents_days' must be a whole number of "
        r"days from 0 to 3653",
    ),
    (
        "withheld past the trail",
        broken("affair", withheld_from_residents_days=3654),
        r"'withheld_from_residents_days' must be a whole number of days from 0 to 3653",
    ),
    (
        "withheld as text",
        broken("affair", withheld_from_residents_days="365"),
        r"'withheld_from_residents_days' must be a whole number",
    ),
    (
        "partial candidates past the bound",
        broken("affair", modes=["search"], search_partial_candidates=11),
        r"affair 'pension-benefit': 'search_partial_candidates' must be a whole number from 0 "
        r"to 10",
    ),
    (
        "partial candidates as a boolean",
        broken("affair", modes=["search"], search_partial_candidates=True),
        r"'search_partial_candidates' must be a whole number from 0 to 10",
    ),
    (
        "partial candidates without the search mode",
        broken("affair", search_partial_candidates=3),
        r"affair 'pension-benefit': 'search_partial_candidates' needs the search mode",
    ),
    (
        "missing title",
        {"agency": [agency(affair=[{k: v for k, v in affair().items() if k != "title"}])]},
        r"agency 'nenkin', affair 'pension-benefit': 'title' must be a non-empty string",
    ),
    (
        "blank title",
        broken("affair", title="   "),
        r"affair 'pension-benefit': 'title' must be a non-empty string",
    ),
    (
        "missing legal basis",
        {"agency": [agency(affair=[{k: v for k, v in affair().items() if k != "legal_basis"}])]},
        r"affair 'pension-benefit': 'legal_basis' must be a non-empty string",
    ),
    (
        "affair without code",
        {"agency": [agency(affair=[{k: v for k, v in affair().items() if k != "code"}])]},
        r"agency 'nenkin', affair #1: 'code' must be a non-empty string",
    ),
    (
        "duplicate agency code",
        {"agency": [agency(), agency(certificate_subject="CN=nenkin2,O=日本年金機構,C=JP")]},
        r"policy <memory>: agency 'nenkin' is listed twice",
    ),
    (
        "duplicate affair code",
        broken("agency", affair=[affair(), affair(title="other")]),
        r"policy <memory>: agency 'nenkin': affair 'pension-benefit' is listed twice",
    ),
    (
        "shared certificate subject",
        {
            "agency": [
                agency("nenkin"),
                agency("moj", certificate_subject="CN=nenkin,O=日本年金機構,C=JP"),
            ]
        },
        r"<memory>: agencies 'nenkin' and 'moj' share the certificate subject "
        r"'CN=nenkin,O=日本年金機構,C=JP'",
    ),
    (
        "shared subject written two ways",
        {
            "agency": [
                agency("a", certificate_subject="CN=x+O=y,C=JP"),
                agency("b", certificate_subject="O=y+CN=x,C=JP"),
            ]
        },
        r"agencies 'a' and 'b' share the certificate subject 'CN=x\+O=y,C=JP'",
    ),
    (
        "subject with spaces",
        broken("agency", certificate_subject="CN=a, O=b"),
        r"agency 'nenkin': 'certificate_subject': not an RFC 4514 subject: 'CN=a, O=b'",
    ),
    (
        "nonsense subject",
        broken("agency", certificate_subject="nonsense"),
        r"agency 'nenkin': 'certificate_subject': not an RFC 4514 subject: 'nonsense'",
    ),
    (
        "lower-case attribute names",
        broken("agency", certificate_subject="cn=nenkin,o=日本年金機構,c=JP"),
        r"agency 'nenkin': 'certificate_subject': not an RFC 4514 subject",
    ),
]


@pytest.mark.parametrize(
    ("document", "message"),
    [pytest.param(d, m, id=name) for name, d, m in MALFORMED],
)
def test_malformed_policies_are_named(document: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy.from_dict(bound(document))


def test_source_names_the_file_in_errors() -> None:
    with pytest.raises(PolicyError, match=r"^policy /etc/juki/policy\.toml: agency 'nenkin', "):
        Policy.from_dict(bound(broken("affair", modes=["write"])), "/etc/juki/policy.toml")


def test_the_second_agency_is_named_by_position_or_code() -> None:
    document = {"agency": [agency("nenkin"), {"code": "moj", "nickname": "x"}]}
    with pytest.raises(PolicyError, match=r"agency #2: unknown keys \['nickname'\]"):
        Policy.from_dict(bound(document))
    document = {"agency": [agency("nenkin"), agency("moj", affair=[affair(), affair(code="b"), 7])]}
    with pytest.raises(PolicyError, match=r"agency 'moj', affair #3 must be a table"):
        Policy.from_dict(bound(document))


def test_a_valid_document_is_not_changed_by_loading() -> None:
    document = {"agency": [agency()]}
    before = copy.deepcopy(document)
    Policy.from_dict(bound(document))
    assert document == before


@pytest.mark.parametrize("fingerprint", ["abc", "g" * 64, 7])
def test_a_ca_is_named_by_its_fingerprint(fingerprint: Any) -> None:
    document = {"certificate_authorities": {"demo": fingerprint}, "agency": [agency()]}
    with pytest.raises(PolicyError, match=r"'certificate_authorities': 'demo' must be"):
        Policy.from_dict(document)


def test_a_subject_is_bound_to_its_ca() -> None:
    other = "ab" * 32
    policy = Policy.from_dict(
        {
            "certificate_authorities": {"demo": DEMO, "other": other},
            "agency": [agency("nenkin"), agency("moj", certificate_issuer="other")],
        }
    )
    subject = "CN=nenkin,O=日本年金機構,C=JP"
    # moj's subject differs; nenkin's subject from the other CA names no one.
    assert policy.agency_for(subject, DEMO).code == "nenkin"
    with pytest.raises(NotPermitted, match="not a registered agency"):
        policy.agency_for(subject, other)


def test_key_pins_admit_only_the_pinned_keys() -> None:
    pins = ["aa" * 32, "bb" * 32]
    (nenkin,) = Policy.from_dict(bound({"agency": [agency(key_pins=pins)]})).agencies
    policy = Policy([nenkin], authorities={"demo": DEMO})
    subject = nenkin.certificate_subject
    assert policy.agency_for(subject, DEMO, "bb" * 32) is nenkin
    with pytest.raises(NotPermitted, match="holds a key not pinned for agency 'nenkin'"):
        policy.agency_for(subject, DEMO, "cc" * 32)


def test_an_empty_policy_grants_nothing() -> None:
    empty = Policy.from_dict(bound({}))
    assert empty.agencies == []
    with pytest.raises(NotPermitted):
        empty.agency_for("CN=nenkin,O=日本年金機構,C=JP", DEMO)


def test_quota_defaults_to_unlimited() -> None:
    entry = affair()
    del entry["daily_quota"]
    (only,) = Policy.from_dict(bound({"agency": [agency(affair=[entry])]})).agencies
    assert only.affairs["pension-benefit"].daily_quota == 0


POLICY_TOML = """\
[certificate_authorities]
demo = "0000000000000000000000000000000000000000000000000000000000000000"

[[agency]]
code = "nenkin"
name = "日本年金機構"
certificate_subject = "CN=nenkin,O=日本年金機構,C=JP"
certificate_issuer = "demo"

  [[agency.affair]]
  code = "pension-benefit"
  title = "年金である給付の支給に関する事務"
  legal_basis = "住基法 別表第一の七十七"
  keys = ["resident_code", "my_number"]
  modes = ["verify"]
  fields = ["birth_date", "family_name"]
  daily_quota = 1_000
"""


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY_TOML, encoding="utf-8")
    loaded = Policy.load(path)
    assert loaded.source == str(path)
    (nenkin,) = loaded.agencies
    assert (nenkin.code, nenkin.name) == ("nenkin", "日本年金機構")
    x = nenkin.affairs["pension-benefit"]
    assert x.keys == {"resident_code", "my_number"}
    assert x.modes == {"verify"}
    assert x.fields == ("family_name", "birth_date")
    assert x.daily_quota == 1000
    assert Policy.load(str(path)).agencies == loaded.agencies


def test_load_names_the_file_of_a_malformed_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY_TOML.replace('"verify"]', '"verify", "delete"]'), encoding="utf-8")
    message = rf"^policy {re.escape(str(path))}: agency 'nenkin', affair 'pension-benefit': "
    with pytest.raises(PolicyError, match=message + r"'modes': unknown \['delete'\]"):
        Policy.load(path)


def test_load_rejects_what_is_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[[agency]\ncode = nenkin\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=rf"^policy {re.escape(str(path))}: not valid TOML"):
        Policy.load(path)


def test_load_rejects_toml_with_an_unknown_top_level_table(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY_TOML + "\n[server]\nport = 1\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"unknown top-level keys \['server'\]"):
        Policy.load(path)


def test_load_names_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(PolicyError, match=rf"^policy {re.escape(str(path))}: No such file"):
        Policy.load(path)


def test_load_names_a_directory(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=rf"^policy {re.escape(str(tmp_path))}: "):
        Policy.load(tmp_path)


def test_load_names_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_bytes(POLICY_TOML.encode("shift_jis"))
    with pytest.raises(PolicyError, match=rf"^policy {re.escape(str(path))}: "):
        Policy.load(path)


# ----------------------------------------------------------------------------- certificate subjects


@pytest.mark.parametrize(
    "written",
    [
        "O=日本年金機構+CN=nenkin,C=JP",
        "CN=nenkin+O=日本年金機構,C=JP",
        "2.5.4.3=nenkin+O=日本年金機構,C=JP",
        "CN=nenkin+O=\\E6\\97\\A5\\E6\\9C\\AC\\E5\\B9\\B4\\E9\\87\\91\\E6\\A9\\9F\\E6\\A7\\8B,C=JP",
    ],
)
def test_certificate_subjects_are_canonicalised(written: str) -> None:
    canonical = "CN=nenkin+O=日本年金機構,C=JP"
    assert canonical_subject(written) == canonical
    loaded = Policy.from_dict(bound({"agency": [agency(certificate_subject=written)]}))
    (nenkin,) = loaded.agencies
    assert nenkin.certificate_subject == canonical
    assert loaded.agency_for(canonical, DEMO) is nenkin


def test_agency_for_matches_the_subject_exactly(example: Policy) -> None:
    nenkin = example.agency_for("CN=nenkin,O=日本年金機構,C=JP", DEMO)
    assert nenkin.code == "nenkin"
    for other in ("CN=nenkin,O=日本年金機構", "CN=nenkin,O=日本年金機構,C=US", "CN=nenkin"):
        with pytest.raises(NotPermitted, match=re.escape(f"'{other}' is not a registered agency")):
            example.agency_for(other, DEMO)


@pytest.mark.parametrize("subject", ["", "CN=mallory,O=x,C=JP", "CN=nenkin, O=日本年金機構, C=JP"])
def test_agency_for_refuses_an_unknown_subject(example: Policy, subject: str) -> None:
    with pytest.raises(NotPermitted, match=rf"certificate subject '{re.escape(subject)}'"):
        example.agency_for(subject, DEMO)


# ----------------------------------------------------------------------------- authorize


@pytest.fixture(scope="module")
def nenkin(example: Policy) -> Agency:
    return example.agency_for("CN=nenkin,O=日本年金機構,C=JP", DEMO)


@pytest.fixture(scope="module")
def moj(example: Policy) -> Agency:
    return example.agency_for("CN=moj,O=法務省,C=JP", DEMO)


def test_verify_is_granted(example: Policy, moj: Agency) -> None:
    grant = example.authorize(moj, "bar-exam", "resident_code", ["birth_date", "family_name"])
    assert isinstance(grant, Grant)
    assert grant.agency is moj
    assert grant.affair is moj.affairs["bar-exam"]
    assert grant.mode == "verify"
    assert grant.claimed == ("birth_date", "family_name")
    assert grant.retrieved == ()
    assert grant.fields == ("birth_date", "family_name")


def test_retrieve_is_granted_in_schema_order(example: Policy, nenkin: Agency) -> None:
    asked = ["status", "my_number", "address_town", "my_number", "family_name"]
    grant = example.authorize(nenkin, "pension-benefit", "my_number", retrieve=asked)
    assert grant.mode == "retrieve"
    assert grant.claimed == ()
    assert grant.retrieved == ("my_number", "family_name", "address_town", "status")
    assert grant.fields == grant.retrieved


def test_verify_and_retrieve_is_granted(example: Policy, nenkin: Agency) -> None:
    grant = example.authorize(
        nenkin,
        "pension-benefit",
        "resident_code",
        claimed=iter(["given_name", "family_name", "birth_date"]),
        retrieve=iter(["status", "family_name", "address_town"]),
    )
    assert grant.mode == "verify+retrieve"
    assert grant.claimed == ("given_name", "family_name", "birth_date")
    assert grant.retrieved == ("family_name", "address_town", "status")
    assert grant.fields == ("given_name", "family_name", "birth_date", "address_town", "status")


def test_a_key_only_request_is_a_verification(example: Policy, moj: Agency) -> None:
    grant = example.authorize(moj, "bar-exam", "resident_code")
    assert (grant.mode, grant.claimed, grant.retrieved, grant.fields) == ("verify", (), (), ())


def test_a_key_only_request_is_refused_by_a_retrieve_only_affair() -> None:
    only = single(modes=["retrieve"])
    granted = Policy([only])
    assert granted.authorize(only, "pension-benefit", "resident_code", retrieve=["family_name"])
    with pytest.raises(NotPermitted, match="affair 'pension-benefit' does not allow verify"):
        granted.authorize(only, "pension-benefit", "resident_code")
    with pytest.raises(NotPermitted, match="does not allow verify"):
        granted.authorize(only, "pension-benefit", "resident_code", claimed=["family_name"])


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("passport", "agency 'moj' is not granted the affair 'passport'"),
        ("pension-benefit", "agency 'moj' is not granted the affair 'pension-benefit'"),
        ("", "the request names no affair"),
    ],
)
def test_an_affair_not_granted_is_refused(
    example: Policy, moj: Agency, code: str, message: str
) -> None:
    with pytest.raises(NotPermitted, match=re.escape(message)):
        example.authorize(moj, code, "resident_code", ["family_name"])


def test_a_key_kind_not_allowed_is_refused(example: Policy, moj: Agency) -> None:
    with pytest.raises(NotPermitted, match="affair 'bar-exam' may not be queried by my_number"):
        example.authorize(moj, "bar-exam", "my_number", ["family_name"])
    with pytest.raises(NotPermitted, match="may not be queried by passport_number"):
        example.authorize(moj, "bar-exam", "passport_number")


def test_a_mode_not_allowed_is_refused(example: Policy, moj: Agency) -> None:
    with pytest.raises(NotPermitted, match="affair 'bar-exam' does not allow retrieve"):
        example.authorize(moj, "bar-exam", "resident_code", retrieve=["family_name"])
    with pytest.raises(NotPermitted, match="does not allow retrieve"):
        example.authorize(moj, "bar-exam", "resident_code", ["sex"], ["family_name"])


@pytest.mark.parametrize("field", ["my_number", "resident_code", "status", "address_block", "x"])
def test_a_field_that_cannot_be_claimed_is_refused(
    example: Policy, nenkin: Agency, field: str
) -> None:
    with pytest.raises(NotPermitted, match=rf"field '{field}' cannot be claimed"):
        example.authorize(nenkin, "pension-benefit", "resident_code", ["family_name", field])


@pytest.mark.parametrize(
    ("claimed", "retrieve", "field"),
    [
        (["family_name_kana"], [], "family_name_kana"),
        (["family_name"], ["address_town", "status"], "status"),
        (["sex"], [], "sex"),
        ([], ["my_number"], "my_number"),
        ([], ["card_state"], "card_state"),
        ([], ["income"], "income"),
    ],
)
def test_a_field_not_allowed_is_refused(
    example: Policy, claimed: list[str], retrieve: list[str], field: str
) -> None:
    mlit = example.agency_for("CN=mlit,O=国土交通省,C=JP", DEMO)
    with pytest.raises(
        NotPermitted, match=rf"affair 'appraiser-exam' does not disclose the field '{field}'"
    ):
        example.authorize(mlit, "appraiser-exam", "resident_code", claimed, retrieve)


def test_a_claim_on_a_field_not_allowed_is_refused(example: Policy, moj: Agency) -> None:
    with pytest.raises(
        NotPermitted, match="'bar-exam' does not disclose the field 'given_name_kana'"
    ):
        example.authorize(moj, "bar-exam", "resident_code", ["given_name_kana"])


@st.composite
def affairs_and_requests(draw: st.DrawFn) -> tuple[dict[str, Any], str, str, list[str], list[str]]:
    # Half the cases ask only for what the affair lists, so that many are granted.
    inside = draw(st.booleans())
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True))
    fields = draw(st.lists(st.sampled_from(COLUMNS), unique=True))
    modes = draw(st.lists(st.sampled_from(MODES), unique=True, min_size=1 if inside else 0))
    entry = affair(
        code="a",
        keys=keys,
        modes=modes,
        fields=fields,
        daily_quota=draw(st.integers(0, 10)),
    )
    if "subscribe" in modes:
        entry["subscribe_reasons"] = ["death"]
    anything = st.sampled_from((*COLUMNS, "income"))
    claimable = [f for f in fields if f in CLAIMABLE]
    code = "a" if inside else draw(st.sampled_from(("a", "b", "")))
    key = draw(st.sampled_from(keys if inside and keys else (*KEYS, "passport_number")))
    claimed_names = st.sampled_from(claimable) if inside and claimable else anything
    retrieved_names = st.sampled_from(fields) if inside and fields else anything
    claimed = draw(st.lists(claimed_names, max_size=4))
    retrieve = draw(st.lists(retrieved_names, max_size=6))
    return entry, code, key, claimed, retrieve


@settings(max_examples=300, deadline=None)
@given(affairs_and_requests())
def test_authorize_grants_exactly_what_the_affair_allows(
    case: tuple[dict[str, Any], str, str, list[str], list[str]],
) -> None:
    entry, code, key, claimed, retrieve = case
    granted = Policy.from_dict(bound({"agency": [agency(affair=[entry])]}))
    (only,) = granted.agencies
    x = only.affairs["a"]
    needed = {mode for mode, asked in (("verify", claimed), ("retrieve", retrieve)) if asked}
    needed = needed or {"verify"}
    allowed = (
        code == "a"
        and key in x.keys
        and needed <= x.modes
        and set(claimed) <= set(CLAIMABLE) & set(x.fields)
        and set(retrieve) <= set(x.fields)
    )
    try:
        grant = granted.authorize(only, code, key, claimed, retrieve)
    except NotPermitted:
        assert not allowed
        return
    assert allowed
    assert grant.affair is x
    assert grant.mode == "+".join(m for m in MODES if m in needed)
    assert grant.claimed == tuple(claimed)
    assert grant.retrieved == schema_order(retrieve)
    assert set(grant.fields) <= set(x.fields)
    assert set(grant.fields) == set(claimed) | set(retrieve)
    assert len(grant.fields) == len(set(grant.fields))


# ----------------------------------------------------------------------------- quotas


def grant_for(
    quota: int, agency_code: str = "nenkin", affair_code: str = "pension-benefit"
) -> Grant:
    only = Policy.from_dict(
        bound(
            {"agency": [agency(agency_code, affair=[affair(code=affair_code, daily_quota=quota)])]}
        )
    ).agencies[0]
    return Policy([only]).authorize(only, affair_code, "resident_code", ["family_name"])


def test_quotas_count_per_agency_and_affair() -> None:
    quotas = Quotas()
    pension, bar = grant_for(100), grant_for(100, affair_code="bar-exam")
    other = grant_for(100, agency_code="moj")
    quotas.take(pension, 30)
    quotas.take(pension, 20)
    quotas.take(bar, 7)
    quotas.take(other, 1)
    assert quotas.used("nenkin", "pension-benefit") == 50
    assert quotas.used("nenkin", "bar-exam") == 7
    assert quotas.used("moj", "pension-benefit") == 1
    assert quotas.used("moj", "bar-exam") == 0


def test_example_passport_quotas_are_separate(example: Policy) -> None:
    mofa = example.agency_for("CN=mofa,O=外務省,C=JP", DEMO)
    toyama = example.agency_for("CN=toyama-pref,O=富山県,C=JP", DEMO)
    quotas = Quotas()
    quotas.take(example.authorize(toyama, "passport", "resident_code", ["sex"]), 100_000)
    quotas.take(example.authorize(mofa, "passport", "resident_code", ["sex"]), 5)
    assert quotas.used("toyama-pref", "passport") == 100_000
    assert quotas.used("mofa", "passport") == 5
    with pytest.raises(QuotaExhausted, match="quota of 100,000 records is spent"):
        quotas.take(example.authorize(toyama, "passport", "resident_code", ["sex"]), 1)


def test_the_quota_may_be_used_up_exactly() -> None:
    quotas = Quotas()
    grant = grant_for(10)
    quotas.take(grant, 4)
    quotas.take(grant, 6)
    assert quotas.used("nenkin", "pension-benefit") == 10
    quotas.take(grant, 0)
    with pytest.raises(QuotaExhausted):
        quotas.take(grant, 1)


def test_exceeding_the_quota_is_refused_and_counts_nothing() -> None:
    quotas = Quotas()
    grant = grant_for(1_000)
    quotas.take(grant, 900)
    message = (
        "affair 'pension-benefit' of agency 'nenkin': the daily quota of 1,000 records is spent "
        "(900 used, 101 asked)"
    )
    with pytest.raises(QuotaExhausted, match=re.escape(message)):
        quotas.take(grant, 101)
    assert quotas.used("nenkin", "pension-benefit") == 900
    quotas.take(grant, 100)
    assert quotas.used("nenkin", "pension-benefit") == 1_000


def test_one_request_larger_than_the_quota_is_refused() -> None:
    quotas = Quotas()
    with pytest.raises(QuotaExhausted, match="quota of 5 records"):
        quotas.take(grant_for(5), 6)
    assert quotas.used("nenkin", "pension-benefit") == 0


def test_a_zero_quota_is_unlimited() -> None:
    quotas = Quotas()
    grant = grant_for(0)
    for _ in range(3):
        quotas.take(grant, 10**12)
    assert quotas.used("nenkin", "pension-benefit") == 3 * 10**12


def test_a_negative_take_cannot_extend_the_quota() -> None:
    quotas = Quotas()
    grant = grant_for(10)
    with pytest.raises(ValueError, match="-5"):
        quotas.take(grant, -5)
    assert quotas.used("nenkin", "pension-benefit") == 0


def test_seeded_counts_are_honoured() -> None:
    quotas = Quotas({("nenkin", "pension-benefit"): 95, ("moj", "bar-exam"): 3})
    assert quotas.used("nenkin", "pension-benefit") == 95
    assert quotas.used("moj", "bar-exam") == 3
    grant = grant_for(100)
    with pytest.raises(QuotaExhausted, match=r"\(95 used, 6 asked\)"):
        quotas.take(grant, 6)
    quotas.take(grant, 5)
    assert quotas.used("nenkin", "pension-benefit") == 100


def test_seeding_does_not_share_the_callers_mapping() -> None:
    seed = {("nenkin", "pension-benefit"): 1}
    quotas = Quotas(seed)
    quotas.take(grant_for(100), 2)
    assert seed == {("nenkin", "pension-benefit"): 1}
    assert quotas.used("nenkin", "pension-benefit") == 3


def test_the_day_rolls_over(monkeypatch: pytest.MonkeyPatch) -> None:
    day = dt.date(2025, 3, 31)
    monkeypatch.setattr(policy, "today", lambda: day)
    quotas = Quotas({("nenkin", "pension-benefit"): 99})
    grant = grant_for(100)
    with pytest.raises(QuotaExhausted):
        quotas.take(grant, 2)
    day = dt.date(2025, 4, 1)
    assert quotas.used("nenkin", "pension-benefit") == 0
    quotas.take(grant, 100)
    with pytest.raises(QuotaExhausted, match=r"\(100 used, 1 asked\)"):
        quotas.take(grant, 1)
    day = dt.date(2025, 4, 2)
    quotas.take(grant, 1)
    assert quotas.used("nenkin", "pension-benefit") == 1


class _Clock:
    """Stands in for the `datetime` module in juki_engine.policy, its `now` set by the test."""

    def __init__(self, instant: dt.datetime) -> None:
        self.instant = instant
        clock = self

        class FrozenDateTime(dt.datetime):
            @classmethod
            def now(cls, tz: dt.tzinfo | None = None) -> FrozenDateTime:
                moment = clock.instant.astimezone(tz)
                return cls.combine(moment.date(), moment.timetz())

        self.module = types.SimpleNamespace(
            date=dt.date,
            datetime=FrozenDateTime,
            time=dt.time,
            timedelta=dt.timedelta,
            timezone=dt.timezone,
        )


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    frozen = _Clock(dt.datetime(2025, 3, 31, 14, 59, 59, tzinfo=dt.UTC))
    monkeypatch.setattr(policy, "dt", frozen.module)
    return frozen


def test_today_is_the_date_in_japan(clock: _Clock) -> None:
    # 14:59:59 UTC is 23:59:59 in Japan; a second later it is the next day there, not in UTC.
    assert policy.today() == dt.date(2025, 3, 31)
    assert policy.start_of_today() == dt.datetime(2025, 3, 31, tzinfo=JST)
    clock.instant = dt.datetime(2025, 3, 31, 15, 0, tzinfo=dt.UTC)
    assert policy.today() == dt.date(2025, 4, 1)
    start = policy.start_of_today()
    assert start.utcoffset() == dt.timedelta(hours=9)
    assert start == dt.datetime(2025, 3, 31, 15, 0, tzinfo=dt.UTC)


def test_quotas_roll_over_at_midnight_in_japan(clock: _Clock) -> None:
    quotas = Quotas({("nenkin", "pension-benefit"): 10})
    grant = grant_for(10)
    with pytest.raises(QuotaExhausted):
        quotas.take(grant, 1)
    clock.instant = dt.datetime(2025, 3, 31, 15, 0, tzinfo=dt.UTC)
    quotas.take(grant, 10)
    assert quotas.used("nenkin", "pension-benefit") == 10
    # Still 1 April in Japan until 15:00 UTC on 1 April.
    clock.instant = dt.datetime(2025, 4, 1, 14, 59, tzinfo=dt.UTC)
    with pytest.raises(QuotaExhausted):
        quotas.take(grant, 1)
    clock.instant = dt.datetime(2025, 4, 1, 15, 0, tzinfo=dt.UTC)
    assert quotas.used("nenkin", "pension-benefit") == 0


def test_match_levels_above_exact_are_denied_unless_the_affair_lists_them() -> None:
    policy = Policy.load(example_path())
    nenkin, moj = policy.agency("nenkin"), policy.agency("moj")
    assert nenkin.affairs["pension-benefit"].match_levels == {"exact", "normalised", "reading"}
    assert moj.affairs["bar-exam"].match_levels == {"exact"}
    grant = policy.authorize(
        nenkin, "pension-benefit", "resident_code", ["family_name"], (), "reading"
    )
    assert (grant.level, grant.audit_mode) == ("reading", "verify@reading")
    assert (
        policy.authorize(moj, "bar-exam", "resident_code", ["family_name"]).audit_mode == "verify"
    )
    with pytest.raises(
        NotPermitted,
        match=r"'bar-exam' does not allow the normalised match level \(it allows: exact\)",
    ):
        policy.authorize(moj, "bar-exam", "resident_code", ["family_name"], (), "normalised")


def test_an_unknown_match_level_in_a_policy_is_refused(tmp_path: Path) -> None:
    text = (
        example_path()
        .read_text()
        .replace('match_levels = ["normalised", "reading"]', 'match_levels = ["fuzzy"]')
    )
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError, match=r"'match_levels'.*fuzzy"):
        Policy.load(path)


def test_a_search_without_a_level_is_normalised_where_the_affair_allows_it() -> None:
    policy = Policy.load(example_path())
    nenkin = policy.agency("nenkin")
    facts = ["family_name", "given_name", "birth_date"]
    grant = policy.authorize_search(nenkin, "pension-benefit", facts, ["resident_code"])
    assert grant.audit_mode == "search@normalised"
    document = tomllib.loads(example_path().read_text())
    del document["agency"][0]["affair"][0]["match_levels"]
    exact_only = Policy.from_dict(document).agency("nenkin")
    grant = policy.authorize_search(exact_only, "pension-benefit", facts, ["resident_code"])
    assert grant.audit_mode == "search"


# ----------------------------------------------------------------------------- municipalities


def municipality(code: str = "162019", **changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "code": code,
        "name": "富山市",
        "certificate_subject": f"CN=m{code},O=富山市,C=JP",
        "certificate_issuer": "demo",
    }
    entry.update(changes)
    return entry


def test_example_lists_municipalities_bound_like_agencies(example: Policy) -> None:
    codes = {m.code: m.name for m in example.municipalities}
    assert codes == {"162019": "富山市", "162027": "高岡市", "162116": "射水市"}
    toyama = next(m for m in example.municipalities if m.code == "162019")
    assert example.municipality_for(toyama.certificate_subject, DEMO) == toyama


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            [municipality("162010")],
            r"municipality '162010': 'code' must be a 全国地方公共団体コード",
        ),
        ([municipality("16201")], r"'code' must be a 全国地方公共団体コード"),
        ([municipality(name="")], r"municipality '162019': 'name' must be a non-empty string"),
        ([municipality(affair=[])], r"municipality #1: unknown keys \['affair'\]"),
        ([municipality(certificate_issuer="x")], r"'certificate_issuer' 'x' is not one of"),
        ([municipality(), municipality()], r"municipality '162019' is listed twice"),
        (
            [
                municipality("162027", certificate_subject="CN=m162019,O=富山市,C=JP"),
                municipality(),
            ],
            r"municipality '162027' and municipality '162019' share the certificate subject",
        ),
    ],
)
def test_malformed_municipalities_are_named(entries: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy.from_dict(bound({"municipality": entries}))


def test_an_agency_and_a_municipality_never_share_a_certificate() -> None:
    shared = municipality(certificate_subject="CN=nenkin,O=日本年金機構,C=JP")
    with pytest.raises(PolicyError, match=r"agency 'nenkin' and municipality '162019' share"):
        Policy.from_dict(bound({"agency": [agency()], "municipality": [shared]}))


def test_a_certificate_names_an_agency_or_a_municipality_never_both() -> None:
    policy = Policy.from_dict(bound({"agency": [agency()], "municipality": [municipality()]}))
    with pytest.raises(NotPermitted, match="is not a registered municipality"):
        policy.municipality_for("CN=nenkin,O=日本年金機構,C=JP", DEMO)
    with pytest.raises(NotPermitted, match="is not a registered agency"):
        policy.agency_for("CN=m162019,O=富山市,C=JP", DEMO)
    # Bound to its CA: the same subject from another CA names no one.
    with pytest.raises(NotPermitted, match="is not a registered municipality"):
        policy.municipality_for("CN=m162019,O=富山市,C=JP", "1" * 64)
