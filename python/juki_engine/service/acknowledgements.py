"""The durable state of the change feeds, beside the snapshot's change log:

- `Acknowledgements`: per reader (a municipality's notices, a subscription's changes), the last
  number acknowledged — one small file per reader (`<name>.ack`, the number as text);
- `WatchLists`: per subscription, the persons it watches — a bitmap over person ids
  (`<name>.watch`).

Every file is replaced atomically (written beside, fsynced, renamed, the directory fsynced)
before the call that changed it is answered. A change or a notice is sent again until its number
is acknowledged, so a crash at any point loses nothing: at worst one is sent twice.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from juki_engine._core import InvalidInput, SnapshotCorrupt
from juki_engine.audit import fsync_directory

# The largest number a file may hold: notice numbers are change numbers (u32 entries).
_MAX_NUMBER = 1 << 40
# A reader's name is a file name: a municipality code, or a subscription's digest.
_NAME = re.compile(r"[0-9a-z]{6,64}")


def _path(directory: Path, name: str, suffix: str) -> Path:
    # Only a name made here may name a file (no path can be made of a client's string).
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"{name[:32]!r} is not a reader's name")
    return directory / f"{name}{suffix}"


def _replace(path: Path, data: bytes) -> None:
    """Write `path` whole, durably: beside, fsync, rename, fsync the directory."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_directory(path.parent)


class Acknowledgements:
    """The last acknowledged number per reader, kept in `directory`."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()

    def get(self, name: str) -> int:
        """The last number `name` acknowledged; 0 if none."""
        path = _path(self.directory, name, ".ack")
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            return 0
        except (OSError, UnicodeDecodeError) as e:
            raise SnapshotCorrupt(f"acknowledgement {path}: {e}") from e
        value = text.strip()
        if not value.isdigit() or int(value) > _MAX_NUMBER:
            raise SnapshotCorrupt(f"acknowledgement {path}: {value[:32]!r} is not a number")
        return int(value)

    def advance(self, name: str, through: int) -> int:
        """Acknowledge every number of `name` up to `through`, durably; an earlier number than
        the one acknowledged changes nothing. Returns the number acknowledged now."""
        path = _path(self.directory, name, ".ack")
        with self._lock:
            current = self.get(name)
            if through <= current:
                return current
            _replace(path, f"{through}\n".encode("ascii"))
            return through


class WatchLists(Acknowledgements):
    """Per subscription, the persons it watches (a bitmap over person ids) and, as an
    `Acknowledgements`, its cursor and the highest change it was ever sent (what its quota
    has counted)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        super().__init__(directory)
        self._lists: dict[str, bytes] = {}

    def watch(self, name: str) -> bytes:
        """The bitmap of `name` (least significant bit first); empty if it watches no one."""
        with self._lock:
            if name not in self._lists:
                path = _path(self.directory, name, ".watch")
                try:
                    self._lists[name] = path.read_bytes()
                except FileNotFoundError:
                    self._lists[name] = b""
                except OSError as e:
                    raise SnapshotCorrupt(f"watch list {path}: {e}") from e
            return self._lists[name]

    def update(self, name: str, persons: npt.NDArray[np.uint32], remove: bool) -> tuple[int, int]:
        """Add (or remove) `persons` to `name`'s watch list, durably; returns how many changed
        and how many it watches now. Bits are set in place on the packed bytes: a 128-million
        person list stays 16 MB."""
        with self._lock:
            current = np.frombuffer(self.watch(name), np.uint8)
            needed = int(persons.max()) // 8 + 1 if len(persons) else 0
            packed = np.zeros(max(len(current), needed), np.uint8)
            packed[: len(current)] = current
            before = int(np.bitwise_count(packed).sum())
            at = (persons // 8).astype(np.intp)
            bit = np.left_shift(np.uint8(1), (persons % 8).astype(np.uint8))
            if remove:
                np.bitwise_and.at(packed, at, np.invert(bit))
            else:
                np.bitwise_or.at(packed, at, bit)
            after = int(np.bitwise_count(packed).sum())
            data = packed.tobytes()
            _replace(_path(self.directory, name, ".watch"), data)
            self._lists[name] = data
            return abs(after - before), after
