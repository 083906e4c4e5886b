"""Ingest figures: the raw ``sqlite3`` baseline and CelFlow's write paths.

The two big runs (:func:`run_baseline`, :func:`run_sustained`) take a :class:`Workload` and time
each slice of it (5% by default) for the growth curve. A streamed workload is generated a chunk at
a time with the clock stopped, so 10 M events never sit in memory; every timed chunk ends with a
flush, so what is timed is committed. The other figures take a list of events.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any

from _util import DistinctCounter, MemorySampler, database_bytes, rss_anon_mib
from celflow import create_event_persistence

try:
    from celflow._sqlite import _schema
    from celflow._sqlite._store import _INSERT, MMAP_SIZE
except ImportError:  # a tree before the backend packages (bench/ab.py runs this harness on an older one too)
    from celflow import _schema  # type: ignore[attr-defined,no-redef]
    from celflow._sqlite import _INSERT, MMAP_SIZE  # type: ignore[attr-defined,no-redef]
from workload import encode_rows, generate, iter_events

BATCH = 1000  # events per call (and per baseline transaction)
CHUNK = 50_000  # events of a streamed workload generated at a time

Events = Sequence[dict[str, Any]]


class Workload:
    """The first ``n`` events of ``iter_events(n, seed=seed, end=end)``: a list, or streamed in chunks."""

    def __init__(self, n: int, *, seed: int, end: float, prebuilt: bool) -> None:
        self.n, self.seed, self.end = n, seed, end
        self.events: list[dict[str, Any]] | None = generate(n, seed=seed, end=end) if prebuilt else None
        self.counter: DistinctCounter | None = None  # filled by the first pass
        if self.events is not None:
            self._count(self.events)

    def _count(self, events: Events) -> None:
        counter = DistinctCounter()
        counter.add(events)
        self.counter = counter

    @property
    def distinct(self) -> int:
        assert self.counter is not None, "no pass over the workload yet"
        return self.counter.distinct

    def bounds(self, parts: int) -> list[int]:
        """Event counts at the end of each of ``parts`` slices (0 first)."""
        return [round(self.n * k / parts) for k in range(parts + 1)]

    def chunks(self, parts: int) -> Iterator[tuple[int, list[dict[str, Any]], bool]]:
        """``(slice, events, last chunk of the slice)``; a chunk never straddles two slices.

        The caller must drop its reference to a chunk before asking for the next one.
        """
        counter = DistinctCounter() if self.counter is None else None
        source = iter(iter_events(self.n, seed=self.seed, end=self.end)) if self.events is None else None
        bounds = self.bounds(parts)
        for part in range(parts):
            for lo in range(bounds[part], bounds[part + 1], CHUNK):
                hi = min(lo + CHUNK, bounds[part + 1])
                if source is None:
                    assert self.events is not None
                    chunk = self.events[lo:hi]
                else:
                    chunk = list(itertools.islice(source, hi - lo))
                    gc.collect()
                    gc.freeze()  # the harness's heap: keep it out of the collector's scans while timing
                if counter is not None:
                    counter.add(chunk)
                yield part, chunk, hi == bounds[part + 1]
                del chunk
        if counter is not None:
            self.counter = counter


def _check(got: int, want: int, what: str) -> None:
    if got != want:
        raise SystemExit(f"CORRECTNESS FAILURE: {what}: got {got:,}, expected {want:,}")


def _slice_result(workload: Workload, parts: int, seconds: list[float], sizes: list[int]) -> dict[str, Any]:
    bounds = workload.bounds(parts)
    return {
        "seconds": sum(seconds),
        "events_per_s": workload.n / sum(seconds),
        "slices": [
            {"events": bounds[k + 1], "seconds": seconds[k], "rate": (bounds[k + 1] - bounds[k]) / seconds[k]}
            | ({"db_bytes": sizes[k]} if sizes else {})
            for k in range(parts)
        ],
    }


def tail_ratio(run: dict[str, Any], fraction: float = 0.1) -> float:
    """Rate over the last ``fraction`` of the events / rate over the first ``fraction``."""
    slices = run["slices"]
    k = max(1, round(len(slices) * fraction))
    starts = [0] + [s["events"] for s in slices]

    def rate(part: list[dict[str, Any]], lo: int, hi: int) -> float:
        return (starts[hi] - starts[lo]) / sum(s["seconds"] for s in part)

    return rate(slices[-k:], len(slices) - k, len(slices)) / rate(slices[:k], 0, k)


def run_baseline(path: str, workload: Workload, parts: int) -> dict[str, Any]:
    """Pre-encoded rows, ``INSERT OR IGNORE`` via ``executemany``, one transaction per 1000 rows.

    CelFlow's schema (every migration) and pragmas; encoding the rows is not timed.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("auto_vacuum = INCREMENTAL", "journal_mode = WAL", "synchronous = NORMAL"):
        conn.execute(f"PRAGMA {pragma}")
    conn.execute(f"PRAGMA mmap_size = {MMAP_SIZE}")
    conn.execute("PRAGMA cache_size = -16384")
    conn.execute("PRAGMA temp_store = MEMORY")
    _schema.migrate(conn, 0)
    seconds = [0.0] * parts
    for part, chunk, _ in workload.chunks(parts):
        rows = encode_rows(chunk)
        del chunk
        started = time.perf_counter()
        for i in range(0, len(rows), BATCH):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_INSERT, rows[i : i + BATCH])
            conn.execute("COMMIT")
        seconds[part] += time.perf_counter() - started
        del rows
    conn.close()
    return _slice_result(workload, parts, seconds, [])


