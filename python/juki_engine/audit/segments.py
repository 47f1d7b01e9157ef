"""The trail's files: append-only segments, each an Arrow IPC stream with zstd-compressed
buffers (`audit-<first record time>Z-<sequence>.arrows`, so names sort by time), and how they are
read back, a torn tail (a crash mid-write) left out and any other damage reported.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from juki_engine.audit.records import (
    DAY_US,
    EPOCH,
    STORED_SCHEMA,
    STORED_SCHEMA_V1,
    STORED_SCHEMA_V2,
    AuditUnavailable,
    micros,
)

_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")
_SEGMENT_NAME = re.compile(r"audit-(\d{8}T\d{6}\.\d{6})Z-(\d+)\.arrows")
_NAME_TIME = "%Y%m%dT%H%M%S.%f"
_CONTINUATION = 0xFFFFFFFF
_RECORD_BATCH = 3  # MessageHeader.RecordBatch in Arrow's Message.fbs


@dataclass(frozen=True, slots=True)
class SegmentFile:
    path: Path
    start_us: int
    sequence: int
    mtime_us: int


def segment_name(start_us: int, sequence: int) -> str:
    start = EPOCH + timedelta(microseconds=start_us)
    return f"audit-{start.strftime(_NAME_TIME)}Z-{sequence:06d}.arrows"


def list_segments(directory: Path) -> list[SegmentFile]:
    """The directory's segments in time order."""
    segments = []
    with os.scandir(directory) as entries:
        for entry in entries:
            match = _SEGMENT_NAME.fullmatch(entry.name)
            if match is None:
                continue
            try:
                mtime_us = entry.stat().st_mtime_ns // 1000
            except FileNotFoundError:
                continue  # expired by the writer's retention while we listed
            try:
                start = datetime.strptime(match[1], _NAME_TIME).replace(tzinfo=UTC)
            except ValueError:
                raise AuditUnavailable(f"audit segment {entry.path} has no valid time") from None
            segments.append(SegmentFile(Path(entry.path), micros(start), int(match[2]), mtime_us))
    segments.sort(key=lambda s: (s.start_us, s.sequence))
    return segments


class OpenSegment:
    """The segment being written: a new file, never one left by an earlier trail."""

    __slots__ = ("day", "path", "sink", "writer")

    def __init__(
        self, directory: Path, start_us: int, sequence: int, chain: dict[str, str]
    ) -> None:
        """`chain`: the schema metadata that links it to its predecessor (see `integrity`)."""
        self.path = directory / segment_name(start_us, sequence)
        self.day = start_us // DAY_US
        # O_EXCL: never append to (or truncate) a segment whose tail may be torn.
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
        fsync_directory(directory)
        self.sink = pa.OSFile(str(self.path), "a")
        schema = STORED_SCHEMA.with_metadata({**(STORED_SCHEMA.metadata or {}), **chain})
        self.writer = pa.ipc.new_stream(self.sink, schema, options=_WRITE_OPTIONS)

    def size(self) -> int:
        return int(self.sink.tell())

    def sync(self) -> None:
        os.fsync(self.sink.fileno())

    def close(self) -> None:
        self.writer.close()  # writes the end-of-stream marker
        self.sync()
        self.sink.close()

    def abandon(self) -> None:
        """Close after a failure, without the end-of-stream marker (readers accept either)."""
        with contextlib.suppress(OSError):  # already failed; the first error is the one reported
            self.sink.close()


