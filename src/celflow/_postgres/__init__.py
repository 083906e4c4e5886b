"""The PostgreSQL backend: day partitions, JSON data, COPY ingest, trigram search (:mod:`._store`),
and its care (:mod:`._care`: check, vacuum, doctor). Needs the ``postgres`` extra (psycopg 3).

The functions below are the backend's side of :class:`celflow._storage.Backend`.
"""

from __future__ import annotations

import os
from typing import NoReturn

from .._location import Location
from .._storage import Durability
from ._care import PostgresCheckReport, check_postgres, doctor_postgres, refuse_backup, refuse_recover, vacuum_postgres
from ._store import DAY, SCHEMA_VERSION, PostgresStore

__all__ = [
    "DAY",
    "SCHEMA_VERSION",
    "PostgresCheckReport",
    "PostgresStore",
    "backup",
    "check",
    "doctor",
    "open_store",
    "recover",
    "vacuum",
]


def open_store(location: Location, *, readonly: bool, durability: Durability, check: bool) -> PostgresStore:
    """Connect (creating or upgrading the schema unless ``readonly``); the server owns durability and checks."""
    return PostgresStore(location, readonly=readonly)


def check(location: Location, *, full: bool) -> PostgresCheckReport:
    """Check read-only: the connection, the schema, sizes (``full``: the rows against the counters)."""
    return check_postgres(location, full=full)


def doctor(location: Location) -> tuple[PostgresCheckReport, list[str]]:
    """A full check, and what to do about what it found."""
    return doctor_postgres(location)


def vacuum(location: Location) -> tuple[float, float]:
    """``VACUUM (ANALYZE)`` every CelFlow table while writers go on; MB before and after."""
    return vacuum_postgres(location)


def backup(location: Location, destination: str | os.PathLike[str], *, force: bool) -> NoReturn:
    """Refused: a server database is backed up with pg_dump (the message says how)."""
    raise refuse_backup(location)


def recover(location: Location) -> NoReturn:
    """Refused: PostgreSQL recovers from its own WAL (the message says what to do)."""
    raise refuse_recover(location)
