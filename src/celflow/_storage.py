"""The storage contract: what every backend provides to the layers above (protocols only).

Nothing above the backends writes SQL or knows one. The contract is split by role, as
eventsourcing layers its recorders: a store that records events, reads them, counts them, looks
after itself, and keeps patterns and system stats. :class:`EventStore` is all of them; the
contract tests in ``tests/store_contract.py`` run against each backend.

A backend is a package (``celflow._sqlite``, ``celflow._postgres``) with the functions of
:class:`Backend`; :mod:`celflow._backends` finds it for a location.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from ._encoding import Row
from ._location import Location
from ._types import EventQuery, InsertResult, Pattern, StoredEvent, SystemStats

__all__ = [
    "Backend",
    "Durability",
    "EventCounter",
    "EventReader",
    "EventRecorder",
    "EventStore",
    "HealthReport",
    "PatternRecorder",
    "StoreCare",
    "SystemStatsRecorder",
]

Durability = Literal["normal", "full"]


class EventRecorder(Protocol):
    """Appends batches of prepared events."""

    #: What messages show: the file's path, or the URL with its password masked.
    path: str
    readonly: bool

    def insert_events(self, rows: Sequence[Row], *, want_ids: bool = True) -> InsertResult:
        """Append a batch atomically; duplicates are ignored and counted."""

    def close(self) -> None:
        """Release every resource; later use raises :class:`~celflow.DatabaseClosedError`."""


class EventReader(Protocol):
    """Reads events: pages in time order, and everything after an id (live streams)."""

    def select_events(self, query: EventQuery) -> tuple[list[StoredEvent], str | None]:
        """A page of events and the cursor of the next one."""

    def select_after(self, after_id: int, query: EventQuery, *, until_id: int | None = None) -> list[StoredEvent]:
        """Events with ``after_id < id <= until_id`` matching ``query``, in id (commit) order, up to its limit."""

    def last_id(self) -> int:
        """The highest id ever given to an event (0 for none); ids are never reused."""

    def time_limit(self, seconds: float | None) -> contextlib.AbstractContextManager[None]:
        """Within it, this thread's reads stop with :class:`~celflow.QueryTimeoutError` after ``seconds``."""


class EventCounter(Protocol):
    """Counts, answered from the per-minute counters where they can."""

    def count_events(self, query: EventQuery) -> int:
        """How many events match."""

    def count_by(self, field: str, query: EventQuery) -> dict[str, int]:
        """Counts per type, source or action."""

    def histogram(self, bucket: float, query: EventQuery) -> list[tuple[float, int]]:
        """Counts per time bucket, oldest first."""

    def rebuild_counts(self) -> None:
        """Recount the per-minute counters from the events."""


class StoreCare(Protocol):
    """Retention and upkeep while the store is in use, and its figures."""

    def delete_before(self, cutoff: float, *, limit: int | None = None) -> int:
        """Delete events older than ``cutoff``."""

    def maintain(self, *, vacuum_pages: int = 500) -> int:
        """Reclaim a bounded amount of space; return the free space (pages) left."""

    def optimize(self) -> None:
        """Refresh statistics and tidy derived data; cheap at any size."""

    def quick_check(self) -> list[str]:
        """Problems a quick structural check of the stored data finds (empty: none)."""

    def stats(self) -> dict[str, Any]:
        """Counts and sizes (the seed's ``get_database_stats``)."""

    def sizes(self) -> dict[str, float]:
        """Size on disk in MB (``database_size_mb``, ``file_size_mb``, ``wal_size_mb``)."""


class PatternRecorder(Protocol):
    """The seed's ``patterns`` table."""

    def insert_pattern(
        self, pattern_type: str, confidence: float, pattern_data: Any, *, event_id: int | None, embryo_id: str | None
    ) -> int:
        """Store a pattern."""

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

    def pattern_summary(self) -> list[tuple[str, int, float]]:
        """``(pattern_type, count, average confidence)`` per type, most frequent first."""


class SystemStatsRecorder(Protocol):
    """The seed's ``system_stats`` table."""

    def insert_system_stats(self, values: dict[str, Any]) -> int:
        """Record a system stats snapshot."""

    def select_system_stats(
        self, *, start_time: float | None = None, end_time: float | None = None, limit: int = 100
    ) -> list[SystemStats]:
        """System stats snapshots, newest first."""


class EventStore(EventRecorder, EventReader, EventCounter, StoreCare, PatternRecorder, SystemStatsRecorder, Protocol):
    """A place to keep events, patterns and system stats: every role at once."""


class HealthReport(Protocol):
    """What a backend's ``check`` found (each backend has its own fields; these are common)."""

    path: str
    ok: bool
    mode: str
    problems: list[str]
    seconds: float

    @property
    def opened(self) -> bool:
        """Whether the database could be reached at all (if not, ``problems[0]`` says why)."""

    @property
    def condition(self) -> str:
        """``healthy``, or in a word or two what is wrong (``damaged``, ``unreachable``...)."""

    def details(self) -> list[str]:
        """Lines for a person: sizes, versions, the time span (no markup)."""

    def to_dict(self) -> dict[str, Any]:
        """As a plain dict (``--json``)."""


class Backend(Protocol):
    """What a backend package provides: its store, and the care of a database that is not open."""

    def open_store(self, location: Location, *, readonly: bool, durability: Durability, check: bool) -> EventStore:
        """Open (or, unless ``readonly``, create) the database; ``check`` runs the start-up check first."""

    def check(self, location: Location, *, full: bool) -> HealthReport:
        """Check the database without changing it."""

    def doctor(self, location: Location) -> tuple[HealthReport, list[str]]:
        """A full check, and what to do about what it found."""

    def vacuum(self, location: Location) -> tuple[float, float]:
        """Give free space back; return the size in MB before and after."""

    def backup(self, location: Location, destination: str | os.PathLike[str], *, force: bool) -> int:
        """A consistent private copy at ``destination``; return its size in bytes."""

    def recover(self, location: Location) -> Any:
        """Save what can be read from a damaged database into a new one; return a report."""
