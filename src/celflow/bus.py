"""The NATS JetStream ingest bus: producers publish events to a stream, ingest workers store them.

- :class:`BusPublisher` validates events as the store does, stamps a missing timestamp, keeps
  them in a bounded local buffer and sends them in batches (one JSON message of up to
  ``batch_size`` events each), waiting for JetStream's acknowledgement. While the broker is down
  it keeps the buffer and retries the same message, with the same ``Nats-Msg-Id``, so JetStream's
  duplicate window drops a resend whose first try had in fact been stored.
- :class:`IngestWorker` pulls messages with a durable consumer (workers sharing its name split the
  work), stores their events through an :class:`~celflow.EventPersistenceManager`, and
  acknowledges each message only once its events are committed. A worker killed before it
  acknowledges leaves its messages to be delivered again after ``ack_wait``: delivery is at least
  once, and the store's dedup on ``(timestamp, hash)`` makes it exactly once in the database.

A message is a JSON array of event objects (a single object is taken as one event). Producers
other than :class:`BusPublisher` must give each event a ``timestamp`` (or an ``idempotency_key``):
otherwise a redelivered message is stamped anew and stored twice.

Needs nats-py: ``pip install 'celflow[bus]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import itertools
import logging
import os
import sys
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

import msgspec
import orjson

from ._config import Config, PrivacyConfig, parse_config
from ._encoding import EncodingOptions, Row, prepare_batch, prepare_each
from ._exceptions import BusError, ConfigError, QueueFullError, ValidationError
from ._location import check_bus_url, mask_url
from ._privacy import PrivacyRules

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

    from ._manager import EventPersistenceManager


__all__ = [
    "DEFAULT_DURABLE",
    "DEFAULT_STREAM",
    "DEFAULT_SUBJECT",
    "BusError",
    "BusPublisher",
    "BusState",
    "IngestWorker",
    "WorkerStats",
]

log = logging.getLogger("celflow.bus")

DEFAULT_URL = "nats://127.0.0.1:4222"
DEFAULT_STREAM = "CELFLOW"
DEFAULT_SUBJECT = "celflow.events"
DEFAULT_DURABLE = "celflow-ingest"
#: The broker's own default ``max_payload``; the real one is read when the publisher connects.
NATS_DEFAULT_MAX_PAYLOAD = 1024 * 1024
#: Room kept in a message for its headers and the protocol line.
_HEADROOM = 512
Overflow = Literal["block", "drop", "raise"]
_BUS_SCHEMES = ("nats", "tls", "ws", "wss")
_never_compress = sys.maxsize  # the wire carries the canonical JSON text, not zstd bytes


class BusState(enum.Enum):
    """Where a publisher or worker is in its life: it starts once and stops once."""

    UNSTARTED = "unstarted"
    RUNNING = "running"
    STOPPED = "stopped"


def _nats() -> Any:
    """The nats package, or a clear error saying how to install it."""
    try:
        import nats
    except ImportError:  # pragma: no cover - the extra is not installed
        raise BusError("the NATS bus needs nats-py: pip install 'celflow[bus]'") from None
    return nats


async def _unless(task: asyncio.Future[Any], event: asyncio.Event) -> bool:
    """Wait for ``task`` unless ``event`` is set first; then cancel it and return ``False``."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):  # what it says once cancelled is moot
        await task
    return False


