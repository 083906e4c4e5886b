"""What the dashboard shows, read from the database (and the running service, if any).

Every read is indexed or pre-aggregated, so a refresh costs the same at 100 million events as at
a thousand: windowed counts and rates come from the per-minute counters, recent events from the
time index, patterns from their index. The one full count (the total) runs in a background
thread once a minute, unless the service reports it. A text filter is bounded by the time window
and a time limit.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .._database import EventDatabase
from .._exceptions import CelflowError, DatabaseClosedError, QueryTimeoutError
from .._location import Location, parse_location
from .._types import EventQuery, Pattern, StoredEvent, SystemStats

__all__ = ["WINDOWS", "DashboardSource", "Filters", "Snapshot"]

WINDOWS = {"hour": 3600.0, "day": 86400.0, "week": 7 * 86400.0}
RATE_MINUTES = 30
TOP_TYPES = 5
RECENT = 50
SEARCH_SECONDS = 0.5
TOTAL_EVERY = 60.0


@dataclass(frozen=True)
class Filters:
    """The recent-events table's filter box: ``type:T source:S words``."""

    event_type: str | None = None
    source: str | None = None
    search: str | None = None

    @classmethod
    def parse(cls, text: str) -> Filters:
        kinds: dict[str, str] = {}
        words = []
        for part in text.split():
            key, sep, value = part.partition(":")
            if sep and key in ("type", "source") and value:
                kinds[key] = value
            else:
                words.append(part)
        return cls(kinds.get("type"), kinds.get("source"), " ".join(words) or None)


@dataclass
class Snapshot:
    """Everything one refresh shows."""

    taken_at: float
    window: str
    total: int | None
    last_hour: int
    today: int
    in_window: int
    by_type: dict[str, int]
    by_source: dict[str, int]
    per_minute: list[int]  # the last RATE_MINUTES minutes, oldest first
    per_minute_by_type: dict[str, list[int]]
    rate_now: float  # events per second over the last 10 seconds
    sizes: dict[str, float]
    patterns: list[tuple[str, int, float]]
    newest_patterns: list[Pattern]
    system_stats: list[SystemStats]  # newest first
    recent: list[StoredEvent]
    recent_note: str = ""
    service: dict[str, Any] | None = None
    query_ms: float = 0.0


