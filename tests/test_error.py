"""Tests for the exception tree (rust/error.rs)."""

from __future__ import annotations

import pickle

from juki_engine import (
    DuplicateIdentifier,
    InvalidIdentifier,
    InvalidInput,
    JukiError,
    SnapshotCorrupt,
    SnapshotIOError,
)

CLASSES = [InvalidIdentifier, InvalidInput, DuplicateIdentifier, SnapshotCorrupt, SnapshotIOError]


def test_tree() -> None:
    assert issubclass(JukiError, Exception)
    for cls in CLASSES:
        assert issubclass(cls, JukiError)
    assert issubclass(DuplicateIdentifier, InvalidInput)
    assert not issubclass(InvalidIdentifier, InvalidInput)
    assert not issubclass(SnapshotIOError, SnapshotCorrupt)


def test_exceptions_pickle() -> None:
    # Bulk jobs run in worker processes: their errors must cross a process boundary intact.
    for cls in [JukiError, *CLASSES]:
        err = cls("row 3: my_number '1': must be exactly 12 ASCII digits")
        again = pickle.loads(pickle.dumps(err))
        assert type(again) is cls
        assert str(again) == str(err)


def test_exception_names() -> None:
    # Tracebacks and logs show module.name: it must be importable and name what users catch.
    public = {"JukiError": JukiError, **{cls.__name__: cls for cls in CLASSES}}
    for name, cls in public.items():
        assert cls.__qualname__ == name, cls.__qualname__
        assert cls.__module__ in {"juki_engine", "juki_engine._core"}, cls.__module__
