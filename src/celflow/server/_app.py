"""The HTTP API (``/api/v1``), ``/health`` and ``/metrics``, as a Starlette app over a running sink."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import io
import math
import time
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from .._config import HttpConfig
from .._database import EventDatabase, make_query
from .._exceptions import (
    BusError,
    CelflowError,
    ManagerStateError,
    OperationalError,
    QueryTimeoutError,
    QueueFullError,
    ValidationError,
)
from .._export import CSV_COLUMNS, _csv_row
from .._sink import Prepared, Sink
from .._types import StoredEvent
from ._guard import Guard
from ._metrics import Metrics
from ._openapi import openapi
from ._stream import CommitSignal, follow, page_query

__all__ = ["create_app"]

T = TypeVar("T")
#: Seconds between reads of a live stream without a commit of this process: other processes (a
#: second writer, `celflow events import`, the ingest workers) may write the same store.
STREAM_POLL = 1.0
API = "/api/v1"
MAX_PAGE = 10_000
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/x-jsonlines"})
_json = msgspec.json.Encoder()


class ApiError(Exception):
    """An error answered with ``status`` and a JSON body ``{"error": {...}}``."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.details = details


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_json.encode(content), status_code=status, media_type="application/json", headers=headers)


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **details: Any) -> Response:
    return json_response({"error": {"status": status, "message": message, **details}}, status, headers)