def _subject_matches(pattern: str, subject: str) -> bool:
    """Whether a stream's subject ``pattern`` (``*`` one token, ``>`` the rest) covers ``subject``."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


async def ensure_stream(js: JetStreamContext, stream: str, subject: str, *, duplicate_window: float = 120.0) -> None:
    """Create the work-queue stream ``stream`` on ``subject`` (file storage) unless it exists and covers it."""
    nats = _nats()
    from nats.js import api

    try:
        info = await js.stream_info(stream)
    except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError):
        raise BusError("the broker answers but JetStream does not: start nats-server with -js") from None
    except nats.js.errors.NotFoundError:
        config = api.StreamConfig(
            name=stream,
            subjects=[subject],
            storage=api.StorageType.FILE,
            # Acknowledged messages are deleted: the stream holds what no worker has stored yet.
            retention=api.RetentionPolicy.WORK_QUEUE,
            duplicate_window=duplicate_window,
        )
        try:
            await js.add_stream(config)
            log.info("created the JetStream stream %s on %s", stream, subject)
            return
        except nats.js.errors.APIError as exc:  # e.g. another process created it meanwhile, differently
            try:
                info = await js.stream_info(stream)
            except nats.js.errors.NotFoundError:
                raise BusError(f"cannot create the JetStream stream {stream} on {subject}: {exc.description}") from None
    subjects = info.config.subjects or []
    if not any(_subject_matches(pattern, subject) for pattern in subjects):
        raise BusError(
            f"the JetStream stream {stream} exists with subjects {', '.join(subjects) or '(none)'}, which do not "
            f"cover {subject}: choose another stream name, or a subject it covers"
        )


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


# -- the publisher ---------------------------------------------------------------------------------


@dataclasses.dataclass
class _Message:
    parts: list[bytes]  # each event's JSON
    msg_id: str
    payload: bytes = b""
    nbytes: int = 0

    def __post_init__(self) -> None:
        self.payload = b"[" + b",".join(self.parts) + b"]"
        self.nbytes = sum(map(len, self.parts))

    @property
    def events(self) -> int:
        return len(self.parts)


class BusPublisher:
    """Publishes events to a JetStream stream in batches, buffering them while the broker is away.

    Use it on one event loop: ``await start()``, ``await publish(events)``, ``await flush()``,
    ``await stop()`` (or ``async with``). ``max_buffer`` events (and ``max_buffer_bytes``) may wait
    unacknowledged; when the buffer is full, ``overflow`` decides as in the persistence manager:
    ``block`` waits up to ``queue_timeout`` seconds then raises :class:`QueueFullError`, ``drop``
    drops the new events (``publish`` returns ``False``), ``raise`` raises at once. The buffer is
    in memory: a producer killed before ``flush()`` returns loses what it held. ``privacy`` rules
    (the ``[privacy]`` settings) drop and redact events before they are buffered.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        stream: str = DEFAULT_STREAM,
        subject: str = DEFAULT_SUBJECT,
        batch_size: int = 1000,
        max_buffer: int = 100_000,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        overflow: Overflow = "block",
        queue_timeout: float = 5.0,
        ack_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        retry_max: float = 5.0,
        max_event_bytes: int = 16 * 1024 * 1024,
        duplicate_window: float = 120.0,
        create_stream: bool = True,
        name: str | None = None,
        privacy: PrivacyConfig | PrivacyRules | None = None,
    ) -> None:
        check_bus_url(url)
        if overflow not in ("block", "drop", "raise"):
            raise ConfigError(f"overflow must be 'block', 'drop' or 'raise', got {overflow!r}")
        for setting, value in (
            ("batch_size", batch_size),
            ("max_buffer", max_buffer),
            ("max_buffer_bytes", max_buffer_bytes),
            ("ack_timeout", ack_timeout),
            ("connect_timeout", connect_timeout),
            ("retry_max", retry_max),
        ):
            _positive(setting, value)
        self.url = url
        self.stream = stream
        self.subject = subject
        self.batch_size = batch_size
        self.max_buffer = max_buffer
        self.max_buffer_bytes = max_buffer_bytes
        self.overflow: Overflow = overflow
        self.queue_timeout = queue_timeout
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        self.retry_max = retry_max
        self.duplicate_window = duplicate_window
        self.create_stream = create_stream
        #: Shown to the broker as the connection's name (``celflow-publisher-<name>``).
        self.name = name or str(os.getpid())
        # Message ids are unique per publisher object: two producers, or two runs of one, never collide
        # within JetStream's duplicate window (a collision would drop a message as a duplicate).
        self._id_prefix = f"{self.name}-{uuid.uuid4().hex}"
        self.state = BusState.UNSTARTED
        #: The privacy rules apply here, before an event leaves the machine (the workers apply theirs too).
        self.options = EncodingOptions(_never_compress, max_event_bytes, privacy=PrivacyRules.compile(privacy))
        self._max_payload = NATS_DEFAULT_MAX_PAYLOAD
        self._buffer: deque[bytes] = deque()
        self._inflight: _Message | None = None
        self._held = 0  # events buffered or in flight
        self._held_bytes = 0
        self._accepted = 0  # events accepted since start (FIFO position of the newest)
        self._msg_seq = itertools.count(1)
        self._cond = asyncio.Condition()
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._stream_ready = False
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._connect_task: asyncio.Task[NatsClient] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._wakers: set[asyncio.Future[None]] = set()
        self._closing = False
        self._failing = False  # in an outage: one warning, then quiet until it ends
        # counters, read by stats()
        self.published = 0  # events JetStream acknowledged
        self.messages = 0
        self.duplicates = 0  # resent messages JetStream recognised by their id
        self.dropped = 0
        self.lost = 0  # accepted, never acknowledged: left at stop(), or too large for the broker
        self.retries = 0
        self.last_error: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | Config | None = None, *, name: str | None = None) -> BusPublisher:
        """A publisher with the ``[bus]`` settings of ``config``, its ``[privacy]`` rules, and the
        persistence section's ``overflow``, ``queue_timeout`` and ``max_event_bytes``."""
        settings = parse_config(config)
        bus, persistence = settings.bus, settings.persistence
        return cls(
            bus.url,
            stream=bus.stream,
            subject=bus.subject,
            batch_size=bus.batch_size,
            max_buffer=bus.max_buffer,
            max_buffer_bytes=bus.max_buffer_bytes,
            ack_timeout=bus.ack_timeout,
            overflow=persistence.overflow,
            queue_timeout=persistence.queue_timeout,
            max_event_bytes=persistence.max_event_bytes,
            privacy=settings.privacy,
            name=name,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and make sure the stream exists; if the broker is unreachable, go on buffering.

        Raises :class:`BusError` when the broker answers but the stream does not fit the subject.
        """
        if self.state is not BusState.UNSTARTED:
            raise BusError(f"the publisher is {self.state.value}; a publisher starts only once")
        self._connect_task = asyncio.create_task(self._connect(), name="celflow-bus-connect")
        done, _ = await asyncio.wait({self._connect_task}, timeout=self.connect_timeout)
        if done:
            self._nc = self._connect_task.result()
            self._js = self._nc.jetstream()
            if self.create_stream:
                try:
                    await ensure_stream(self._js, self.stream, self.subject, duplicate_window=self.duplicate_window)
                except BaseException:
                    await self._nc.close()
                    self.state = BusState.STOPPED
                    raise
            self._stream_ready = True
        else:
            log.warning(
                "the bus %s is not reachable yet; buffering up to %d events until it is",
                mask_url(self.url),
                self.max_buffer,
            )
        self.state = BusState.RUNNING
        self._sender = asyncio.create_task(self._send_loop(), name="celflow-bus-sender")

    async def stop(self, timeout: float | None = 10.0) -> None:
        """Send what is buffered (waiting at most ``timeout`` seconds), then disconnect.

        Events still unacknowledged then are counted in ``lost`` and logged.
        """
        if self.state is not BusState.RUNNING:
            self.state = BusState.STOPPED
            return
        async with self._cond:
            self._closing = True
            self._cond.notify_all()
        assert self._sender is not None
        done, _ = await asyncio.wait({self._sender}, timeout=timeout)
        self.state = BusState.STOPPED
        if not done:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._sender.done() and not self._sender.cancelled() and self._sender.exception() is not None:
            log.error("the bus sender failed", exc_info=self._sender.exception())
        if self._held:
            self.lost += self._held
            log.error("stopped with %d events not acknowledged by %s (they are lost)", self._held, mask_url(self.url))
            self._buffer.clear()
            self._inflight = None
            self._held = self._held_bytes = 0
        async with self._cond:
            self._cond.notify_all()  # wake blocked publishers and flushers: they raise
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connect_task
        if self._nc is not None:
            with contextlib.suppress(Exception):  # already closed, or the broker went away
                await self._nc.close()

    async def __aenter__(self) -> BusPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _stopped(self) -> bool:
        return self.state is BusState.STOPPED

    def _running(self) -> None:
        if self.state is not BusState.RUNNING or self._closing:
            hint = "call `await start()` first" if self.state is BusState.UNSTARTED else "it was stopped"
            raise BusError(f"the bus publisher is not running ({hint})")

    # -- producers -----------------------------------------------------------------------------

    async def publish(self, events: Iterable[Mapping[str, Any]]) -> bool:
        """Validate events (all or none) and buffer them for sending; ``False`` if ``drop`` dropped them.

        Raises :class:`ValidationError` naming the bad event's index, and :class:`QueueFullError`
        when the buffer stays full (``raise``, or ``block`` past ``queue_timeout``). Events a
        privacy drop rule discards are not sent.
        """
        self._running()
        batch = events if isinstance(events, (list, tuple, Mapping, str, bytes)) else list(events)
        kept: list[int] = []
        rows, errors = prepare_each(cast("Sequence[Any]", batch), self.options, kept=kept)  # it refuses a Mapping
        if errors:
            raise errors[0]
        return await self.publish_rows(rows, [batch[i].get("idempotency_key") for i in kept])

    async def publish_rows(
        self, rows: Sequence[Row], keys: Sequence[str | None] | None = None, *, overflow: Overflow | None = None
    ) -> bool:
        """:meth:`publish` of events already prepared with :attr:`options` (``keys``: their idempotency
        keys); ``overflow`` overrides the publisher's policy for this call."""
        self._running()
        overflow = overflow or self.overflow
        encoded = self._encode_all(rows, keys)
        if not encoded:
            return True
        n, nbytes = len(encoded), sum(map(len, encoded))
        async with self._cond:
            if self._full(n, nbytes):
                never = n > self.max_buffer or nbytes > self.max_buffer_bytes
                if overflow == "drop":
                    self.dropped += n
                    return False
                if overflow == "raise" or never:
                    raise QueueFullError(self._full_message(n, nbytes))
                try:
                    await asyncio.wait_for(
                        self._cond.wait_for(lambda: not self._full(n, nbytes) or self._closing), self.queue_timeout
                    )
                except TimeoutError:
                    raise QueueFullError(self._full_message(n, nbytes, waited=self.queue_timeout)) from None
                self._running()
            self._hold(encoded, nbytes)
            self._cond.notify_all()
        return True

    def offer_rows(self, rows: Sequence[Row], keys: Sequence[str | None] | None = None) -> None:
        """Buffer prepared rows at once, or raise :class:`QueueFullError` if they do not fit (never waits).

        For code on the publisher's event loop that must answer now (an HTTP 202); from another
        thread it raises :class:`BusError` (use :meth:`publish` through the loop instead).
        """
        self._running()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise BusError("offer_rows() runs on the publisher's event loop only") from None
        encoded = self._encode_all(rows, keys)
        if not encoded:
            return
        n, nbytes = len(encoded), sum(map(len, encoded))
        if self._full(n, nbytes):
            raise QueueFullError(self._full_message(n, nbytes))
        self._hold(encoded, nbytes)
        task = asyncio.ensure_future(self._notify())
        self._wakers.add(task)
        task.add_done_callback(self._wakers.discard)

    def _encode_all(self, rows: Sequence[Row], keys: Sequence[str | None] | None) -> list[bytes]:
        keys = keys if keys is not None else [None] * len(rows)
        return [self._encode(index, row, key) for index, (row, key) in enumerate(zip(rows, keys, strict=True))]

    def _hold(self, encoded: list[bytes], nbytes: int) -> None:
        self._buffer.extend(encoded)
        self._held += len(encoded)
        self._held_bytes += nbytes
        self._accepted += len(encoded)

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def publish_event(self, event: Mapping[str, Any]) -> bool:
        """:meth:`publish` of one event."""
        return await self.publish([event])

    async def flush(self, timeout: float | None = None) -> None:
        """Return once JetStream has acknowledged every event published before this call.

        Raises :class:`BusError` after ``timeout`` seconds (``None``: wait as long as it takes).
        """
        self._running()
        target = self._accepted
        async with self._cond:
            try:
                await asyncio.wait_for(
                    self._cond.wait_for(lambda: self.published + self.lost >= target or self._stopped()), timeout
                )
            except TimeoutError:
                waiting = target - self.published - self.lost
                raise BusError(
                    f"{waiting:,} events are not acknowledged by {mask_url(self.url)} after {timeout:g} s "
                    f"(last error: {self.last_error or 'none'}); they stay buffered"
                ) from None
        if self.published + self.lost < target:
            raise BusError("the bus publisher was stopped before everything was acknowledged")

    @property
    def healthy(self) -> bool:
        """Running, connected, and the last send was acknowledged (not retrying a refused message)."""
        connected = self._nc is not None and self._nc.is_connected
        return self.state is BusState.RUNNING and connected and not self._failing

    def stats(self) -> dict[str, Any]:
        """Counters: events buffered, published, dropped, lost; messages, resends, the last error."""
        return {
            "state": self.state.value,
            "healthy": self.healthy,
            "connected": self._nc is not None and self._nc.is_connected,
            "buffered": self._held,
            "buffered_bytes": self._held_bytes,
            "max_buffer": self.max_buffer,
            "published": self.published,
            "messages": self.messages,
            "duplicates": self.duplicates,
            "dropped": self.dropped,
            "lost": self.lost,
            "retries": self.retries,
            "last_error": self.last_error,
        }

    def _encode(self, index: int, row: Row, key: str | None) -> bytes:
        """The event as it travels: validated fields, the stamped timestamp, data as canonical JSON."""
        item: dict[str, Any] = {"event_type": row.event_type, "source": row.source, "timestamp": row.timestamp}
        if row.action is not None:
            item["action"] = row.action
        if row.data_json is None:
            raise BusError("a row for the bus must be prepared with the publisher's options (never compressed)")
        item["data"] = orjson.Fragment(row.data_json)
        if key is not None:
            item["idempotency_key"] = key
        # orjson's bytes keep its whole ~4 KiB write buffer allocated: a copy is the message's size,
        # so max_buffer_bytes bounds the buffer's real memory
        encoded = bytes(memoryview(orjson.dumps(item)))
        limit = self._max_payload - _HEADROOM
        if len(encoded) > limit:
            raise ValidationError(
                f"event is {len(encoded):,} bytes as a bus message; the broker's max_payload leaves {limit:,} bytes "
                "(raise max_payload in nats-server's configuration, or send smaller events)",
                field="data",
                index=index,
            )
        return encoded

    def _full(self, n: int, nbytes: int) -> bool:
        return self._held + n > self.max_buffer or self._held_bytes + nbytes > self.max_buffer_bytes

    def _full_message(self, n: int, nbytes: int, *, waited: float | None = None) -> str:
        if self._held + n > self.max_buffer:
            setting, held, limit, offered, unit = "max_buffer", self._held, self.max_buffer, n, "events"
        else:
            setting, held, limit, offered = "max_buffer_bytes", self._held_bytes, self.max_buffer_bytes, nbytes
            unit = "bytes"
        waiting = f" for {waited:g} s" if waited is not None else ""
        return (
            f"the bus buffer is full ({held:,} of {setting} {limit:,} {unit} not yet acknowledged; {offered:,} more "
            f"offered){waiting}: the broker {mask_url(self.url)} is away or slow; retry later or raise {setting}"
        )

    # -- the sender ----------------------------------------------------------------------------

    async def _connect(self) -> NatsClient:
        """Connect, retrying for as long as it takes (the client reconnects by itself afterwards)."""
        nats = _nats()

        async def on_error(exc: Exception) -> None:
            self._note_failure(exc)

        async def on_disconnected() -> None:
            self._connected.clear()
            self._disconnected.set()

        async def on_reconnected() -> None:
            self._disconnected.clear()
            self._connected.set()
            log.info("reconnected to the bus %s", mask_url(self.url))

        nc: NatsClient = await nats.connect(
            self.url,
            name=f"celflow-publisher-{self.name}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=min(self.retry_max, 1.0),
            connect_timeout=max(1, round(self.connect_timeout)),
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )
        self._connected.set()
        self._max_payload = nc.max_payload or NATS_DEFAULT_MAX_PAYLOAD
        return nc

    def _note_failure(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if not self._failing:
            self._failing = True
            log.warning("the bus %s failed (%s); buffering and retrying", mask_url(self.url), self.last_error)
        else:
            log.debug("the bus %s still fails: %s", mask_url(self.url), self.last_error)

    def _take(self) -> _Message | None:
        """The next message: up to ``batch_size`` events from the head of the buffer, under max_payload."""
        limit = self._max_payload - _HEADROOM
        parts: list[bytes] = []
        size = 2
        while self._buffer and len(parts) < self.batch_size:
            head = self._buffer[0]
            if size + len(head) + 1 > limit:
                if parts:
                    break
                self._buffer.popleft()  # alone too large: the broker's max_payload is below what we assumed
                self._held -= 1
                self._held_bytes -= len(head)
                self.lost += 1
                log.error("an event of %d bytes is larger than the bus's max_payload %d: lost", len(head), limit)
                continue
            parts.append(self._buffer.popleft())
            size += len(head) + 1
        if not parts:
            return None
        return _Message(parts, f"{self._id_prefix}-{next(self._msg_seq)}")

    async def _ready(self) -> JetStreamContext:
        """The JetStream context, once connected and the stream checked; raises while the broker is away."""
        if self._nc is None:
            assert self._connect_task is not None
            self._nc = await self._connect_task
            self._js = self._nc.jetstream()
        if not self._nc.is_connected:
            await asyncio.wait_for(self._connected.wait(), self.retry_max)
        assert self._js is not None
        if not self._stream_ready:
            if self.create_stream:
                await ensure_stream(self._js, self.stream, self.subject, duplicate_window=self.duplicate_window)
            self._stream_ready = True
        return self._js

    async def _send_loop(self) -> None:
        nats = _nats()
        retryable = (nats.errors.Error, OSError, TimeoutError, BusError)
        delay = 0.05
        while True:
            if self._inflight is None:
                async with self._cond:
                    await self._cond.wait_for(lambda: bool(self._buffer) or self._closing)
                    if not self._buffer:
                        self._cond.notify_all()
                        return  # closing, and everything was acknowledged
                    self._inflight = self._take()
                    if self._inflight is None:
                        self._cond.notify_all()  # only lost events: flushers may be done
                        continue
            message = self._inflight
            try:
                js = await self._ready()
                ack = await self._publish(js, message)
            except nats.errors.MaxPayloadError:
                self._max_payload = self._nc.max_payload if self._nc is not None else self._max_payload
                self._requeue(message)  # split again under the broker's real limit
                continue
            except Exception as exc:  # the sender must never die: flush() would wait for ever
                if isinstance(exc, nats.js.errors.NoStreamResponseError):
                    self._stream_ready = False  # a broker that lost its state: create the stream again
                elif not isinstance(exc, retryable):
                    log.exception("unexpected error publishing to the bus; retrying")
                self.retries += 1
                self._note_failure(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            delay = 0.05
            if self._failing:
                self._failing = False
                log.info("the bus %s acknowledges again", mask_url(self.url))
            async with self._cond:
                self._inflight = None
                self._held -= message.events
                self._held_bytes -= message.nbytes
                self.published += message.events
                self.messages += 1
                if ack.duplicate:
                    self.duplicates += 1
                self._cond.notify_all()

    async def _publish(self, js: JetStreamContext, message: _Message) -> Any:
        """Publish and wait for the PubAck, or give up at once if the connection drops meanwhile.

        (A request in flight across a reconnect would otherwise wait out the whole ack_timeout;
        the resend carries the same id, so JetStream keeps one copy either way.)
        """
        headers = {"Nats-Msg-Id": message.msg_id}
        publish = asyncio.ensure_future(
            js.publish(self.subject, message.payload, timeout=self.ack_timeout, headers=headers)
        )
        if not await _unless(publish, self._disconnected):
            raise ConnectionError("the connection dropped before the broker acknowledged")
        return publish.result()

    def _requeue(self, message: _Message) -> None:
        """Put a message's events back at the head of the buffer (it was never sent)."""
        self._buffer.extendleft(reversed(message.parts))
        self._inflight = None


# -- the ingest worker -----------------------------------------------------------------------------


@dataclasses.dataclass
class WorkerStats:
    """What an ingest worker did: messages acknowledged, events stored, messages refused."""

    messages: int = 0  # acknowledged after their events were committed
    events: int = 0  # events in those messages
    #: The manager's counters when the worker stops (all of its writes, if it serves only the worker):
    stored: int = 0  # new in the database
    duplicates: int = 0  # already there (a redelivered message the previous worker had stored)
    invalid: int = 0  # messages that were not CelFlow events: terminated, never redelivered
    redelivered: int = 0  # messages delivered more than once (a worker died or was slow)
    batches: int = 0

    def to_dict(self) -> dict[str, int]:
        """The counters as a dict (for ``--json``)."""
        return dataclasses.asdict(self)


_decode = msgspec.json.Decoder().decode  # exact: big integers stay integers, floats round-trip


class IngestWorker:
    """Pulls messages from a durable JetStream consumer and stores their events through a manager.

    Run ``await run()`` until :meth:`request_stop` (the batch in hand is stored and acknowledged
    first). A message whose events are not valid is terminated, counted in ``stats.invalid`` and
    logged; it is never redelivered. Messages not acknowledged within ``ack_wait`` seconds (a
    killed worker's) go to another worker of the same ``durable`` name.
    """

    def __init__(
        self,
        manager: EventPersistenceManager,
        url: str = DEFAULT_URL,
        *,
        stream: str = DEFAULT_STREAM,
        subject: str = DEFAULT_SUBJECT,
        durable: str = DEFAULT_DURABLE,
        batch: int = 64,
        ack_wait: float = 30.0,
        fetch_timeout: float = 1.0,
        duplicate_window: float = 120.0,
        on_status: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        check_bus_url(url)
        for setting, value in (("batch", batch), ("ack_wait", ack_wait), ("fetch_timeout", fetch_timeout)):
            _positive(setting, value)
        self.manager = manager
        self.url = url
        self.stream = stream
        self.subject = subject
        self.durable = durable
        self.batch = batch
        self.ack_wait = ack_wait
        self.fetch_timeout = fetch_timeout
        self.duplicate_window = duplicate_window
        self.on_status = on_status
        self.state = BusState.UNSTARTED
        self.stats = WorkerStats()
        self._stop = asyncio.Event()
        self._failing = False

    def request_stop(self) -> None:
        """Stop after the batch in hand is stored and acknowledged (safe from a signal handler)."""
        self._stop.set()

    def _status(self, event: str, **values: Any) -> None:
        if self.on_status is not None:
            self.on_status({"event": event, **values})

    async def run(self) -> WorkerStats:
        """Consume until :meth:`request_stop`; the manager must be started (and is left running)."""
        if self.state is not BusState.UNSTARTED:
            raise BusError(f"the worker is {self.state.value}; a worker runs only once")
        self.state = BusState.RUNNING
        nats = _nats()
        from nats.js import api

        connect = asyncio.ensure_future(
            nats.connect(
                self.url,
                name=f"celflow-ingest-{self.durable}-{os.getpid()}",
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                error_cb=self._on_error,
                reconnected_cb=self._on_reconnected,
            )
        )
        if not await _unless(connect, self._stop):
            self.state = BusState.STOPPED
            return self.stats
        nc: NatsClient = connect.result()
        self._failing = False
        try:
            js = nc.jetstream()
            await ensure_stream(js, self.stream, self.subject, duplicate_window=self.duplicate_window)
            config = api.ConsumerConfig(
                durable_name=self.durable,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait,
                max_deliver=-1,
                filter_subject=self.subject,
            )
            sub = await js.pull_subscribe(self.subject, durable=self.durable, stream=self.stream, config=config)
            self._status("ready", bus=mask_url(self.url), stream=self.stream, durable=self.durable)
            log.info("consuming %s/%s from %s", self.stream, self.durable, mask_url(self.url))
            while not self._stop.is_set():
                try:
                    messages = await sub.fetch(self.batch, timeout=self.fetch_timeout)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                except (nats.errors.Error, OSError) as exc:  # the broker went away: the client reconnects
                    log.warning("fetching from the bus failed (%s: %s); retrying", type(exc).__name__, exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), 1.0)
                    continue
                await self._handle(messages)
        finally:
            self.state = BusState.STOPPED
            counts = self.manager.stats()
            self.stats.stored, self.stats.duplicates = counts.total_stored, counts.duplicates
            with contextlib.suppress(Exception):  # the acks go out before the connection closes
                await nc.flush(timeout=2)
            with contextlib.suppress(Exception):
                await nc.close()
        return self.stats

    async def _on_error(self, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            log.warning("the bus %s failed (%s: %s); retrying", mask_url(self.url), type(exc).__name__, exc)
        else:
            log.debug("the bus %s still fails: %s: %s", mask_url(self.url), type(exc).__name__, exc)

    async def _on_reconnected(self) -> None:
        self._failing = False
        log.info("reconnected to the bus %s", mask_url(self.url))

    async def _handle(self, messages: list[Msg]) -> None:
        """Store the events of a fetched batch in one commit, then acknowledge each message."""
        good: list[Msg] = []
        rows: list[Row] = []
        events = 0
        for msg in messages:
            if msg.metadata.num_delivered > 1:
                self.stats.redelivered += 1
            try:
                decoded = _decode(msg.data)
                batch = [decoded] if isinstance(decoded, dict) else decoded
                if not isinstance(batch, list):
                    raise ValidationError(f"a message must be a JSON array of events, not {type(batch).__name__}")
                rows.extend(prepare_batch(batch, self.manager.options))
            except (msgspec.DecodeError, ValidationError) as exc:
                await self._refuse(msg, exc)
                continue
            good.append(msg)
            events += len(batch)
        if not good:
            return
        keepalive = asyncio.create_task(self._keep_alive(good))
        try:
            ids = await self.manager.store_rows(rows)  # committed when this returns
        except Exception as exc:  # noqa: BLE001 - not stored: hand the messages back for another try
            log.error("storing %d events failed, the messages go back to the stream: %s", len(rows), exc)
            for msg in good:
                with contextlib.suppress(Exception):
                    await msg.nak(delay=1.0)
            return
        finally:
            keepalive.cancel()
        if rows and not ids:
            log.error("the manager dropped %d events (overflow 'drop'); their messages go back", len(rows))
            for msg in good:
                with contextlib.suppress(Exception):
                    await msg.nak(delay=1.0)
            return
        for msg in good:
            try:
                await msg.ack()
            except Exception as exc:  # noqa: BLE001 - the broker went away: it redelivers, dedup keeps one copy
                log.warning(
                    "acknowledging a stored message failed (%s: %s); it will come again", type(exc).__name__, exc
                )
        self.stats.batches += 1
        self.stats.messages += len(good)
        self.stats.events += events

    async def _keep_alive(self, messages: list[Msg]) -> None:
        """While a slow commit runs, tell the broker the messages are still being worked on."""
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            for msg in messages:
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    async def _refuse(self, msg: Msg, exc: Exception) -> None:
        self.stats.invalid += 1
        reason = str(exc) if isinstance(exc, ValidationError) else f"not JSON ({exc})"
        log.warning(
            "terminated message %d of stream %s (%d bytes): not CelFlow events: %s",
            msg.metadata.sequence.stream,
            self.stream,
            len(msg.data),
            reason,
        )
        with contextlib.suppress(Exception):
            await msg.term()
