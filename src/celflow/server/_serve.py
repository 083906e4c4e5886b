"""Serving the app with uvicorn inside the service's own event loop and signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from .._exceptions import ConfigError

__all__ = ["HttpServer", "bind"]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: a free port), or a ConfigError that says what to change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not socket.create_server's 0: asyncio sets TCP_NODELAY only on sockets
    # that say they are TCP, and without it every keep-alive answer waited ~40 ms for an ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        return sock
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another http.port "
            "(--port, CELFLOW_HTTP_PORT; 0 picks a free one) or switch the API off with --no-http"
        ) from None


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the service owns SIGINT/SIGTERM and stops the server itself


class HttpServer:
    """uvicorn on an already bound socket; ``stop()`` stops accepting, finishes requests, closes."""

    def __init__(self, app: ASGIApp, sock: socket.socket, *, graceful_seconds: int = 5) -> None:
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=graceful_seconds,
        )
        self.app = app
        self.server = _Server(config)
        self.socket = sock
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def start(self) -> None:
        """Start serving; return once the server accepts connections."""
        self._task = asyncio.create_task(self.server.serve(sockets=[self.socket]), name="celflow-http")
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop accepting, let running requests finish (up to the graceful timeout), close."""
        if self._task is None:
            return
        stop_streams = getattr(getattr(self.app, "state", None), "stop_streams", None)
        if callable(stop_streams):
            stop_streams()  # live streams end, so requests can finish
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
