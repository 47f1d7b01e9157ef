"""Tamper evidence: segments chained by hash, a signed manifest, and the check of both.

- Each segment names its predecessor and the predecessor's SHA-256 in its stream's schema
  metadata (`juki_engine.audit.previous`), with the manifest's head when it was created
  (`juki_engine.audit.manifest`). A segment is hashed once it is closed, so its successor can
  name it; the segment being written is covered by checkpoints.
- The manifest (`manifest.jsonl`) is the trail's own record of what it did to its files: signed
  checkpoints of the chain head (segment, length, SHA-256 of that prefix), files removed by
  retention (with their hashes and why) and files compacted (which sources a file holds). Each
  line names the SHA-256 of the line before it and is signed with the server's Ed25519 key, so
  a removal by design is told apart from tampering, and nobody without the key can rewrite the
  chain and sign it again.
- `verify` walks all of it and names the first file that was altered, removed outside
  retention, or reordered.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from juki_engine.audit.records import AuditUnavailable

MANIFEST = "manifest.jsonl"
PREVIOUS = "juki_engine.audit.previous"
MANIFEST_HEAD = "juki_engine.audit.manifest"
# A manifest line is small; a longer one is damage, not an entry.
_LINE_LIMIT = 1 << 20


def digest(path: Path, length: int | None = None) -> str:
    """The SHA-256 (hex) of a file, or of its first `length` bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = length
        while left is None or left > 0:
            chunk = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return h.hexdigest()


def link(path: Path) -> str:
    """What a successor records of `path`: its name and hash."""
    return f"{path.name} {digest(path)}"


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The trail's signing key (PEM, PKCS#8, unencrypted; `juki certs` writes one)."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise AuditUnavailable(f"cannot load the audit signing key {path}: {error}") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditUnavailable(f"the audit signing key {path} is not an Ed25519 key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """The key `verify` checks signatures with (PEM; a private key file gives its public half)."""
    try:
        data = Path(path).read_bytes()
        if b"PRIVATE KEY" in data:
            return load_private_key(path).public_key()
        key = serialization.load_pem_public_key(data)
    except (OSError, ValueError, TypeError) as error:
        raise AuditUnavailable(f"cannot load the audit public key {path}: {error}") from error
    if not isinstance(key, Ed25519PublicKey):
        raise AuditUnavailable(f"the audit public key {path} is not an Ed25519 key")
    return key


def write_key_pair(private: Path) -> Path:
    """A new signing key at `private` (mode 0600) and its public half beside it (`.pub`)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = private.with_suffix(".pub")
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public


def _canonical(entry: dict[str, Any], previous: str) -> bytes:
    return json.dumps(
        {"entry": entry, "previous": previous}, sort_keys=True, separators=(",", ":")
    ).encode()


class Manifest:
    """The append side of `manifest.jsonl`: each entry chained to the last and signed. The
    server's writer and a compaction (another process) both append: an append holds the file's
    lock and chains to the line last written, whoever wrote it."""

    __slots__ = ("_key", "_path")

    def __init__(self, directory: Path, key: Ed25519PrivateKey | None) -> None:
        self._path = directory / MANIFEST
        self._key = key

    @property
    def head(self) -> str:
        """The SHA-256 of the last entry's line ("" before the first)."""
        try:
            with open(self._path, "rb") as f:
                return _head(f.fileno())
        except FileNotFoundError:
            return ""

    def append(self, entry: dict[str, Any]) -> None:
        """Add an entry, durable (fsync) before this returns."""
        created = not self._path.exists()
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A line torn by a crash was never acknowledged: cut it, or it would swallow
                # the start of this one.
                data = os.pread(fd, size, 0)
                os.ftruncate(fd, data.rfind(b"\n") + 1)
            head = _head(fd)
            body = _canonical(entry, head)
            signature = None if self._key is None else self._key.sign(body).hex()
            line = json.dumps(
                {"entry": entry, "previous": head, "signature": signature},
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
            ).encode()
            os.write(fd, line + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)  # and with it the lock
        if created:
            from juki_engine.audit.segments import fsync_directory

            fsync_directory(self._path.parent)


def _head(fd: int) -> str:
    """The SHA-256 of the last complete line of the open manifest ("" if none)."""
    size = os.fstat(fd).st_size
    tail = b""
    position = size
    while position > 0:
        step = min(1 << 16, position)
        position -= step
        tail = os.pread(fd, step, position) + tail
        lines = tail.split(b"\n")
        complete = [line for line in lines[:-1] if line]
        if len(lines) > 2 or (position == 0 and complete):
            return hashlib.sha256(complete[-1]).hexdigest() if complete else ""
    return ""


