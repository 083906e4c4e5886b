"""``EventDatabase``: the seed's synchronous API over a storage backend."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Literal

from ._backends import open_store
from ._config import PrivacyConfig
from ._encoding import MAX_SEARCH_LENGTH, EncodingOptions, _check_text, parse_timestamp, prepare_batch, prepare_event
from ._exceptions import ValidationError
from ._location import Location, parse_location
from ._privacy import PrivacyRules
from ._storage import EventStore
from ._types import EventPage, EventQuery, Pattern, StoredEvent, SystemStats

__all__ = ["EventDatabase", "make_query"]

_CLEANUP_CHUNK = 10_000


def _optional_time(value: object, field: str) -> float | None:
    return None if value is None else parse_timestamp(value, field=field)


def _optional_name(value: object, field: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValidationError(f"{field} must be a string, not {type(value).__name__}", field=field)
    if value is not None and not value.isascii():
        _check_text(value, field)  # a lone surrogate cannot be compared with stored (UTF-8) text
    return value


def make_query(
    start_time: object = None,
    end_time: object = None,
    event_type: str | None = None,
    limit: int | None = 1000,
    *,
    source: str | None = None,
    action: str | None = None,
    search: str | None = None,
    order: str = "desc",
    cursor: str | None = None,
) -> EventQuery:
    """Check query arguments and build an :class:`EventQuery` (errors name the argument)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValidationError(f"limit must be a whole number >= 0 or None, got {limit!r}", field="limit")
    if order not in ("desc", "asc"):
        raise ValidationError(f"order must be 'desc' (newest first) or 'asc', got {order!r}", field="order")
    search = _optional_name(search, "search")
    if search is not None and len(search) > MAX_SEARCH_LENGTH:
        raise ValidationError(
            f"search is {len(search)} characters long; the limit is {MAX_SEARCH_LENGTH}", field="search"
        )
    if cursor is not None and not isinstance(cursor, str):
        raise ValidationError("cursor must be the string a previous page returned", field="cursor")
    return EventQuery(
        start_time=_optional_time(start_time, "start_time"),
        end_time=_optional_time(end_time, "end_time"),
        event_type=_optional_name(event_type, "event_type"),
        source=_optional_name(source, "source"),
        action=_optional_name(action, "action"),
        search=search or None,
        order="asc" if order == "asc" else "desc",
        limit=limit,
        cursor=cursor,
    )


