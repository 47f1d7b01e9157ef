"""The `Registry`: the typed Python API over the Rust core (本人確認情報 in Arrow columns).

Keys and claims cross into Rust through the Arrow PyCapsule interface, so pyarrow, Polars and
DuckDB results all work; numpy integer arrays take a zero-copy fast path. Every heavy call runs in
Rust with the GIL released.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from juki_engine import _core

KeyKind = str  # "my_number" | "resident_code"


def _as_key_array(keys: Any) -> pa.Array:
    """Turn the accepted key containers into one Arrow array without copying where possible."""
    if isinstance(keys, pa.ChunkedArray):
        return keys.combine_chunks()
    if isinstance(keys, pa.Array):
        return keys
    if isinstance(keys, np.ndarray):
        if keys.ndim != 1:
            raise _core.InvalidInput(f"keys must be one-dimensional, got shape {keys.shape}")
        if keys.dtype.kind in "iu":
            return pa.array(keys)
        if keys.dtype.kind in "UO":
            return pa.array(keys.tolist(), type=pa.string())
        raise _core.InvalidInput(f"numpy keys must be integers or strings, not {keys.dtype}")
    if hasattr(keys, "__arrow_c_array__"):
        return pa.array(keys)
    if hasattr(keys, "__arrow_c_stream__"):
        return pa.chunked_array(keys).combine_chunks()
    if isinstance(keys, Sequence) and not isinstance(keys, str | bytes):
        if all(k is None or isinstance(k, str) for k in keys):
            return pa.array(keys, type=pa.string())
        raise _core.InvalidInput(
            "a key list must hold only str or None (identifiers are strings: leading zeros matter)"
        )
    raise _core.InvalidInput(
        f"keys must be a list of str, a pyarrow array or a numpy array, not {type(keys).__name__}"
    )


_EPOCH = dt.date(1970, 1, 1)


def _days(day: dt.date) -> int:
    if isinstance(day, dt.datetime) or not isinstance(day, dt.date):
        raise _core.InvalidInput(f"a date must be a datetime.date, not {type(day).__name__}")
    return (day - _EPOCH).days


def _micros(moment: dt.datetime) -> int:
    if not isinstance(moment, dt.datetime) or moment.tzinfo is None:
        raise _core.InvalidInput("recorded_as_of must be a timezone-aware datetime.datetime")
    return int(moment.timestamp() * 1_000_000)


def _cut(
    as_of: dt.date | None, recorded_as_of: dt.datetime | None
) -> tuple[int | None, int | None]:
    """The as-of date and recorded-as-of time as the core takes them (days, microseconds)."""
    return (
        _days(as_of) if as_of is not None else None,
        _micros(recorded_as_of) if recorded_as_of is not None else None,
    )


def _as_table(claims: Any) -> pa.Table | _core.Claims:
    if isinstance(claims, pa.Table | _core.Claims):  # Claims: decoded by the core from the wire
        return claims
    if isinstance(claims, pa.RecordBatch):
        return pa.Table.from_batches([claims])
    if isinstance(claims, dict):
        return pa.table(claims)
    if hasattr(claims, "__arrow_c_stream__"):
        return pa.table(claims)
    raise _core.InvalidInput(
        f"claims must be an Arrow table (pyarrow, Polars, DuckDB …), not {type(claims).__name__}"
    )


class Registry:
    """The resident registry (住民基本台帳) held in memory, indexed by My Number and resident code.

    Immutable once built; safe to share between threads.
    """

    __slots__ = ("_core",)

    def __init__(self, core: _core.Registry) -> None:
        self._core = core

    @classmethod
    def generate(
        cls, population: int | None = None, seed: int = 0, prefecture: str | None = None
    ) -> Registry:
        """Generate a synthetic registry, deterministic for `seed`.

        `population=None` takes the real population of the area: the nation (128,066,211) or the
        named prefecture (e.g. 富山県: 1,080,160, whose My Number card states reproduce the
        prefecture's published 2017 figures per municipality).
        """
        from juki_engine import synthetic

        plan = synthetic.build_plan(population, prefecture)
        return cls(
            _core.Registry.generate(
                plan.municipalities, plan.towns, plan.family_names, plan.given_names, seed=seed
            )
        )

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, mmap: bool = False, log: str | None = None
    ) -> Registry:
        """Open a snapshot directory. `mmap=True` maps the column files instead of loading them
        (the indexes, probed at random, are read into huge pages either way). `log`: the file
        name of its change log in the directory (`changes.log`; a shard's replica keeps its
        own beside the others')."""
        return cls(_core.Registry.open(os.fspath(path), mmap=mmap, log=log))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save atomically: a crash mid-save leaves the previous snapshot intact. The snapshot
        keeps the 4情報 search index of the normalised level, which the first search after
        opening it reads instead of building (docs/operations.md)."""
        from juki_engine import names

        names.install()
        self._core.save(os.fspath(path))

    @classmethod
    def from_arrow(cls, table: Any) -> Registry:
        """Build from an Arrow table of the public schema; bad rows are named in the error."""
        return cls(_core.Registry.from_arrow(_as_table(table)))

    def to_arrow(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The registry as it stands, as a table of the public schema: zero-copy but for the
        identifiers while no change has been applied since it was opened; after changes, the
        columns asked for are folded (changed rows with their current values, persons created
        appended at their ids), as a checkpoint writes them."""
        return self._core.to_arrow(list(columns) if columns is not None else None)

    def lookup(
        self,
        keys: Any,
        by: KeyKind = "my_number",
        columns: Sequence[str] | None = None,
        *,
        as_of: dt.date | None = None,
        recorded_as_of: dt.datetime | None = None,
    ) -> pa.Table:
        """One row per key, in input order: `found`, `error` (why a key was rejected),
        `replaced` (the key is an identifier the resident no longer holds: 住民票コード変更,
        個人番号変更) and the requested columns (all by default), null where not found. Keys are
        strings (utf8, large_utf8, utf8_view or a dictionary of them) or integers, validated in
        full first; dictionary columns carry only the values of the residents answered.

        `as_of` answers from the values in force on that date (a resident born after it is not
        found); `recorded_as_of` from what the registry held at that moment, before later
        reports and corrections (docs/changes.md). Each call sees one moment: changes applied
        while it runs are seen entirely or not at all."""
        return self._core.lookup(
            _as_key_array(keys),
            by,
            list(columns) if columns is not None else None,
            *_cut(as_of, recorded_as_of),
        )

    def verify(
        self,
        claims: Any,
        by: KeyKind = "my_number",
        *,
        first_row: int = 0,
        columns: Sequence[str] = (),
        match: str = "exact",
        as_of: dt.date | None = None,
        recorded_as_of: dt.datetime | None = None,
    ) -> pa.Table:
        """Check claimed fields against the registry (本人確認): per claim, in input order,
        `found`, `status`, `error` and one `<field>_match` per claimed field, then the requested
        `columns` of each found resident (null elsewhere), from the same index probe.

        `match` is how closely a claimed text must agree (docs/matching.md): `exact` (the
        bytes), `normalised` (width, spaces and character variants folded: 髙橋 = 高橋, 山﨑 =
        山崎, 渡邉 = 渡辺) or `reading` (also kana forms: さとう = サトウ = ｻﾄｳ, ッ = ツ, ヂ = ジ).
        Above `exact`, each claimed field also gets `<field>_level`: the closest level it agrees
        at (exact, normalised, reading) or none. Dates and sex agree exactly or not at all.

        Every column is validated in full (offsets, UTF-8, dictionary keys, views) before it is
        read, and must have one of the contract's types, else `InvalidInput` names the column
        and its type:

        - the key (`by`): utf8, large_utf8, utf8_view, a dictionary of those, or any integer;
        - family_name, family_name_kana, given_name, given_name_kana, municipality_code:
          utf8, large_utf8, utf8_view, a dictionary of those, or null (claims nothing);
        - birth_date: date32, or null;
        - sex: any integer type (1 = male, 2 = female), or null.

        A rejected key's `error` names its row and repeats at most 32 characters of it. The
        result's dictionary columns (names, readings, address parts) carry only the values of
        the residents answered, never the registry's whole dictionaries.

        `first_row` numbers the rows in error messages when `claims` is one batch of a larger
        job. `as_of` and `recorded_as_of` are as in `lookup`; so is the `replaced` column."""
        if match != "exact":
            from juki_engine import names

            names.install()
        return self._core.verify(
            _as_table(claims), by, first_row, list(columns), match, *_cut(as_of, recorded_as_of)
        )

    def search(
        self, claims: Any, *, match: str = "normalised", columns: Sequence[str] = ()
    ) -> pa.Table:
        """Find residents by the four basic facts (4情報) when no identifier is at hand.

        Each claim (a row of `claims`) gives `family_name`, `given_name` and `birth_date`
        (date32), and may add `sex` and `municipality_code`. Names are compared at `match`:
        `normalised` (the default: 髙橋 = 高橋, spaces and widths ignored, docs/matching.md) or
        `exact`. One row per candidate, in claim order, most facts agreeing first:

        - `claim`: the claim's row;
        - `outcome`: `unique` when exactly one resident agrees on every supplied fact,
          `ambiguous` when two or more do (all are listed: never a guess), `not_found` when none
          does (residents sharing the name and birth date but not every other fact are still
          listed, ranked by `agreed`);
        - `candidates`: how many residents agree on every supplied fact;
        - `agreed`: how many of the claim's supplied facts this candidate agrees on;
        - then the requested `columns` of the candidate (null on a claim's row with none).

        The index (1 GiB for the nation) is built on first use per level."""
        if match != "exact":
            from juki_engine import names

            names.install()
        return self._core.search(_as_table(claims), match, list(columns))

    def verify_one(
        self,
        key: str,
        by: KeyKind = "my_number",
        claims: Mapping[str, str | int] | None = None,
        *,
        columns: Sequence[str] = (),
        match: str = "exact",
        as_of: dt.date | None = None,
        recorded_as_of: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """`verify` for a single claim given as Python values, as a typed call asks it: the
        result row as a dict. Dates and the registry's names and codes come back as text (dates
        ISO 8601), `sex` as an int, the rest as in `verify` (`match` included). No Arrow
        crosses the boundary, which for one row costs more than the check itself."""
        if match != "exact":
            from juki_engine import names

            names.install()
        return self._core.verify_one(
            by,
            key,
            list((claims or {}).items()),
            list(columns),
            match,
            *_cut(as_of, recorded_as_of),
        )

    def apply(self, changes: Any, *, today: dt.date | None = None, first_row: int = 0) -> pa.Table:
        """Apply municipal changes (異動): any Arrow table of change records (docs/changes.md).

        One result row per change, in input order: `outcome` (`applied`; `duplicate`, for a
        (municipality, sequence) seen before, which changes nothing and gives the first result
        again; `rejected`, with a `code` — `invalid`, `not_found`, `not_permitted` or `conflict`
        — and an `error` naming the row, the reason, the field and what was wrong), and the
        resident's `resident_code` and `my_number` after the change (a birth's new
        identifiers). Rejected rows change nothing; the rest apply.

        Returns once the batch is durable in the change log beside the snapshot (a registry
        opened from one; a generated registry holds its changes in memory only). Queries keep
        running meanwhile and see the batch entirely or not at all. `today` (default: today,
        UTC) is the date effective and reported dates may not pass; `first_row` numbers the
        rows in errors (a stream's rows after its earlier messages')."""
        return self._apply(changes, today, first_row)

    def _apply(
        self,
        changes: Any,
        today: dt.date | None = None,
        first_row: int = 0,
        numbers: Sequence[int] | None = None,
        recorded: int | None = None,
        rows: Sequence[int] | None = None,
    ) -> pa.Table:
        """`apply`; `numbers`: for a shard of a sharded registry, each row's change number in
        the whole registry (ascending, past every change this shard holds), given by its front
        end so that every shard's notices and change feeds merge in order. A registry numbered
        so takes numbered batches only, and one that numbers its changes itself, unnumbered
        ones only. `recorded`: the batch's commit time (µs since the epoch; it still follows
        the last batch's), given by a front end so that a shard's replicas record the same.
        `rows`: each row's number in the table a front end split (messages name it, instead of
        `first_row` on)."""
        return self._core.apply(
            _as_table(changes),
            _days(today) if today is not None else None,
            first_row,
            None if numbers is None else list(numbers),
            recorded,
            None if rows is None else list(rows),
        )

    def _last_change(self) -> int:
        """The number of the newest change (0 if none): where a shard's front end resumes."""
        return self._core._last_change()

    def _last_record(self) -> tuple[int, int] | None:
        """The batch and xxh3 of the last change log record written or redone since the
        registry was opened (None: none): a shard's replicas in step hold the same."""
        return self._core._last_record()

    def _last_batch(self) -> int:
        """The newest batch applied (0 if none): how far a shard's replica has come."""
        return self._core._last_batch()

    def _log_since(self, batch: int) -> list[bytes]:
        """The change log's records (durable) of the batches after `batch`: what a replica of
        the same shard that stopped at `batch` lacks."""
        return self._core._log_since(batch)

    def _log_covered(self, batch: int) -> None:
        """Empty this replica's change log: its shard's snapshot holds every batch up to
        `batch` now (its own replica checkpointed), and this registry holds none past it."""
        self._core._log_covered(batch)

    def _redo_shipped(self, records: list[bytes]) -> int:
        """Redo records another replica of the same shard shipped (`_log_since`): each checked
        as the change log's own are, made durable in this registry's log, then seen; they must
        continue its batches exactly. Returns how many."""
        return self._core._redo_shipped(list(records))

    def notices(self, municipality: str, *, after: int = 0, limit: int = 1000) -> pa.Table:
        """The 転入通知 (move-in notices) owed to `municipality` (its 6-digit code), oldest
        first: one row per `move_in` another municipality recorded of a resident this one held
        (`kind` `move_in`), and per `cancel` of one (`move_in_cancelled`).

        Each row: `notice` (its number, which never changes; ask for those `after` the last one
        handled), `kind`, the resident's `resident_code`, names, readings, `birth_date` and
        `sex`, `from_municipality_code` / `from_address_town` / `from_address_block` (their
        address here), `to_municipality_code` / `to_municipality_name` / `to_address_town` /
        `to_address_block`, the move's `effective_date` and `reported_date`, `recorded_at`, and
        the recording municipality and sequence (`recorded_by`, `sequence`). A notice exists
        exactly when its change does: it is the change, durable with it (docs/changes.md)."""
        return self._core.notices(municipality, after, limit)

    @staticmethod
    def change_reasons() -> list[str]:
        """The change reasons (異動事由) of the change table (docs/changes.md)."""
        return _core.Registry.change_reasons()

    def _persons(self, keys: Any, by: KeyKind = "my_number") -> pa.Table:
        """The internal person ids `keys` name (`person`, null where a key is invalid or names
        no one) and whether each key is a valid identifier (`valid`): a subscription's watch
        list. Person ids survive every change of identifier; they never leave the engine."""
        return self._core._persons(_as_key_array(keys), by)

    def _notice_backlog(self, acknowledged: dict[str, int]) -> dict[str, int]:
        """{municipality code: notices owed to it numbered after its last acknowledged one
        (`acknowledged[code]`, 0 for none)}: the backlog the server's metrics show."""
        return self._core._notice_backlog(dict(acknowledged))

    def _by_person(self, persons: Sequence[int], columns: Sequence[str] | None = None) -> pa.Table:
        """The `columns` (default: every public column) of persons by their internal id, as
        the registry holds them now; null where an id names no one (never issued, or a
        creation cancelled). The residents' view reads its caller's own record this way."""
        return self._core._by_person(list(persons), None if columns is None else list(columns))

    def _watched_changes(
        self, watch: bytes, reasons: Sequence[str], after: int = 0, limit: int = 1000
    ) -> pa.Table:
        """The changes of the persons `watch` holds (a bitmap over person ids, least significant
        bit first), of `reasons` (and the cancels of such changes), numbered after `after`,
        oldest first: `change`, `reason`, `cancels`, the dates, `recorded_at`, the resident's
        `resident_code` and `my_number` after it, and `fields`: the fields it set with their
        values after it. For the front end, which masks them to an affair's fields."""
        return self._core._watched_changes(watch, list(reasons), after, limit)

    def history(self, keys: Any, by: KeyKind = "my_number") -> pa.Table:
        """Each resident's changes, oldest first: one row per change with the key asked for,
        `reason`, `effective_date`, `reported_date`, `recorded_at`, the `municipality` that
        recorded it and its `sequence`, `cancelled` (a later 取消し undid it) and `changes`: the
        fields it set, with their old and new values. A key may be a former identifier; keys
        that name no one give no rows."""
        return self._core.history(_as_key_array(keys), by)

    def checkpoint(self) -> int:
        """Write a new snapshot of a registry opened from one: its rows with every change
        folded in, the changes kept as history (as-of reads, `history`, former identifiers and
        idempotency survive), then empty the change log it covered. Applies wait meanwhile;
        queries do not. Returns how many history entries the snapshot holds."""
        from juki_engine import names

        names.install()
        return self._core.checkpoint()

    @property
    def applied_changes(self) -> int:
        """How many changes were applied since the registry was opened or generated."""
        return self._core.applied_changes

    @staticmethod
    def column_names() -> list[str]:
        """The public schema's column names."""
        return _core.Registry.column_names()

    @staticmethod
    def claimable_columns() -> list[str]:
        """The columns a claim may carry for `verify` besides its key, in schema order."""
        return _core.Registry.claimable_columns()

    @staticmethod
    def search_facts() -> tuple[list[str], list[str]]:
        """The facts a 4情報 `search` compares: (required, optional)."""
        return _core.Registry.search_facts()

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the row columns and both indexes."""
        return self._core.memory_bytes

    def __len__(self) -> int:
        return len(self._core)

    def __repr__(self) -> str:
        return f"Registry({len(self):,} residents)"


#: The schema metadata key of a feed's page (notices, watched changes): the number of the last
#: change (or notice) the read examined, the caller's or not.
SCANNED_THROUGH = "juki.scanned_through"


def scanned_through(table: pa.Table) -> int:
    """Where the next read of a feed's reader starts: the number of the last change (or
    notice) the read of `table` examined, so that a quiet reader does not scan the same tail
    again."""
    return int(table.schema.metadata[SCANNED_THROUGH.encode()])
