"""PostgreSQL beside SQLite on the same workload: ingest through the storage contract, query latencies, a migration.

    .venv/bin/python bench/postgres.py                        # 200,000 events, 3 repeats: a few minutes
    .venv/bin/python bench/postgres.py --events 1000000 --repeats 1

Ingest: the workload's rows (encoded once, before any timing) go through ``insert_events`` in
batches of ``--batch`` (1000); every repeat writes into a new file or a new schema, the rate counts
every offered row (duplicates included) over the wall time, and the table shows medians:

- ``sqlite``: one ``SQLiteStore`` (WAL, ``synchronous=NORMAL``): the baseline of the ratios;
- ``pg_1``: one ``PostgresStore`` (COPY into a staging table, the counters' upsert, then the ordered
  ``ON CONFLICT`` move under the advisory lock);
  the days it writes have no search index yet (a day gets one once finished, by ``build_search_index``);
- ``pg_1_indexed``: the same into days that have their pg_trgm search index already (every partition
  created and indexed before the clock starts): what writing late events into finished days costs,
  and what a trigram index kept on every day would cost all ingest;
- ``pg_1_async``: the same with ``synchronous_commit=off`` (a libpq ``options`` parameter of the URL):
  like SQLite's NORMAL, a crash may lose the last commits but never corrupts;
- ``pg_N``: ``--writers`` (4) processes, each with its own ``PostgresStore``, the batches dealt round-robin;
  timed from a common start to the last commit.

Every run checks that the target holds exactly the events SQLite kept (dedup across writers too).
Queries run on the last repeat's SQLite file and ``pg_1`` schema (the same events) through the
store contract, with the same seeded arguments on both; p50 and p99 of ``--query-samples`` timings
(at most ``--query-budget`` seconds past 5). Before them, ``build_search_index`` indexes that
schema's finished days (timed: events/s) and ``optimize`` runs ANALYZE; the plan of the rare
search is printed (``Bitmap Index Scan`` on the indexed days, ``Seq Scan`` on today's). Last,
``migrate_history`` copies the SQLite file into a new schema (events/s, peak RssAnon growth) and
runs again (everything already there).

The server is the one at ``--url`` (default ``$CELFLOW_BENCH_POSTGRES_URL`` or the local test
database); the benchmark creates ``celflow_bench_*`` schemas there and drops them at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import multiprocessing
import os
import platform
import queue
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import psycopg

from _util import MemorySampler, percentile, remove_database, table
from celflow import EventQuery, EventStore
from celflow._encoding import Row, prepare_batch
from celflow._migrate import migrate_history
from celflow._postgres import DAY, PostgresStore
from celflow._postgres._store import _SEARCH_TEXT
from celflow._sqlite import SQLiteStore
from workload import EVENT_TYPES, RARE_WORD, SOURCES, SPAN_DAYS, iter_events

RESULTS = Path(__file__).resolve().parent / "results" / "postgres.json"
DEFAULT_URL = os.environ.get("CELFLOW_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CHUNK = 50_000  # events generated (and encoded) at a time: only the rows are kept
WARMUP = 2
MIN_SAMPLES = 5
ASYNC_OPTIONS = "options=-c%20synchronous_commit%3Doff"

_rows: list[Row] = []  # the workload's rows; module-level so that forked writers share them


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200_000, help="events of the workload (default 200000)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each ingest figure; medians shown (default 3)")
    p.add_argument("--batch", type=int, default=1000, help="rows per insert_events call (default 1000)")
    p.add_argument("--writers", type=int, default=4, help="writer processes of the pg_N figure (default 4)")
    p.add_argument("--query-samples", type=int, default=200, help="timings per query (default 200)")
    p.add_argument("--query-budget", type=float, default=10.0, help="seconds per query at most, past 5 timings")
    p.add_argument("--url", default=DEFAULT_URL, help="the PostgreSQL server's database URL")
    p.add_argument("--seed", type=int, default=42, help="workload seed (default 42)")
    p.add_argument("--workdir", help="folder of the SQLite files (default $TMPDIR)")
    return p.parse_args(argv)


def build_rows(n: int, seed: int, end: float) -> None:
    """Fill :data:`_rows` with the workload's rows, a chunk of events at a time."""
    events = iter_events(n, seed=seed, end=end)
    while len(_rows) < n:
        chunk = [next(events) for _ in range(min(CHUNK, n - len(_rows)))]
        _rows.extend(prepare_batch(chunk))
    gc.collect()
    gc.freeze()  # the harness's heap: keep it out of the collector's scans while timing


