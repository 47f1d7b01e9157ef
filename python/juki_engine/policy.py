"""The purpose policy: which agency may ask for which affairs (事務), by which keys, in which modes,
for which fields, and how many records a day. Deny by default.

The policy is a TOML file the operator writes (an example ships as `policy.example.toml`); the
server loads it at start and again on SIGHUP. An agency is matched by its client certificate:
the CA that issued it (by the SHA-256 fingerprint of the CA's certificate, declared once under
`[certificate_authorities]`), its subject and, optionally, its public key (two or more pins, so a
key can rotate) — never by anything the client says about itself.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from juki_engine._core import JukiError, is_valid
from juki_engine.names import LEVELS
from juki_engine.registry import Registry

KEYS = ("my_number", "resident_code")
MODES = ("verify", "retrieve", "search", "subscribe")
# The change reasons (異動事由) a subscription may be told of (docs/changes.md).
CHANGE_REASONS = tuple(r for r in Registry.change_reasons() if r != "cancel")
# Fields a claim can carry (verify mode); retrieve mode may disclose any public column.
CLAIMABLE = tuple(Registry.claimable_columns())
JST = dt.timezone(dt.timedelta(hours=9), "JST")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class PolicyError(JukiError):
    """The policy file is malformed; the message names the file, agency and entry."""


class NotPermitted(JukiError):
    """The policy does not grant the request; the message names the affair, key, mode or field."""


class QuotaExhausted(JukiError):
    """The affair's daily record quota is spent."""


@dataclass(frozen=True, slots=True)
class Affair:
    """One affair an agency is granted, e.g. 年金給付 under 住基法 別表第一."""

    code: str
    title: str
    legal_basis: str
    keys: frozenset[str]
    modes: frozenset[str]
    fields: tuple[str, ...]  # in the order of the public schema
    daily_quota: int  # records per day (Japan time); 0 = unlimited
    match_levels: frozenset[str] = frozenset({"exact"})
    """The match levels claims may be verified at (docs/matching.md); exact always."""
    subscribe_reasons: frozenset[str] = frozenset()
    """With the subscribe mode: the change reasons a subscription is told of (and the cancels
    of such changes), masked to `fields`."""
    withheld_from_residents_days: int = 0
    """Accesses under this affair are not shown to the resident concerned until this many days
    have passed (a criminal investigation, say); 0: shown at once."""
    search_partial_candidates: int = 0
    """A 4情報 search that finds no resident agreeing on every fact may disclose up to this many
    partial candidates (sharing the names and birth date, not the sex or municipality), most
    facts agreeing first; 0: none (the default: a near miss is another person as often as not)."""


@dataclass(frozen=True, slots=True)
class Agency:
    code: str
    name: str
    certificate_subject: str
    affairs: Mapping[str, Affair]
    certificate_issuer: str = ""
    """SHA-256 fingerprint (hex) of the CA certificate that issues the agency's certificates."""
    key_pins: frozenset[str] = frozenset()
    """SHA-256 (hex) of each public key the agency's certificate may hold; empty: any."""


