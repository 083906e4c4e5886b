"""A small client for CelFlow's HTTP API, for producers and readers on this machine or another.

::

    from celflow.client import Client

    with Client() as celflow:                  # finds data/service.json and data/token
        celflow.send({"event_type": "app_focus", "source": "window", "data": {"app": "editor"}})
        for event in celflow.follow(event_type="app_focus"):
            print(event["id"], event["data"])

``send`` buffers events and a background thread posts them in batches; failed posts are retried
with backoff. Retries never duplicate: the client stamps each event's ``timestamp`` before the
first try, so a repeated post matches the stored events' dedup keys. :class:`AsyncClient` is the
same for asyncio code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx
import orjson
import websockets
from websockets.asyncio.client import connect as async_connect
from websockets.sync.client import connect as sync_connect

from ._exceptions import ServiceError

__all__ = ["AsyncClient", "Client", "discover"]

RETRY_STATUSES = frozenset({502, 503, 504})


def discover(url: str | None = None, token: str | None = None, data_dir: str | None = None) -> tuple[str, str | None]:
    """The service's URL and token: the arguments, else ``CELFLOW_URL`` / ``CELFLOW_TOKEN``, else
    ``service.json`` and ``token`` in the data folder (``data`` by default, as ``celflow run`` uses)."""
    folder = data_dir or os.environ.get("CELFLOW_DATA_DIR") or "data"
    url = url or os.environ.get("CELFLOW_URL")
    if url is None:
        path = os.path.join(folder, "service.json")
        try:
            with open(path, "rb") as f:
                info = orjson.loads(f.read())
            url, pid = str(info["url"]), int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ServiceError(
                f"no CelFlow service found: {path} is missing (is `celflow run` running?); pass url= or set CELFLOW_URL"
            ) from None
        if not _alive(pid):  # left by a crash: whoever listens there now must not get the token
            raise ServiceError(f"{path} is stale: process {pid} is gone (is `celflow run` running?)")
    token = token or os.environ.get("CELFLOW_TOKEN")
    if token is None:
        with contextlib.suppress(OSError), open(os.path.join(folder, "token"), encoding="ascii") as f:
            token = f.read().strip() or None
    return url.rstrip("/"), token


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def _dumps(value: Any) -> bytes:
    """JSON bytes of their own size: orjson's keep its ~4 KiB write buffer, too much to hold per buffered event."""
    return bytes(memoryview(orjson.dumps(value)))


