"""The storage contract: what every backend (SQLite today) provides to the layers above.

Nothing above this line of code writes SQL. A backend module implements :class:`EventStore`
and the contract tests in ``tests/test_store_contract.py`` run against each one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from ._encoding import Row
from ._types import EventQuery, InsertResult, Pattern, StoredEvent, SystemStats

__all__ = ["EventStore", "counter_for", "is_postgres_url", "open_store"]

#: The columns the per-minute counters (``event_counts``) count by, in every backend.
COUNTED_COLUMNS = ("event_type", "source")


def counter_for(query: EventQuery, group: str | None) -> tuple[str, str | None] | None:
    """``(kind, name)`` when the per-minute counters can answer ``query`` (grouped by ``group``); else None."""
    if query.search is not None or query.action is not None:
        return None
    if query.event_type is not None and query.source is not None:
        return None
    if query.event_type is not None:
        kind, name = "event_type", query.event_type
    elif query.source is not None:
        kind, name = "source", query.source
    else:
        kind, name = (group or "event_type"), None
    if kind not in COUNTED_COLUMNS or (group is not None and group != kind):
        return None
    return kind, name


def is_postgres_url(location: str) -> bool:
    """Whether ``location`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return location.startswith(("postgresql://", "postgres://"))


class EventStore(Protocol):
    """A place to keep events, patterns and system stats."""

    path: str
    readonly: bool

    def acquire_writer(self) -> None:
        """Become this database's writer, or raise ``WriterBusyError``."""

    def insert_events(self, rows: Sequence[Row], *, want_ids: bool = True) -> InsertResult:
        """Append a batch atomically; duplicates are ignored and counted."""

    def select_events(self, query: EventQuery) -> tuple[list[StoredEvent], str | None]:
        """A page of events and the cursor of the next one."""

    def time_limit(self, seconds: float | None) -> contextlib.AbstractContextManager[None]:
        """Within it, this thread's reads stop with :class:`QueryTimeoutError` after ``seconds``."""

    def select_after(self, after_id: int, query: EventQuery, *, until_id: int | None = None) -> list[StoredEvent]:
        """Events with ``after_id < id <= until_id`` matching ``query``, in id (commit) order, up to its limit."""

    def quick_check(self) -> list[str]:
        """Problems a quick structural check of the stored data finds (empty: none)."""

    def last_id(self) -> int:
        """The highest id ever given to an event (0 for none); ids are never reused."""

    def count_events(self, query: EventQuery) -> int:
        """How many events match."""

    def count_by(self, field: str, query: EventQuery) -> dict[str, int]:
        """Counts per type, source or action."""

    def histogram(self, bucket: float, query: EventQuery) -> list[tuple[float, int]]:
        """Counts per time bucket, oldest first."""

    def delete_before(self, cutoff: float, *, limit: int | None = None) -> int:
        """Delete events older than ``cutoff``."""

    def maintain(self, *, vacuum_pages: int = 500) -> int:
        """Reclaim a bounded amount of space; return the free space (pages) left."""

    def optimize(self) -> None:
        """Refresh statistics and tidy derived data; cheap at any size."""

    def stats(self) -> dict[str, Any]:
        """Counts and sizes."""

    def sizes(self) -> dict[str, float]:
        """Size on disk in MB (``database_size_mb``, ...), without a query."""

    def insert_pattern(
        self, pattern_type: str, confidence: float, pattern_data: Any, *, event_id: int | None, embryo_id: str | None
    ) -> int:
        """Store a pattern."""

    def pattern_summary(self) -> list[tuple[str, int, float]]:
        """``(pattern_type, count, average confidence)`` per type, most frequent first."""

    def select_patterns(
        self,
        *,
        pattern_type: str | None = None,
        event_id: int | None = None,
        embryo_id: str | None = None,
        min_confidence: float | None = None,
        limit: int = 100,
    ) -> list[Pattern]:
        """Patterns, newest first."""

    def insert_system_stats(self, values: dict[str, Any]) -> int:
        """Record a system stats snapshot."""

    def select_system_stats(
        self, *, start_time: float | None = None, end_time: float | None = None, limit: int = 100
    ) -> list[SystemStats]:
        """System stats snapshots, newest first."""

    def rebuild_counts(self) -> None:
        """Recount the per-minute counters from the events."""

    def close(self) -> None:
        """Release every resource."""


def sqlite_path(location: str) -> str:
    """The file a SQLite location names: ``sqlite:///path`` is ``path``; a plain path is itself."""
    return location.removeprefix("sqlite:///")


def open_store(
    location: str | os.PathLike[str], *, readonly: bool = False, durability: Literal["normal", "full"] = "normal"
) -> EventStore:
    """Open the backend a location names: a path or ``sqlite:///path`` is SQLite, a
    ``postgresql://`` (or ``postgres://``) URL is PostgreSQL."""
    from ._postgres import PostgresStore
    from ._sqlite import SQLiteStore

    path = os.fspath(location)
    if is_postgres_url(path):
        return PostgresStore(path, readonly=readonly)
    return SQLiteStore(sqlite_path(path), readonly=readonly, durability=durability)