def _lines(path: Path) -> list[bytes]:
    """The manifest's complete lines (a torn last line, never acknowledged, left out)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    return [line for line in lines[:-1] if line]


def now_text() -> str:
    from juki_engine.audit import records

    moment = datetime.fromtimestamp(records.clock() / 1e6, UTC)
    return moment.isoformat(timespec="microseconds")


# --- verification --------------------------------------------------------------------------


@dataclass
class Report:
    """What `verify` found: `problems` empty means the trail is intact as far as it is signed."""

    segments: int = 0
    store_files: int = 0
    checkpoints: int = 0
    expired: int = 0
    unsigned_bytes: int = 0
    """Bytes of the newest segment written after the last checkpoint (not yet signed)."""
    unchained: int = 0
    """Segments written before the chain existed (format 1 or 2): the first chained segment
    covers the last of them by hash; the ones before it cannot be checked."""
    signatures_checked: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Entry:
    entry: dict[str, Any]
    line_hash: str


def _manifest_entries(
    directory: Path, public: Ed25519PublicKey | None, report: Report
) -> Iterator[_Entry]:
    previous = ""
    for number, line in enumerate(_lines(directory / MANIFEST), 1):
        where = f"{MANIFEST} line {number}"
        if len(line) > _LINE_LIMIT:
            report.problems.append(f"{where} is not a manifest entry (too long)")
            return
        try:
            parsed = json.loads(line)
            entry, named, signature = parsed["entry"], parsed["previous"], parsed["signature"]
            if not isinstance(entry, dict) or not isinstance(named, str):
                raise TypeError("malformed")
        except (ValueError, KeyError, TypeError):
            report.problems.append(f"{where} is not a manifest entry (altered)")
            return
        if named != previous:
            report.problems.append(
                f"{where} does not follow the line before it (a line was altered, removed or "
                "reordered)"
            )
            return
        if public is not None:
            if signature is None:
                report.problems.append(f"{where} is unsigned (written without the signing key)")
                return
            try:
                if not isinstance(signature, str):
                    raise InvalidSignature
                public.verify(bytes.fromhex(signature), _canonical(entry, named))
            except (InvalidSignature, ValueError):
                report.problems.append(f"{where} has no valid signature (altered or forged)")
                return
        previous = hashlib.sha256(line).hexdigest()
        yield _Entry(entry, previous)


def compacted_sources(directory: Path) -> set[str]:
    """The names of the files compactions recorded as their sources (removed, or about to be)."""
    names: set[str] = set()
    for line in _lines(directory / MANIFEST):
        try:
            entry = json.loads(line)["entry"]
        except (ValueError, KeyError, TypeError):
            continue  # `verify` reports damage; a compaction only needs what it can read
        if isinstance(entry, dict) and entry.get("kind") == "compacted":
            names.update(str(source[0]) for source in entry.get("sources", []))
    return names


def _format(path: Path) -> int:
    """A segment's format version, from its schema metadata (1 where it says none)."""
    with pa.OSFile(str(path), "rb") as source:
        meta = pa.ipc.open_stream(source).schema.metadata or {}
    version = meta.get(b"juki_engine.audit", b"1").decode()
    return int(version) if version.isdigit() else 0


def chain_metadata(path: Path) -> tuple[str, str]:
    """A segment's recorded predecessor link and manifest head ("" where none)."""
    try:
        with pa.OSFile(str(path), "rb") as source:
            schema = pa.ipc.open_stream(source).schema
    except (pa.ArrowException, OSError) as error:
        raise AuditUnavailable(f"audit segment {path} is damaged: {error}") from error
    meta = schema.metadata or {}
    return (
        meta.get(PREVIOUS.encode(), b"").decode(),
        meta.get(MANIFEST_HEAD.encode(), b"").decode(),
    )