@dataclass(frozen=True, slots=True)
class Municipality:
    """A municipality (市町村) that submits changes for the residents it holds and receives the
    move-in notices owed to it, matched by its client certificate as an agency is."""

    code: str
    """全国地方公共団体コード, 6 digits with the check digit: its changes are recorded under it."""
    name: str
    certificate_subject: str
    certificate_issuer: str = ""
    key_pins: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Grant:
    """What one request is allowed: the checked affair, mode, and the fields it will disclose."""

    agency: Agency
    affair: Affair
    mode: str  # "verify", "retrieve" or "verify+retrieve"
    claimed: tuple[str, ...]
    retrieved: tuple[str, ...]
    level: str = "exact"
    """The match level the claims are verified at."""

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field the reply discloses something about."""
        return tuple(dict.fromkeys(self.claimed + self.retrieved))

    @property
    def audit_mode(self) -> str:
        """The mode as the audit trail records it: with the match level where it is not exact
        (`verify@normalised`), since it says how much a yes reveals."""
        return self.mode if self.level == "exact" else f"{self.mode}@{self.level}"


class Policy:
    """A loaded policy file. Immutable; the server swaps in a new one on reload."""

    def __init__(
        self,
        agencies: Iterable[Agency],
        source: str = "<memory>",
        authorities: Mapping[str, str] | None = None,
        municipalities: Iterable[Municipality] = (),
    ) -> None:
        self.source = source
        self.authorities = dict(authorities or {})
        """{name: SHA-256 fingerprint} of the CAs the policy binds agencies to."""
        self._by_identity: dict[tuple[str, str], Agency] = {}
        self._municipalities: dict[tuple[str, str], Municipality] = {}
        # One certificate names one caller: an agency and a municipality never share one.
        named: dict[tuple[str, str], Agency | Municipality] = {}
        callers: list[Agency | Municipality] = [*agencies, *municipalities]
        for caller in callers:
            identity = (caller.certificate_issuer, caller.certificate_subject)
            other = named.get(identity)
            if other is not None:
                pair = (
                    f"agencies '{other.code}' and '{caller.code}'"
                    if isinstance(other, Agency) and isinstance(caller, Agency)
                    else f"{_kind(other)} '{other.code}' and {_kind(caller)} '{caller.code}'"
                )
                raise PolicyError(
                    f"{source}: {pair} share the certificate subject "
                    f"'{caller.certificate_subject}' from one CA"
                )
            named[identity] = caller
            if isinstance(caller, Agency):
                self._by_identity[identity] = caller
            else:
                self._municipalities[identity] = caller

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Policy:
        """Read and check a policy file; every mistake is named with its agency and entry."""
        source = os.fspath(path)
        try:
            with open(path, "rb") as f:
                document = tomllib.load(f)
        except OSError as e:
            raise PolicyError(f"policy {source}: {e.strerror or e}") from e
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            # TOML is UTF-8; a file saved as Shift_JIS is named here, not raised as a crash.
            raise PolicyError(f"policy {source}: not valid TOML (UTF-8): {e}") from e
        return cls.from_dict(document, source)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], source: str = "<memory>") -> Policy:
        unknown = set(document) - {"agency", "certificate_authorities", "municipality"}
        if unknown:
            raise PolicyError(f"policy {source}: unknown top-level keys {sorted(unknown)}")
        authorities = _authorities(document.get("certificate_authorities", {}), source)
        agencies = document.get("agency", [])
        if not isinstance(agencies, list):
            raise PolicyError(f"policy {source}: 'agency' must be an array of tables")
        seen: set[str] = set()
        parsed = []
        for i, entry in enumerate(agencies):
            agency = _agency(entry, f"policy {source}: agency #{i + 1}", authorities)
            if agency.code in seen:
                raise PolicyError(f"policy {source}: agency '{agency.code}' is listed twice")
            seen.add(agency.code)
            parsed.append(agency)
        entries = document.get("municipality", [])
        if not isinstance(entries, list):
            raise PolicyError(f"policy {source}: 'municipality' must be an array of tables")
        municipalities: dict[str, Municipality] = {}
        for i, entry in enumerate(entries):
            m = _municipality(entry, f"policy {source}: municipality #{i + 1}", authorities)
            if m.code in municipalities:
                raise PolicyError(f"policy {source}: municipality '{m.code}' is listed twice")
            municipalities[m.code] = m
        return cls(parsed, source, authorities, municipalities.values())

    @property
    def agencies(self) -> list[Agency]:
        return list(self._by_identity.values())

    @property
    def municipalities(self) -> list[Municipality]:
        return list(self._municipalities.values())

    def municipality_for(self, subject: str, issuer: str, key: str = "") -> Municipality:
        """The municipality a certificate names (as `agency_for`); NotPermitted if none."""
        municipality = self._municipalities.get((issuer, subject))
        if municipality is None:
            raise NotPermitted(f"certificate subject '{subject}' is not a registered municipality")
        if municipality.key_pins and key not in municipality.key_pins:
            raise NotPermitted(
                f"certificate subject '{subject}' holds a key not pinned for municipality "
                f"'{municipality.code}'"
            )
        return municipality

    def agency(self, code: str) -> Agency:
        """The agency with this code; KeyError if there is none."""
        for agency in self._by_identity.values():
            if agency.code == code:
                return agency
        raise KeyError(code)

    def agency_for(self, subject: str, issuer: str, key: str = "") -> Agency:
        """The agency a certificate names: its subject as issued by the CA with fingerprint
        `issuer`, holding a pinned key where the agency pins keys. NotPermitted if none."""
        agency = self._by_identity.get((issuer, subject))
        if agency is None:
            raise NotPermitted(f"certificate subject '{subject}' is not a registered agency")
        if agency.key_pins and key not in agency.key_pins:
            raise NotPermitted(
                f"certificate subject '{subject}' holds a key not pinned for agency '{agency.code}'"
            )
        return agency

    def authorize(
        self,
        agency: Agency,
        affair_code: str,
        key: str,
        claimed: Iterable[str] = (),
        retrieve: Iterable[str] = (),
        level: str = "exact",
    ) -> Grant:
        """Check one request against the policy; NotPermitted names what is not granted.

        `claimed` are the fields a verify request compares (each reveals a bit of the field, so
        each must be allowed); `retrieve` are the fields to disclose; `level` is how closely
        claims must agree (one of `names.LEVELS`; above exact only where the affair allows it).
        """
        affair = _affair_of(agency, affair_code)
        claimed, retrieve = tuple(claimed), tuple(retrieve)
        if key not in affair.keys:
            raise NotPermitted(f"affair '{affair.code}' may not be queried by {key}")
        modes = [m for m, asked in (("verify", claimed), ("retrieve", retrieve)) if asked]
        if not modes:
            # A bare existence check is a verification of the key alone.
            modes = ["verify"]
        for mode in modes:
            if mode not in affair.modes:
                raise NotPermitted(f"affair '{affair.code}' does not allow {mode}")
        for field in claimed:
            if field not in CLAIMABLE:
                raise NotPermitted(
                    f"field '{field}' cannot be claimed: claims may compare {', '.join(CLAIMABLE)}"
                )
        _check_fields(affair, (*claimed, *retrieve))
        _check_level(affair, level)
        return Grant(agency, affair, "+".join(modes), claimed, _in_schema_order(retrieve), level)

    def authorize_search(
        self,
        agency: Agency,
        affair_code: str,
        facts: Iterable[str],
        fields: Iterable[str],
        level: str | None = None,
    ) -> Grant:
        """Check a 4情報 search: the affair grants the search mode, every fact compared and
        every field disclosed, and the match level (None: normalised where the affair allows
        it, else exact)."""
        affair = _affair_of(agency, affair_code)
        if "search" not in affair.modes:
            raise NotPermitted(f"affair '{affair.code}' does not allow search")
        facts, fields = tuple(facts), tuple(fields)
        _check_fields(affair, (*facts, *fields))
        if level is None:
            level = "normalised" if "normalised" in affair.match_levels else "exact"
        _check_level(affair, level)
        return Grant(agency, affair, "search", facts, _in_schema_order(fields), level)

    def authorize_subscription(
        self, agency: Agency, affair_code: str, key: str | None = None
    ) -> Grant:
        """Check a subscription: the affair grants the subscribe mode and discloses an
        identifier it may be queried by (each change delivered names the resident by it) —
        `key`, for a watch list kept by that key. The grant's fields are the affair's: what a
        delivered change may carry."""
        affair = _affair_of(agency, affair_code)
        if "subscribe" not in affair.modes:
            raise NotPermitted(f"affair '{affair.code}' does not allow subscribe")
        if key is not None:
            if key not in affair.keys:
                raise NotPermitted(f"affair '{affair.code}' may not be queried by {key}")
            _check_fields(affair, (key,))
        elif not any(k in affair.keys and k in affair.fields for k in KEYS):
            raise NotPermitted(
                f"affair '{affair.code}' discloses no identifier it may be queried by: a "
                "subscription could not name the residents it is told of"
            )
        return Grant(agency, affair, "subscribe", (), affair.fields)


def _kind(caller: Agency | Municipality) -> str:
    return "agency" if isinstance(caller, Agency) else "municipality"


def _affair_of(agency: Agency, affair_code: str) -> Affair:
    """The agency's affair, or NotPermitted listing the ones it holds."""
    affair = agency.affairs.get(affair_code)
    if affair is None:
        held = ", ".join(sorted(agency.affairs)) or "none"
        raise NotPermitted(
            f"agency '{agency.code}' is not granted the affair '{affair_code}' (it holds: {held})"
            if affair_code
            else f"the request names no affair (agency '{agency.code}' holds: {held})"
        )
    return affair


