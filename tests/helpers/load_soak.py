"""Subprocess side of tests/reliability/test_concurrency.py: the soak's writer and dashboard processes.

Usage (the virtualenv's Python, cwd outside the repository):

    load_soak.py writer DB ACK_LOG RATE
        Run an EventPersistenceManager on DB with PRODUCERS threads calling queue_event, RATE
        events per second each; one event in OLD_EVERY is OLD_DAYS old, so retention (1 day,
        applied by run_maintenance every MAINTENANCE_EVERY seconds, with its vacuum steps)
        always has work. After every acknowledged flush append ``K N`` lines to ACK_LOG: producer
        K's events 0..N-1 are committed. On SIGTERM: stop the producers, run maintenance once
        more, stop the manager, print one JSON line (counts, every exception any caller saw) and
        exit 0.

    load_soak.py dashboard DB SECONDS
        Take dashboard snapshots (celflow.dashboard.DashboardSource, read-only) every REFRESH
        seconds for SECONDS, across windows and filters, reopening the source every REOPEN_EVERY
        snapshots;
        print one JSON line: snapshots taken and every exception raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import threading
import time
import traceback
from typing import Any

import celflow

PRODUCERS = 8
OLD_EVERY = 5  # one event in 5 is older than the retention period
OLD_DAYS = 3.0
RETENTION_DAYS = 1.0
MAINTENANCE_EVERY = 0.5
ACK_EVERY = 0.25
REOPEN_EVERY = 10
#: Seconds between two snapshots: the dashboard's fastest refresh (`celflow dashboard --interval 0.1`).
#: Readers that never pause at all keep SQLite from ever completing a checkpoint (see the test's WAL_BOUND).
REFRESH = 0.1


def event(k: int, n: int, now: float) -> dict[str, Any]:
    """Producer ``k``'s event ``n``: recent, or (one in OLD_EVERY) OLD_DAYS days old."""
    old = n % OLD_EVERY == OLD_EVERY - 1
    return {
        "event_type": "old" if old else "soak",
        "source": f"p{k}",
        "action": "tick",
        "timestamp": now - OLD_DAYS * 86400 if old else now,
        "data": {"k": k, "n": n, "path": f"/home/user/projects/file-{k}-{n}.txt"},
    }


class Producer(threading.Thread):
    """Calls queue_event ``rate`` times a second; remembers every exception it got."""

    def __init__(self, manager: celflow.EventPersistenceManager, k: int, rate: float) -> None:
        super().__init__(name=f"producer-{k}", daemon=True)
        self.manager, self.k, self.rate = manager, k, rate
        self.queued = 0  # events 0..queued-1 are in the manager's hands
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.stop.is_set():
            wait = started + self.queued / self.rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                if not self.manager.queue_event(event(self.k, self.queued, time.time())):
                    self.errors.append(f"event {self.queued} dropped")
            except Exception as exc:  # noqa: BLE001 - every exception a producer sees is reported
                self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.1)
                continue
            self.queued += 1


async def writer(db: str, ack_path: str, rate: float) -> dict[str, Any]:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    manager = celflow.create_event_persistence(
        {
            "database_path": db,
            "batch_timeout": 0.05,
            "retention_days": RETENTION_DAYS,
            "cleanup_interval_hours": 1000,  # the loop below runs maintenance far more often
            "stats_interval": 0.5,
        }
    )
    await manager.start()
    producers = [Producer(manager, k, rate) for k in range(PRODUCERS)]
    for p in producers:
        p.start()
    errors: list[str] = []
    maintenance_runs = removed = flushes = 0

    async def maintain() -> None:
        nonlocal maintenance_runs, removed
        while not stopping.is_set():
            try:
                removed += await manager.run_maintenance()
                maintenance_runs += 1
            except Exception as exc:  # noqa: BLE001 - reported: no maintenance error may reach a caller
                errors.append(f"maintenance: {type(exc).__name__}: {exc}")
            await asyncio.sleep(MAINTENANCE_EVERY)

    maintenance = asyncio.create_task(maintain())
    with open(ack_path, "a", encoding="utf-8") as log:
        print("ready", flush=True)
        while not stopping.is_set():
            covered = [p.queued for p in producers]
            try:
                await manager.flush()
                flushes += 1
            except Exception as exc:  # noqa: BLE001 - reported
                errors.append(f"flush: {type(exc).__name__}: {exc}")
            else:
                log.write("".join(f"{k} {n}\n" for k, n in enumerate(covered)))
                log.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), ACK_EVERY)
        for p in producers:
            p.stop.set()
        for p in producers:
            await asyncio.to_thread(p.join)
        await maintenance
        try:
            removed += await manager.run_maintenance()  # the last old events go too
        except Exception as exc:  # noqa: BLE001 - reported
            errors.append(f"maintenance: {type(exc).__name__}: {exc}")
        stats = manager.get_stats()
        await manager.stop()
        log.write("".join(f"{p.k} {p.queued}\n" for p in producers))  # stop() committed every queued event
    return {
        "queued": [p.queued for p in producers],
        "producer_errors": [e for p in producers for e in p.errors],
        "errors": errors,
        "maintenance_runs": maintenance_runs,
        "removed": removed,
        "flushes": flushes,
        "stats": {k: stats[k] for k in ("total_stored", "dropped", "lost", "errors", "last_error", "duplicates")},
    }


def dashboard(db: str, seconds: float) -> dict[str, Any]:
    from celflow.dashboard import DashboardSource, Filters

    views = [
        ("hour", Filters()),
        ("day", Filters(event_type="soak")),
        ("week", Filters(source="p3")),
        ("hour", Filters(search="file-5-")),
    ]
    snapshots = 0
    errors: list[str] = []
    source = None
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        try:
            if source is None:
                source = DashboardSource(db, service=False)
            window, filters = views[snapshots % len(views)]
            snap = source.snapshot(window, filters, wait_total=snapshots % REOPEN_EVERY == 0)
            if snapshots % len(views) == 0 and not snap.recent:
                errors.append(f"snapshot {snapshots}: no recent events while the writer ingests")
        except Exception:  # noqa: BLE001 - every exception a reader sees is reported
            errors.append(traceback.format_exc(limit=3))
        snapshots += 1
        time.sleep(REFRESH)
        if source is not None and snapshots % REOPEN_EVERY == 0:
            source.close()
            source = None
    if source is not None:
        source.close()
    return {"snapshots": snapshots, "errors": errors}


def main(argv: list[str]) -> int:
    mode, db, *rest = argv
    if mode == "writer":
        ack_path, rate = rest
        print(json.dumps(asyncio.run(writer(db, ack_path, float(rate)))), flush=True)
        return 0
    if mode == "dashboard":
        (seconds,) = rest
        print(json.dumps(dashboard(db, float(seconds))), flush=True)
        return 0
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
