"""Subprocess side of tests/reliability/test_disk_faults.py: writer processes that meet a full disk or
injected I/O errors (the test runs them under libfiu's ``fiu-run`` for the latter).

Usage (always with the virtualenv's Python, cwd outside the repository):

    faults_worker.py ingest DB OUT DURABILITY BASE
        Ingest events numbered BASE, BASE+1, ... for ever, like durability_worker.py's ingest:
        after every acknowledged commit (``await flush()`` or ``await store_events()``) append
        ``FIRST LAST`` to OUT/acks.log. Every 50 ms OUT/stats.json is replaced by get_stats(),
        plus ``writer_connections``: how many connections the writer thread committed on in turn.
        SIGTERM: write the last running stats to OUT/final.json, stop the manager, exit 0.

    faults_worker.py fill DB OUT POLICY
        A manager with overflow POLICY and a small queue ingests (from a producer thread) until
        the disk is full: the writer is unhealthy and the overflow policy has turned events
        away. Every range of events is logged to OUT/events.log as ``accepted|dropped|refused|
        acked FIRST LAST``. A poller reads get_stats() every millisecond and keeps what it saw
        when the first write error appeared. Then it prints ``full`` and waits for a line on
        stdin (the test frees space), waits for everything accepted to be committed, ingests a
        few more acknowledged batches, writes OUT/final.json and stops.

The ack logs are flushed but not fsynced: the tests kill processes, they do not cut the power
(and a failure point on fsync must not hit the test's own bookkeeping).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import celflow

BATCH = 100
_BIG_EVERY = 10  # every 10th event is large enough to be stored zstd-compressed


def payload(n: int) -> dict[str, Any]:
    """The data of event number ``n`` (the test recomputes it to compare stored data exactly)."""
    data: dict[str, Any] = {"n": n, "path": f"/home/user/doc-{n}.txt", "size": n * 7}
    if n % _BIG_EVERY == 0:
        data["blob"] = "".join(f"{n}:{i};" for i in range(400))
    return data


def event(n: int) -> dict[str, Any]:
    """Event number ``n``."""
    return {"event_type": "faults", "source": "worker", "action": "tick", "data": payload(n)}


def filler(n: int) -> dict[str, Any]:
    """Event number ``n`` of the fill mode: random text, so the disk fills at a known pace."""
    return {"event_type": "faults", "source": "worker", "data": {"n": n, "pad": secrets.token_hex(200)}}


def write_json(path: Path, value: Any) -> None:
    """Replace ``path`` atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


async def ingest(db_path: str, out: Path, durability: str, base: int) -> int:
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    manager = celflow.create_event_persistence(
        {
            "database_path": db_path,
            "batch_timeout": 0.05,
            "batch_size": 128,
            "stats_interval": 0,
            "durability": durability,
        }
    )
    await manager.start()
    store = manager.database.store  # type: ignore[union-attr]
    committed_on: list[Any] = []  # each connection the writer thread committed a batch on, in order

    def observe(seconds: float, inserted: int) -> None:
        """Runs on the writer thread after each committed batch: which connection did it commit on?"""
        conn = store._local.conn  # private: the invariant under test has no public surface
        if not committed_on or committed_on[-1] is not conn:
            committed_on.append(conn)

    manager.add_batch_observer(observe)

    def stats() -> dict[str, Any]:
        return {**manager.get_stats(), "writer_connections": len(committed_on)}

    async def report() -> None:
        while True:
            write_json(out / "stats.json", stats())
            await asyncio.sleep(0.05)

    reporter = asyncio.create_task(report())
    n = base
    round_no = 0
    with open(out / "acks.log", "a", encoding="utf-8") as log:
        while not stopping.is_set():
            first = n
            if round_no % 4 == 3:
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
            log.write(f"{first} {n - 1}\n")
            log.flush()
            round_no += 1
    reporter.cancel()
    write_json(out / "final.json", stats())
    await manager.stop()
    return 0


