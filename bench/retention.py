"""Retention while ingest continues: the longest wait of an awaited batch while old events go.

A manager opens the big database with retention off (its start-up maintenance pass then has
nothing to delete). A producer awaits ``store_events`` of 1000 new events (timestamps now) in a
loop; after ``warmup`` seconds, ``retention_days`` is set so that ``fraction`` of the stored events
is older, and ``run_maintenance()`` deletes them (and reclaims the space) on the writer thread,
one step between batches. The stall is the longest ``store_events`` call that overlaps it: the
longest gap between two committed batches this producer sees.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import msgspec

from celflow import create_event_persistence
from workload import SPAN_DAYS, generate

BATCH = 1000
POOL = 20_000  # distinct events cycled with fresh timestamps


async def _retention(path: str, end: float, fraction: float, seed: int, warmup: float, tail: float) -> dict[str, Any]:
    settings = {"database_path": path, "batch_size": BATCH, "retention_days": 0, "cleanup_interval_hours": 1e6}
    manager = create_event_persistence(settings)
    await manager.start()
    while manager.get_stats()["last_cleanup"] is None:  # the start-up maintenance pass
        await asyncio.sleep(0.01)
    stored_before = manager.get_stats()["database_stats"]["total_events"]
    pool = generate(POOL, seed=seed + 1, end=end)
    calls: list[tuple[float, float]] = []  # (start, seconds) of each awaited batch
    stop = asyncio.Event()

    async def producer() -> None:
        offset = 0
        while not stop.is_set():
            now = time.time()
            batch = [{**e, "timestamp": now + k * 1e-5} for k, e in enumerate(pool[offset : offset + BATCH])]
            offset = (offset + BATCH) % POOL
            started = time.perf_counter()
            await manager.store_events(batch)
            calls.append((started, time.perf_counter() - started))

    task = asyncio.create_task(producer())
    await asyncio.sleep(warmup)
    days = (1 - fraction) * SPAN_DAYS + (time.time() - end) / 86400
    manager.settings = msgspec.structs.replace(manager.settings, retention_days=days)
    began = time.perf_counter()
    removed = await manager.run_maintenance()
    finished = time.perf_counter()
    await asyncio.sleep(tail)
    stop.set()
    await task
    await manager.stop()
    during = [s for t, s in calls if t <= finished and t + s >= began]
    before = [s for t, s in calls if t + s < began]
    return {
        "stall_ms": 1000 * max(during),
        "p50_ms": 1000 * statistics.median(during),
        "max_before_ms": 1000 * max(before) if before else None,
        "removed": removed,
        "removed_fraction": removed / stored_before,
        "retention_seconds": finished - began,
        "events_per_s_during": BATCH * len(during) / (finished - began),
        "events_per_s_before": BATCH * len(before) / sum(before) if before else None,
    }


def measure_retention(
    path: str, end: float, *, fraction: float = 0.3, seed: int = 42, warmup: float = 1.0, tail: float = 0.5
) -> dict[str, Any]:
    """Delete ``fraction`` of the events of ``path`` while a producer keeps storing batches."""
    return asyncio.run(_retention(path, end, fraction, seed, warmup, tail))