def _check_fields(affair: Affair, fields: Iterable[str]) -> None:
    for field in fields:
        if field not in affair.fields:
            raise NotPermitted(f"affair '{affair.code}' does not disclose the field '{field}'")


def _check_level(affair: Affair, level: str) -> None:
    if level not in affair.match_levels:
        allowed = ", ".join(lv for lv in LEVELS if lv in affair.match_levels)
        raise NotPermitted(
            f"affair '{affair.code}' does not allow the {level} match level (it allows: {allowed})"
        )


def _in_schema_order(fields: Iterable[str]) -> tuple[str, ...]:
    wanted = set(fields)
    return tuple(c for c in Registry.column_names() if c in wanted)


def _strings(value: Any, where: str, allowed: Iterable[str] | None = None) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where} must be a list of strings")
    if allowed is not None:
        allowed = tuple(allowed)
        bad = [v for v in value if v not in allowed]
        if bad:
            raise PolicyError(f"{where}: unknown {bad}, expected any of {list(allowed)}")
    return value


def _text(entry: Mapping[str, Any], name: str, where: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(f"{where}: '{name}' must be a non-empty string")
    return value


def _authorities(table: Any, source: str) -> dict[str, str]:
    where = f"policy {source}: 'certificate_authorities'"
    if not isinstance(table, dict):
        raise PolicyError(f"{where} must be a table of name = SHA-256 fingerprint")
    authorities = {}
    for name, value in table.items():
        if not isinstance(value, str):
            raise PolicyError(f"{where}: '{name}' must be a string")
        fingerprint = value.replace(":", "").lower()
        if not _SHA256.fullmatch(fingerprint):
            raise PolicyError(
                f"{where}: '{name}' must be the SHA-256 fingerprint of the CA's certificate "
                f"(64 hex digits, colons allowed), not {value!r}"
            )
        authorities[name] = fingerprint
    return authorities


def _pins(value: Any, where: str) -> frozenset[str]:
    pins = _strings(value, where)
    bad = [p for p in pins if not _SHA256.fullmatch(p.replace(":", "").lower())]
    if bad:
        raise PolicyError(f"{where}: {bad} are not SHA-256 digests (64 hex digits)")
    # Counted once normalised: the same key written twice is one pin.
    distinct = frozenset(p.replace(":", "").lower() for p in pins)
    if len(distinct) == 1:
        raise PolicyError(
            f"{where}: pin two different keys or more (the current and the next), or none"
        )
    return distinct


def _agency(entry: Any, where: str, authorities: Mapping[str, str]) -> Agency:
    if not isinstance(entry, dict):
        raise PolicyError(f"{where} must be a table")
    known = {"code", "name", "certificate_subject", "certificate_issuer", "key_pins", "affair"}
    unknown = set(entry) - known
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(unknown)}")
    code = _text(entry, "code", where)
    where = f"{where.rsplit(': ', 1)[0]}: agency '{code}'"
    affairs: dict[str, Affair] = {}
    entries = entry.get("affair", [])
    if not isinstance(entries, list):
        raise PolicyError(f"{where}: 'affair' must be an array of tables")
    for a in entries:
        affair = _affair(a, f"{where}, affair #{len(affairs) + 1}")
        if affair.code in affairs:
            raise PolicyError(f"{where}: affair '{affair.code}' is listed twice")
        affairs[affair.code] = affair
    subject, issuer, pins = _certificate(entry, where, authorities)
    return Agency(code, _text(entry, "name", where), subject, affairs, issuer, pins)


