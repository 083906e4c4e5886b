"""The batching writer: one thread, one write connection, one transaction per batch.

Producers (any thread, or the event loop) hand in rows that are already validated and encoded;
the writer commits them in FIFO order, so a flush marker resolves only after everything queued
before it is committed. Maintenance runs on the same thread, one short step at a time between
batches, so retention never stalls ingest for long.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, Literal

from ._encoding import Row
from ._exceptions import ManagerStateError, PersistenceError, QueueFullError
from ._storage import EventStore

__all__ = ["BatchWriter"]

log = logging.getLogger("celflow.writer")

Overflow = Literal["block", "drop", "raise"]

#: With a backlog, one transaction takes up to this many queued events (or ``batch_size`` if
#: larger): each commit rewrites the partly filled index pages at every insertion point, so a
#: few large transactions drain a backlog faster than many small ones (bench/: ~15-20%).
BACKLOG_BATCH = 5000
#: A failed batch is retried after 0.05 s, then twice as long each time, up to 5 s.
FIRST_RETRY_DELAY = 0.05
MAX_RETRY_DELAY = 5.0
Task = Callable[[], Iterator[Any]]
#: Memory of a queued row besides its data: the row tuple, its timestamp, its hash, names of a
#: usual length and the queue's references (tracemalloc: ~180 bytes on CPython 3.11). Long names
#: are not counted: at 256 characters each they add ~800 bytes, which max_queue_size bounds.
ROW_OVERHEAD = 256
_getsizeof = sys.getsizeof


def row_bytes(row: Row) -> int:
    """About what a queued row holds in memory: its data as it will be stored (str or bytes), and the rest.

    On the hot path of every event, so only the data is measured (``sys.getsizeof`` counts a str's
    2 or 4 bytes per character when it is not ASCII).
    """
    data = row[4]
    return ROW_OVERHEAD + _getsizeof(row[5] if data is None else data)


class _Ack:
    """Completion of one awaited write, possibly spread over several batches.

    It carries a future of the awaiting event loop; the writer wakes each loop once per batch,
    not once per write.
    """

    __slots__ = ("future", "ids", "loop", "remaining")

    def __init__(self, size: int, parts: int, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[list[int]] = loop.create_future()
        self.ids = [0] * size
        self.remaining = parts


def _deliver(outcomes: list[tuple[asyncio.Future[list[int]], list[int] | None, BaseException | None]]) -> None:
    """Runs on the event loop: resolve every write of one batch at once."""
    for future, ids, exc in outcomes:
        if future.done():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(ids or [])


class _Item:
    __slots__ = ("ack", "nbytes", "offset", "queued", "rows")

    def __init__(self, rows: Sequence[Row], ack: _Ack | None, offset: int, queued: float, nbytes: int) -> None:
        self.rows = rows
        self.ack = ack
        self.offset = offset
        self.queued = queued
        self.nbytes = nbytes


class BatchWriter:
    """Commits queued rows once ``batch_size`` wait or after ``batch_timeout`` seconds.

    A write takes everything waiting, up to ``max(batch_size, BACKLOG_BATCH)`` rows. The queue
    holds at most ``max_queue_size`` rows and ``max_queue_bytes`` bytes (:func:`row_bytes`), but
    an empty queue takes any one call, so a single event larger than the byte bound goes through.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        batch_size: int = 100,
        batch_timeout: float = 5.0,
        max_queue_size: int = 20_000,
        max_queue_bytes: int = 64 * 1024 * 1024,
        overflow: Overflow = "block",
        queue_timeout: float = 5.0,
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.max_queue_size = max_queue_size
        self.max_queue_bytes = max_queue_bytes
        self.overflow = overflow
        self.queue_timeout = queue_timeout
        self._items: collections.deque[_Item] = collections.deque()
        self._tasks: collections.deque[tuple[Iterator[Any], Future[Any]]] = collections.deque()
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        self._has_room = threading.Condition(self._lock)
        self._pending = 0  # rows queued, not yet taken by the writer
        self._pending_bytes = 0  # their row_bytes()
        self._urgent = 0  # queued items somebody awaits
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="celflow-writer", daemon=True)
        # counters, read by get_stats()
        self.stored = 0
        self.duplicates = 0
        self.dropped = 0
        self.lost = 0  # accepted but never written (a batch that failed for good)
        self.batches = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_flush: float | None = None
        self.last_id = 0  # the highest id a batch of this writer was given
        self.last_batch_seconds = 0.0
        self.total_batch_seconds = 0.0
        self.healthy = True
        self._retry_delay = FIRST_RETRY_DELAY  # seconds before the next try of a failed batch
        self._rate_samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=120)
        #: Called on the writer thread after each committed batch with (seconds, rows inserted).
        self.observers: list[Callable[[float, int], None]] = []

    # -- producers -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    @property
    def queue_size(self) -> int:
        """Rows waiting for the writer."""
        return self._pending

    @property
    def queue_bytes(self) -> int:
        """Bytes of the rows waiting for the writer (:func:`row_bytes`)."""
        return self._pending_bytes

    def submit(self, rows: Sequence[Row], *, overflow: Overflow | None = None) -> bool:
        """Queue rows; ``False`` if the overflow policy dropped them (counted in ``dropped``).

        ``overflow`` replaces the writer's policy for this call (a server passes ``"raise"``).
        """
        return self._enqueue(rows, loop=None, overflow=overflow)[0]

    def submit_awaited(
        self, rows: Sequence[Row], *, overflow: Overflow | None = None
    ) -> asyncio.Future[list[int]] | None:
        """Queue rows; a future of the running loop resolves to their ids once committed.

        Call it on the event loop's thread. ``None`` if the overflow policy dropped the rows.
        """
        accepted, ack = self._enqueue(rows, loop=asyncio.get_running_loop(), overflow=overflow)
        return ack.future if accepted and ack is not None else None

    def _enqueue(
        self, rows: Sequence[Row], *, loop: asyncio.AbstractEventLoop | None, overflow: Overflow | None = None
    ) -> tuple[bool, _Ack | None]:
        """Apply the overflow policy, then queue ``rows`` in chunks of at most ``batch_size``.

        With a ``loop``, the rows are awaited there: the returned ack resolves once they are committed.
        """
        size = self.batch_size
        n = len(rows)
        if n <= size:  # one item: the usual case, kept cheap as it runs for every event
            nbytes = row_bytes(rows[0]) if n == 1 else sum(map(row_bytes, rows))
            parts = [(rows, nbytes)]
        else:
            parts = [(rows[i : i + size], sum(map(row_bytes, rows[i : i + size]))) for i in range(0, n, size)]
            nbytes = sum(part_bytes for _, part_bytes in parts)
        ack = _Ack(n, len(parts), loop) if loop is not None else None
        with self._lock:
            if self._stopping:
                raise ManagerStateError("the persistence manager is stopped; events are no longer accepted")
            if n and self._pending and self._full(n, nbytes):  # an empty item (a flush marker) always fits
                policy = overflow or self.overflow
                if policy == "drop":
                    self.dropped += n
                    return False, None
                if policy == "raise":
                    raise QueueFullError(self._full_message(n, nbytes))
                deadline = time.monotonic() + self.queue_timeout
                while self._full(n, nbytes):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stopping:
                        raise QueueFullError(self._full_message(n, nbytes, waited=self.queue_timeout))
                    self._has_room.wait(remaining)
            was_empty = not self._items
            offset = 0
            now = time.monotonic()
            for chunk, chunk_bytes in parts:
                self._items.append(_Item(chunk, ack, offset, now, chunk_bytes))
                offset += len(chunk)
            self._pending += n
            self._pending_bytes += nbytes
            if ack is not None:
                self._urgent += 1
            if was_empty or ack is not None or self._pending >= size:
                self._has_work.notify()
        return True, ack

    def _full(self, n: int, nbytes: int) -> bool:
        """Whether ``n`` rows of ``nbytes`` must wait (call with the lock held); an empty queue takes anything."""
        if not self._pending:
            return False
        return self._pending + n > self.max_queue_size or self._pending_bytes + nbytes > self.max_queue_bytes

    def _full_message(self, n: int, nbytes: int, *, waited: float | None = None) -> str:
        if self._pending + n > self.max_queue_size:
            setting, held, limit, offered = "max_queue_size", self._pending, self.max_queue_size, n
            unit = "events"
        else:
            setting, held, limit, offered = "max_queue_bytes", self._pending_bytes, self.max_queue_bytes, nbytes
            unit = "bytes"
        waiting = f" for {waited:g} s" if waited is not None else ""
        return (
            f"the write queue is full ({held:,} of {setting} {limit:,} {unit} waiting; {offered:,} more offered)"
            f"{waiting}: retry later (the writer is behind), or raise {setting} for longer bursts"
        )

    def flush(self) -> asyncio.Future[list[int]]:
        """A future of the running loop that resolves once everything queued before it is committed."""
        future = self.submit_awaited([])
        assert future is not None  # an empty item always fits
        return future

    def run_task(self, task: Task) -> Future[Any]:
        """Run ``task()`` on the writer thread; each ``next()`` of it is one step between batches.

        The future resolves to the generator's return value.
        """
        future: Future[Any] = Future()
        with self._lock:
            if self._stopping:
                raise ManagerStateError("the persistence manager is stopped")
            self._tasks.append((task(), future))
            self._has_work.notify()
        return future

    def stop(self, timeout: float | None = None) -> None:
        """Write everything queued, then end the thread (waits at most ``timeout`` seconds)."""
        with self._lock:
            self._stopping = True
            self._has_work.notify()
            self._has_room.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("writer did not finish within %s s; %d queued events not written", timeout, self._pending)

    def rate(self, window: float = 10.0) -> float:
        """Events stored per second over the last ``window`` seconds."""
        now = time.monotonic()
        samples = [s for s in list(self._rate_samples) if now - s[0] <= window]
        if not samples:
            return 0.0
        elapsed = max(now - samples[0][0], 1e-3)
        return (self.stored - samples[0][1]) / elapsed

    # -- the writer thread ---------------------------------------------------------------------

    def _batch_ready(self) -> bool:
        if not self._items:
            return False
        if self._stopping or self._urgent or self._pending >= self.batch_size:
            return True
        return time.monotonic() - self._items[0].queued >= self.batch_timeout

    def _take(self) -> list[_Item]:
        taken: list[_Item] = []
        count = 0
        limit = max(self.batch_size, BACKLOG_BATCH)
        while self._items and (not taken or count + len(self._items[0].rows) <= limit):
            item = self._items.popleft()
            taken.append(item)
            count += len(item.rows)
            if item.ack is not None and item.offset + len(item.rows) == len(item.ack.ids):
                self._urgent -= 1
        self._pending -= count
        self._pending_bytes -= sum(item.nbytes for item in taken)
        self._has_room.notify_all()
        return taken

    def _run(self) -> None:
        while True:
            with self._lock:
                while not (self._batch_ready() or self._tasks or self._stopping):
                    timeout = None
                    if self._items:
                        timeout = max(0.0, self._items[0].queued + self.batch_timeout - time.monotonic())
                    self._has_work.wait(timeout)
                items = self._take() if self._batch_ready() else []
                task = None
                if not items and self._stopping:
                    for _, future in self._tasks:  # maintenance does not delay a stop
                        future.cancel()
                    self._tasks.clear()
                    break
                if not items and self._tasks:
                    task = self._tasks.popleft()
            if items:
                self._write(items)
            elif task is not None:
                self._step(*task)

    def _write(self, items: list[_Item]) -> None:
        rows = [row for item in items for row in item.rows]
        want_ids = any(item.ack is not None and item.rows for item in items)
        while True:
            started = time.monotonic()
            try:
                result = self.store.insert_events(rows, want_ids=want_ids) if rows else None
                break
            except PersistenceError as exc:  # I/O, disk full, locked: worth retrying
                # before the count: whoever sees the error count sees the writer unhealthy, and the log
                self.healthy = False
                self.last_error = exc_text = f"{type(exc).__name__}: {exc}"
                delay = self._retry_delay
                # Give up only when asked to stop, and once backed off: the backoff is kept from one
                # batch to the next until a write succeeds, so a stop behind a failing disk loses each
                # remaining batch after one more try instead of retrying every one for seconds.
                if self._stopping and delay >= MAX_RETRY_DELAY:
                    log.error("stopping while writes fail: %d accepted events are lost (%s)", len(rows), exc_text)
                    self.lost += len(rows)
                    self.errors += 1
                    self._fail(items, exc)
                    return
                log.error("writing a batch of %d events failed, retrying in %.2f s: %s", len(rows), delay, exc_text)
                self.errors += 1
                time.sleep(delay)
                self._retry_delay = min(delay * 2, MAX_RETRY_DELAY)
            except Exception as exc:  # a bug must not kill the writer and hang every flush(): logged below
                self.errors += 1
                self.lost += len(rows)
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("a batch of %d events could not be written and is lost", len(rows))
                self._fail(items, exc)
                return
        elapsed = time.monotonic() - started
        self.healthy = True
        self._retry_delay = FIRST_RETRY_DELAY
        if result is not None:
            self.stored += result.inserted
            self.duplicates += result.duplicates
            self.last_id = max(self.last_id, result.last_id)
            self.batches += 1
            self.last_batch_seconds = elapsed
            self.total_batch_seconds += elapsed
            self._rate_samples.append((time.monotonic(), self.stored))
            for observe in self.observers:
                try:
                    observe(elapsed, result.inserted)
                except Exception:  # an observer's bug must not stop the writer
                    log.exception("a batch observer failed")
        self.last_flush = time.time()
        start = 0
        finished: list[_Ack] = []
        for item in items:
            ack, n = item.ack, len(item.rows)
            if ack is not None:
                if result is not None and result.ids is not None and n:
                    ack.ids[item.offset : item.offset + n] = result.ids[start : start + n]
                ack.remaining -= 1
                if ack.remaining == 0:
                    finished.append(ack)
            start += n
        self._complete(finished, None)

    def _fail(self, items: list[_Item], exc: Exception) -> None:
        self._complete([item.ack for item in items if item.ack is not None], exc)

    @staticmethod
    def _complete(acks: list[_Ack], exc: Exception | None) -> None:
        """Resolve finished writes, waking each event loop once."""
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for ack in acks:
            by_loop.setdefault(ack.loop, []).append((ack.future, ack.ids, exc))
        for loop, outcomes in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_deliver, outcomes)

    def _step(self, generator: Iterator[Any], future: Future[Any]) -> None:
        try:
            next(generator)
        except StopIteration as done:
            if not future.cancelled():
                future.set_result(done.value)
            return
        except Exception as exc:  # noqa: BLE001 - a failed maintenance step must not kill the writer
            log.error("maintenance step failed: %s", exc)
            if not future.cancelled():
                future.set_exception(exc)
            return
        with self._lock:
            self._tasks.append((generator, future))
