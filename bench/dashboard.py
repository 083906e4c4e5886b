"""The dashboard's refresh time on a big database (what one tick of `celflow dashboard` reads).

    .venv/bin/python bench/dashboard.py --events 10000000 --db /tmp/dash-10m.db

Builds the database with the workload (ending now) through the manager if the file does not
exist, then times ``DashboardSource.snapshot()`` (every panel's figures) for each window, and
with a filter of the recent-events table: medians and p99 of ``--refreshes`` refreshes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _util import percentile
from celflow import create_event_persistence
from celflow.dashboard import DashboardSource, Filters
from workload import iter_events


async def build(path: str, n: int) -> None:
    manager = create_event_persistence({"database_path": path, "batch_size": 1000, "stats_interval": 0})
    await manager.start()
    started = time.perf_counter()
    chunk = []
    for i, event in enumerate(iter_events(n, seed=42), 1):
        chunk.append(event)
        if len(chunk) == 1000:
            manager.queue_events_batch(chunk)
            chunk = []
            await asyncio.sleep(0)
        if i % 1_000_000 == 0:
            print(f"  {i:,} events queued ({time.perf_counter() - started:.0f} s)", flush=True)
    if chunk:
        manager.queue_events_batch(chunk)
    await manager.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--db", default="/tmp/celflow-dashboard-bench.db")
    parser.add_argument("--refreshes", type=int, default=30)
    args = parser.parse_args()
    if not os.path.exists(args.db):
        print(f"building {args.db} with {args.events:,} events...", flush=True)
        asyncio.run(build(args.db, args.events))
    source = DashboardSource(args.db, service=False)
    started = time.perf_counter()
    total = source.total(wait=True)
    count_s = time.perf_counter() - started
    print(f"{args.db}: {total:,} events, {os.path.getsize(args.db) / 2**20:,.0f} MiB")
    print(f"the total (a full count, in a background thread once a minute): {count_s * 1000:,.0f} ms")
    cases = [("hour", Filters()), ("day", Filters()), ("week", Filters()), ("hour", Filters.parse("type:file_op"))]
    cases.append(("hour", Filters.parse("chrome")))
    for window, filters in cases:
        times = []
        for _ in range(args.refreshes):
            snap = source.snapshot(window, filters)
            times.append(snap.query_ms)
        label = f"window {window}" + (f", filter {filters}" if filters != Filters() else "")
        print(
            f"one refresh, {label}: median {statistics.median(times):.1f} ms, "
            f"p99 {percentile(times, 99):.1f} ms (n={len(times)})"
        )
    source.close()


if __name__ == "__main__":
    main()
