"""Retention: segments all of whose records are older than the retention period are removed
whole, never rewritten, each removal first recorded (with the file's hash) in the signed
manifest, so `juki audit verify` tells it from tampering."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from juki_engine.audit import records
from juki_engine.audit.integrity import Manifest, digest, now_text
from juki_engine.audit.segments import fsync_directory, list_segments


def expire(directory: Path, retention_days: int, keep: Path | None, manifest: Manifest) -> None:
    """Delete the segments all of whose records are older than the retention period."""
    cutoff = records.clock() - retention_days * records.DAY_US
    segments = list_segments(directory)
    expired = []
    for index, segment in enumerate(segments):
        # Its last record is no later than the file's mtime, nor than the next segment's first.
        end = segment.mtime_us
        if index + 1 < len(segments):
            end = min(end, segments[index + 1].start_us)
        if end < cutoff and segment.path != keep:
            expired.append(segment.path)
    if not expired:
        return
    cutoff_text = datetime.fromtimestamp(cutoff / 1e6, UTC).isoformat(timespec="seconds")
    manifest.append(
        {
            "kind": "expired",
            "time": now_text(),
            "files": [[path.name, digest(path)] for path in expired],
            "why": f"every record older than the retention period ({retention_days} days, "
            f"before {cutoff_text})",
        }
    )
    for path in expired:
        path.unlink(missing_ok=True)
    fsync_directory(directory)
