"""Subprocess side of tests/reliability/test_overload.py: what a full queue costs in memory.

Usage (the virtualenv's Python, cwd outside the repository):

    load_queue_memory.py DB MAX_QUEUE_BYTES KIND

Starts a manager whose writer waits (a 600 s batch_timeout, a batch_size above the queue's
bounds), queues events of KIND until ``overflow = "drop"`` refuses them, and prints one JSON
line: RssAnon before and after, and the queue's own account (events, bytes). KIND is
``compressed`` (16 KB of file paths, which zstd shrinks ~30x) or ``text`` (16 KB stored as JSON).
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from typing import Any

import celflow

EVENT_CHARS = 16_000


def rss_anon_kib() -> int:
    """This process's anonymous resident memory (RssAnon of /proc/self/status), in KiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise RuntimeError("no RssAnon in /proc/self/status")


def data(kind: str, n: int) -> dict[str, Any]:
    """Event ``n``'s data: ~16 KB of paths (compressible) or of one repeated letter (compression off)."""
    if kind == "compressed":
        paths = [f"/home/user/projects/celflow/src/module-{n}/file-{i}.py" for i in range(EVENT_CHARS // 50)]
        return {"n": n, "paths": paths}
    return {"n": n, "pad": "x" * EVENT_CHARS}


async def main(db: str, max_queue_bytes: int, kind: str) -> dict[str, Any]:
    manager = celflow.create_event_persistence(
        {
            "database_path": db,
            "batch_timeout": 600,
            "batch_size": 100_000,
            "overflow": "drop",
            "max_queue_bytes": max_queue_bytes,
            "compression_threshold": 1024 if kind == "compressed" else 16 * 1024 * 1024,
            "stats_interval": 0,
        }
    )
    await manager.start()
    events = [{"event_type": "memory", "source": kind, "data": data(kind, n)} for n in range(64)]
    gc.collect()
    baseline = rss_anon_kib()
    n = dropped = 0
    while dropped < 100:
        event = events[n % len(events)]
        event["data"]["n"] = n  # a new event each time, without building 16 KB of data per call
        n += 1
        if not manager.queue_event(event):
            dropped += 1
    gc.collect()
    full = rss_anon_kib()
    writer = manager._writer  # the queue's own account; get_stats() has only its length
    assert writer is not None
    result = {
        "kind": kind,
        "baseline_kib": baseline,
        "full_kib": full,
        "queued_events": writer.queue_size,
        "queued_bytes": writer.queue_bytes,
        "dropped": dropped,
    }
    await manager.stop()
    result["stored"] = manager.get_stats()["total_stored"]
    return result


if __name__ == "__main__":
    db, max_queue_bytes, kind = sys.argv[1:]
    print(json.dumps(asyncio.run(main(db, int(max_queue_bytes), kind))), flush=True)
