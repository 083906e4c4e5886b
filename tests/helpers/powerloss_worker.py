"""Subprocess side of tests/reliability/test_power_loss.py: a writer that commits one round at a time.

Usage (run with the virtualenv's Python under the LD_PRELOAD shim powerloss_shim.c):

    powerloss_worker.py DB ACK_LOG BASE DURABILITY SEED

Runs an EventPersistenceManager with ``durability`` DURABILITY on DB and ingests, until killed,
rounds of 1-300 events numbered BASE, BASE+1, ... (durability_worker's events). Each round is one
transaction: either one ``await store_events()``, or ``queue_event`` for each event then ``await
flush()`` (batch_size is above any round and batch_timeout long, so the writer waits for the
flush). Once a round is committed, the line ``FIRST LAST`` (inclusive) is appended to ACK_LOG,
flushed and fsynced; the shim copies it into its journal, in order with the file changes.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys

from durability_worker import event

import celflow

MAX_ROUND = 300


async def ingest(db_path: str, ack_path: str, base: int, durability: str, seed: int) -> int:
    rng = random.Random(seed)
    manager = celflow.create_event_persistence(
        {
            "database_path": db_path,
            "durability": durability,
            "batch_size": 1000,  # above MAX_ROUND: a round is never split into two transactions
            "batch_timeout": 30.0,
            "stats_interval": 0,
        }
    )
    await manager.start()
    n = base
    with open(ack_path, "a", encoding="utf-8") as log:
        while True:
            first, size = n, rng.randint(1, MAX_ROUND)
            if rng.random() < 0.5:
                ids = await manager.store_events([event(i) for i in range(first, first + size)])
                if len(ids) != size or len(set(ids)) != size:
                    raise SystemExit(f"store_events returned {len(ids)} ids ({len(set(ids))} distinct) for {size}")
            else:
                for i in range(first, first + size):
                    if not manager.queue_event(event(i)):
                        raise SystemExit(f"event {i} was dropped")
                await manager.flush()
            n += size
            log.write(f"{first} {n - 1}\n")
            log.flush()
            os.fsync(log.fileno())


def main(argv: list[str]) -> int:
    db_path, ack_path, base, durability, seed = argv
    return asyncio.run(ingest(db_path, ack_path, int(base), durability, int(seed)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