class EventDatabase:
    """Events in a database file, the seed's synchronous API; safe to share between threads.

    ``readonly=True`` never creates, migrates or writes the file and takes no lock: that is how
    the CLI reads while ``celflow run`` writes. Several objects and processes may write one file.
    ``privacy`` (the ``[privacy]`` settings, or rules already compiled) applies to every event
    stored through this object.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str] | Location = "data/events.db",
        *,
        readonly: bool = False,
        durability: Literal["normal", "full"] = "normal",
        compression_threshold: int = 1024,
        max_event_bytes: int = 16 * 1024 * 1024,
        privacy: PrivacyConfig | PrivacyRules | None = None,
    ) -> None:
        self.location = parse_location(db_path)
        #: The location as given (a file's path, or the URL: password included; messages use ``location.shown``).
        self.db_path = db_path.url if isinstance(db_path, Location) else os.fspath(db_path)
        self.options = EncodingOptions(compression_threshold, max_event_bytes, privacy=PrivacyRules.compile(privacy))
        self.store: EventStore = open_store(self.location, readonly=readonly, durability=durability)

    @classmethod
    def over(cls, store: EventStore, location: Location, options: EncodingOptions) -> EventDatabase:
        """The seed's API over a store already open (the manager's, which it opened with its start check)."""
        database = cls.__new__(cls)
        database.location, database.db_path, database.options, database.store = location, location.url, options, store
        return database

    # -- writing -------------------------------------------------------------------------------

    def store_event(self, event: Mapping[str, Any]) -> int | None:
        """Store one event now; return its id (a duplicate returns the stored event's id).

        ``None``: a privacy drop rule discarded the event; nothing was stored.
        """
        row = prepare_event(event, self.options)
        if row is None:
            return None
        result = self.store.insert_events([row])
        assert result.ids is not None
        return result.ids[0]

    def store_events_batch(self, events: Iterable[Mapping[str, Any]]) -> list[int]:
        """Store events in one transaction, all or none; return their ids in input order.

        A bad event rejects the whole batch with a :class:`ValidationError` naming its index.
        Events a privacy drop rule discards get no id: the ids are those of the events kept.
        """
        result = self.store.insert_events(prepare_batch(events, self.options))
        assert result.ids is not None
        return result.ids

    def cleanup_old_events(self, days_to_keep: float = 30) -> int:
        """Delete events older than ``days_to_keep`` days; return how many were removed."""
        if (
            isinstance(days_to_keep, bool)
            or not isinstance(days_to_keep, (int, float))
            or not (math.isfinite(days_to_keep) and days_to_keep >= 0)
        ):
            raise ValidationError(f"days_to_keep must be a number >= 0, got {days_to_keep!r}", field="days_to_keep")
        cutoff = time.time() - days_to_keep * 86400
        removed = 0
        while True:
            n = self.store.delete_before(cutoff, limit=_CLEANUP_CHUNK)
            removed += n
            if n < _CLEANUP_CHUNK:
                return removed

    # -- reading -------------------------------------------------------------------------------

    def get_events(
        self,
        start_time: object = None,
        end_time: object = None,
        event_type: str | None = None,
        limit: int | None = 1000,
        **filters: Any,
    ) -> list[dict[str, Any]]:
        """Events as dicts, newest first; ``filters``: source, action, search, order, cursor."""
        query = make_query(start_time, end_time, event_type, limit, **filters)
        return [e.to_dict() for e in self.store.select_events(query)[0]]

    def query(
        self,
        start_time: object = None,
        end_time: object = None,
        event_type: str | None = None,
        limit: int | None = 1000,
        **filters: Any,
    ) -> EventPage:
        """Like :meth:`get_events`, typed, with the cursor of the next page."""
        events, cursor = self.store.select_events(make_query(start_time, end_time, event_type, limit, **filters))
        return EventPage(events, cursor)

    def iter_events(self, *, page_size: int = 1000, limit: int | None = None, **filters: Any) -> Iterator[StoredEvent]:
        """Every matching event (at most ``limit``), fetched a page at a time: memory stays flat."""
        left = limit
        cursor = filters.pop("cursor", None)
        while left is None or left > 0:
            size = page_size if left is None else min(page_size, left)
            events, cursor = self.store.select_events(make_query(limit=size, cursor=cursor, **filters))
            yield from events
            if left is not None:
                left -= len(events)
            if cursor is None:
                return

    def follow(self, *, after: int | None = None, poll: float = 0.5, **filters: Any) -> Iterator[StoredEvent]:
        """Every matching event committed after the id ``after`` (default: the newest now), without end.

        Read in commit (id) order a page at a time, so none is missed or repeated; when caught up,
        it looks again every ``poll`` seconds. Takes the filters of :meth:`get_events`.
        """
        query = make_query(limit=1000, **filters)
        last = self.store.last_id() if after is None else after
        while True:
            page = self.store.select_after(last, query)
            yield from page
            if page:
                last = page[-1].id
            else:
                time.sleep(poll)

    def last_id(self) -> int:
        """The newest event's id (0 for none): :meth:`follow` from it misses nothing committed later."""
        return self.store.last_id()

    def count_events(self, **filters: Any) -> int:
        """How many events match the filters of :meth:`get_events`."""
        return self.store.count_events(make_query(limit=None, **filters))

    def count_by(self, field: str, **filters: Any) -> dict[str, int]:
        """Event counts per ``event_type``, ``source`` or ``action``, largest first."""
        return self.store.count_by(field, make_query(limit=None, **filters))

    def histogram(self, bucket: float = 60.0, **filters: Any) -> list[tuple[float, int]]:
        """Event counts per ``bucket`` seconds (e.g. 60: per-minute rates), oldest first.

        Takes the filters of :meth:`get_events`; each pair is (bucket start time, count), and
        buckets without events are left out.
        """
        if (
            isinstance(bucket, bool)
            or not isinstance(bucket, (int, float))
            or not (math.isfinite(bucket) and bucket >= 1)
        ):
            raise ValidationError(f"bucket must be a number of seconds >= 1, got {bucket!r}", field="bucket")
        return self.store.histogram(float(bucket), make_query(limit=None, **filters))

    def get_database_stats(self) -> dict[str, Any]:
        """Counts and sizes: total_events, database_size_mb, events_by_type, ..."""
        return self.store.stats()

    # -- patterns and system stats -------------------------------------------------------------

    def store_pattern(
        self,
        pattern_type: str,
        confidence: float,
        pattern_data: Any,
        *,
        event_id: int | None = None,
        embryo_id: str | None = None,
    ) -> int:
        """Store a pattern the host AI found; return its id."""
        if not isinstance(pattern_type, str) or not pattern_type:
            raise ValidationError("pattern_type must be a non-empty string", field="pattern_type")
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not math.isfinite(confidence):
            raise ValidationError(f"confidence must be a finite number, got {confidence!r}", field="confidence")
        if event_id is not None and (isinstance(event_id, bool) or not isinstance(event_id, int)):
            raise ValidationError("event_id must be an event's id (int) or None", field="event_id")
        _optional_name(embryo_id, "embryo_id")
        # validation only: privacy rules are for events, a pattern is stored as given
        prepare_event(
            {"event_type": "pattern", "source": "pattern", "data": pattern_data}, self.options._replace(privacy=None)
        )
        return self.store.insert_pattern(
            pattern_type, float(confidence), pattern_data, event_id=event_id, embryo_id=embryo_id
        )

    def get_patterns(
        self,
        *,
        pattern_type: str | None = None,
        event_id: int | None = None,
        embryo_id: str | None = None,
        min_confidence: float | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Patterns matching every given filter, newest first, as dicts."""
        return [
            p.to_dict()
            for p in self.patterns(
                pattern_type=pattern_type,
                event_id=event_id,
                embryo_id=embryo_id,
                min_confidence=min_confidence,
                limit=limit,
            )
        ]

    def patterns(self, **filters: Any) -> list[Pattern]:
        """Like :meth:`get_patterns`, typed."""
        return self.store.select_patterns(**filters)

    def record_system_stats(
        self,
        *,
        timestamp: object = None,
        total_events: int | None = None,
        events_per_second: float | None = None,
        active_embryos: int | None = None,
        avg_fitness: float | None = None,
        storage_mb: float | None = None,
    ) -> int:
        """Record a system stats snapshot (the dashboard's history); return its id."""
        values = {
            "timestamp": time.time() if timestamp is None else parse_timestamp(timestamp),
            "total_events": total_events,
            "events_per_second": events_per_second,
            "active_embryos": active_embryos,
            "avg_fitness": avg_fitness,
            "storage_mb": storage_mb,
        }
        for key, value in values.items():
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            ):
                raise ValidationError(f"{key} must be a finite number or None, got {value!r}", field=key)
        return self.store.insert_system_stats(values)

    def get_system_stats(
        self, start_time: object = None, end_time: object = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """System stats snapshots in a time range, newest first, as dicts."""
        return [s.to_dict() for s in self.system_stats(start_time=start_time, end_time=end_time, limit=limit)]

    def system_stats(
        self, *, start_time: object = None, end_time: object = None, limit: int = 100
    ) -> list[SystemStats]:
        """Like :meth:`get_system_stats`, typed."""
        return self.store.select_system_stats(
            start_time=_optional_time(start_time, "start_time"),
            end_time=_optional_time(end_time, "end_time"),
            limit=limit,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection; using the object afterwards raises ``DatabaseClosedError``."""
        self.store.close()

    def __enter__(self) -> EventDatabase:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EventDatabase({self.location.shown!r})"
