"""The headless service behind ``celflow run``: the manager, the capture sources, signals, logs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import os
import signal
import sys
import time
from typing import Any

import orjson

from ._config import Config, LoggingConfig
from ._exceptions import OperationalError
from ._files import ensure_private_dir
from ._forwarder import BusForwarder
from ._manager import EventPersistenceManager
from ._sink import Sink
from .capture.filesystem import FileSystemCapture
from .capture.processes import ProcessCapture
from .server import HttpServer, bind, create_app, load_or_create_token
from .server._guard import is_loopback_host

__all__ = ["PrivateRotatingFileHandler", "run_service", "serve", "setup_logging"]

log = logging.getLogger("celflow")


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files are created 0600 whatever the umask."""

    _last_complaint = 0.0

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)

    def handleError(self, record: logging.LogRecord) -> None:
        """A full or failing disk loses log lines, not the service: one line on stderr a minute, no traceback."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handleError(record)
            return
        now = time.monotonic()
        if now - self._last_complaint >= 60:
            self._last_complaint = now
            sys.stderr.write(f"celflow: cannot write the log file {self.baseFilename}: {exc.strerror or exc}\n")


def setup_logging(settings: LoggingConfig, data_dir: str) -> None:
    """Log to the console and, unless ``file`` is empty, to a rotating file in the data folder."""
    root = logging.getLogger("celflow")
    root.setLevel(settings.level)
    root.handlers.clear()
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(console)
    if settings.file:
        ensure_private_dir(data_dir)
        handler = PrivateRotatingFileHandler(
            os.path.join(data_dir, settings.file), maxBytes=settings.max_bytes, backupCount=settings.backups
        )
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)


async def serve(config: Config, stop: asyncio.Event | None = None, *, status_interval: float = 60.0) -> None:
    """Run the manager (with ``bus.publish``: the bus forwarder) and the capture sources until
    ``stop`` is set or SIGINT/SIGTERM arrives."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Outside the main thread there are no signal handlers: the caller sets `stop`.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    data_dir = config.persistence.data_dir
    sock = bind(config.http.host, config.http.port) if config.http.enabled else None  # a busy port fails first
    manager = open_sink(config)
    try:
        await manager.start()
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    sources: list[FileSystemCapture | ProcessCapture] = []
    http: HttpServer | None = None
    try:
        if sock is not None:
            token = load_or_create_token(data_dir) if config.http.auth else None
            http = HttpServer(create_app(manager, config.http, token=token), sock)
            await http.start()
            write_service_file(data_dir, http.url)
            log.info("API on %s (token in %s)", http.url, os.path.join(data_dir, "token") if token else "off: no auth")
            if not is_loopback_host(config.http.host):
                log.warning("the API listens on %s: other machines can reach it", config.http.host)
            if not token:
                log.warning("http.auth is off: any local program can read and write your events")
        capture = config.capture
        if capture.filesystem:
            fs = FileSystemCapture(
                manager.queue_event, capture.paths, exclude=[data_dir], ignore_hidden=capture.ignore_hidden
            )
            fs.start()
            sources.append(fs)
        if capture.processes:
            procs = ProcessCapture(
                manager.queue_event, interval=capture.process_interval, cmdline=capture.process_cmdline
            )
            procs.start()
            sources.append(procs)
        log.info("CelFlow is running; stop with Ctrl-C (SIGINT) or SIGTERM")
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=status_interval)
            except TimeoutError:
                log.info("%s", manager.stats().summary())
    finally:
        log.info("stopping: flushing queued events")
        if http is not None:
            try:
                await http.stop()  # no new requests; the running ones finish first
            except Exception:  # the events queued must still be written below
                log.exception("the HTTP server failed")
            remove_service_file(data_dir)
        elif sock is not None:
            sock.close()
        for source in sources:
            # off the loop: a capture thread may be waiting for the loop to take its last event
            await asyncio.to_thread(source.stop)
        await manager.stop()
        stats = manager.stats()
        lost = stats.lost
        if lost and stats.mode == "publish":
            raise OperationalError(f"{lost} accepted events were never acknowledged by the bus (see the log)")
        if lost:
            log.error("stopped: %d accepted events could not be written (see the errors above)", lost)
            raise OperationalError(
                f"{lost} accepted events could not be written before the stop (the disk kept failing; see the log)"
            )
        log.info("stopped cleanly")


def open_sink(config: Config) -> Sink:
    """Where ``celflow run`` puts its events: the local manager, or (``bus.publish``) the bus forwarder."""
    if config.bus.publish:
        return BusForwarder(config)  # nats-py loads only when it connects
    return EventPersistenceManager(config)


SERVICE_FILE = "service.json"


def write_service_file(data_dir: str, url: str) -> None:
    """Tell clients on this machine where the API listens (``service.json``, 0600)."""
    path = os.path.join(data_dir, SERVICE_FILE)
    temp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps({"url": url, "pid": os.getpid()}))
    os.replace(temp, path)


def remove_service_file(data_dir: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(data_dir, SERVICE_FILE))


def run_service(config: Config) -> None:
    """``celflow run``: set up logging and serve until a signal; returns after a clean stop."""
    setup_logging(config.logging, config.persistence.data_dir)
    asyncio.run(serve(config))