def verify(directory: str | os.PathLike[str], public: Ed25519PublicKey | None) -> Report:
    """Check the trail's chain, manifest and signatures (without `public`: the chain and the
    manifest's own links only). Problems are named in order; the first names the first file
    that was altered, removed outside retention, or reordered."""
    from juki_engine.audit.segments import list_segments

    root = Path(directory)
    report = Report(signatures_checked=public is not None)
    removed: dict[str, str] = {}  # name → hash, of files the manifest removed by design
    written: dict[str, str] = {}  # name → hash, of the store's files as compactions wrote them
    checkpoints: list[dict[str, Any]] = []
    manifest_heads = {""}
    for item in _manifest_entries(root, public, report):
        manifest_heads.add(item.line_hash)
        entry = item.entry
        kind = entry.get("kind")
        if kind == "checkpoint":
            report.checkpoints += 1
            checkpoints.append(entry)
        elif kind in ("expired", "compacted"):
            files = entry.get("files" if kind == "expired" else "sources", [])
            for name, sha in files:
                removed[str(name)] = str(sha)
            report.expired += len(files) if kind == "expired" else 0
            for name, sha in entry.get("outputs", []):
                written[str(name)] = str(sha)
    segments = list_segments(root)
    report.segments = len(segments)
    position = {s.path.name: i for i, s in enumerate(segments)}
    hashes: dict[str, str] = {}

    def hash_of(name: str) -> str:
        if name not in hashes:
            hashes[name] = digest(root / name)
        return hashes[name]

    chained = False
    for index, segment in enumerate(segments):
        name = segment.path.name
        previous, manifest_head = chain_metadata(segment.path)
        if manifest_head not in manifest_heads:
            report.problems.append(
                f"{MANIFEST} lost entries: {name} was written after an entry no longer there"
            )
        if not previous:
            if chained:
                report.problems.append(
                    f"{name} names no predecessor, after segments that do (inserted or altered)"
                )
            elif _format(segment.path) < 3:
                report.unchained += 1  # from before the chain: only its successor vouches for it
            elif index > 0:
                report.problems.append(f"{name} names no predecessor (inserted or altered)")
            continue
        chained = True
        prev_name, _, prev_hash = previous.partition(" ")
        expected = segments[index - 1].path.name if index > 0 else None
        if prev_name in position and prev_name != expected:
            report.problems.append(
                f"{name} follows {prev_name}, not {expected}: segments were reordered"
            )
        elif prev_name in position:
            if hash_of(prev_name) != prev_hash:
                report.problems.append(f"{prev_name} was altered (its hash differs from {name}'s)")
        elif prev_name not in removed:
            report.problems.append(f"{prev_name} was removed outside retention (named by {name})")
        elif removed[prev_name] != prev_hash:
            report.problems.append(
                f"{prev_name} was removed with a hash other than the one {name} recorded"
            )
    if segments:
        _check_head(root, segments[-1].path, position, removed, checkpoints, report)
    _check_store(root, written, removed, report)
    from juki_engine.audit.writer import OPERATORS

    if (root / OPERATORS).is_dir():
        operators = verify(root / OPERATORS, public)
        report.segments += operators.segments
        report.checkpoints += operators.checkpoints
        report.expired += operators.expired
        report.problems += [f"{OPERATORS}/{problem}" for problem in operators.problems]
    return report


def _check_store(
    root: Path, written: dict[str, str], removed: dict[str, str], report: Report
) -> None:
    """Every file of the store is one a signed compaction wrote, as it wrote it; every file a
    compaction wrote is there, or was merged or expired by design since."""
    from juki_engine.audit.store import store_files

    present = store_files(root)
    report.store_files = len(present)
    for name in present:
        if name not in written:
            report.problems.append(f"{name} was written by no recorded compaction (inserted)")
        elif digest(root / name) != written[name]:
            report.problems.append(f"{name} was altered (its hash differs from its compaction's)")
    for name in sorted(set(written) - set(present) - set(removed)):
        report.problems.append(f"{name} was removed outside retention (compacted)")


def _check_head(
    root: Path,
    newest: Path,
    position: dict[str, int],
    removed: dict[str, str],
    checkpoints: list[dict[str, Any]],
    report: Report,
) -> None:
    """The signed checkpoints against the files they cover: the newest one signs the head."""
    size = newest.stat().st_size
    report.unsigned_bytes = size
    for entry in checkpoints:
        name, length, sha = entry.get("segment"), entry.get("bytes"), entry.get("sha256")
        if not isinstance(name, str) or not isinstance(length, int):
            report.problems.append(f"a checkpoint of {MANIFEST} is malformed")
            continue
        if name not in position:
            if name not in removed:  # else compacted or expired since, by design
                report.problems.append(f"{name} was removed outside retention (checkpointed)")
            continue
        path = root / name
        if path.stat().st_size < length or digest(path, length) != sha:
            report.problems.append(f"{name} was altered (its first {length} bytes were signed)")
        elif path == newest:
            report.unsigned_bytes = size - length
