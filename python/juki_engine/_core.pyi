"""The compiled core (Rust). This stub is the API's documentation; `mypy.stubtest` checks it."""

from typing import Any, final

import pyarrow as pa

__all__ = [
    "MAX_ROWS",
    "REFERENCE_DATE",
    "Claims",
    "DuplicateIdentifier",
    "InternalError",
    "InvalidIdentifier",
    "InvalidInput",
    "JukiError",
    "Registry",
    "ResourceExhausted",
    "Router",
    "SnapshotCorrupt",
    "SnapshotIOError",
    "check_digit",
    "check_digit_array",
    "fold",
    "install_folding",
    "is_valid",
    "is_valid_array",
    "normalize",
    "read_ipc_stream",
    "validate",
]

REFERENCE_DATE: int
"""The synthetic registry's "today" (2026-01-01) as days since 1970-01-01."""
MAX_ROWS: int
"""The most residents one registry can hold (2**27)."""

class JukiError(Exception):
    """Base class of every juki_engine error."""

class InvalidIdentifier(JukiError):
    """An identifier is malformed or has a wrong check digit; the message names the value."""

class InvalidInput(JukiError):
    """Input does not have the documented shape; the message names the column or argument."""

class DuplicateIdentifier(InvalidInput):
    """Two rows carry the same identifier; the message names both rows."""

class SnapshotCorrupt(JukiError):
    """A snapshot file is truncated, corrupted or missing; the message names the file."""

class SnapshotIOError(JukiError):
    """An I/O failure (missing path, permissions, disk full) while reading or writing; the
    message names the path."""

class ResourceExhausted(JukiError):
    """Memory ran out for a request (a result, a registry); a smaller one may succeed."""

class InternalError(JukiError):
    """A bug: the core panicked and abandoned the call ("internal error: <panic message>").
    The registry is unchanged (it is immutable)."""

@final
class Registry:
    """The registry in memory: Arrow columns plus hash indexes. Immutable, thread-safe."""

    @staticmethod
    def generate(
        municipalities: pa.Table,
        towns: pa.Table,
        family_names: pa.Table,
        given_names: pa.Table,
        seed: int = 0,
    ) -> Registry:
        """Draw a synthetic registry from a plan built by `juki_engine.synthetic`."""

    @staticmethod
    def open(path: str, mmap: bool = False, log: str | None = None) -> Registry:
        """Open a snapshot directory (read into huge-page memory, or its columns mapped with
        `mmap`; the indexes are always read)."""

    def save(self, path: str) -> None:
        """Save atomically to a snapshot directory."""

    def save_rows(self, path: str, start: int, len: int, k: int, of: int) -> None:
        """Save rows `start .. start + len` as a snapshot of their own (a shard); see
        `juki_engine.distributed.shard`."""

    @staticmethod
    def from_arrow(table: pa.Table) -> Registry:
        """Build from a table of the public schema (validated in full first)."""

    def to_arrow(self, columns: list[str] | None = None) -> pa.Table:
        """The registry as a table of the public schema."""

    def lookup(
        self,
        keys: pa.Array,
        by: str = "my_number",
        columns: list[str] | None = None,
        as_of: int | None = None,
        recorded_as_of: int | None = None,
    ) -> pa.Table:
        """One row per key: `found`, `error`, `replaced`, then the requested columns, as of
        the day `as_of` (days since 1970-01-01) and the moment `recorded_as_of` (µs). Keys are utf8,
        large_utf8, utf8_view, a dictionary of those, or integers; validated in full first.
        Dictionary columns carry only the values of the rows answered."""

    def verify(
        self,
        claims: pa.Table | Claims,
        by: str = "my_number",
        first_row: int = 0,
        columns: list[str] = ...,
        level: str = "exact",
        as_of: int | None = None,
        recorded_as_of: int | None = None,
    ) -> pa.Table:
        """Per claim: `found`, `status`, `error`, `replaced`, `<field>_match` per claimed field
        (and above the exact `level`, `<field>_level`), then the requested `columns` of each
        found resident, as of `as_of` and `recorded_as_of` (see `lookup`).

        Every column is validated in full (offsets, UTF-8, dictionary keys, views) before it is
        read, and must have a type of the contract, else `InvalidInput` names it:

        - the key: utf8, large_utf8, utf8_view, a dictionary of those, or any integer type;
        - family_name, family_name_kana, given_name, given_name_kana, municipality_code:
          utf8, large_utf8, utf8_view, a dictionary of those, or null;
        - birth_date: date32 or null;
        - sex: any integer type or null.

        Dictionary columns of the result carry only the values of the rows answered."""

    def search(
        self, claims: pa.Table, level: str = "normalised", columns: list[str] = ...
    ) -> pa.Table:
        """Per claim's candidates: `claim`, `outcome`, `candidates`, `agreed`, then `columns`."""

    def verify_one(
        self,
        by: str,
        key: str,
        claims: list[tuple[str, str | int]],
        columns: list[str] = ...,
        level: str = "exact",
        as_of: int | None = None,
        recorded_as_of: int | None = None,
    ) -> dict[str, Any]:
        """`verify` of one claim given as Python values (birth_date as ISO 8601 text); its
        result row as a dict."""

    def apply(
        self,
        changes: pa.Table | Claims,
        today: int | None = None,
        first_row: int = 0,
        numbers: list[int] | None = None,
        recorded: int | None = None,
        rows: list[int] | None = None,
    ) -> pa.Table:
        """Apply change records (docs/changes.md); durable in the change log before it
        returns. Per row: `outcome`, `code`, `error`, `resident_code`, `my_number`."""

    def checkpoint(self) -> int:
        """Write a new snapshot with the changes folded in and kept as history; empty the log."""

    def _persons(self, keys: pa.Array, by: str = "my_number") -> pa.Table:
        """The person ids the keys name (null: invalid or no one) and each key's validity."""

    def _last_change(self) -> int:
        """The number of the newest change (0 if none)."""

    def _former_identifiers(self) -> pa.Table:
        """Identifiers persons held before their current ones: kind, value, person."""

    def _last_record(self) -> tuple[int, int] | None:
        """The batch and xxh3 of the last change log record written or redone."""

    def _last_batch(self) -> int:
        """The newest batch applied (0 if none)."""

    def _log_since(self, batch: int) -> list[bytes]:
        """The change log's records of the batches after `batch`."""

    def _log_covered(self, batch: int) -> None:
        """Empty this replica's change log, which the snapshot covers through `batch`."""

    def _redo_shipped(self, records: list[bytes]) -> int:
        """Redo records shipped from a replica of the same shard."""

    def _notice_backlog(self, acknowledged: dict[str, int]) -> dict[str, int]:
        """Notices owed to each municipality after its last acknowledged one."""

    def _by_person(self, persons: list[int], columns: list[str] | None = None) -> pa.Table:
        """The public columns of persons by id (null where an id names no one now)."""

    def _watched_changes(
        self, watch: bytes, reasons: list[str], after: int = 0, limit: int = 1000
    ) -> pa.Table:
        """The changes of the watched persons, numbered after `after`, oldest first."""

    def _as_shard(self, k: int, of: int, held: tuple[str, str] | list[str]) -> None:
        """Make this registry shard k of `of` for identifier issuance (docs/sharding.md)."""

    def _seen(self, municipalities: list[str | None], sequences: list[int | None]) -> bytes:
        """Per change: 1 applied, 2 rejected, 0 not seen."""

    @staticmethod
    def change_reasons() -> list[str]:
        """The change reasons of the change table, in code order."""

    def notices(self, municipality: str, after: int = 0, limit: int = 1000) -> pa.Table:
        """The move-in notices owed to a municipality, numbered after `after`, oldest first."""

    def history(self, keys: pa.Array, by: str = "my_number") -> pa.Table:
        """Each resident's changes, oldest first, with the fields each set (old and new)."""

    @property
    def applied_changes(self) -> int:
        """Changes applied since the registry was opened or generated."""

    def __len__(self) -> int: ...
    @property
    def memory_bytes(self) -> int:
        """Bytes held by row columns and indexes."""

    @staticmethod
    def column_names() -> list[str]:
        """The public schema's column names."""

    @staticmethod
    def claimable_columns() -> list[str]:
        """The columns a claim may carry for `verify`, in schema order."""
    @staticmethod
    def search_facts() -> tuple[list[str], list[str]]:
        """The facts a 4情報 search compares: (required, optional)."""

