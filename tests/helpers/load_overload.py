"""Subprocess side of tests/reliability/test_overload.py: one process that overloads its own manager.

Usage (the virtualenv's Python, cwd outside the repository):

    load_overload.py DB POLICY SECONDS CALIBRATION EVENT_BYTES MAX_QUEUE_BYTES

First a calibration of CALIBRATION seconds measures the sustainable rate R: events of about
EVENT_BYTES stored with ``store_events`` (two batches in flight, so the writer never waits and
the queue never grows). Then PRODUCERS threads call ``queue_event`` paced at 10 R in all for
SECONDS, with ``overflow = POLICY``, while a sampler reads this process's RssAnon (anonymous
memory: the database's memory map is file-backed and not in it). The manager stops gracefully
and one JSON line on stdout reports what each producer offered, what was accepted, dropped or
refused, the counters of ``get_stats()`` and the memory figures. Compression is off, so the
producers stay cheap and the queue holds the events' JSON text (test_overload.py measures
queued compressed events apart: producers that compress cannot outrun the writer).
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import threading
import time
from typing import Any

import celflow

PRODUCERS = 2
OVERLOAD = 10.0  # the offered rate, in multiples of the calibrated sustainable rate
CALIBRATION_BATCH = 200
QUEUE_TIMEOUT = 0.05  # overflow "block": a producer waits this long for room, then QueueFullError
CHUNK = 20  # a producer paces itself every CHUNK events (sleeping per event is too coarse)


def rss_anon_kib() -> int:
    """This process's anonymous resident memory (RssAnon of /proc/self/status), in KiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise RuntimeError("no RssAnon in /proc/self/status")


class Sampler(threading.Thread):
    """Samples RssAnon and the queue's size every 10 ms; keeps the maxima."""

    def __init__(self, manager: celflow.EventPersistenceManager) -> None:
        super().__init__(name="sampler", daemon=True)
        self.manager = manager
        self.peak_kib = 0
        self.peak_queue_events = 0
        self.peak_queue_bytes = 0
        self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        writer = self.manager._writer  # the queue's figures; get_stats() only has its length
        assert writer is not None
        while not self.stop.is_set():
            self.peak_kib = max(self.peak_kib, rss_anon_kib())
            self.peak_queue_events = max(self.peak_queue_events, writer.queue_size)
            self.peak_queue_bytes = max(self.peak_queue_bytes, writer.queue_bytes)
            self.samples += 1
            self.stop.wait(0.01)


def padding(event_bytes: int) -> str:
    """Filler that makes an event's data about ``event_bytes`` long."""
    return "x" * event_bytes


async def calibrate(manager: celflow.EventPersistenceManager, seconds: float, pad: str) -> int:
    """Store events for ``seconds`` with two batches always in flight; return how many were stored."""
    stored = 0
    n = 0
    pending: set[asyncio.Future[list[int]]] = set()
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        while len(pending) < 2:
            batch = [
                {"event_type": "calibration", "source": "calibration", "data": {"n": n + i, "pad": pad}}
                for i in range(CALIBRATION_BATCH)
            ]
            n += CALIBRATION_BATCH
            pending.add(asyncio.ensure_future(manager.store_events(batch)))
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        stored += sum(len(d.result()) for d in done)
    for rest in pending:
        stored += len(await rest)
    return stored


class Producer(threading.Thread):
    """Calls queue_event at ``rate`` events per second until ``until``; counts every outcome."""

    def __init__(self, manager: Any, k: int, rate: float, until: float, pad: str) -> None:
        super().__init__(name=f"producer-{k}", daemon=True)
        self.manager, self.k, self.rate, self.until, self.pad = manager, k, rate, until, pad
        self.offered = self.accepted = self.dropped = self.refused = self.refused_early = 0
        self.longest_call = 0.0
        self.error: str | None = None

    def run(self) -> None:
        try:
            self._produce()
        except Exception as exc:  # noqa: BLE001 - any error is reported to the test, which fails on it
            self.error = f"{type(exc).__name__}: {exc}"

    def _produce(self) -> None:
        started = time.monotonic()
        n = 0
        while True:
            now = time.monotonic()
            if now >= self.until:
                return
            due = started + n / self.rate
            if due > now:
                time.sleep(due - now)
            for _ in range(CHUNK):
                event = {"event_type": "load", "source": f"p{self.k}", "data": {"n": n, "pad": self.pad}}
                n += 1
                self.offered += 1
                call = time.monotonic()
                try:
                    accepted = self.manager.queue_event(event)
                except celflow.QueueFullError:
                    waited = time.monotonic() - call
                    self.refused += 1
                    if self.manager.settings.overflow == "block" and waited < QUEUE_TIMEOUT:
                        self.refused_early += 1
                    continue
                finally:
                    self.longest_call = max(self.longest_call, time.monotonic() - call)
                if accepted:
                    self.accepted += 1
                else:
                    self.dropped += 1


async def main(
    db: str, policy: str, seconds: float, calibration: float, event_bytes: int, max_queue_bytes: int
) -> dict[str, Any]:
    manager = celflow.create_event_persistence(
        {
            "database_path": db,
            "batch_timeout": 0.05,
            "overflow": policy,
            "queue_timeout": QUEUE_TIMEOUT,
            "max_queue_bytes": max_queue_bytes,
            "compression_threshold": 16 * 1024 * 1024,  # off: see the module's docstring
            "stats_interval": 0,
        }
    )
    await manager.start()
    pad = padding(event_bytes)
    calibrated = await calibrate(manager, calibration, pad)
    sustainable = calibrated / calibration
    await manager.flush()
    gc.collect()
    baseline_kib = rss_anon_kib()
    sampler = Sampler(manager)
    sampler.start()
    started = time.monotonic()
    until = started + seconds
    producers = [Producer(manager, k, OVERLOAD * sustainable / PRODUCERS, until, pad) for k in range(PRODUCERS)]
    for p in producers:
        p.start()
    while any(p.is_alive() for p in producers):
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    stats_before_stop = manager.get_stats()
    await manager.stop()
    sampler.stop.set()
    sampler.join()
    stats = manager.get_stats()
    offered = sum(p.offered for p in producers)
    return {
        "policy": policy,
        "calibration_events": calibrated,
        "sustainable_rate": sustainable,
        "target_rate": OVERLOAD * sustainable,
        "offered_rate": offered / elapsed,
        "stored_rate": (stats["total_stored"] - calibrated) / elapsed,
        "seconds": elapsed,
        "producers": [
            {
                "source": f"p{p.k}",
                "offered": p.offered,
                "accepted": p.accepted,
                "dropped": p.dropped,
                "refused": p.refused,
                "refused_early": p.refused_early,
                "longest_call": p.longest_call,
                "error": p.error,
            }
            for p in producers
        ],
        "stats": {k: stats[k] for k in ("total_stored", "dropped", "lost", "errors", "duplicates")},
        "queue_size_at_end": stats_before_stop["queue_size"],
        "max_queue_size": manager.settings.max_queue_size,
        "max_queue_bytes": max_queue_bytes,
        "peak_queue_events": sampler.peak_queue_events,
        "peak_queue_bytes": sampler.peak_queue_bytes,
        "baseline_kib": baseline_kib,
        "peak_kib": sampler.peak_kib,
        "samples": sampler.samples,
    }


if __name__ == "__main__":
    db, policy, seconds, calibration, event_bytes, max_queue_bytes = sys.argv[1:]
    result = asyncio.run(main(db, policy, float(seconds), float(calibration), int(event_bytes), int(max_queue_bytes)))
    print(json.dumps(result), flush=True)
