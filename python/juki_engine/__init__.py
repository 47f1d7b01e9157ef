"""juki_engine: the identity verification engine of a national resident registry network.

A Rust core holds every resident's 本人確認情報 as Apache Arrow columns with hash indexes on My
Number and resident code; this package is its typed Python API, and the gRPC front end over it
(`server`, `policy`, `audit`, `certs`, `client`).
"""

from juki_engine import ids
from juki_engine._core import (
    MAX_ROWS,
    DuplicateIdentifier,
    InternalError,
    InvalidIdentifier,
    InvalidInput,
    JukiError,
    ResourceExhausted,
    SnapshotCorrupt,
    SnapshotIOError,
)
from juki_engine.audit import AuditUnavailable
from juki_engine.policy import NotPermitted, PolicyError, QuotaExhausted
from juki_engine.registry import Registry

__all__ = [
    "MAX_ROWS",
    "AuditUnavailable",
    "DuplicateIdentifier",
    "InternalError",
    "InvalidIdentifier",
    "InvalidInput",
    "JukiError",
    "NotPermitted",
    "PolicyError",
    "QuotaExhausted",
    "Registry",
    "ResourceExhausted",
    "SnapshotCorrupt",
    "SnapshotIOError",
    "ids",
]
