"""Ingest benchmark: CelFlow's write paths against raw ``sqlite3.executemany`` of the same rows.

Every run writes the whole workload into a fresh database in a temporary folder, checks that the
stored count equals the number of distinct events, and records the time, the bytes per event on
disk and the anonymous memory (RssAnon). Repeats go round-robin over the figures; the table shows
medians. Run ``python bench/ingest.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

import celflow
from _util import MemorySampler, inspect_database, remove_database, rss_anon_mib, table
from celflow import EventDatabase, create_event_persistence
from celflow._schema import _V1
from celflow._sqlite import _INSERT, MMAP_SIZE
from workload import encode_rows, generate

BATCH = 1000  # events per call (and per baseline transaction)
RESULTS_DIR = Path(__file__).resolve().parent / "results"

Events = Sequence[dict[str, Any]]
Rows = Sequence[tuple[Any, ...]]


def run_baseline(path: str, events: Events, rows: Rows) -> float:
    """Pre-encoded rows, ``INSERT OR IGNORE`` via ``executemany``, one transaction per 1000 rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("auto_vacuum = INCREMENTAL", "journal_mode = WAL", "synchronous = NORMAL"):
        conn.execute(f"PRAGMA {pragma}")
    conn.execute(f"PRAGMA mmap_size = {MMAP_SIZE}")
    conn.execute("PRAGMA cache_size = -16384")
    conn.execute("PRAGMA temp_store = MEMORY")
    for statement in _V1:
        conn.execute(statement)
    started = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT, rows[i : i + BATCH])
        conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - started


def run_db_batch(path: str, events: Events, rows: Rows) -> float:
    """``EventDatabase.store_events_batch`` with 1000 events a call (validation and encoding included)."""
    db = EventDatabase(path)
    started = time.perf_counter()
    ids: set[int] = set()
    for i in range(0, len(events), BATCH):
        ids.update(db.store_events_batch(events[i : i + BATCH]))
    db.close()
    elapsed = time.perf_counter() - started
    _check(len(ids), _distinct(events), "distinct ids returned by store_events_batch")
    return elapsed


async def _manager(path: str, events: Events, batch_size: int, per_event: bool) -> float:
    manager = create_event_persistence({"database_path": path, "batch_size": batch_size})
    started = time.perf_counter()
    await manager.start()
    accepted = True
    if per_event:
        for i, event in enumerate(events):
            accepted &= manager.queue_event(event)
            if i % BATCH == BATCH - 1:
                await asyncio.sleep(0)  # a well-behaved producer lets the event loop run
    else:
        for i in range(0, len(events), BATCH):
            accepted &= manager.queue_events_batch(events[i : i + BATCH])
            await asyncio.sleep(0)
    await manager.flush()
    stats = manager.get_stats()
    await manager.stop()
    elapsed = time.perf_counter() - started
    distinct = _distinct(events)
    if not accepted:
        raise SystemExit("CORRECTNESS FAILURE: the manager dropped events (overflow policy)")
    _check(stats["total_stored"], distinct, "events the writer reports stored")
    _check(stats["duplicates"], len(events) - distinct, "duplicates the writer reports")
    return elapsed


def manager_runner(batch_size: int, *, per_event: bool = False) -> Callable[[str, Events, Rows], float]:
    """A run of ``EventPersistenceManager`` with ``batch_size``, queueing batches or single events."""
    return lambda path, events, rows: asyncio.run(_manager(path, events, batch_size, per_event))


#: key -> (label, runner)
FIGURES: dict[str, tuple[str, Callable[[str, Events, Rows], float]]] = {
    "baseline": ("sqlite3 executemany, pre-encoded (baseline)", run_baseline),
    "db_batch": ("EventDatabase.store_events_batch(1000)", run_db_batch),
    "mgr_b100": ("manager.queue_events_batch(1000), batch_size=100", manager_runner(100)),
    "mgr_b1000": ("manager.queue_events_batch(1000), batch_size=1000", manager_runner(1000)),
    "mgr_single": ("manager.queue_event x1, batch_size=1000", manager_runner(1000, per_event=True)),
}

_distinct_cache: dict[int, int] = {}


def _distinct(events: Events) -> int:
    """Distinct events by content (canonical JSON), independent of CelFlow's hashing."""
    key = id(events)
    if key not in _distinct_cache:
        digests = {
            hashlib.blake2b(orjson.dumps(e, option=orjson.OPT_SORT_KEYS), digest_size=16).digest() for e in events
        }
        _distinct_cache[key] = len(digests)
    return _distinct_cache[key]


def _check(got: int, want: int, what: str) -> None:
    if got != want:
        raise SystemExit(f"CORRECTNESS FAILURE: {what}: got {got:,}, expected {want:,}")


