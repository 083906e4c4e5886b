"""The SQLite backend: one WAL-mode file (:mod:`._store`), its schema (:mod:`._schema`), its care
(:mod:`._care`: the start-up check, check, vacuum, backup, recover, doctor) and a WAL reader
(:mod:`._wal`).

The functions below are the backend's side of :class:`celflow._storage.Backend`.
"""

from __future__ import annotations

import os

from .._location import Location
from .._storage import Durability
from . import _care
from ._care import CheckReport, RecoverReport, preflight
from ._lock import DatabaseLock
from ._store import SQLiteStore

__all__ = [
    "CheckReport",
    "RecoverReport",
    "SQLiteStore",
    "backup",
    "check",
    "doctor",
    "open_store",
    "recover",
    "vacuum",
]


def open_store(location: Location, *, readonly: bool, durability: Durability, check: bool) -> SQLiteStore:
    """Open (or create) the file; ``check`` refuses a damaged one before anything writes to it."""
    path = location.path
    if readonly or not check or not os.path.isfile(path):  # a new file has nothing to check
        return SQLiteStore(path, readonly=readonly, durability=durability)
    # A read-write connection may checkpoint the WAL into a damaged file when it closes: check
    # first, alone, so no writer changes the WAL meanwhile. With writers at work the file is in use
    # (each of them opened it so), and the check is theirs to have made.
    lock = DatabaseLock(path)
    with lock.alone(then_share=True) as alone:
        if alone:
            preflight(path, durability=durability)
    return SQLiteStore(path, durability=durability, lock=lock)  # it holds the lock shared from the check on


def check(location: Location, *, full: bool) -> CheckReport:
    """Check the file without changing it: ``quick_check`` (or the full ``integrity_check``) and the WAL."""
    return _care.check_database(location.path, full=full)


def doctor(location: Location) -> tuple[CheckReport, list[str]]:
    """A full check, and what to do about what it found."""
    return _care.doctor(location.path)


def vacuum(location: Location) -> tuple[float, float]:
    """Rebuild the file without its free pages; the size in MB before and after."""
    return _care.vacuum_database(location.path)


def backup(location: Location, destination: str | os.PathLike[str], *, force: bool) -> int:
    """A consistent private copy, taken online; its size in bytes."""
    return _care.backup_database(location.path, destination, force=force)


def recover(location: Location) -> RecoverReport:
    """Save what can be read into a new file at the same path; the damaged one is kept aside."""
    return _care.recover_database(location.path)