def _certificate(
    entry: Mapping[str, Any], where: str, authorities: Mapping[str, str]
) -> tuple[str, str, frozenset[str]]:
    """A caller's certificate binding: canonical subject, issuing CA's fingerprint, key pins."""
    # Imported here: `cryptography` is a slow import that `import juki_engine` need not pay.
    from juki_engine.certs import canonical_subject

    try:
        subject = canonical_subject(_text(entry, "certificate_subject", where))
    except ValueError as e:
        raise PolicyError(f"{where}: 'certificate_subject': {e}") from e
    issuer = _text(entry, "certificate_issuer", where)
    if issuer not in authorities:
        raise PolicyError(
            f"{where}: 'certificate_issuer' '{issuer}' is not one of the policy's "
            f"certificate_authorities {sorted(authorities)}"
        )
    pins = _pins(entry.get("key_pins", []), f"{where}: 'key_pins'")
    return subject, authorities[issuer], pins


def _municipality(entry: Any, where: str, authorities: Mapping[str, str]) -> Municipality:
    if not isinstance(entry, dict):
        raise PolicyError(f"{where} must be a table")
    known = {"code", "name", "certificate_subject", "certificate_issuer", "key_pins"}
    unknown = set(entry) - known
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(unknown)}")
    code = _text(entry, "code", where)
    where = f"{where.rsplit(': ', 1)[0]}: municipality '{code}'"
    if not is_valid("local_government_code", code):
        raise PolicyError(
            f"{where}: 'code' must be a 全国地方公共団体コード: 6 digits, the last its check digit"
        )
    subject, issuer, pins = _certificate(entry, where, authorities)
    return Municipality(code, _text(entry, "name", where), subject, issuer, pins)