class Server:
    """The PostgreSQL server: new schemas for the runs, dropped at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.schemas: list[str] = []

    def new(self, *, options: str | None = None) -> str:
        """The URL of a new, empty schema."""
        schema = f"celflow_bench_{uuid.uuid4().hex[:10]}"
        self.schemas.append(schema)
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}schema={schema}" + (f"&{options}" if options else "")

    def drop(self, url: str) -> None:
        schema = url.split("schema=")[1].split("&")[0]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        self.schemas.remove(schema)

    def drop_all(self) -> None:
        for schema in list(self.schemas):
            self.drop(f"schema={schema}")

    def settings(self) -> dict[str, str]:
        names = ("server_version", "shared_buffers", "synchronous_commit", "fsync", "wal_level", "max_wal_size")
        with psycopg.connect(self.url) as conn:
            return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in names}  # type: ignore[index]


def _batches(rows: Sequence[Row], size: int) -> Iterator[Sequence[Row]]:
    for lo in range(0, len(rows), size):
        yield rows[lo : lo + size]


def ingest(store: EventStore, rows: Sequence[Row], batch: int) -> float:
    """Seconds to insert ``rows`` in batches (committed: each call is a transaction)."""
    started = time.perf_counter()
    for part in _batches(rows, batch):
        store.insert_events(part, want_ids=False)
    return time.perf_counter() - started


def index_every_day(store: PostgresStore, rows: Sequence[Row]) -> None:
    """Create the partitions of ``rows`` and give each, today's too, the search index of a finished day."""
    days = {int(row.timestamp // DAY) for row in rows}
    store._ensure_days(days)
    with store._conn() as conn:
        for day in sorted(days):
            conn.execute(
                f"CREATE INDEX events_d{day}_search ON events_d{day} USING gin (({_SEARCH_TEXT}) "
                f"{store._opclass.as_string(conn)})"
            )


def search_plan(store: PostgresStore, query: EventQuery) -> str:
    """The scans of the plan of ``query``, counted: e.g. ``21 x Bitmap Index Scan, 1 x Seq Scan``."""
    statement, params = store._select_sql(query)
    plan = [r[0] for r in store._read(f"EXPLAIN {statement}", params)]
    kinds = ("Bitmap Index Scan", "Index Scan Backward", "Index Scan", "Seq Scan")
    counts = {k: sum(line.strip().lstrip("-> ").startswith(k + " ") for line in plan) for k in kinds}
    return ", ".join(f"{n} x {k}" for k, n in counts.items() if n) or "\n".join(plan)


def _writer(url: str, index: int, writers: int, batch: int, barrier: Any, out: Any) -> None:
    """One of the pg_N processes: its own store, every ``writers``-th batch of the shared rows."""
    store = PostgresStore(url)
    try:
        mine = [part for k, part in enumerate(_batches(_rows, batch)) if k % writers == index]
        barrier.wait()
        started = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine
        for part in mine:
            store.insert_events(part, want_ids=False)
        out.put((started, time.monotonic()))
    finally:
        store.close()


def ingest_parallel(url: str, writers: int, batch: int) -> float:
    """Seconds from the common start of ``writers`` processes to the last one's last commit."""
    PostgresStore(url).close()  # the schema exists before the writers race to it
    ctx = multiprocessing.get_context("fork")  # the children share _rows without copying them
    barrier, out = ctx.Barrier(writers), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, i, writers, batch, barrier, out)) for i in range(writers)]
    for proc in procs:
        proc.start()
    times: list[tuple[float, float]] = []
    while len(times) < writers:
        try:
            times.append(out.get(timeout=1))
        except queue.Empty:
            failed = [proc.exitcode for proc in procs if proc.exitcode not in (None, 0)]
            if failed:  # its traceback is on stderr; the others would wait at the barrier or run on
                for proc in procs:
                    proc.kill()
                raise SystemExit(f"a writer process failed (exit {failed[0]})") from None
    for proc in procs:
        proc.join()
    return max(end for _, end in times) - min(start for start, _ in times)