def _minutes(histogram: list[tuple[float, int]], end_minute: int) -> list[int]:
    counts = dict.fromkeys(range(end_minute - RATE_MINUTES + 1, end_minute + 1), 0)
    for start, n in histogram:
        minute = int(start // 60)
        if minute in counts:
            counts[minute] += n
    return list(counts.values())


class DashboardSource:
    """Reads snapshots from one database (a SQLite file or PostgreSQL), read-only; never blocks the writer.

    ``data_dir`` is the folder of the running service's ``service.json`` (default: the database
    file's folder; for a URL, none unless given): the service, when there, adds its figures.
    """

    def __init__(
        self,
        location: str | os.PathLike[str] | Location,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
        service: bool = True,
    ) -> None:
        self.location = parse_location(location)
        self.database = EventDatabase(self.location, readonly=True)
        self.path = self.location.shown  # what the title shows: the file as given, or the URL without password
        if data_dir is None and self.location.is_sqlite:
            data_dir = Path(self.location.path).parent
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.clock = clock
        self._total: int | None = None
        self._total_at = 0.0
        self._total_lock = threading.Lock()
        self._counting = False
        self._count_wanted = threading.Event()
        self._count_thread: threading.Thread | None = None
        self._reading = threading.Lock()  # a refresh and close() never overlap
        self._closed = False
        self._client: Any = None
        if service and self.data_dir is not None and (self.data_dir / "service.json").exists():
            self._client = self._connect(self.data_dir)

    @property
    def is_file(self) -> bool:
        """Whether the database is a file with a WAL of its own (not a server's tables)."""
        return self.location.is_sqlite

    def _connect(self, data_dir: Path) -> Any:
        from ..client import Client  # httpx loads only when a service runs

        try:
            return Client(data_dir=str(data_dir), timeout=0.5, retries=0)
        except CelflowError:
            return None

    def close(self) -> None:
        """Close, once a running refresh and count are done (a count still running after 5 s is left)."""
        with self._reading:
            self._closed = True
        self._count_wanted.set()  # the counting thread sees _closed and ends
        counting = self._count_thread
        if counting is not None:
            counting.join(5.0)
        if self._client is not None:
            self._client.close()
        if counting is None or not counting.is_alive():
            self.database.close()

    # -- the total: one full count a minute, off the refresh path ------------------------------

    def _count_loop(self) -> None:
        while True:
            self._count_wanted.wait()
            self._count_wanted.clear()
            if self._closed:
                return
            self._recount()

    def _recount(self) -> None:
        try:
            total = self.database.count_events()
        except CelflowError:
            total = None
        with self._total_lock:
            self._total, self._total_at, self._counting = total, time.monotonic(), False

    def total(self, *, wait: bool = False) -> int | None:
        """The last full count (``None`` until the first one is done); starts a recount when stale."""
        with self._total_lock:
            stale = not self._counting and (self._total is None or time.monotonic() - self._total_at > TOTAL_EVERY)
            if stale:
                self._counting = True
        if stale:
            if wait:
                self._recount()
            else:
                if self._count_thread is None:  # one thread, so one connection, for every recount
                    self._count_thread = threading.Thread(
                        target=self._count_loop, name="celflow-dashboard-count", daemon=True
                    )
                    self._count_thread.start()
                self._count_wanted.set()
        return self._total

    # -- one refresh ---------------------------------------------------------------------------

    def snapshot(self, window: str = "hour", filters: Filters | None = None, *, wait_total: bool = False) -> Snapshot:
        """One refresh's figures (raises :class:`DatabaseClosedError` after :meth:`close`)."""
        with self._reading:
            if self._closed:
                raise DatabaseClosedError(f"the dashboard's database {self.path} is closed")
            return self._snapshot(window, filters, wait_total=wait_total)

    def _snapshot(self, window: str, filters: Filters | None, *, wait_total: bool) -> Snapshot:
        started = time.perf_counter()
        filters = filters or Filters()
        db = self.database
        now = self.clock()
        since = now - WINDOWS[window]
        midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        end_minute = int(now // 60)
        rate_start = (end_minute - RATE_MINUTES + 1) * 60.0
        by_type = db.count_by("event_type", start_time=since, end_time=now + 1)
        per_minute = _minutes(db.histogram(60, start_time=rate_start, end_time=now + 1), end_minute)
        per_type = {
            kind: _minutes(db.histogram(60, start_time=rate_start, end_time=now + 1, event_type=kind), end_minute)
            for kind in list(by_type)[:TOP_TYPES]
        }
        recent, note = self._recent(filters, since, window)
        service = None
        if self._client is not None:
            try:
                service = self._client.stats()
            except CelflowError:
                service = None
            # A URL's data folder is the config's: its service may write another PostgreSQL database
            if service and not self.is_file and service["database_stats"].get("database_path") != self.path:
                service = None
        total = service["database_stats"]["total_events"] if service else self.total(wait=wait_total)
        snapshot = Snapshot(
            taken_at=now,
            window=window,
            total=total,
            last_hour=db.count_events(start_time=now - 3600, end_time=now + 1),
            today=db.count_events(start_time=midnight, end_time=now + 1),
            in_window=sum(by_type.values()),
            by_type=by_type,
            by_source=dict(list(db.count_by("source", start_time=since, end_time=now + 1).items())[:10]),
            per_minute=per_minute,
            per_minute_by_type=per_type,
            rate_now=db.count_events(start_time=now - 10, end_time=now + 1) / 10,
            sizes=db.store.sizes(),
            patterns=db.store.pattern_summary(),
            newest_patterns=db.patterns(limit=5),
            system_stats=db.system_stats(limit=30),
            recent=recent,
            recent_note=note,
            service=service,
        )
        snapshot.query_ms = (time.perf_counter() - started) * 1000
        return snapshot

    def _recent(self, filters: Filters, since: float, window: str) -> tuple[list[StoredEvent], str]:
        """The newest events matching the filter box; a text search stays inside the window."""
        store = self.database.store
        query = EventQuery(event_type=filters.event_type, source=filters.source, search=filters.search, limit=RECENT)
        if filters == Filters():
            return store.select_events(query)[0], ""  # the newest: the time index, from its end
        # A filter may match rarely: it looks in the window only, and gives up after a moment.
        query = EventQuery(
            event_type=filters.event_type, source=filters.source, search=filters.search, start_time=since, limit=RECENT
        )
        try:
            with store.time_limit(SEARCH_SECONDS):
                return store.select_events(query)[0], f"filtered, in the last {window}"
        except QueryTimeoutError:
            return [], f"the filter took over {SEARCH_SECONDS:g} s: choose a shorter window (w) or narrow it"