# Withholding an access from the resident for longer than the trail keeps it would hide it for
# good; ten years bounds a typo.
MAX_WITHHELD_DAYS = 3653
#: The most partial candidates an affair may be granted per search that finds no one.
MAX_PARTIAL_CANDIDATES = 10


def _affair(entry: Any, where: str) -> Affair:
    if not isinstance(entry, dict):
        raise PolicyError(f"{where} must be a table")
    known = {
        "code",
        "title",
        "legal_basis",
        "keys",
        "modes",
        "fields",
        "daily_quota",
        "match_levels",
        "subscribe_reasons",
        "withheld_from_residents_days",
        "search_partial_candidates",
    }
    unknown = set(entry) - known
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(unknown)}")
    code = _text(entry, "code", where)
    where = f"{where.rsplit(', ', 1)[0]}, affair '{code}'"
    quota = _whole(entry, "daily_quota", None, where, "a whole number ≥ 0 (0: unlimited)")
    fields = _strings(entry.get("fields", []), f"{where}: 'fields'", Registry.column_names())
    levels = _strings(entry.get("match_levels", []), f"{where}: 'match_levels'", LEVELS)
    modes = frozenset(_strings(entry.get("modes"), f"{where}: 'modes'", MODES))
    reasons = frozenset(
        _strings(
            entry.get("subscribe_reasons", []), f"{where}: 'subscribe_reasons'", CHANGE_REASONS
        )
    )
    withheld = _whole(
        entry,
        "withheld_from_residents_days",
        MAX_WITHHELD_DAYS,
        where,
        f"a whole number of days from 0 to {MAX_WITHHELD_DAYS} (0: residents see these "
        "accesses at once)",
    )
    partial = _whole(
        entry,
        "search_partial_candidates",
        MAX_PARTIAL_CANDIDATES,
        where,
        f"a whole number from 0 to {MAX_PARTIAL_CANDIDATES} (0: a search that finds no one "
        "discloses no one)",
    )
    if partial and "search" not in modes:
        raise PolicyError(
            f"{where}: 'search_partial_candidates' needs the search mode, which the affair lacks"
        )
    if ("subscribe" in modes) != bool(reasons):
        raise PolicyError(
            f"{where}: the subscribe mode and 'subscribe_reasons' go together: list the change "
            "reasons a subscription is told of"
        )
    return Affair(
        code=code,
        title=_text(entry, "title", where),
        legal_basis=_text(entry, "legal_basis", where),
        keys=frozenset(_strings(entry.get("keys"), f"{where}: 'keys'", KEYS)),
        modes=modes,
        fields=_in_schema_order(fields),
        daily_quota=quota,
        match_levels=frozenset({"exact", *levels}),
        subscribe_reasons=reasons,
        withheld_from_residents_days=withheld,
        search_partial_candidates=partial,
    )