class FillLog:
    """Ranges of events and what became of them, appended to OUT/events.log from any thread."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.lock = threading.Lock()
        self.counts = {"accepted": 0, "dropped": 0, "refused": 0, "acked": 0}

    def add(self, what: str, first: int, last: int) -> None:
        with self.lock:
            self.counts[what] += last - first + 1
            self.file.write(f"{what} {first} {last}\n")
            self.file.flush()

    def close(self) -> None:
        self.file.close()


async def fill(db_path: str, out: Path, policy: str) -> int:
    loop = asyncio.get_running_loop()
    manager = celflow.create_event_persistence(
        {
            "database_path": db_path,
            "batch_size": BATCH,
            "batch_timeout": 0.05,
            "max_queue_size": 5 * BATCH,
            "overflow": policy,
            "queue_timeout": 0.2,
            "stats_interval": 0,
        }
    )
    await manager.start()
    events = FillLog(out / "events.log")
    seen: dict[str, Any] = {}
    blocked: list[float] = []  # how long each refused call of the "block" policy waited

    async def poll() -> None:
        """Keep what get_stats() said when the first write error showed."""
        while "first_error" not in seen:
            stats = manager.get_stats()
            if stats["errors"]:
                seen["first_error"] = {k: stats[k] for k in ("errors", "healthy", "batches", "last_error")}
            await asyncio.sleep(0.001)

    pending: list[asyncio.Future[None]] = []

    def ack_when_committed(first: int, last: int) -> None:
        """Runs on the loop: a flush queued after these events resolves once they are committed."""

        async def wait() -> None:
            await manager.flush()
            events.add("acked", first, last)

        pending.append(asyncio.ensure_future(wait()))

    def produce() -> int:
        n = 0
        turned_away = 0
        give_up = time.monotonic() + 60  # a disk of a few MiB is full long before: say so rather than hang
        while not (turned_away >= 3 * BATCH and not manager.get_stats()["healthy"]) and time.monotonic() < give_up:
            batch = [filler(i) for i in range(n, n + BATCH)]
            started = time.monotonic()
            try:
                accepted = manager.queue_events_batch(batch)
            except celflow.QueueFullError:
                blocked.append(time.monotonic() - started)
                events.add("refused", n, n + BATCH - 1)
                turned_away += BATCH
            else:
                if accepted:
                    events.add("accepted", n, n + BATCH - 1)
                    loop.call_soon_threadsafe(ack_when_committed, n, n + BATCH - 1)
                else:
                    events.add("dropped", n, n + BATCH - 1)
                    turned_away += BATCH
            n += BATCH
            time.sleep(0.005)
        return n

    poller = asyncio.create_task(poll())
    n = await asyncio.to_thread(produce)
    full = manager.get_stats()
    print("full", json.dumps({"stats": full, "first_error": seen.get("first_error")}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the test freed some space
    await asyncio.wait_for(asyncio.gather(*pending), 120)
    recovered = manager.get_stats()
    for _ in range(3):
        await manager.store_events([filler(i) for i in range(n, n + BATCH)])
        events.add("accepted", n, n + BATCH - 1)
        events.add("acked", n, n + BATCH - 1)
        n += BATCH
    poller.cancel()
    final = manager.get_stats()
    write_json(
        out / "final.json",
        {
            "full": full,
            "first_error": seen.get("first_error"),
            "recovered": recovered,
            "final": final,
            "blocked": blocked,
            "counts": events.counts,
        },
    )
    await manager.stop()
    events.close()
    return 0


def main(argv: list[str]) -> int:
    mode, db_path, out, *rest = argv
    if mode == "ingest":
        durability, base = rest
        return asyncio.run(ingest(db_path, Path(out), durability, int(base)))
    if mode == "fill":
        (policy,) = rest
        return asyncio.run(fill(db_path, Path(out), policy))
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
