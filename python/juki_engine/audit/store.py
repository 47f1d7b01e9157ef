"""Retention: segments all of whose records are older than the retention period are removed
whole, never rewritten."""

from __future__ import annotations

from pathlib import Path

from juki_engine.audit import records
from juki_engine.audit.segments import fsync_directory, list_segments


def expire(directory: Path, retention_days: int, keep: Path | None) -> None:
    """Delete the segments all of whose records are older than the retention period."""
    cutoff = records.clock() - retention_days * records.DAY_US
    segments = list_segments(directory)
    removed = False
    for index, segment in enumerate(segments):
        # Its last record is no later than the file's mtime, nor than the next segment's first.
        end = segment.mtime_us
        if index + 1 < len(segments):
            end = min(end, segments[index + 1].start_us)
        if end < cutoff and segment.path != keep:
            segment.path.unlink(missing_ok=True)
            removed = True
    if removed:
        fsync_directory(directory)