def measure(key: str, workdir: str, events: Events, rows: Rows) -> dict[str, float]:
    """One run of a figure in a fresh database; fails loudly when the stored count is wrong."""
    path = os.path.join(workdir, f"{key}.db")
    remove_database(path)
    gc.collect()
    with MemorySampler() as mem:
        seconds = FIGURES[key][1](path, events, rows)
    stored, size = inspect_database(path)
    remove_database(path)
    _check(stored, _distinct(events), f"{key}: events in the database")
    return {
        "seconds": seconds,
        "events_per_s": len(events) / seconds,
        "bytes_per_event": size / stored,
        "rss_before_mib": mem.before,
        "rss_peak_mib": mem.peak,
        "rss_after_mib": mem.after,
    }


def jsonl_bytes(events: Events) -> int:
    """Bytes of the distinct events as JSON Lines, one ``json.dumps`` (and a newline) per event."""
    seen: set[int] = set()
    total = 0
    for event in events:
        if id(event) not in seen:  # the workload's duplicates are the same dict objects
            seen.add(id(event))
            total += len(json.dumps(event).encode()) + 1
    return total


def summarise(runs: dict[str, list[dict[str, float]]], jsonl_per_event: float) -> list[list[str]]:
    """The table's rows: medians over repeats, ratios to the baseline's median."""
    base = statistics.median(r["events_per_s"] for r in runs["baseline"]) if "baseline" in runs else None
    rows = []
    for key, results in runs.items():
        rate = statistics.median(r["events_per_s"] for r in results)
        per_event = statistics.median(r["bytes_per_event"] for r in results)
        growth = max(r["rss_peak_mib"] - r["rss_before_mib"] for r in results)
        rows.append(
            [
                FIGURES[key][0],
                f"{rate:,.0f}",
                f"{rate / base:.2f}x" if base else "-",
                f"{statistics.median(r['seconds'] for r in results):.2f}",
                f"{per_event:,.1f}",
                f"{per_event / jsonl_per_event:.2f}",
                f"+{growth:,.0f}",
            ]
        )
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per run (default 200000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is shown (default 3)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 20000 events, 1 repeat")
    parser.add_argument("--seed", type=int, default=42, help="workload seed (default 42)")
    parser.add_argument(
        "--only", help=f"comma-separated figures to run (default all): {','.join(FIGURES)}", default=",".join(FIGURES)
    )
    parser.add_argument(
        "--json-out", metavar="PATH", help="write the results as JSON (a bare name goes to bench/results/)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.repeats = 20_000, 1
    args.only = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = set(args.only) - set(FIGURES)
    if unknown or not args.only or args.events < 1 or args.repeats < 1:
        parser.error(f"--only takes {','.join(FIGURES)}; --events and --repeats must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the workload, run every figure ``--repeats`` times, print the table."""
    args = parse_args(argv)
    started = time.perf_counter()
    events = generate(args.events, seed=args.seed)
    rows = encode_rows(events) if "baseline" in args.only else []
    distinct = _distinct(events)
    jsonl_per_event = jsonl_bytes(events) / distinct
    gc.freeze()  # the workload is the harness's heap, not CelFlow's: keep it out of the collector's scans
    print(
        f"CelFlow {celflow.__version__}, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs; workload: {args.events:,} events ({distinct:,} distinct), seed {args.seed}, "
        f"built in {time.perf_counter() - started:.1f} s; RssAnon {rss_anon_mib():,.0f} MiB",
        flush=True,
    )
    runs: dict[str, list[dict[str, float]]] = {key: [] for key in FIGURES if key in args.only}
    with tempfile.TemporaryDirectory(prefix="celflow-bench-") as workdir:
        for repeat in range(args.repeats):
            for key in runs:
                result = measure(key, workdir, events, rows)
                runs[key].append(result)
                print(
                    f"  repeat {repeat + 1}/{args.repeats} {key:<10} {result['events_per_s']:>10,.0f} events/s",
                    flush=True,
                )
    header = ["figure", "events/s", "vs baseline", "seconds", "bytes/event", "vs JSONL", "RssAnon +MiB"]
    print(f"\nMedian of {args.repeats} run(s), {args.events:,} events each, fresh database per run:\n")
    print(table(header, summarise(runs, jsonl_per_event)))
    print(
        f"\nevents/s counts every offered event (duplicates included); bytes/event: database file after "
        f"wal_checkpoint(TRUNCATE) / stored events;\nvs JSONL: against {jsonl_per_event:,.1f} bytes/event as "
        "JSON Lines (json.dumps per distinct event); RssAnon +MiB: peak over the run minus before it (max of runs)."
    )
    if args.json_out:
        out = Path(args.json_out)
        if not out.is_absolute() and out.parent == Path():
            out = RESULTS_DIR / out
        out.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "events": args.events,
            "distinct": distinct,
            "repeats": args.repeats,
            "seed": args.seed,
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "celflow": celflow.__version__,
            "cpus": os.cpu_count(),
            "jsonl_bytes_per_event": jsonl_per_event,
            "runs": runs,
        }
        out.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
