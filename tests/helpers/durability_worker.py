"""Subprocess side of tests/test_durability.py: a writer process the test can kill, stop or race.

Usage (always run with the virtualenv's Python, cwd outside the repository):

    durability_worker.py ingest DB ACK_LOG BASE
        Run an EventPersistenceManager on DB and ingest events numbered BASE, BASE+1, ... for ever.
        After every acknowledged commit (``await flush()`` or ``await store_events()``) append a line
        ``FIRST LAST`` (inclusive range of event numbers) to ACK_LOG, flushed and fsynced. SIGTERM
        stops gracefully (exit 0); SIGKILL is what the test uses to simulate a crash.

    durability_worker.py hold-manager DB
    durability_worker.py hold-database DB
        Become DB's writer (a running manager, or an EventDatabase that has written), store
        HOLD_EVENTS events, print ``ready`` and hold on until stdin is closed; then close cleanly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import celflow

HOLD_EVENTS = 5
_BIG_EVERY = 10  # every 10th event is large enough to be stored zstd-compressed


def payload(n: int) -> dict[str, Any]:
    """The data of event number ``n`` (the test recomputes it to compare stored data exactly)."""
    data: dict[str, Any] = {"n": n, "path": f"/home/user/doc-{n}.txt", "size": n * 7, "tags": ["a", "ü", n % 3]}
    if n % _BIG_EVERY == 0:
        data["blob"] = "".join(f"{n}:{i};" for i in range(400))
    return data


def event(n: int) -> dict[str, Any]:
    """Event number ``n``."""
    return {"event_type": "durability", "source": "worker", "action": "tick", "data": payload(n)}


def _append_ack(log: Any, first: int, last: int) -> None:
    log.write(f"{first} {last}\n")
    log.flush()
    os.fsync(log.fileno())


async def ingest(db_path: str, ack_path: str, base: int) -> int:
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    manager = celflow.create_event_persistence(
        {"database_path": db_path, "batch_timeout": 0.1, "batch_size": 128, "stats_interval": 0}
    )
    await manager.start()
    n = base
    round_no = 0
    with open(ack_path, "a", encoding="utf-8") as log:
        while not stopping.is_set():
            first = n
            if round_no % 4 == 3:
                # the awaited path: ids come back only once the whole batch is committed
                ids = await manager.store_events([event(i) for i in range(first, first + 200)])
                if len(ids) != 200 or len(set(ids)) != 200:
                    raise SystemExit(f"store_events returned {len(ids)} ids ({len(set(ids))} distinct)")
                n += 200
            else:
                for i in range(first, first + 300):
                    if not manager.queue_event(event(i)):
                        raise SystemExit(f"event {i} was dropped")
                n += 300
                await manager.flush()
            _append_ack(log, first, n - 1)
            round_no += 1
    await manager.stop()
    return 0


async def hold_manager(db_path: str) -> int:
    manager = celflow.create_event_persistence({"database_path": db_path, "batch_timeout": 0.1})
    await manager.start()
    await manager.store_events([event(i) for i in range(HOLD_EVENTS)])
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.read)
    await manager.stop()
    return 0


def hold_database(db_path: str) -> int:
    database = celflow.EventDatabase(db_path)
    database.store_events_batch([event(i) for i in range(HOLD_EVENTS)])
    print("ready", flush=True)
    sys.stdin.read()
    database.close()
    return 0


def main(argv: list[str]) -> int:
    mode, db_path, *rest = argv
    if mode == "ingest":
        ack_path, base = rest
        return asyncio.run(ingest(db_path, ack_path, int(base)))
    if mode == "hold-manager":
        return asyncio.run(hold_manager(db_path))
    if mode == "hold-database":
        return hold_database(db_path)
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