async def _sustained(path: str, workload: Workload, parts: int, batch_size: int, mem: MemorySampler) -> dict[str, Any]:
    manager = create_event_persistence({"database_path": path, "batch_size": batch_size})
    await manager.start()
    seconds, sizes, rss = [0.0] * parts, [], []
    accepted, first = True, True
    for part, chunk, last in workload.chunks(parts):
        if first:  # idle baseline: the manager running, the first chunk built, nothing queued
            mem.rebase()
            first = False
        started = time.perf_counter()
        for i in range(0, len(chunk), BATCH):
            accepted &= manager.queue_events_batch(chunk[i : i + BATCH])
            await asyncio.sleep(0)  # a well-behaved producer lets the event loop run
        await manager.flush()
        seconds[part] += time.perf_counter() - started
        del chunk
        if last:
            sizes.append(database_bytes(path))
            rss.append(rss_anon_mib())
    stats = manager.get_stats()
    await manager.stop()
    if not accepted:
        raise SystemExit("CORRECTNESS FAILURE: the manager dropped events (overflow policy)")
    _check(stats["total_stored"], workload.distinct, "events the writer reports stored")
    _check(stats["duplicates"], workload.n - workload.distinct, "duplicates the writer reports")
    result = _slice_result(workload, parts, seconds, sizes)
    for s, mib in zip(result["slices"], rss, strict=True):
        s["rss_anon_mib"] = mib
    return result


def run_sustained(path: str, workload: Workload, parts: int, batch_size: int) -> dict[str, Any]:
    """``queue_events_batch`` of 1000 events, a flush per chunk; RssAnon growth over the idle manager."""
    with MemorySampler() as mem:
        result = asyncio.run(_sustained(path, workload, parts, batch_size, mem))
    result["rss_growth_mib"] = mem.peak - mem.before
    return result


async def _single(path: str, events: Events, batch_size: int) -> float:
    manager = create_event_persistence({"database_path": path, "batch_size": batch_size})
    await manager.start()
    accepted = True
    started = time.perf_counter()
    for i, event in enumerate(events):
        accepted &= manager.queue_event(event)
        if i % BATCH == BATCH - 1:
            await asyncio.sleep(0)
    await manager.flush()
    elapsed = time.perf_counter() - started
    await manager.stop()
    if not accepted:
        raise SystemExit("CORRECTNESS FAILURE: the manager dropped events (overflow policy)")
    return elapsed


def run_single(path: str, events: Events, batch_size: int) -> float:
    """One producer calling ``queue_event`` per event, then ``flush()``."""
    return asyncio.run(_single(path, events, batch_size))


async def _concurrent(path: str, events: Events, producers: int, batch_size: int) -> float:
    manager = create_event_persistence({"database_path": path, "batch_size": batch_size})
    await manager.start()

    async def producer(mine: Events) -> None:
        for event in mine:
            await manager.store_event(event)

    started = time.perf_counter()
    await asyncio.gather(*(producer(events[k::producers]) for k in range(producers)))
    elapsed = time.perf_counter() - started
    await manager.stop()
    return elapsed


def run_concurrent(path: str, events: Events, producers: int, batch_size: int) -> float:
    """``producers`` asyncio tasks, each awaiting ``store_event`` per event (the writer commits groups)."""
    return asyncio.run(_concurrent(path, events, producers, batch_size))
