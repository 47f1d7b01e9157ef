"""Each municipality's last acknowledged move-in notice, durable: one small file per municipality
(`<code>.ack`, the notice number as text), replaced atomically (written beside, fsynced, renamed,
the directory fsynced) before the acknowledgement is answered. A notice is sent again until its
number is acknowledged, so a crash at any point loses no notice: at worst one is sent twice.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from juki_engine._core import InvalidInput, SnapshotCorrupt, is_valid

# The largest number a file may hold: notice numbers are change numbers (u32 entries).
_MAX_NUMBER = 1 << 40


class Acknowledgements:
    """The acknowledged notice number per municipality code, kept in `directory`."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _path(self, code: str) -> Path:
        # The code names a file: only a valid municipality code may (no path can be made of it).
        if not is_valid("local_government_code", code):
            raise InvalidInput(f"municipality code {code!r} is not a 全国地方公共団体コード")
        return self.directory / f"{code}.ack"

    def get(self, code: str) -> int:
        """The last notice number `code` acknowledged; 0 if none."""
        path = self._path(code)
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            return 0
        except (OSError, UnicodeDecodeError) as e:
            raise SnapshotCorrupt(f"notice acknowledgement {path}: {e}") from e
        value = text.strip()
        if not value.isdigit() or int(value) > _MAX_NUMBER:
            raise SnapshotCorrupt(
                f"notice acknowledgement {path}: {value[:32]!r} is not a notice number"
            )
        return int(value)

    def advance(self, code: str, through: int) -> int:
        """Acknowledge every notice of `code` up to `through`, durably; an earlier number
        than the one acknowledged changes nothing. Returns the number acknowledged now."""
        path = self._path(code)
        with self._lock:
            current = self.get(code)
            if through <= current:
                return current
            tmp = path.with_suffix(".tmp")
            with open(tmp, "w", encoding="ascii") as f:
                f.write(f"{through}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            directory = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
            return through
