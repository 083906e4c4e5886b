"""Database care for the CLI and scripts: check, doctor, vacuum, backup, recover, whatever the backend.

Each function parses the location once and hands it to its backend's own care (the SQLite file's
integrity checks and WAL, PostgreSQL's catalog and VACUUM). Nothing here deletes or overwrites a
user's database.
"""

from __future__ import annotations

import os
from typing import Any

from ._backends import backend_for
from ._location import Location, parse_location
from ._storage import HealthReport

__all__ = ["backup_database", "check_database", "doctor", "recover_database", "vacuum_database"]

Where = str | os.PathLike[str] | Location


def check_database(location: Where, *, full: bool = False) -> HealthReport:
    """Check a database without changing it (``full``: every page, or every row against the counters)."""
    where = parse_location(location)
    return backend_for(where).check(where, full=full)


def doctor(location: Where) -> tuple[HealthReport, list[str]]:
    """A full check, and what to do about what it found, in plain words."""
    where = parse_location(location)
    return backend_for(where).doctor(where)


def vacuum_database(location: Where) -> tuple[float, float]:
    """Give free space back (SQLite: rebuild the file; PostgreSQL: VACUUM ANALYZE); MB before and after."""
    where = parse_location(location)
    return backend_for(where).vacuum(where)


def backup_database(location: Where, destination: str | os.PathLike[str], *, force: bool = False) -> int:
    """A consistent private copy of a SQLite file, taken online; its size in bytes (a server database is
    refused with the command that backs it up)."""
    where = parse_location(location)
    return backend_for(where).backup(where, destination, force=force)


def recover_database(location: Where) -> Any:
    """Save what can be read from a damaged SQLite file into a new one at the same path; the report says
    what was saved (a server database is refused with what to do instead)."""
    where = parse_location(location)
    return backend_for(where).recover(where)
