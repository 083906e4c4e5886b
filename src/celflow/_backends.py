"""The factory: from a database location to its backend package, imported by name when first needed.

The contract (:mod:`celflow._storage`) never imports a backend, and neither does this module at
import time, so ``import celflow`` loads no database driver a program does not use.
"""

from __future__ import annotations

import importlib
import os
from typing import cast

from ._location import Backend as BackendName
from ._location import Location, parse_location
from ._storage import Backend, Durability, EventStore

__all__ = ["backend_for", "open_store"]


#: The package of each backend, imported when a location first needs it.
_BACKENDS: dict[BackendName, str] = {"sqlite": "._sqlite", "postgresql": "._postgres"}


def backend_for(location: str | os.PathLike[str] | Location) -> Backend:
    """The backend package of a location (imported now, by name)."""
    name = parse_location(location).backend
    return cast(Backend, importlib.import_module(_BACKENDS[name], __package__))


def open_store(
    location: str | os.PathLike[str] | Location,
    *,
    readonly: bool = False,
    durability: Durability = "normal",
    check: bool = False,
) -> EventStore:
    """Open the store a location names: a path or ``sqlite:///path`` is SQLite, a ``postgresql://``
    (or ``postgres://``) URL is PostgreSQL; any other scheme is refused (:class:`~celflow.ConfigError`).

    ``check``: run the backend's start-up check first (SQLite: the WAL chain and an integrity
    check, refusing a damaged file before anything writes to it).
    """
    where = parse_location(location)
    return backend_for(where).open_store(where, readonly=readonly, durability=durability, check=check)
