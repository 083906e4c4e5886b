"""Subprocess side of tests/reliability/test_many_writers.py and tests/test_layers.py: several
processes writing one SQLite file at once, and one looking after it meanwhile.

Usage (the virtualenv's Python, cwd outside the repository):

    many_writers.py database DB K COUNT BATCH PAUSE
    many_writers.py manager DB K COUNT BATCH PAUSE
        Open DB as writer K (an EventDatabase, or a manager from create_event_persistence with its
        own retention off), print ``ready`` and wait for a line on stdin. Then store events
        0..COUNT-1 of writer K, BATCH at a time (store_events_batch; or queue_events_batch and
        flush), sleeping PAUSE seconds between batches; print one JSON line (how many were
        stored; for a manager, also how many it found already stored) and hold the database
        open until stdin is closed, so that every writer is open at once until the test ends
        them; then close it and exit 0. Any error raises (a traceback on stderr, exit 1).

    many_writers.py maintain DB STOP_FILE DAYS MIN_VACUUMS
        Until STOP_FILE exists (and at least MIN_VACUUMS vacuums ran): the seed's retention
        recipe ``EventDatabase(DB).cleanup_old_events(DAYS)``, then ``celflow db vacuum --db DB``.
        Print ``ready`` first and one JSON line at the end: runs, events removed, every error seen.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import celflow

OLD_EVERY = 10  # one event in 10 is older than the retention period
OLD_DAYS = 40
TYPES = ("file_op", "app_focus", "process", "clipboard")
CELFLOW = os.path.join(os.path.dirname(sys.executable), "celflow")


def is_old(n: int) -> bool:
    """Whether event ``n`` of a writer is OLD_DAYS old (else it is from the last half hour)."""
    return n % OLD_EVERY == OLD_EVERY - 1


def event(k: int, n: int, now: float) -> dict[str, Any]:
    """Writer ``k``'s event ``n``: its data holds the marker ``(w, n)``, unique in the file."""
    old = is_old(n)
    return {
        "event_type": TYPES[n % len(TYPES)],
        "source": f"w{k}",
        "action": "write",
        "timestamp": now - OLD_DAYS * 86400 - n * 1e-3 if old else now - (n % 3000) * 0.5,
        "data": {"w": k, "n": n, "old": old, "path": f"/home/user/projects/file-{k}-{n}.txt"},
    }


def batches(k: int, count: int, size: int) -> Iterator[list[dict[str, Any]]]:
    """Writer ``k``'s events 0..count-1, ``size`` at a time."""
    now = time.time()
    for first in range(0, count, size):
        yield [event(k, n, now) for n in range(first, min(count, first + size))]


def announce(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def with_database(db: str, k: int, count: int, size: int, pause: float) -> None:
    database = celflow.EventDatabase(db)
    announce("ready")
    sys.stdin.readline()
    stored = 0
    for batch in batches(k, count, size):
        stored += len(database.store_events_batch(batch))
        time.sleep(pause)
    announce(json.dumps({"stored": stored}))
    sys.stdin.read()
    database.close()


async def with_manager(db: str, k: int, count: int, size: int, pause: float) -> None:
    manager = celflow.create_event_persistence(
        {"database_path": db, "retention_days": 0, "stats_interval": 0, "batch_size": size}
    )
    await manager.start()
    announce("ready")
    await asyncio.to_thread(sys.stdin.readline)
    for batch in batches(k, count, size):
        if not manager.queue_events_batch(batch):
            raise RuntimeError("the manager dropped a batch")
        await manager.flush()
        await asyncio.sleep(pause)
    stats = manager.get_stats()
    announce(json.dumps({"stored": stats["total_stored"], "duplicates": stats["duplicates"]}))
    await asyncio.to_thread(sys.stdin.read)
    await manager.stop()


def maintain(db: str, stop_file: str, days: float, min_vacuums: int) -> None:
    cleanups = vacuums = removed = 0
    errors: list[str] = []
    announce("ready")
    while not os.path.exists(stop_file) or vacuums < min_vacuums:
        try:
            with celflow.EventDatabase(db) as database:
                removed += database.cleanup_old_events(days)
        except Exception as exc:  # noqa: BLE001 - every error a caller sees is reported
            errors.append(f"cleanup_old_events: {type(exc).__name__}: {exc}")
            time.sleep(0.1)
        cleanups += 1
        done = subprocess.run([CELFLOW, "db", "vacuum", "--db", db], capture_output=True, text=True, timeout=600)
        vacuums += 1
        if done.returncode != 0 or "Traceback" in done.stderr or "locked" in done.stderr:
            errors.append(f"celflow db vacuum: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    announce(json.dumps({"cleanups": cleanups, "vacuums": vacuums, "removed": removed, "errors": errors}))


def main(argv: list[str]) -> None:
    mode, db = argv[0], argv[1]
    if mode == "maintain":
        maintain(db, argv[2], float(argv[3]), int(argv[4]))
        return
    k, count, size, pause = int(argv[2]), int(argv[3]), int(argv[4]), float(argv[5])
    if mode == "database":
        with_database(db, k, count, size, pause)
    elif mode == "manager":
        asyncio.run(with_manager(db, k, count, size, pause))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
