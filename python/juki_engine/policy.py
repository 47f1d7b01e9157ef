"""The purpose policy: which agency may ask for which affairs (事務), by which keys, in which modes,
for which fields, and how many records a day. Deny by default.

The policy is a TOML file the operator writes (an example ships as `policy.example.toml`); the
server loads it at start and again on SIGHUP. An agency is matched by its client certificate's
subject, never by anything the client says about itself.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from juki_engine._core import JukiError
from juki_engine.registry import Registry

KEYS = ("my_number", "resident_code")
MODES = ("verify", "retrieve")
# Fields a claim can carry (verify mode); retrieve mode may disclose any public column.
CLAIMABLE = tuple(Registry.claimable_columns())
JST = dt.timezone(dt.timedelta(hours=9), "JST")


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


@dataclass(frozen=True, slots=True)
class Agency:
    code: str
    name: str
    certificate_subject: str
    affairs: Mapping[str, Affair]


@dataclass(frozen=True, slots=True)
class Grant:
    """What one request is allowed: the checked affair, mode, and the fields it will disclose."""

    agency: Agency
    affair: Affair
    mode: str  # "verify", "retrieve" or "verify+retrieve"
    claimed: tuple[str, ...]
    retrieved: tuple[str, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field the reply discloses something about."""
        return tuple(dict.fromkeys(self.claimed + self.retrieved))


class Policy:
    """A loaded policy file. Immutable; the server swaps in a new one on reload."""

    def __init__(self, agencies: Iterable[Agency], source: str = "<memory>") -> None:
        self.source = source
        self._by_subject: dict[str, Agency] = {}
        for agency in agencies:
            if agency.certificate_subject in self._by_subject:
                other = self._by_subject[agency.certificate_subject].code
                raise PolicyError(
                    f"{source}: agencies '{other}' and '{agency.code}' share the certificate "
                    f"subject '{agency.certificate_subject}'"
                )
            self._by_subject[agency.certificate_subject] = agency

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
        unknown = set(document) - {"agency"}
        if unknown:
            raise PolicyError(f"policy {source}: unknown top-level keys {sorted(unknown)}")
        agencies = document.get("agency", [])
        if not isinstance(agencies, list):
            raise PolicyError(f"policy {source}: 'agency' must be an array of tables")
        seen: set[str] = set()
        parsed = []
        for i, entry in enumerate(agencies):
            agency = _agency(entry, f"policy {source}: agency #{i + 1}")
            if agency.code in seen:
                raise PolicyError(f"policy {source}: agency '{agency.code}' is listed twice")
            seen.add(agency.code)
            parsed.append(agency)
        return cls(parsed, source)

    @property
    def agencies(self) -> list[Agency]:
        return list(self._by_subject.values())

    def agency_for(self, certificate_subject: str) -> Agency:
        """The agency holding a certificate with this subject; NotPermitted if none does."""
        agency = self._by_subject.get(certificate_subject)
        if agency is None:
            raise NotPermitted(
                f"certificate subject '{certificate_subject}' is not a registered agency"
            )
        return agency

    def authorize(
        self,
        agency: Agency,
        affair_code: str,
        key: str,
        claimed: Iterable[str] = (),
        retrieve: Iterable[str] = (),
    ) -> Grant:
        """Check one request against the policy; NotPermitted names what is not granted.

        `claimed` are the fields a verify request compares (each reveals a bit of the field, so
        each must be allowed); `retrieve` are the fields to disclose.
        """
        affair = agency.affairs.get(affair_code)
        if affair is None:
            raise NotPermitted(
                f"agency '{agency.code}' is not granted the affair '{affair_code}'"
                if affair_code
                else "the request names no affair"
            )
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
                raise NotPermitted(f"field '{field}' cannot be claimed (verify takes {CLAIMABLE})")
        for field in (*claimed, *retrieve):
            if field not in affair.fields:
                raise NotPermitted(f"affair '{affair.code}' does not disclose the field '{field}'")
        return Grant(agency, affair, "+".join(modes), claimed, _in_schema_order(retrieve))


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


def _agency(entry: Any, where: str) -> Agency:
    if not isinstance(entry, dict):
        raise PolicyError(f"{where} must be a table")
    unknown = set(entry) - {"code", "name", "certificate_subject", "affair"}
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
    # Imported here: `cryptography` is a slow import that `import juki_engine` need not pay.
    from juki_engine.certs import canonical_subject

    try:
        subject = canonical_subject(_text(entry, "certificate_subject", where))
    except ValueError as e:
        raise PolicyError(f"{where}: 'certificate_subject': {e}") from e
    return Agency(code, _text(entry, "name", where), subject, affairs)


def _affair(entry: Any, where: str) -> Affair:
    if not isinstance(entry, dict):
        raise PolicyError(f"{where} must be a table")
    known = {"code", "title", "legal_basis", "keys", "modes", "fields", "daily_quota"}
    unknown = set(entry) - known
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(unknown)}")
    code = _text(entry, "code", where)
    where = f"{where.rsplit(', ', 1)[0]}, affair '{code}'"
    quota = entry.get("daily_quota", 0)
    if not isinstance(quota, int) or isinstance(quota, bool) or quota < 0:
        raise PolicyError(f"{where}: 'daily_quota' must be a whole number ≥ 0 (0: unlimited)")
    fields = _strings(entry.get("fields", []), f"{where}: 'fields'", Registry.column_names())
    return Affair(
        code=code,
        title=_text(entry, "title", where),
        legal_basis=_text(entry, "legal_basis", where),
        keys=frozenset(_strings(entry.get("keys"), f"{where}: 'keys'", KEYS)),
        modes=frozenset(_strings(entry.get("modes"), f"{where}: 'modes'", MODES)),
        fields=_in_schema_order(fields),
        daily_quota=quota,
    )


def example_path() -> Path:
    """The shipped example policy (住基法 別表第一 rows for national agencies, one local row)."""
    return Path(str(resources.files("juki_engine") / "data" / "policy.example.toml"))


class Quotas:
    """Records disclosed per agency and affair today (Japan time), against each daily quota.

    Thread-safe. The server seeds it from the audit trail at start, so a restart does not reset
    a day's count.
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
