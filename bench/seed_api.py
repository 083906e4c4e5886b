"""The seed API's write paths on one workload: ``store_events_batch`` and ``queue_events_batch``.

Prints events/s (median of ``--repeats``), the ratio to the same-run ``sqlite3`` baseline, and
the bytes per event on disk against the same events as JSON Lines::

    .venv/bin/python bench/seed_api.py --events 1000000
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence

import ingest
from _util import inspect_database, remove_database, table
from celflow import EventDatabase


def run_db_batch(path: str, workload: ingest.Workload) -> float:
    """``EventDatabase.store_events_batch`` of 1000 events a call; validation and encoding included."""
    assert workload.events is not None
    with EventDatabase(path) as db:
        started = time.perf_counter()
        for i in range(0, workload.n, ingest.BATCH):
            db.store_events_batch(workload.events[i : i + ingest.BATCH])
        return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    """Run each figure ``--repeats`` times on a fresh database and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    workload = ingest.Workload(args.events, seed=args.seed, end=time.time(), prebuilt=True)
    figures: dict[str, Callable[[str], float]] = {
        "sqlite3 executemany, pre-encoded (baseline)": lambda path: ingest.run_baseline(path, workload, 1)["seconds"],
        "EventDatabase.store_events_batch(1000)": lambda path: run_db_batch(path, workload),
        "manager.queue_events_batch(1000), batch_size=100 (seed default)": lambda path: ingest.run_sustained(
            path, workload, 1, 100
        )["seconds"],
        "manager.queue_events_batch(1000), batch_size=1000": lambda path: ingest.run_sustained(path, workload, 1, 1000)[
            "seconds"
        ],
    }
    seconds: dict[str, list[float]] = {name: [] for name in figures}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="celflow-seed-api-") as folder:
        for repeat in range(args.repeats):
            for name, run in figures.items():
                path = os.path.join(folder, "events.db")
                remove_database(path)
                seconds[name].append(run(path))
                stored, sizes[name] = inspect_database(path)
                if stored != workload.distinct:
                    raise SystemExit(f"CORRECTNESS FAILURE: {name}: {stored:,} stored, {workload.distinct:,} expected")
                print(f"  repeat {repeat + 1}: {name}: {args.events / seconds[name][-1]:,.0f} events/s", flush=True)
    assert workload.counter is not None
    jsonl = workload.counter.jsonl_bytes / workload.distinct
    base = statistics.median(seconds[next(iter(figures))])
    rows = []
    for name, times in seconds.items():
        per_event = sizes[name] / workload.distinct
        rows.append(
            [
                name,
                f"{args.events / statistics.median(times):,.0f}",
                f"{base / statistics.median(times):.2f}x",
                f"{per_event:.0f}",
                f"{per_event / jsonl:.2f}",
            ]
        )
    print(f"\n{args.events:,} events ({workload.distinct:,} distinct), median of {args.repeats}", end="")
    print(f"; JSON Lines {jsonl:.0f} bytes/event")
    print(table(["figure", "events/s", "vs baseline", "bytes/event", "vs JSONL"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