def _migrate_child(source: str, target: str, out: Any) -> None:
    with MemorySampler() as memory:
        report = migrate_history(source, target)
    out.put((report.to_dict(), memory.peak - memory.before))


def migrate_in_fresh_process(source: str, target: str) -> tuple[dict[str, Any], float]:
    """``migrate_history`` in a new interpreter (not this one, whose heap holds the workload): its counts and
    peak RssAnon growth in MiB."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_migrate_child, args=(source, target, out))
    proc.start()
    while True:
        try:
            result: tuple[dict[str, Any], float] = out.get(timeout=1)
            break
        except queue.Empty:
            if proc.exitcode not in (None, 0):
                raise SystemExit(f"the migration process failed (exit {proc.exitcode})") from None
    proc.join()
    return result


def check(store: EventStore, expected: int, what: str) -> None:
    stored = store.count_events(EventQuery())
    if stored != expected:
        raise SystemExit(f"CORRECTNESS FAILURE: {what} holds {stored:,} events, SQLite {expected:,}")


# -- queries ----------------------------------------------------------------------------------------

QUERIES = {
    "q_newest": "newest 100 of the last hour",
    "q_type": "100 of one type in a 1-day range",
    "q_source": "100 of one source in a 1-day range",
    "q_cursor": "next 100 from a cursor deep in history",
    "count_by": 'count_by("event_type", last 24 h)',
    "histogram": "histogram(60 s, last hour)",
    "search_common": 'search "chrome", newest 10',
    "search_rare": f'search "{RARE_WORD}", newest 10',
    "search_rare_count": f'count_events(search "{RARE_WORD}")',
    "search_rare_day": f'search "{RARE_WORD}" in a 1-day range, newest 10',
}


def _cases(store: EventStore, now: float, rng: random.Random) -> dict[str, Callable[[], Callable[[], Any]]]:
    """key -> a preparation (untimed) that returns the call to time."""
    span = SPAN_DAYS * DAY

    def day_range() -> tuple[float, float]:
        start = now - span + rng.random() * (span - DAY)
        return start, start + DAY

    def by_type() -> Callable[[], Any]:
        start, end = day_range()
        q = EventQuery(start_time=start, end_time=end, event_type=rng.choice(list(EVENT_TYPES)), limit=100)
        return lambda: store.select_events(q)

    def by_source() -> Callable[[], Any]:
        start, end = day_range()
        q = EventQuery(start_time=start, end_time=end, source=rng.choice(SOURCES), limit=100)
        return lambda: store.select_events(q)

    def deep_cursor() -> Callable[[], Any]:
        _, cursor = store.select_events(EventQuery(end_time=now - span * rng.uniform(0.8, 0.98), limit=100))
        return lambda: store.select_events(EventQuery(limit=100, cursor=cursor))

    def rare_in_a_day() -> Callable[[], Any]:
        start, end = day_range()
        q = EventQuery(start_time=start, end_time=end, search=RARE_WORD, limit=10)
        return lambda: store.select_events(q)

    def fixed(query: Callable[[], Any]) -> Callable[[], Callable[[], Any]]:
        return lambda: query

    return {
        "q_newest": fixed(lambda: store.select_events(EventQuery(start_time=now - 3600, limit=100))),
        "q_type": by_type,
        "q_source": by_source,
        "q_cursor": deep_cursor,
        "count_by": fixed(lambda: store.count_by("event_type", EventQuery(start_time=now - DAY))),
        "histogram": fixed(lambda: store.histogram(60, EventQuery(start_time=now - 3600))),
        "search_common": fixed(lambda: store.select_events(EventQuery(search="chrome", limit=10))),
        "search_rare": fixed(lambda: store.select_events(EventQuery(search=RARE_WORD, limit=10))),
        "search_rare_count": fixed(lambda: store.count_events(EventQuery(search=RARE_WORD))),
        "search_rare_day": rare_in_a_day,
    }


def measure_queries(store: EventStore, *, samples: int, budget: float, seed: int) -> dict[str, dict[str, float]]:
    """key -> {p50_ms, p99_ms, n} for every query of :data:`QUERIES`."""
    rng = random.Random(seed)  # the same seed on both backends: the same arguments
    (newest,), _ = store.select_events(EventQuery(limit=1))
    results: dict[str, dict[str, float]] = {}
    for key, prepare in _cases(store, newest.timestamp, rng).items():
        for _ in range(WARMUP):
            prepare()()
        timings: list[float] = []
        deadline = time.perf_counter() + budget
        while len(timings) < samples and (len(timings) < MIN_SAMPLES or time.perf_counter() < deadline):
            call = prepare()
            started = time.perf_counter()
            call()
            timings.append((time.perf_counter() - started) * 1000)
        results[key] = {"p50_ms": statistics.median(timings), "p99_ms": percentile(timings, 99), "n": len(timings)}
    return results


# -- the run ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    build_rows(args.events, args.seed, time.time())
    server = Server(args.url)
    settings = server.settings()
    server_notes = ", ".join(f"{k} {v}" for k, v in settings.items() if k != "server_version")
    print(
        f"CelFlow {version('celflow')}, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"PostgreSQL {settings['server_version']} ({server_notes}), "
        f"psycopg {psycopg.__version__}, {os.cpu_count()} CPUs\n"
        f"workload: {args.events:,} events (seed {args.seed}), encoded in {time.perf_counter() - started:.1f} s; "
        f"batches of {args.batch}",
        flush=True,
    )
    runs: dict[str, list[float]] = {}
    keys = ["sqlite", "pg_1", "pg_1_indexed", "pg_1_async", f"pg_{args.writers}"]
    n = len(_rows)
    try:
        with tempfile.TemporaryDirectory(prefix="celflow-bench-pg-", dir=args.workdir) as workdir:
            sqlite_path = os.path.join(workdir, "events.db")
            kept_url = ""
            expected = 0
            for repeat in range(args.repeats):
                last = repeat == args.repeats - 1
                for key in keys:
                    if key == "sqlite":
                        remove_database(sqlite_path)
                        store: EventStore = SQLiteStore(sqlite_path)
                        seconds = ingest(store, _rows, args.batch)
                        expected = store.count_events(EventQuery())
                        store.close()
                    else:
                        url = server.new(options=ASYNC_OPTIONS if key == "pg_1_async" else None)
                        if key.startswith("pg_1"):
                            store = PostgresStore(url)
                            if key == "pg_1_indexed":
                                index_every_day(store, _rows)  # not timed
                            seconds = ingest(store, _rows, args.batch)
                            store.close()
                        else:
                            seconds = ingest_parallel(url, args.writers, args.batch)
                        store = PostgresStore(url, readonly=True)
                        check(store, expected, key)
                        store.close()
                        if key == "pg_1" and last:
                            kept_url = url
                        else:
                            server.drop(url)
                    runs.setdefault(key, []).append(n / seconds)
                    print(f"  {key:<12} {n / seconds:>10,.0f} events/s  ({seconds:.2f} s)", flush=True)

            stores: dict[str, EventStore] = {"sqlite": SQLiteStore(sqlite_path, readonly=True)}
            pg_reader = stores["postgres"] = PostgresStore(kept_url, readonly=True)
            optimizer = PostgresStore(kept_url)
            built = time.perf_counter()
            days = optimizer.build_search_index()
            build_seconds = time.perf_counter() - built
            optimizer.optimize()  # ANALYZE after the bulk load, as the manager's maintenance would
            optimizer.close()
            plan = search_plan(pg_reader, EventQuery(search=RARE_WORD, limit=10))
            index = {"days": days, "seconds": build_seconds, "rate": n / build_seconds, "plan": plan}
            print(f"  search index: {days} finished days in {build_seconds:.1f} s; rare search: {plan}", flush=True)
            queries = {}
            for name, store in stores.items():
                queries[name] = measure_queries(
                    store, samples=args.query_samples, budget=args.query_budget, seed=args.seed
                )
                store.close()
                print(f"  queries on {name} done", flush=True)
            server.drop(kept_url)

            target = server.new()
            first, growth = migrate_in_fresh_process(sqlite_path, target)
            again = migrate_history(sqlite_path, target)
            if first["events_copied"] != expected or again.events_copied != 0:
                raise SystemExit(f"CORRECTNESS FAILURE: migration {first} then {again.to_dict()}")
            migration = {
                "events": first["events_read"],
                "seconds": first["seconds"],
                "rate": first["events_read"] / first["seconds"],
                "again_seconds": again.seconds,
                "again_rate": again.events_read / again.seconds,
                "rss_growth_mib": growth,
            }
            server.drop(target)
    finally:
        server.drop_all()

    base = statistics.median(runs["sqlite"])
    ingest_rows = []
    labels = {
        "sqlite": "SQLiteStore.insert_events, 1 writer (baseline)",
        "pg_1": "PostgresStore.insert_events (COPY), 1 writer",
        "pg_1_indexed": "the same, into days with their search index",
        "pg_1_async": "the same, synchronous_commit=off",
        f"pg_{args.writers}": f"PostgresStore, {args.writers} writer processes",
    }
    for key in keys:
        rate = statistics.median(runs[key])
        ingest_rows.append([labels[key], f"{rate:,.0f} events/s", f"{rate / base:.2f}"])
    print(f"\n{n:,} events, batches of {args.batch}, medians of {args.repeats}; ratio: / SQLite's rate of this run\n")
    print(table(["ingest", "value", "ratio"], ingest_rows))
    with_index = statistics.median(runs["pg_1_indexed"]) / statistics.median(runs["pg_1"])
    print(
        f"\nsearch index: pg_1_indexed / pg_1 = {with_index:.2f}; building it afterwards for {index['days']} "
        f"finished days: {index['rate']:,.0f} events/s ({index['seconds']:.1f} s)\nplan of the rare search: "
        f"{index['plan']}"
    )
    query_rows = []
    for key, label in QUERIES.items():
        s, p = queries["sqlite"][key], queries["postgres"][key]
        query_rows.append(
            [
                label,
                f"{s['p50_ms']:.2f} / {s['p99_ms']:.2f}",
                f"{p['p50_ms']:.2f} / {p['p99_ms']:.2f}",
                f"{p['p50_ms'] / s['p50_ms']:.1f}",
                f"{min(int(s['n']), int(p['n']))}",
            ]
        )
    print()
    print(table(["query", "SQLite p50 / p99 ms", "PostgreSQL p50 / p99 ms", "PG/SQLite p50", "timings"], query_rows))
    print(
        f"\nmigrate_history SQLite -> PostgreSQL: {migration['rate']:,.0f} events/s ({migration['seconds']:.1f} s, "
        f"peak RssAnon +{migration['rss_growth_mib']:.1f} MiB); again, all already there: "
        f"{migration['again_rate']:,.0f} events/s ({migration['again_seconds']:.1f} s)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "config": vars(args),
        "server": settings,
        "runs": runs,
        "queries": queries,
        "search_index": index,
        "migration": migration,
    }
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results: {RESULTS}\ntotal {time.perf_counter() - started:,.0f} s")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