def _whole(entry: dict[str, Any], key: str, most: int | None, where: str, what: str) -> int:
    """`entry[key]` (default 0): a whole number from 0 to `most` (None: no bound), or an error
    saying it must be `what`."""
    value = entry.get(key, 0)
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < 0
        or (most is not None and value > most)
    ):
        raise PolicyError(f"{where}: '{key}' must be {what}")
    return value


def example_path() -> Path:
    """The shipped example policy (住基法 別表第一 rows for national agencies, one local row)."""
    return Path(str(resources.files("juki_engine") / "data" / "policy.example.toml"))


class Quotas:
    """Records answered per agency and affair today (Japan time), against each daily quota.

    A record counts once answered, whatever the answer (disclosed, not found, invalid key): each
    is a question the agency asked of the registry. Thread-safe. The server reserves before it
    works and seeds the counts from the audit trail at start (`audit.counts_since` counts the
    same outcomes), so a restart does not reset a day's count. Counts are per server: a
    deployment of several servers gives each its share of an affair's quota (see docs).
    """

    def __init__(self, used: Mapping[tuple[str, str], int] | None = None) -> None:
        self._lock = threading.Lock()
        self._day = today()
        self._used: dict[tuple[str, str], int] = dict(used or {})

    def take(self, grant: Grant, records: int) -> None:
        """Count `records` against the grant's quota, or raise QuotaExhausted and count none."""
        if records < 0:
            raise ValueError(f"records must be ≥ 0, not {records}")
        key = (grant.agency.code, grant.affair.code)
        limit = grant.affair.daily_quota
        with self._lock:
            self._roll()
            used = self._used.get(key, 0)
            if limit and used + records > limit:
                raise QuotaExhausted(
                    f"affair '{grant.affair.code}' of agency '{grant.agency.code}': the daily "
                    f"quota of {limit:,} records is spent ({used:,} used, {records:,} asked)"
                )
            self._used[key] = used + records

    def give_back(self, grant: Grant, records: int) -> None:
        """Return records taken for work that was not done (a refused or failed call)."""
        key = (grant.agency.code, grant.affair.code)
        with self._lock:
            self._roll()
            self._used[key] = max(0, self._used.get(key, 0) - records)

    def today(self) -> dict[tuple[str, str], int]:
        """{(agency, affair): records counted today}: what the metrics show."""
        with self._lock:
            self._roll()
            return dict(self._used)

    def used(self, agency: str, affair: str) -> int:
        with self._lock:
            self._roll()
            return self._used.get((agency, affair), 0)

    def _roll(self) -> None:
        day = today()
        if day != self._day:
            self._day, self._used = day, {}


def today() -> dt.date:
    """The date in Japan, where quotas are counted."""
    return dt.datetime.now(JST).date()


def start_of_today() -> dt.datetime:
    """Midnight in Japan today, as an aware datetime."""
    return dt.datetime.combine(today(), dt.time(0), JST)