def _stamp(event: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The event with a timestamp, so that a retried post is recognised as the same event."""
    stamped = dict(event)
    if stamped.get("timestamp") is None:
        stamped["timestamp"] = now
    return stamped


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        message, details = str(error.get("message")), {k: v for k, v in error.items() if k not in ("message",)}
    except (ValueError, KeyError, TypeError):
        message, details = response.text[:500], {}
    raise ServiceError(f"HTTP {response.status_code}: {message}", status=response.status_code, details=details)


def _stream_message(raw: str | bytes) -> tuple[list[dict[str, Any]], int]:
    """The events of one stream message and where to resume (raise the service's error)."""
    message = orjson.loads(raw)
    if "error" in message:
        raise ServiceError(message["error"]["message"], status=message["error"].get("status"))
    return message.get("events", []), int(message["last_id"])


def _stream_broke(exc: Exception, url: str, reconnect: bool) -> None:
    """Raise for a refused stream, or a broken one without ``reconnect``; else return (to reconnect)."""
    if isinstance(exc, websockets.exceptions.InvalidStatus):
        raise ServiceError(f"the stream was refused: HTTP {exc.response.status_code}") from None
    if not reconnect or not isinstance(exc, (OSError, websockets.exceptions.ConnectionClosedError)):
        raise ServiceError(f"the stream from {url} broke: {exc}") from None


def _ws_url(base: str, params: Mapping[str, Any]) -> str:
    query = str(httpx.QueryParams({k: v for k, v in params.items() if v is not None}))
    return (
        base.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        + "/api/v1/stream"
        + (f"?{query}" if query else "")
    )


class _Options:
    def __init__(self, retries: int, batch_size: int, flush_interval: float, max_buffer: int) -> None:
        if batch_size < 1 or max_buffer < batch_size:
            raise ValueError("need batch_size >= 1 and max_buffer >= batch_size")
        self.retries, self.batch_size, self.flush_interval, self.max_buffer = (
            retries,
            batch_size,
            flush_interval,
            max_buffer,
        )


class Client:
    """Synchronous client; thread-safe. Use it as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        data_dir: str | None = None,
        timeout: float = 30.0,
        retries: int = 8,
        batch_size: int = 1000,
        flush_interval: float = 0.5,
        max_buffer: int = 100_000,
    ) -> None:
        self.url, token = discover(url, token, data_dir)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=self._headers, timeout=timeout)
        self._options = _Options(retries, batch_size, flush_interval, max_buffer)
        self._buffer: list[bytes] = []  # encoded events
        self._in_flight = 0
        self._lock = threading.Condition()
        self._sender: threading.Thread | None = None
        self._closing = False
        self._flushing = 0  # flush() calls waiting: send what there is at once
        self.last_error: ServiceError | None = None  # of the background sender

    # -- writing -------------------------------------------------------------------------------

    def send(self, event: Mapping[str, Any]) -> None:
        """Buffer one event; a background thread posts the buffer in batches (blocks when it is full)."""
        encoded = _dumps(_stamp(event, time.time()))  # a value JSON cannot hold raises here
        with self._lock:
            if self._closing:
                raise ServiceError("the client is closed")
            while len(self._buffer) >= self._options.max_buffer:
                self._lock.wait()
            self._buffer.append(encoded)
            if self._sender is None:
                self._sender = threading.Thread(target=self._send_loop, name="celflow-client", daemon=True)
                self._sender.start()
            if len(self._buffer) in (1, self._options.batch_size):
                self._lock.notify_all()

    def send_batch(self, events: Sequence[Mapping[str, Any]], *, wait: bool = False) -> list[int]:
        """Post events now (retrying); with ``wait``, return their ids once committed."""
        now = time.time()
        body = orjson.dumps([_stamp(e, now) for e in events])
        response = self._post(body, wait)
        return list(response.json().get("ids", [])) if wait else []

    def flush(self, timeout: float | None = None) -> None:
        """Return once every event sent is committed by the service (raise what the sender met)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._flushing += 1
            self._lock.notify_all()
            try:
                while self._buffer or self._in_flight:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        unsent = len(self._buffer) + self._in_flight
                        raise ServiceError(f"{unsent} events not yet sent after {timeout} s")
                    self._lock.wait(remaining)
            finally:
                self._flushing -= 1
        if self.last_error is not None:
            error, self.last_error = self.last_error, None
            raise error
        self._barrier()

    def _barrier(self) -> None:
        """Wait until the service has committed everything it accepted."""
        try:
            response = self._http.post("/api/v1/flush")
        except httpx.TransportError as exc:
            raise ServiceError(f"cannot reach CelFlow at {self.url}: {exc}") from None
        _raise_for(response)

    def _send_loop(self) -> None:
        options = self._options
        while True:
            with self._lock:
                if not self._buffer:
                    if self._closing:
                        return
                    self._lock.wait()  # send(), flush() and close() notify
                    continue
                if len(self._buffer) < options.batch_size and not (self._closing or self._flushing):
                    self._lock.wait(options.flush_interval)  # a fuller batch may come meanwhile
                batch = self._buffer[: options.batch_size]
                del self._buffer[: options.batch_size]
                self._in_flight = len(batch)
                self._lock.notify_all()
            try:
                self._post(b"[" + b",".join(batch) + b"]", False)
            except Exception as exc:  # noqa: BLE001 - kept for flush(); the sender must live on
                self.last_error = exc if isinstance(exc, ServiceError) else ServiceError(f"sending failed: {exc!r}")
            finally:
                with self._lock:
                    self._in_flight = 0
                    self._lock.notify_all()

    def _post(self, body: bytes, wait: bool) -> httpx.Response:
        params = {"wait": "true"} if wait else None
        headers = {"Content-Type": "application/json"}
        delay = 0.1
        for attempt in range(self._options.retries + 1):
            try:
                response = self._http.post("/api/v1/events", content=body, params=params, headers=headers)
            except httpx.TransportError as exc:
                if attempt == self._options.retries:
                    raise ServiceError(f"cannot reach CelFlow at {self.url}: {exc}") from None
            else:
                if response.status_code not in RETRY_STATUSES or attempt == self._options.retries:
                    _raise_for(response)
                    return response
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    # -- reading -------------------------------------------------------------------------------

    def _get(self, path: str, **params: Any) -> Any:
        try:
            response = self._http.get(path, params={k: v for k, v in params.items() if v is not None})
        except httpx.TransportError as exc:
            raise ServiceError(f"cannot reach CelFlow at {self.url}: {exc}") from None
        _raise_for(response)
        return response.json()

    def health(self) -> dict[str, Any]:
        """``/health``: the service's liveness and the writer's health."""
        result: dict[str, Any] = self._get("/health")
        return result

    def stats(self) -> dict[str, Any]:
        """The manager's ``get_stats()``."""
        result: dict[str, Any] = self._get("/api/v1/stats")
        return result

    def query(self, **filters: Any) -> dict[str, Any]:
        """One page: ``{"events": [...], "next_cursor": ...}``; the filters of ``get_events``."""
        result: dict[str, Any] = self._get("/api/v1/events", **filters)
        return result

    def events(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every matching event, page after page."""
        while True:
            page = self.query(**filters)
            yield from page["events"]
            if page["next_cursor"] is None:
                return
            filters["cursor"] = page["next_cursor"]

    def count(self, group_by: str | None = None, **filters: Any) -> Any:
        """The total, or counts per ``group_by`` (event_type, source, action)."""
        result = self._get("/api/v1/events/count", group_by=group_by, **filters)
        return result["total"] if group_by is None else result["counts"]

    def follow(self, *, after: int | None = None, reconnect: bool = True, **filters: Any) -> Iterator[dict[str, Any]]:
        """Live events (after the id ``after``: stored ones first); reconnects where it left off."""
        while True:
            try:
                with sync_connect(
                    _ws_url(self.url, {**filters, "after": after}), additional_headers=self._headers
                ) as ws:
                    for raw in ws:
                        events, after = _stream_message(raw)
                        yield from events
            except (OSError, websockets.exceptions.WebSocketException) as exc:
                _stream_broke(exc, self.url, reconnect)
            if not reconnect:
                return
            time.sleep(0.5)

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Send what is buffered, then close the connections."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        if self._sender is not None:
            self._sender.join()
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of :class:`Client` (``await send_batch``, ``async for ... in follow()``)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        data_dir: str | None = None,
        timeout: float = 30.0,
        retries: int = 8,
        batch_size: int = 1000,
        flush_interval: float = 0.5,
    ) -> None:
        self.url, token = discover(url, token, data_dir)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=timeout)
        self._options = _Options(retries, batch_size, flush_interval, max(batch_size, 100_000))
        self._buffer: list[bytes] = []
        self._sender: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.last_error: ServiceError | None = None

    async def send(self, event: Mapping[str, Any]) -> None:
        """Buffer one event; a background task posts the buffer in batches."""
        self._buffer.append(_dumps(_stamp(event, time.time())))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_loop())
        if len(self._buffer) >= self._options.batch_size:
            self._wake.set()
        while len(self._buffer) >= self._options.max_buffer:
            await asyncio.sleep(0.01)

    async def _send_loop(self) -> None:
        while self._buffer:
            if len(self._buffer) < self._options.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._options.flush_interval)
            self._wake.clear()
            batch, self._buffer = self._buffer[: self._options.batch_size], self._buffer[self._options.batch_size :]
            try:
                await self._post(b"[" + b",".join(batch) + b"]", False)
            except Exception as exc:  # noqa: BLE001 - kept for flush(); the sender must finish
                self.last_error = exc if isinstance(exc, ServiceError) else ServiceError(f"sending failed: {exc!r}")

    async def flush(self) -> None:
        """Return once every event sent is committed by the service."""
        self._wake.set()
        if self._sender is not None:
            await self._sender
        if self.last_error is not None:
            error, self.last_error = self.last_error, None
            raise error
        try:
            response = await self._http.post("/api/v1/flush")
        except httpx.TransportError as exc:
            raise ServiceError(f"cannot reach CelFlow at {self.url}: {exc}") from None
        _raise_for(response)

    async def send_batch(self, events: Sequence[Mapping[str, Any]], *, wait: bool = False) -> list[int]:
        """Post events now (retrying); with ``wait``, return their ids once committed."""
        now = time.time()
        response = await self._post(orjson.dumps([_stamp(e, now) for e in events]), wait)
        return list(response.json().get("ids", [])) if wait else []

    async def _post(self, body: bytes, wait: bool) -> httpx.Response:
        params = {"wait": "true"} if wait else None
        headers = {"Content-Type": "application/json"}
        delay = 0.1
        for attempt in range(self._options.retries + 1):
            try:
                response = await self._http.post("/api/v1/events", content=body, params=params, headers=headers)
            except httpx.TransportError as exc:
                if attempt == self._options.retries:
                    raise ServiceError(f"cannot reach CelFlow at {self.url}: {exc}") from None
            else:
                if response.status_code not in RETRY_STATUSES or attempt == self._options.retries:
                    _raise_for(response)
                    return response
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    async def query(self, **filters: Any) -> dict[str, Any]:
        """One page: ``{"events": [...], "next_cursor": ...}``."""
        try:
            response = await self._http.get(
                "/api/v1/events", params={k: v for k, v in filters.items() if v is not None}
            )
        except httpx.TransportError as exc:
            raise ServiceError(f"cannot reach CelFlow at {self.url}: {exc}") from None
        _raise_for(response)
        result: dict[str, Any] = response.json()
        return result

    async def follow(
        self, *, after: int | None = None, reconnect: bool = True, **filters: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Live events (after the id ``after``: stored ones first); reconnects where it left off."""
        while True:
            try:
                async with async_connect(
                    _ws_url(self.url, {**filters, "after": after}), additional_headers=self._headers
                ) as ws:
                    async for raw in ws:
                        events, after = _stream_message(raw)
                        for event in events:
                            yield event
            except (OSError, websockets.exceptions.WebSocketException) as exc:
                _stream_broke(exc, self.url, reconnect)
            if not reconnect:
                return
            await asyncio.sleep(0.5)

    async def close(self) -> None:
        """Send what is buffered, then close."""
        with contextlib.suppress(ServiceError):
            await self.flush()
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
