"""``EventPersistenceManager``: the seed's asynchronous API over the batching writer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from ._backends import open_store
from ._config import Config, PersistenceConfig, parse_config
from ._database import EventDatabase
from ._encoding import EncodingOptions, Row, prepare_batch, prepare_each, prepare_event
from ._exceptions import ManagerStateError, QueueFullError
from ._location import Location
from ._privacy import PrivacyRules
from ._sink import DatabaseFigures, Prepared, SinkStats, read_figures
from ._writer import BatchWriter, Overflow

__all__ = ["EventPersistenceManager", "ManagerState", "create_event_persistence"]

log = logging.getLogger("celflow.manager")

_RETENTION_CHUNK = 5_000
#: Seconds between reads of the database's figures (count, sizes, last id) for stats: off the event
#: loop, on the writer thread between two batches; between reads, this run's own writes keep them current.
FIGURES_INTERVAL = 5.0
_VACUUM_STEP_PAGES = 500  # ~10 ms a step, so ingest waits little between two batches


class ManagerState(enum.Enum):
    """Where a manager is in its life: it starts once and stops once."""

    UNSTARTED = "unstarted"
    RUNNING = "running"
    STOPPED = "stopped"


class EventPersistenceManager:
    """Queues events from any thread or the event loop and stores them in batches.

    ``queue_event`` validates at the call and returns at once; a background thread commits
    batches of ``batch_size`` events, or whatever is waiting after ``batch_timeout`` seconds.
    ``await flush()`` and ``await store_events()`` wait for the commit.
    """

    def __init__(self, config: Mapping[str, Any] | Config | PersistenceConfig | None = None) -> None:
        self.config: Config = parse_config(config)
        settings = self.config.persistence
        self.settings: PersistenceConfig = settings
        self.options = EncodingOptions(
            settings.compression_threshold,
            settings.max_event_bytes,
            privacy=PrivacyRules.compile(self.config.privacy),
        )
        self.state = ManagerState.UNSTARTED
        self.database: EventDatabase | None = None
        self._writer: BatchWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started_at = 0.0
        self._removed = 0
        self._last_cleanup: float | None = None
        #: The database's figures as last read, with this run's (stored, removed) at that moment.
        self._figures: tuple[DatabaseFigures, int, int] = (DatabaseFigures(self.location.shown), 0, 0)

    @property
    def location(self) -> Location:
        """Where events go: ``database_url`` when set, else the file at ``database_path``."""
        return self.settings.location

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the database (after its start check) and start the writer and maintenance."""
        if self.state is not ManagerState.UNSTARTED:
            raise ManagerStateError(f"the manager is {self.state.value}; a manager starts only once")
        settings = self.settings
        location = self.location
        # The start check (SQLite: the WAL chain and an integrity check) refuses a damaged file
        # before anything writes to it.
        store = await asyncio.to_thread(open_store, location, durability=settings.durability, check=True)
        database = EventDatabase.over(store, location, self.options)  # the same rules, so their counter is one
        try:
            self._figures = (await asyncio.to_thread(read_figures, store), 0, 0)
        except BaseException:
            store.close()
            raise
        self.database = database
        self._writer = BatchWriter(
            database.store,
            batch_size=settings.batch_size,
            batch_timeout=settings.batch_timeout,
            max_queue_size=settings.max_queue_size,
            max_queue_bytes=settings.max_queue_bytes,
            overflow=settings.overflow,
            queue_timeout=settings.queue_timeout,
        )
        self._writer.start()
        self._started_at = time.time()
        self.state = ManagerState.RUNNING
        self._tasks.append(asyncio.create_task(self._maintenance_loop(), name="celflow-maintenance"))
        self._tasks.append(asyncio.create_task(self._figures_loop(), name="celflow-figures"))
        if settings.stats_interval > 0:
            self._tasks.append(asyncio.create_task(self._stats_loop(), name="celflow-system-stats"))
        log.info("storing events in %s (%d already there)", database.store.path, self._figures[0].total_events)
        if self.options.privacy is not None:
            rules = self.config.privacy  # counts only: a rule's text could name what it hides
            log.info(
                "privacy rules: %d drop, %d redacted field names, %d redacted patterns",
                len(rules.drop),
                len(rules.redact_fields),
                len(rules.redact_patterns),
            )

    async def stop(self) -> None:
        """Commit everything queued, then close; nothing accepted is lost on a graceful stop."""
        if self.state is not ManagerState.RUNNING:
            self.state = ManagerState.STOPPED
            return
        self.state = ManagerState.STOPPED
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        writer, database = self._writer, self.database
        assert writer is not None and database is not None
        await asyncio.to_thread(writer.stop)
        try:  # the true figures, for get_stats() after the stop (the writer is done: nothing moves)
            figures = await asyncio.to_thread(read_figures, database.store)
            self._figures = (figures, writer.stored, self._removed)
        except Exception as exc:  # noqa: BLE001 - the stop goes on: the last figures stay
            log.warning("reading the database's figures at the stop failed: %s", exc)
        database.close()
        self.database = None
        log.info(
            "stopped: %d events stored, %d duplicates, %d dropped, %d lost",
            writer.stored,
            writer.duplicates,
            writer.dropped,
            writer.lost,
        )

    async def __aenter__(self) -> EventPersistenceManager:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _running_writer(self) -> BatchWriter:
        if self.state is not ManagerState.RUNNING or self._writer is None:
            hint = "call `await start()` first" if self.state is ManagerState.UNSTARTED else "it was stopped"
            raise ManagerStateError(f"the persistence manager is not running ({hint})")
        return self._writer

    # -- events in -----------------------------------------------------------------------------

    def queue_event(self, event: Mapping[str, Any]) -> bool:
        """Validate and queue one event; ``False`` if the overflow policy dropped it.

        Raises ``ValidationError`` for a bad event (nothing is queued) and ``QueueFullError``
        when the queue stays full (overflow ``raise``, or ``block`` past ``queue_timeout``).
        An event a privacy drop rule discards returns ``True`` (handled as configured; not stored).
        """
        writer = self._running_writer()
        row = prepare_event(event, self.options)
        return True if row is None else writer.submit([row])

    def queue_events_batch(self, events: Iterable[Mapping[str, Any]]) -> bool:
        """Validate and queue events, all or none (a bad one raises naming its index)."""
        self._running_writer()  # a stopped manager says so before validating anything
        return self.queue_rows(prepare_batch(events, self.options))

    async def flush(self) -> None:
        """Return once everything queued before this call is committed."""
        await self._running_writer().flush()

    async def store_events(self, events: Iterable[Mapping[str, Any]]) -> list[int]:
        """Queue events and return their ids once committed (duplicates get the stored id).

        Events a privacy drop rule discards get no id: the ids are those of the events kept.
        """
        self._running_writer()
        return await self.store_rows(prepare_batch(events, self.options))

    async def store_event(self, event: Mapping[str, Any]) -> int | None:
        """Queue one event and return its id once committed; ``None`` if a privacy drop rule discarded it."""
        self._running_writer()
        row = prepare_event(event, self.options)
        if row is None:
            return None
        ids = await self.store_rows([row])
        if not ids:
            raise QueueFullError("the event was dropped: the queue is full and overflow is 'drop'")
        return ids[0]

    def queue_rows(self, rows: Sequence[Row], *, overflow: Overflow | None = None) -> bool:
        """Queue rows already prepared (by a server); ``overflow`` overrides the policy for this call."""
        return self._running_writer().submit(rows, overflow=overflow)

    async def store_rows(self, rows: Sequence[Row], *, overflow: Overflow | None = None) -> list[int]:
        """Queue prepared rows and return their ids once committed (``[]`` if dropped)."""
        future = self._running_writer().submit_awaited(rows, overflow=overflow)
        return [] if future is None else await future

    def prepare(self, events: Sequence[Any]) -> Prepared:
        """Validate and encode events received from outside (every invalid one is reported)."""
        rows, errors = prepare_each(events, self.options)
        return Prepared(len(events), rows, errors)

    def offer(self, prepared: Prepared) -> None:
        """Queue prepared events now, or raise :class:`QueueFullError` (a server's 202 or 503)."""
        self.queue_rows(prepared.rows, overflow="raise")

    async def commit(self, prepared: Prepared) -> list[int] | None:
        """Queue prepared events and return their ids once committed (a full queue raises)."""
        return await self.store_rows(prepared.rows, overflow="raise")

    def add_batch_observer(self, observer: Callable[[float, int], None]) -> None:
        """Call ``observer(seconds, inserted)`` on the writer thread after every committed batch."""
        self._running_writer().observers.append(observer)

    # -- reading -------------------------------------------------------------------------------

    def get_events(self, **kwargs: Any) -> list[dict[str, Any]]:
        """The arguments of :meth:`EventDatabase.get_events`; reads committed events (after a stop too)."""
        if self.state is ManagerState.RUNNING:
            return self.reader().get_events(**kwargs)
        if self.state is ManagerState.UNSTARTED:
            raise ManagerStateError("the persistence manager is not running (call `await start()` first)")
        with EventDatabase(self.location, readonly=True) as database:
            return database.get_events(**kwargs)

    def reader(self) -> EventDatabase:
        """The running manager's database, for reads; :class:`ManagerStateError` when it is not running."""
        if self.database is None or self.state is not ManagerState.RUNNING:
            raise ManagerStateError("the persistence manager is not running")
        return self.database

    def stats(self) -> SinkStats:
        """Counters of this run and the database's figures; never runs a database query (the figures are
        read every few seconds between two batches, and kept current with this run's own writes between)."""
        writer = self._writer
        running = self.state is ManagerState.RUNNING
        uptime = time.time() - self._started_at if self._started_at else 0.0
        figures, since_stored, since_removed = self._figures
        stored = writer.stored if writer else 0
        if writer is not None:
            figures = dataclasses.replace(
                figures,
                total_events=figures.total_events + (stored - since_stored) - (self._removed - since_removed),
                last_event_id=max(figures.last_event_id, writer.last_id),
            )
        batches = writer.batches if writer else 0
        return SinkStats(
            state=self.state.value,
            mode="store",
            healthy=bool(writer and writer.healthy) and running,
            total_stored=stored,
            duplicates=writer.duplicates if writer else 0,
            dropped=writer.dropped if writer else 0,
            lost=writer.lost if writer else 0,
            queue_size=writer.queue_size if writer else 0,
            max_queue_size=self.settings.max_queue_size,
            batches=batches,
            errors=writer.errors if writer else 0,
            last_error=writer.last_error if writer else None,
            database=figures,
            last_flush=writer.last_flush if writer else None,
            avg_batch_ms=round(1000 * writer.total_batch_seconds / batches, 3) if writer and batches else 0.0,
            last_batch_ms=round(1000 * writer.last_batch_seconds, 3) if writer else 0.0,
            events_per_second=round(writer.rate(), 1) if writer else 0.0,
            avg_events_per_second=round(stored / uptime, 1) if uptime > 0 else 0.0,
            uptime_seconds=round(uptime, 3),
            removed_by_retention=self._removed,
            privacy_dropped=self.options.privacy.dropped if self.options.privacy is not None else 0,
            last_cleanup=self._last_cleanup,
        )

    def get_stats(self) -> dict[str, Any]:
        """Counters of this run and the database's size (cheap: no query; see :meth:`stats`)."""
        return self.stats().to_dict()

    def _figures_step(self) -> Iterator[None]:
        """On the writer thread, between two batches: the figures and this run's counters of the same moment
        (read elsewhere, a batch committed during the read would be counted twice)."""
        writer, database = self._writer, self.database
        assert writer is not None and database is not None
        self._figures = (read_figures(database.store), writer.stored, self._removed)
        yield from ()

    async def _figures_loop(self) -> None:
        while True:
            await asyncio.sleep(FIGURES_INTERVAL)
            try:
                await asyncio.wrap_future(self._running_writer().run_task(self._figures_step))
            except ManagerStateError:
                return
            except Exception as exc:  # noqa: BLE001 - the figures stay as they were; the next read retries
                log.debug("reading the database's figures failed: %s", exc)

    # -- maintenance ---------------------------------------------------------------------------

    async def run_maintenance(self) -> int:
        """Apply retention and reclaim space now; return how many events were removed."""
        writer = self._running_writer()
        days = self.settings.retention_days
        cutoff = time.time() - days * 86400 if days > 0 else None
        removed: int = await asyncio.wrap_future(writer.run_task(lambda: self._maintenance_steps(cutoff)))
        self._last_cleanup = time.time()
        if removed:
            log.info("retention removed %d events older than %g days", removed, days)
        return removed

    def _maintenance_steps(self, cutoff: float | None) -> Generator[None, None, int]:
        """Runs on the writer thread, one short step per ``next()``; returns the count removed."""
        assert self.database is not None
        store = self.database.store
        removed = 0
        while cutoff is not None:
            n = store.delete_before(cutoff, limit=_RETENTION_CHUNK)
            removed += n
            self._removed += n  # with the chunk's commit: figures read between two chunks see it gone
            if n < _RETENTION_CHUNK:
                break
            yield
        free = store.maintain(vacuum_pages=_VACUUM_STEP_PAGES)
        while free > 0:
            yield
            left = store.maintain(vacuum_pages=_VACUUM_STEP_PAGES)
            if left >= free:  # nothing more to reclaim (e.g. a file without incremental vacuum)
                break
            free = left
        yield
        store.optimize()
        return removed

    async def _maintenance_loop(self) -> None:
        interval = self.settings.cleanup_interval_hours * 3600
        while True:
            try:
                await self.run_maintenance()
            except ManagerStateError:
                return
            except Exception:  # logged; ingest goes on and maintenance retries next interval
                log.exception("maintenance failed")
            await asyncio.sleep(interval)

    async def _stats_loop(self) -> None:
        interval = self.settings.stats_interval
        last_stored, last_time = 0, time.monotonic()
        while True:
            await asyncio.sleep(interval)
            writer = self._running_writer()
            now = time.monotonic()
            figures = self.stats().database
            values = {
                "timestamp": time.time(),
                "total_events": figures.total_events,
                "events_per_second": (writer.stored - last_stored) / max(now - last_time, 1e-9),
                "active_embryos": None,
                "avg_fitness": None,
                "storage_mb": figures.database_size_mb,
            }
            last_stored, last_time = writer.stored, now
            try:
                await asyncio.wrap_future(writer.run_task(functools.partial(self._snapshot_step, values)))
            except Exception:  # a missed snapshot is logged; the next one follows
                log.exception("recording system stats failed")

    def _snapshot_step(self, values: dict[str, Any]) -> Iterator[None]:
        """One system_stats row, written on the writer thread."""
        assert self.database is not None
        self.database.store.insert_system_stats(values)
        yield from ()


def create_event_persistence(
    config: Mapping[str, Any] | Config | PersistenceConfig | None = None,
) -> EventPersistenceManager:
    """Build a manager from the seed's config dict (whole, or just its ``persistence`` part)."""
    return EventPersistenceManager(config)