def fsync_directory(directory: Path) -> None:
    """Make a directory's entries durable (a file created, renamed or removed in it)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _batch_ends(data: memoryview, path: Path) -> list[int]:
    """Where each complete record batch message of the stream ends.

    A crash can cut the last message anywhere (kill -9 mid-write), or leave zeros where it was
    (power loss before its blocks reached the disk): the torn tail is left out. Anything else
    that does not frame as Arrow IPC messages is damage, reported as such.
    """
    size, position, ends = len(data), 0, []
    while position < size:
        rest = data[position:]
        if len(rest) < 8 or struct.unpack_from("<I", rest)[0] != _CONTINUATION:
            # Part of the continuation marker, then nothing (cut) or zeros (power loss).
            marker = bytes(rest[:4]).rstrip(b"\0")
            if marker.strip(b"\xff") or not (len(rest) < 8 or _zeros(rest[4:])):
                raise _damaged(path, position)
            break
        metadata_length = struct.unpack_from("<i", rest, 4)[0]
        if metadata_length == 0:  # the end-of-stream marker
            if not _zeros(rest[8:]):
                raise _damaged(path, position + 8)
            break
        if metadata_length < 0:
            raise _damaged(path, position)
        if 8 + metadata_length > len(rest):
            break  # torn inside the metadata
        try:
            header, body = _message_header(rest[8 : 8 + metadata_length], path, position)
        except AuditUnavailable:
            if _written(rest) < 8 + metadata_length:
                break  # zeros from inside the metadata on: never written
            raise
        if 8 + metadata_length + body > len(rest):
            break  # torn inside the body
        position += 8 + metadata_length + body
        if header == _RECORD_BATCH:
            ends.append(position)
    return ends


def _zeros(data: memoryview) -> bool:
    return not np.frombuffer(data, np.uint8).any()


def _written(data: memoryview) -> int:
    """The length of `data` without its zero tail."""
    nonzero = np.flatnonzero(np.frombuffer(data, np.uint8))
    return int(nonzero[-1]) + 1 if nonzero.size else 0


def _message_header(metadata: memoryview, path: Path, position: int) -> tuple[int, int]:
    """The header type and body length of an IPC message, read from its flatbuffer.

    `Message` fields: 0 version, 1 header type, 2 header, 3 body length; all bounds-checked.
    """

    def read(fmt: str, offset: int) -> int:
        if not 0 <= offset <= len(metadata) - struct.calcsize(fmt):
            raise _damaged(path, position)
        return int(struct.unpack_from(fmt, metadata, offset)[0])

    table = read("<I", 0)
    vtable = table - read("<i", table)
    vtable_size = read("<H", vtable)
    if table < 4 or vtable_size < 4 or vtable_size % 2:
        raise _damaged(path, position)

    def field(index: int, fmt: str) -> int:
        slot = 4 + 2 * index  # after the vtable's two sizes, one uint16 offset per field
        offset = read("<H", vtable + slot) if slot < vtable_size else 0
        return read(fmt, table + offset) if offset else 0

    header, body = field(1, "<B"), field(3, "<q")
    if body < 0 or body % 8:
        raise _damaged(path, position)
    return header, body


def _damaged(path: Path, position: int) -> AuditUnavailable:
    return AuditUnavailable(f"audit segment {path} is damaged at byte {position}")


def sealed(path: Path) -> bool:
    """Whether a segment was closed: its stream ends with the end-of-stream marker, so no
    writer appends to it any more (a segment a crash tore never grows again either, but only
    a newer segment beside it says so)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < 8:
                return False
            f.seek(-8, os.SEEK_END)
            return f.read(8) == struct.pack("<Ii", _CONTINUATION, 0)
    except FileNotFoundError:
        return True


def read_segment(path: Path) -> list[pa.RecordBatch]:
    """Every complete record batch of one segment."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []  # expired by the writer's retention since we listed it
    except OSError as error:
        raise AuditUnavailable(f"cannot read audit segment {path}: {error}") from error
    view = memoryview(data)
    ends = _batch_ends(view, path)
    if not ends:
        return []
    try:
        return _decode(data, ends[-1], path)
    except AuditUnavailable:
        # Zeros from inside the last batch's messages to the end of the file: power loss left
        # its lengths on disk but not its contents. It was never acknowledged.
        previous = ends[-2] if len(ends) > 1 else 0
        if previous + _written(view[previous:]) < ends[-1]:
            return _decode(data, previous, path)
        raise


def _upgraded(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A batch of an older version, with null columns for what it did not record."""
    return pa.RecordBatch.from_arrays(
        [
            batch.column(field.name)
            if field.name in batch.schema.names
            else pa.nulls(batch.num_rows, field.type)
            for field in STORED_SCHEMA
        ],
        schema=STORED_SCHEMA,
    )


def _decode(data: bytes, end: int, path: Path) -> list[pa.RecordBatch]:
    """The record batches of the stream's first `end` bytes, which hold complete messages."""
    if end == 0:
        return []
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data)[:end])
        for older in (STORED_SCHEMA_V1, STORED_SCHEMA_V2):
            if reader.schema.equals(older):
                return [_upgraded(batch) for batch in reader]
        if not reader.schema.equals(STORED_SCHEMA):
            raise AuditUnavailable(f"{path} is not an audit segment (schema {reader.schema})")
        return list(reader)
    except (pa.ArrowException, OSError) as error:  # pyarrow raises OSError for bad messages
        raise AuditUnavailable(f"audit segment {path} is damaged: {error}") from error
