"""``celflow ingest-worker``: consume the NATS JetStream bus into a database until a signal.

The application around :class:`~celflow.bus.IngestWorker`: a manager on the configured database,
signal handling, and the worker's status for the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from ._config import Config, parse_config
from ._exceptions import WriterBusyError
from ._location import Location, check_bus_url, parse_location
from ._manager import EventPersistenceManager
from .bus import DEFAULT_DURABLE, DEFAULT_STREAM, DEFAULT_SUBJECT, DEFAULT_URL, IngestWorker, WorkerStats

__all__ = ["run_ingest_worker"]

log = logging.getLogger("celflow.bus")


def _with_database(config: Config, database: str | os.PathLike[str] | Location | None) -> Config:
    """``config`` storing into ``database`` (a path, ``sqlite:///path`` or a PostgreSQL URL)."""
    if database is None:
        return config
    location = parse_location(database)
    settings = config.persistence
    if location.is_sqlite:
        settings = msgspec.structs.replace(settings, database_path=location.path, database_url="")
    else:
        settings = msgspec.structs.replace(settings, database_url=location.url)
    return msgspec.structs.replace(config, persistence=settings)


async def _start_manager(
    settings: Config, stop: asyncio.Event, on_status: Callable[[dict[str, Any]], None] | None
) -> EventPersistenceManager | None:
    """A started manager; while another process holds the (SQLite) file alone (a recovery), wait.

    ``None`` if ``stop`` was set first.
    """
    waiting = False
    while not stop.is_set():
        manager = EventPersistenceManager(settings)
        try:
            await manager.start()
            return manager
        except WriterBusyError as exc:
            if not waiting:
                waiting = True
                log.info("standby: %s; starting when it is done", exc)
                if on_status is not None:
                    on_status({"event": "standby", "reason": str(exc)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    return None


def run_ingest_worker(
    bus_url: str = DEFAULT_URL,
    database: str | os.PathLike[str] | Location | None = None,
    *,
    config: Mapping[str, Any] | Config | None = None,
    stream: str = DEFAULT_STREAM,
    subject: str = DEFAULT_SUBJECT,
    durable: str = DEFAULT_DURABLE,
    batch: int = 64,
    ack_wait: float = 30.0,
    fetch_timeout: float = 1.0,
    on_status: Callable[[dict[str, Any]], None] | None = None,
) -> WorkerStats:
    """Consume ``stream`` into ``database`` until SIGINT/SIGTERM; return what was done.

    ``database`` (a path, ``sqlite:///path`` or a ``postgresql://`` URL) replaces the config's.
    Any number of workers (and other writers) may store into the same database, a SQLite file too.
    """
    settings = _with_database(parse_config(config), database)
    check_bus_url(bus_url)

    async def main() -> WorkerStats:
        stop = asyncio.Event()
        worker: IngestWorker | None = None

        def on_signal() -> None:
            stop.set()
            if worker is not None:
                worker.request_stop()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
                loop.add_signal_handler(sig, on_signal)
        started = time.monotonic()
        manager = await _start_manager(settings, stop, on_status)
        if manager is None:
            return WorkerStats()
        try:
            worker = IngestWorker(
                manager,
                bus_url,
                stream=stream,
                subject=subject,
                durable=durable,
                batch=batch,
                ack_wait=ack_wait,
                fetch_timeout=fetch_timeout,
                on_status=on_status,
            )
            if stop.is_set():
                worker.request_stop()
            stats = await worker.run()
        finally:
            await manager.stop()
        if on_status is not None:
            on_status({"event": "stopped", "seconds": round(time.monotonic() - started, 3), **stats.to_dict()})
        return stats

    return asyncio.run(main())
