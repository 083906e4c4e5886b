"""Typed values that cross the library's boundaries."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = ["EventPage", "EventQuery", "InsertResult", "Pattern", "StoredEvent", "SystemStats"]

Order = Literal["desc", "asc"]


class StoredEvent(msgspec.Struct, frozen=True):
    """An event as stored: the seed's columns, with ``data`` decoded."""

    id: int
    timestamp: float
    event_type: str
    action: str | None
    source: str
    data: Any
    hash: str | None
    processed: bool
    created_at: str | None

    def to_dict(self) -> dict[str, Any]:
        """The plain dict the seed's ``get_events`` returns."""
        return {f: getattr(self, f) for f in self.__struct_fields__}


class EventQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A filter over events; ``None`` means no constraint.

    ``start_time`` is inclusive and ``end_time`` exclusive. ``search`` matches a substring
    (case-insensitive for ASCII) of the type, source, action or JSON data. ``cursor`` is the
    ``next_cursor`` of a previous page.
    """

    start_time: float | None = None
    end_time: float | None = None
    event_type: str | None = None
    source: str | None = None
    action: str | None = None
    search: str | None = None
    order: Order = "desc"
    limit: int | None = 1000
    cursor: str | None = None


class InsertResult(msgspec.Struct, frozen=True):
    """What a batch insert did: ids in input order (duplicates get the stored event's id)."""

    ids: list[int] | None
    inserted: int
    duplicates: int
    #: The highest id this insert gave (0: it gave none).
    last_id: int = 0


class Pattern(msgspec.Struct, frozen=True):
    """A row of the seed's ``patterns`` table, ``pattern_data`` decoded."""

    id: int
    event_id: int | None
    pattern_type: str
    confidence: float
    pattern_data: Any
    embryo_id: str | None
    created_at: str | None

    def to_dict(self) -> dict[str, Any]:
        """As a plain dict."""
        return {f: getattr(self, f) for f in self.__struct_fields__}


class SystemStats(msgspec.Struct, frozen=True):
    """A row of the seed's ``system_stats`` table."""

    id: int
    timestamp: float
    total_events: int | None
    events_per_second: float | None
    active_embryos: int | None
    avg_fitness: float | None
    storage_mb: float | None
    created_at: str | None

    def to_dict(self) -> dict[str, Any]:
        """As a plain dict."""
        return {f: getattr(self, f) for f in self.__struct_fields__}


class EventPage(msgspec.Struct, frozen=True):
    """One page of a query and the cursor of the next page (``None`` at the end)."""

    events: list[StoredEvent]
    next_cursor: str | None
