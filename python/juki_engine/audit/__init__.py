"""The audit trail (アクセスログ): who looked at whose record, when, for what, with what outcome.

Every disclosure and every refusal is appended here, and the server replies only after
`Commit.wait` says the record is on disk. Residents' question "who looked at me"
(いつ、誰が、誰の情報を閲覧したか) is answered by `read`.

By concern:
- `records`: what a record holds (outcomes, modes, the schema) and how appends become batches;
- `segments`: the files on disk and how they are read back (torn tails, damage);
- `writer`: the append side, group commit, fail-closed;
- `store`: retention;
- `query`: reading records back, and what daily quotas count.
"""

from juki_engine.audit.query import counts_since, read
from juki_engine.audit.records import (
    ANSWERED,
    MODES,
    OPERATOR,
    OUTCOMES,
    RESIDENT,
    SCHEMA,
    AuditContext,
    AuditUnavailable,
)
from juki_engine.audit.segments import fsync_directory
from juki_engine.audit.writer import AuditTrail, Commit

__all__ = [
    "ANSWERED",
    "MODES",
    "OPERATOR",
    "OUTCOMES",
    "RESIDENT",
    "SCHEMA",
    "AuditContext",
    "AuditTrail",
    "AuditUnavailable",
    "Commit",
    "counts_since",
    "fsync_directory",
    "read",
]
