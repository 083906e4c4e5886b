"""Subprocess side of tests/reliability/test_state_machine.py: a manager driven over stdin/stdout.

Usage (the virtualenv's Python): ``statemachine_worker.py DB BATCH_SIZE BATCH_TIMEOUT``

It starts an EventPersistenceManager on DB (retention off, so only the test's requests delete)
and prints ``{"ready": true}``. Then it reads one JSON request per line and answers each with one
JSON line, written only once the request is done:

    {"op": "queue", "events": [...]}   queue_events_batch      -> {"ok": true}
    {"op": "store", "events": [...]}   await store_events      -> {"ids": [...]}   (acknowledged)
    {"op": "flush"}                    await flush             -> {"ok": true}     (acknowledged)
    {"op": "maintain", "cutoff": T}    run_maintenance, retention set so that its cutoff is T
                                       -> {"removed": n, "lo": ..., "hi": ...}: the cutoff it
                                       applied lies in [lo, hi] (time moves while it runs)
    {"op": "stop"}                     await stop              -> {"ok": true}, then exit 0

Events travel as JSON (the standard library's, so integers of any size and floats round-trip
exactly). The test SIGKILLs this process whenever it likes: that is the crash.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import celflow


def _answer(reply: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


async def serve(db_path: str, batch_size: int, batch_timeout: float) -> int:
    manager = celflow.create_event_persistence(
        {
            "database_path": db_path,
            "batch_size": batch_size,
            "batch_timeout": batch_timeout,
            "retention_days": 0,  # the test decides when retention runs, and with which cutoff
            "stats_interval": 0,
        }
    )
    await manager.start()
    _answer({"ready": True})
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:  # the test went away without a stop: stop anyway
            await manager.stop()
            return 0
        request = json.loads(line)
        op = request["op"]
        if op == "queue":
            manager.queue_events_batch(request["events"])
            _answer({"ok": True})
        elif op == "store":
            ids = await manager.store_events(request["events"])
            _answer({"ids": ids})
        elif op == "flush":
            await manager.flush()
            _answer({"ok": True})
        elif op == "maintain":
            now = time.time()
            days = (now - request["cutoff"]) / 86400
            manager.settings.retention_days = days  # run_maintenance computes time.time() - days
            removed = await manager.run_maintenance()
            _answer({"removed": removed, "lo": now - days * 86400, "hi": time.time() - days * 86400})
        elif op == "stop":
            await manager.stop()
            _answer({"ok": True})
            return 0
        else:
            raise SystemExit(f"unknown op {op!r}")


def main(argv: list[str]) -> int:
    db_path, batch_size, batch_timeout = argv
    return asyncio.run(serve(db_path, int(batch_size), float(batch_timeout)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
