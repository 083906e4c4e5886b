"""``celflow run --publish``: the service sends its events to the NATS JetStream bus instead of storing them.

:class:`BusForwarder` offers the service and its HTTP API what they use of an
:class:`~celflow.EventPersistenceManager` (queue, store, flush, stats), over a
:class:`~celflow.bus.BusPublisher`. Reads go to ``persistence.database_url`` when one is set (the
shared store the ingest workers fill), read-only; without one this service keeps nothing to read.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._config import Config
from ._database import EventDatabase
from ._encoding import Row, prepare_each
from ._exceptions import CelflowError, ManagerStateError, QueueFullError
from ._location import mask_url
from ._sink import DatabaseFigures, Prepared, SinkStats, read_figures
from .bus import BusPublisher, BusState

__all__ = ["BusForwarder"]

log = logging.getLogger("celflow")

#: Seconds between reads of the shared store's totals (for /stats and /metrics), and between
#: attempts to open it while it cannot be read.
_REFRESH = 10.0


class BusForwarder:
    """The service's sink in publish mode: events go to the bus; reads, if any, to the shared store."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.publisher = BusPublisher.from_config(config, name=f"{socket.gethostname()}-{os.getpid()}")
        #: How rows given to :meth:`queue_rows` must be prepared (never compressed; privacy rules).
        self.options = self.publisher.options
        self.read_url = config.persistence.database_url
        self._reads: EventDatabase | None = None
        self._read_error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._started_at = 0.0
        self._figures = DatabaseFigures(mask_url(self.read_url) if self.read_url else None)
        self._refresher: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the bus (buffering while it is away) and open the shared store for reads."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._started_at = time.time()
        await self.publisher.start()
        log.info(
            "publishing to %s (stream %s, subject %s) instead of storing locally",
            mask_url(self.publisher.url),
            self.publisher.stream,
            self.publisher.subject,
        )
        if self.read_url:
            await self._open_reads()
            self._refresher = asyncio.create_task(self._refresh_loop(), name="celflow-forwarder-reads")

    async def stop(self) -> None:
        """Send what is buffered (up to 10 s), then close."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.publisher.stop()
        if self._reads is not None:
            self._reads.close()
            self._reads = None

    async def _open_reads(self) -> None:
        try:
            self._reads = await asyncio.to_thread(EventDatabase, self.read_url, readonly=True)
        except CelflowError as exc:
            if self._read_error != str(exc):
                log.warning("reads are not available yet (retrying every %g s): %s", _REFRESH, exc)
            self._read_error = str(exc)
            return
        self._read_error = None
        log.info("reads come from %s", mask_url(self.read_url))

    async def _refresh_loop(self) -> None:
        while True:
            if self._reads is None:
                await self._open_reads()
            if self._reads is not None:
                try:
                    self._figures = await asyncio.to_thread(read_figures, self._reads.store)
                except CelflowError as exc:
                    log.warning("reading the shared store's totals failed: %s", exc)
            await asyncio.sleep(_REFRESH)

    # -- what the service and the HTTP API use of a manager ------------------------------------

    def reader(self) -> EventDatabase:
        """The shared store, read-only; :class:`ManagerStateError` (503) when there is none to read."""
        if self._reads is not None:
            return self._reads
        if not self.read_url:
            raise ManagerStateError(
                f"this CelFlow service publishes its events to {mask_url(self.publisher.url)} and stores "
                "none: read them where the ingest workers store them (set persistence.database_url here "
                "to that database to read it through this service)"
            )
        raise ManagerStateError(f"the shared store cannot be read yet: {self._read_error}")

    def queue_event(self, event: Mapping[str, Any]) -> bool:
        """Validate and buffer one event: from a capture thread (waiting while the buffer is full,
        as ``overflow`` says) or on the event loop (raising :class:`QueueFullError` when full)."""
        loop = self._loop
        if loop is None or self.publisher.state is not BusState.RUNNING:
            raise ManagerStateError("the bus publisher is not running")
        if threading.get_ident() == self._loop_thread:
            rows, errors = prepare_each([event], self.options)
            if errors:
                raise errors[0]
            self.publisher.offer_rows(rows, [event.get("idempotency_key")] if rows else [])
            return True
        waited = self.publisher.queue_timeout + 5.0
        future = asyncio.run_coroutine_threadsafe(self.publisher.publish([event]), loop)
        try:
            return future.result(waited)
        except concurrent.futures.TimeoutError:
            if future.cancel():  # not taken: the caller learns it was not
                raise QueueFullError(f"the bus publisher did not take the event within {waited:g} s") from None
            return future.result()  # it was taken just now

    def queue_rows(
        self, rows: Sequence[Row], *, overflow: str | None = None, keys: Sequence[str | None] | None = None
    ) -> bool:
        """On the loop: buffer prepared rows now, or raise :class:`QueueFullError` (the HTTP API's 202/503)."""
        self.publisher.offer_rows(rows, keys)
        return True

    async def store_rows(
        self, rows: Sequence[Row], *, overflow: str | None = None, keys: Sequence[str | None] | None = None
    ) -> list[int]:
        """Buffer rows and return once JetStream acknowledged them (``[]``: the store gives ids later)."""
        await self.publisher.publish_rows(rows, keys, overflow="raise")  # a full buffer answers 503, never drops
        await self.publisher.flush(self.publisher.queue_timeout + self.publisher.ack_timeout * 3)
        return []

    async def flush(self) -> None:
        """Return once JetStream acknowledged every event accepted before this call."""
        await self.publisher.flush()

    def prepare(self, events: Sequence[Any]) -> Prepared:
        """Validate and encode events as the publisher sends them, keeping each one's idempotency key."""
        kept: list[int] = []
        rows, errors = prepare_each(events, self.options, kept=kept)
        keys = [events[i].get("idempotency_key") for i in kept]
        return Prepared(len(events), rows, errors, keys)

    def offer(self, prepared: Prepared) -> None:
        """On the loop: buffer prepared events now, or raise :class:`QueueFullError`."""
        self.publisher.offer_rows(prepared.rows, prepared.keys)

    async def commit(self, prepared: Prepared) -> list[int] | None:
        """Buffer prepared events and return ``None`` once JetStream acknowledged them (the store gives
        ids when a worker stores them); a full buffer raises, never drops."""
        await self.store_rows(prepared.rows, keys=prepared.keys)
        return None

    def add_batch_observer(self, observer: Callable[[float, int], None]) -> None:
        """Nothing is committed here: live streams poll the shared store instead."""

    def stats(self) -> SinkStats:
        """The manager's counters with the bus's meaning: ``total_stored`` is what JetStream acknowledged."""
        bus = self.publisher.stats()
        uptime = time.time() - self._started_at if self._started_at else 0.0
        running = bus["state"] == BusState.RUNNING.value
        return SinkStats(
            state="running" if running else bus["state"],
            mode="publish",
            healthy=running and bool(bus["healthy"]),
            total_stored=bus["published"],
            duplicates=bus["duplicates"],
            dropped=bus["dropped"],
            lost=bus["lost"],
            queue_size=bus["buffered"],
            max_queue_size=bus["max_buffer"],
            batches=bus["messages"],
            errors=bus["retries"],
            last_error=bus["last_error"],
            database=self._figures,
            avg_events_per_second=round(bus["published"] / uptime, 1) if uptime > 0 else 0.0,
            uptime_seconds=round(uptime, 3),
            privacy_dropped=self.options.privacy.dropped if self.options.privacy is not None else 0,
            bus={"url": mask_url(self.publisher.url), "stream": self.publisher.stream, **bus},
        )

    def get_stats(self) -> dict[str, Any]:
        """:meth:`stats` as a dict."""
        return self.stats().to_dict()