def is_valid(kind: str, value: str) -> bool:
    """Whether `value` is a valid identifier of `kind` (strict)."""

def validate(kind: str, value: str) -> None:
    """Raise InvalidIdentifier naming the value unless it is valid."""

def check_digit(kind: str, base: str) -> int:
    """The check digit for the identifier's base digits."""

def normalize(kind: str, value: str) -> tuple[str, bool, bool]:
    """(canonical value, folded full-width digits, removed separators)."""

def is_valid_array(kind: str, values: pa.Array) -> pa.BooleanArray:
    """Vectorised `is_valid`; null stays null."""

def check_digit_array(kind: str, bases: pa.Array) -> pa.UInt8Array:
    """Vectorised `check_digit`; malformed bases give null."""

@final
class Claims:
    """Claims decoded and validated by the core (`read_ipc_stream`); `Registry.verify` takes
    them without validating them again."""

    @property
    def column_names(self) -> list[str]: ...
    @property
    def num_rows(self) -> int: ...
    def to_arrow(self) -> pa.Table:
        """The claims as a pyarrow table (zero-copy)."""

def install_folding(sources: list[int], targets: list[int]) -> int:
    """Install the process's name-folding table (code points: `sources[i]` folds to
    `targets[i]`);
    how many characters the table in force maps. A second call keeps the first table."""

def fold(text: str, level: str) -> str:
    """`text` folded at `level` (exact, normalised, reading) with the installed table."""

def read_ipc_stream(payload: bytes, max_rows: int, max_bytes: int) -> Claims:
    """Decode an Arrow IPC stream from the wire, refusing with `InvalidInput` anything but
    one schema message followed by dictionary and record batches (and an optional end marker,
    nothing after it). Before any body is decoded, the batches' declared rows must total at most
    `max_rows`, every buffer must lie within its message, and the buffers' decoded sizes (a
    compressed buffer's as it declares it: LZ4 frame or zstd) must total at most `max_bytes`
    over the whole stream; a string view column may refer to at most `max_bytes` bytes of
    strings per batch, and all view columns together at most `max_bytes` over the stream (read
    from the views' lengths, decompressing a compressed views buffer, before any body is
    decoded). Delta dictionary batches are refused. Every decoded column is then validated in
    full, each dictionary once."""

@final
class Router:
    """The routing tables of a sharded registry; see `juki_engine.distributed.Routes`."""

    def __new__(
        cls,
        my_number: Any,
        resident_code: Any,
        firsts: list[int],
        functions: tuple[bytes, bytes] | None = None,
    ) -> Router: ...
    @staticmethod
    def function(values: Any, by: str) -> bytes: ...
    def route(self, keys: Any, by: str = "my_number") -> pa.UInt8Array: ...
    def add(self, values: Any, by: str, shards: list[int]) -> None: ...
    @property
    def memory_bytes(self) -> int: ...