class Api:
    """The request handlers; one instance per app, bound to one running sink."""

    def __init__(self, sink: Sink, settings: HttpConfig, metrics: Metrics) -> None:
        self.sink = sink
        self.settings = settings
        self.metrics = metrics
        self.signal = CommitSignal()
        self.openapi = openapi()
        self._loop: asyncio.AbstractEventLoop | None = None

    def on_batch(self, seconds: float, inserted: int) -> None:
        """Writer thread, after each commit: metrics, and wake the live streams."""
        self.metrics.observe_batch(seconds, inserted)
        loop = self._loop
        if inserted and loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed
                loop.call_soon_threadsafe(self.signal.bump)

    # -- helpers -------------------------------------------------------------------------------

    @property
    def database(self) -> EventDatabase:
        return self.sink.reader()

    async def read(self, endpoint: str, fn: Callable[[], T]) -> T:
        """Run a database read on a worker thread, under the query time limit, timed for /metrics."""
        store, limit = self.database.store, self.settings.query_timeout

        def call() -> T:
            with store.time_limit(limit):
                return fn()

        started = time.perf_counter()
        try:
            return await asyncio.to_thread(call)
        finally:
            self.metrics.query_seconds.labels(endpoint).observe(time.perf_counter() - started)

    async def body(self, request: Request) -> bytes:
        """The request body, gunzipped if need be, refused (413) past ``max_body_bytes``."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"the request body is {int(declared):,} bytes; the limit is {limit:,} (max_body_bytes)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the request body is over the limit of {limit:,} bytes (max_body_bytes)")
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding == "gzip":
            body = _gunzip(body, limit)
        elif encoding != "identity":
            raise ApiError(415, f"Content-Encoding {encoding!r} is not supported; send gzip or nothing")
        return body

    def events_of(self, request: Request, body: bytes) -> list[Any]:
        """The events of an ingest body: one JSON object, a JSON array, or JSON Lines."""
        media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if media in NDJSON_TYPES:
            events = []
            for number, line in enumerate(body.splitlines(), 1):
                if line.strip():
                    try:
                        events.append(orjson.loads(line))
                    except orjson.JSONDecodeError as exc:
                        raise ApiError(400, f"line {number} is not valid JSON: {exc}", line=number) from None
        elif media in ("application/json", ""):
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise ApiError(400, f"the body is not valid JSON: {exc}") from None
            events = data if isinstance(data, list) else [data]
        else:
            raise ApiError(
                415, f"Content-Type {media!r} is not supported; send application/json or application/x-ndjson"
            )
        if not events:
            raise ApiError(400, "the body holds no event")
        limit = self.settings.max_batch_events
        if len(events) > limit:
            raise ApiError(413, f"the batch holds {len(events):,} events; the limit is {limit:,} (max_batch_events)")
        return events

    def query_of(self, request: Request, *, default_limit: int | None = 100) -> Any:
        """An :class:`EventQuery` from the query string (400 naming the bad parameter)."""
        params = request.query_params
        allowed = {"start_time", "end_time", "event_type", "source", "action", "search", "order", "limit", "cursor"}
        unknown = sorted(set(params) - allowed - {"group_by", "bucket", "after", "format"})
        if unknown:
            raise ApiError(400, f"unknown query parameter(s): {', '.join(unknown)}", field=unknown[0])
        args: dict[str, Any] = {k: params[k] for k in allowed if k in params}
        for name in ("start_time", "end_time"):
            if name in args:
                with contextlib.suppress(ValueError):  # else ISO 8601 text: make_query parses or names it
                    args[name] = float(args[name])
        limit = args.pop("limit", None)
        if limit is None:
            args["limit"] = default_limit
        else:
            if not _whole_number(limit) or not 0 < int(limit) <= MAX_PAGE:
                raise ApiError(400, f"limit must be a whole number from 1 to {MAX_PAGE}, got {limit!r}", field="limit")
            args["limit"] = int(limit)
        return make_query(**args)

    # -- endpoints -----------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        """``ok`` (200); ``degraded`` (503) while the writer retries a failed batch: events are still queued
        up to max_queue_size but nothing is written (last_error says why); ``unhealthy`` (503) when stopped."""
        stats = self.sink.stats()
        healthy = stats.healthy
        running = stats.state == "running"
        content = {
            "status": "ok" if healthy else "degraded" if running else "unhealthy",
            "state": stats.state,
            "writer_healthy": healthy,
            "queue_size": stats.queue_size,
            "max_queue_size": stats.max_queue_size,
            "last_error": stats.last_error,
        }
        return json_response(content, 200 if healthy else 503)

    async def ingest(self, request: Request) -> Response:
        """POST events: 202 once queued, or 201 with their ids once committed (``?wait=true``)."""
        wait = request.query_params.get("wait", "false").lower() in ("1", "true", "yes", "committed")
        body = await self.body(request)

        def parse() -> Prepared:
            return self.sink.prepare(self.events_of(request, body))

        # Parsing and encoding a large body would stall every other request and stream.
        prepared = parse() if len(body) < 65536 else await asyncio.to_thread(parse)
        if prepared.errors:
            listed = [{"index": e.index, "field": e.field, "message": str(e)} for e in prepared.errors[:100]]
            raise ApiError(
                422,
                f"{len(prepared.errors)} of {prepared.received} events are invalid; nothing was stored",
                errors=listed,
            )
        accepted = len(prepared.rows)
        self.metrics.received.inc(accepted)
        if not wait:
            self.sink.offer(prepared)
            return json_response({"accepted": accepted}, 202)
        ids = await self.sink.commit(prepared)
        if ids is None:  # acknowledged by the bus: the store gives ids when a worker stores them
            return json_response({"accepted": accepted, "ids": [], "published": True}, 201)
        return json_response({"accepted": accepted, "ids": ids}, 201)

    async def list_events(self, request: Request) -> Response:
        query = self.query_of(request)
        database = self.database
        events, cursor = await self.read("events", lambda: database.store.select_events(query))
        return json_response({"events": events, "next_cursor": cursor})

    async def count(self, request: Request) -> Response:
        query = self.query_of(request, default_limit=None)
        group_by = request.query_params.get("group_by")
        database = self.database
        if group_by is None:
            total = await self.read("count", lambda: database.store.count_events(query))
            return json_response({"total": total})
        counts = await self.read("count", lambda: database.store.count_by(group_by, query))
        return json_response({"group_by": group_by, "counts": counts})

    async def histogram(self, request: Request) -> Response:
        query = self.query_of(request, default_limit=None)
        raw = request.query_params.get("bucket", "60")
        try:
            bucket = float(raw)
        except ValueError:
            raise ApiError(400, f"bucket must be a number of seconds, got {raw!r}", field="bucket") from None
        database = self.database
        buckets = await self.read("histogram", lambda: database.histogram(bucket, **_filters(query)))
        return json_response({"bucket": bucket, "buckets": [{"start": t, "count": n} for t, n in buckets]})

    def stream_args(self, params: Any) -> tuple[Any, int]:
        """The filters of a stream and where it starts (``after``: an id; default: now)."""
        unknown = sorted(set(params) - {"event_type", "source", "action", "search", "after"})
        if unknown:
            raise ApiError(400, f"unknown query parameter(s): {', '.join(unknown)}", field=unknown[0])
        query = make_query(
            event_type=params.get("event_type"),
            source=params.get("source"),
            action=params.get("action"),
            search=params.get("search"),
            limit=None,
        )
        raw = params.get("after")
        if raw is None:
            return query, -1
        if not _whole_number(raw):
            raise ApiError(400, f"after must be an event id (a whole number >= 0), got {raw!r}", field="after")
        return query, int(raw)

    async def _pages(self, query: Any, after: int, closed: asyncio.Event) -> Any:
        """The stream's pages, after the id ``after`` (-1: the newest event now)."""
        self._loop = asyncio.get_running_loop()
        database = self.database
        store, q = database.store, page_query(query)
        if after < 0:
            after = await self.read("stream", store.last_id)

        def page(after_id: int) -> tuple[list[StoredEvent], int]:
            # Up to the newest id now: a filter that matches little does not rescan a growing
            # range at every commit; the stream goes on from there.
            newest = store.last_id()
            events = store.select_after(after_id, q, until_id=newest)
            return events, events[-1].id if len(events) == q.limit else max(newest, after_id)

        async def read(after_id: int) -> tuple[list[StoredEvent], int]:
            return await self.read("stream", lambda: page(after_id))

        return after, follow(read, after, self.signal, closed, poll=STREAM_POLL)

    async def stream_ws(self, websocket: WebSocket) -> None:
        """WebSocket: ``{"last_id": n}`` first, then ``{"events": [...], "last_id": n}`` messages."""
        await websocket.accept()
        try:
            query, after = self.stream_args(websocket.query_params)
        except (CelflowError, ApiError) as exc:  # said in a message, then a policy-violation close
            status = exc.status if isinstance(exc, ApiError) else 400
            await websocket.send_text(_json.encode({"error": {"status": status, "message": str(exc)}}).decode())
            await websocket.close(code=1008)
            return
        closed = asyncio.Event()

        async def watch() -> None:
            try:
                while (await websocket.receive())["type"] != "websocket.disconnect":
                    pass
            finally:
                closed.set()

        watcher = asyncio.create_task(watch())
        try:
            start, pages = await self._pages(query, after, closed)
            await websocket.send_text(_json.encode({"last_id": start}).decode())
            async for page, last_id in pages:
                message = {"events": page, "last_id": last_id}
                await websocket.send_text(_json.encode(message).decode())
            if not closed.is_set():
                await websocket.close(code=1001)  # the server is stopping
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client left
        except CelflowError as exc:  # a read failed (time limit, stopping): say so, then close
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await websocket.send_text(_json.encode({"error": {"status": 503, "message": str(exc)}}).decode())
                await websocket.close(code=1011)
        finally:
            watcher.cancel()

    async def stream_sse(self, request: Request) -> Response:
        """Server-Sent Events: one ``event`` per stored event, its id as the SSE id (Last-Event-ID resumes)."""
        params = dict(request.query_params)
        if "after" not in params and request.headers.get("last-event-id"):
            params["after"] = request.headers["last-event-id"]
        query, after = self.stream_args(params)
        start, pages = await self._pages(query, after, asyncio.Event())

        async def body() -> Any:
            yield f": events after id {start}\n\n".encode()
            try:
                async for page, _ in pages:
                    yield b"".join(b"id: %d\nevent: event\ndata: %s\n\n" % (e.id, _json.encode(e)) for e in page)
            except CelflowError as exc:  # the answer has started: end the stream with an error event
                yield b"event: error\ndata: %s\n\n" % _json.encode({"status": 503, "message": str(exc)})

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

    async def export(self, request: Request) -> Response:
        """All matching events, oldest first, streamed page by page as JSON Lines or CSV."""
        fmt = request.query_params.get("format", "jsonl")
        if fmt not in ("jsonl", "csv"):
            raise ApiError(400, f"format must be 'jsonl' or 'csv', got {fmt!r}", field="format")
        query = msgspec.structs.replace(self.query_of(request, default_limit=None), limit=PAGE_SIZE)
        if "order" not in request.query_params:
            query = msgspec.structs.replace(query, order="asc")
        database = self.database
        store = database.store

        async def rows() -> Any:
            if fmt == "csv":
                yield _csv_line(CSV_COLUMNS)
            page_query = query
            while True:
                events, cursor = await self.read("export", functools.partial(store.select_events, page_query))
                if fmt == "csv":
                    yield b"".join(_csv_line(_csv_row(e)) for e in events)
                else:
                    yield b"".join(_json.encode(e) + b"\n" for e in events)
                if cursor is None:
                    return
                page_query = msgspec.structs.replace(page_query, cursor=cursor)

        media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
        disposition = f'attachment; filename="celflow-events.{fmt}"'
        return StreamingResponse(rows(), media_type=media, headers={"Content-Disposition": disposition})

    async def json_body(self, request: Request, fields: set[str], required: tuple[str, ...] = ()) -> dict[str, Any]:
        """A JSON object body with only ``fields``, and all of ``required``."""
        try:
            data = orjson.loads(await self.body(request))
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object")
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ApiError(400, f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
        for name in required:
            if name not in data:
                raise ApiError(400, f"{name} is required", field=name)
        return data

    async def list_patterns(self, request: Request) -> Response:
        params = request.query_params
        _only(params, {"pattern_type", "event_id", "embryo_id", "min_confidence", "limit"})
        filters = {
            "pattern_type": params.get("pattern_type"),
            "embryo_id": params.get("embryo_id"),
            "event_id": _int_param(params, "event_id"),
            "min_confidence": _float_param(params, "min_confidence"),
            "limit": _int_param(params, "limit", 100, low=1, high=MAX_PAGE),
        }
        database = self.database
        patterns = await self.read("patterns", lambda: database.patterns(**filters))
        return json_response({"patterns": patterns})

    async def add_pattern(self, request: Request) -> Response:
        required = ("pattern_type", "confidence", "pattern_data")
        data = await self.json_body(request, {*required, "event_id", "embryo_id"}, required)
        event_id = data.get("event_id")
        if isinstance(event_id, float) and event_id.is_integer():  # JSON has one number type: 7.0 is 7
            data["event_id"] = int(event_id)
        database = self.database
        new_id = await asyncio.to_thread(
            database.store_pattern,
            data["pattern_type"],
            data["confidence"],
            data["pattern_data"],
            event_id=data.get("event_id"),
            embryo_id=data.get("embryo_id"),
        )
        return json_response({"id": new_id}, 201)

    async def list_system_stats(self, request: Request) -> Response:
        params = request.query_params
        _only(params, {"start_time", "end_time", "limit"})
        args = {
            "start_time": _float_param(params, "start_time"),
            "end_time": _float_param(params, "end_time"),
            "limit": _int_param(params, "limit", 100, low=1, high=MAX_PAGE),
        }
        database = self.database
        snapshots = await self.read("system_stats", lambda: database.system_stats(**args))
        return json_response({"system_stats": snapshots})

    async def add_system_stats(self, request: Request) -> Response:
        fields = {"timestamp", "total_events", "events_per_second", "active_embryos", "avg_fitness", "storage_mb"}
        data = await self.json_body(request, fields)
        for name, value in data.items():
            if (
                name != "timestamp"
                and value is not None
                and (isinstance(value, bool) or not isinstance(value, (int, float)))
            ):
                raise ApiError(400, f"{name} must be a number or null, got {value!r}", field=name)
        database = self.database
        new_id = await asyncio.to_thread(functools.partial(database.record_system_stats, **data))
        return json_response({"id": new_id}, 201)

    async def flush(self, request: Request) -> Response:
        """Answer once everything queued before this request is committed."""
        await self.sink.flush()
        return json_response({"flushed": True})

    async def stats(self, request: Request) -> Response:
        return json_response(self.sink.stats().to_dict())

    async def openapi_json(self, request: Request) -> Response:
        return json_response(self.openapi)

    async def metrics_text(self, request: Request) -> Response:
        body, media = self.metrics.render(self.sink)
        return Response(body, media_type=media)


PAGE_SIZE = 1000


def _csv_line(values: Any) -> bytes:
    """One CSV record, the way ``celflow events export --format csv`` writes it."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(values)
    return out.getvalue().encode()


def _only(params: Any, allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ApiError(400, f"unknown query parameter(s): {', '.join(unknown)}", field=unknown[0])


def _int_param(params: Any, name: str, default: int | None = None, *, low: int = 0, high: int | None = None) -> Any:
    raw = params.get(name)
    if raw is None:
        return default
    if not _whole_number(raw) or int(raw) < low or (high is not None and int(raw) > high):
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ApiError(400, f"{name} must be a whole number {span}, got {raw!r}", field=name)
    return int(raw)


def _float_param(params: Any, name: str) -> float | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a number, got {raw!r}", field=name) from None
    if not math.isfinite(value):
        raise ApiError(400, f"{name} must be a finite number, got {raw!r}", field=name)
    return value


def _gunzip(body: bytes, limit: int) -> bytes:
    """Every gzip member of ``body`` (``cat a.gz b.gz`` is valid gzip), refused past ``limit`` bytes."""
    out = bytearray()
    rest = body
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise ApiError(400, f"the body is not valid gzip: {exc}") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise ApiError(413, f"the unzipped body is over the limit of {limit:,} bytes (max_body_bytes)")
        if not inflater.eof:
            raise ApiError(400, "the gzip body is truncated")
        rest = inflater.unused_data
    return bytes(out)


def _whole_number(raw: str) -> bool:
    """Plain ASCII digits that fit SQLite's 64-bit integers (``str.isdigit`` also takes '²')."""
    return raw.isascii() and raw.isdigit() and len(raw) <= 19 and int(raw) < 2**63


def _filters(query: Any) -> dict[str, Any]:
    return {
        k: getattr(query, k)
        for k in ("start_time", "end_time", "event_type", "source", "action", "search")
        if getattr(query, k) is not None
    }


def _status_of(exc: CelflowError) -> tuple[int, dict[str, str]]:
    if isinstance(exc, ValidationError):
        return 400, {}
    if isinstance(exc, QueueFullError):
        return 503, {"Retry-After": "1"}
    if isinstance(exc, QueryTimeoutError):
        return 503, {}
    if isinstance(exc, (ManagerStateError, BusError, OperationalError)):  # for now (bus or server away): retry
        return 503, {} if isinstance(exc, ManagerStateError) else {"Retry-After": "1"}
    return 500, {}


def create_app(
    sink: Sink,
    settings: HttpConfig | None = None,
    *,
    token: str | None = None,
) -> Starlette:
    """The ASGI app over a running ``sink`` (a manager, or the bus forwarder); with a ``token``, all but
    /health require it."""
    settings = settings or HttpConfig()
    metrics = Metrics()
    api = Api(sink, settings, metrics)
    sink.add_batch_observer(api.on_batch)

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, str(exc), **exc.details)

    async def on_celflow_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CelflowError)
        status, headers = _status_of(exc)
        details: dict[str, Any] = {}
        if isinstance(exc, ValidationError) and exc.field:
            details["field"] = exc.field
        return error_response(status, str(exc), headers, **details)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    routes = [
        Route("/health", api.health, methods=["GET"]),
        Route("/metrics", api.metrics_text, methods=["GET"]),
        Route(f"{API}/events", api.ingest, methods=["POST"]),
        Route(f"{API}/events", api.list_events, methods=["GET"]),
        Route(f"{API}/events/count", api.count, methods=["GET"]),
        Route(f"{API}/flush", api.flush, methods=["POST"]),
        Route(f"{API}/events/histogram", api.histogram, methods=["GET"]),
        Route(f"{API}/stats", api.stats, methods=["GET"]),
        Route(f"{API}/openapi.json", api.openapi_json, methods=["GET"]),
        Route(f"{API}/stream/sse", api.stream_sse, methods=["GET"]),
        Route(f"{API}/export", api.export, methods=["GET"]),
        Route(f"{API}/patterns", api.list_patterns, methods=["GET"]),
        Route(f"{API}/patterns", api.add_pattern, methods=["POST"]),
        Route(f"{API}/system-stats", api.list_system_stats, methods=["GET"]),
        Route(f"{API}/system-stats", api.add_system_stats, methods=["POST"]),
        WebSocketRoute(f"{API}/stream", api.stream_ws),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                Guard,
                token=token if settings.auth else None,
                allowed_hosts=settings.allowed_hosts,
                allowed_origins=settings.allowed_origins,
            )
        ],
        exception_handlers={
            ApiError: on_api_error,
            CelflowError: on_celflow_error,
            HTTPException: on_http_error,
        },
    )
    app.state.stop_streams = api.signal.stopping.set  # HttpServer.stop() ends the live streams first
    return app
