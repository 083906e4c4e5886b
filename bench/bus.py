"""The NATS JetStream ingest path end to end: ``BusPublisher`` -> JetStream -> ``celflow ingest-worker`` -> store.

    .venv/bin/python bench/bus.py                              # 200,000 events, 3 repeats: a few minutes
    .venv/bin/python bench/bus.py --events 50000 --repeats 1   # a quick look

The workload (``workload.py``) is generated once; every figure offers all of it (duplicates
included), its rate counts every offered event over the wall time, and the table shows medians of
``--repeats`` runs, which go round-robin over the figures:

- ``sqlite``, ``pg``: ``insert_events`` of the workload's rows (encoded once, before any timing) in
  batches of ``--batch`` (1000) into a new ``SQLiteStore`` file / ``PostgresStore`` schema, as
  ``postgres.py`` does: the baselines of the ratios;
- ``publish``: one ``BusPublisher`` (its defaults: messages of up to 1000 events, one in flight)
  given the events in calls of ``--batch``, then ``flush()``: every event acknowledged by JetStream
  (written to its file store). Unlike the baselines, this includes validating and encoding each
  event, in the publisher;
- ``e2e_sqlite_1``, ``e2e_pg_1``, ``e2e_pg_2``: the same publishing while 1 (SQLite: one writer) or
  1 and 2 (PostgreSQL) ``celflow ingest-worker`` processes (one durable consumer, ``--worker-batch``
  messages per fetch and commit) store into a new file or schema. Timed from the first ``publish``
  to the first poll (every 0.2 s, ``count_events`` on a read-only ``EventDatabase``) that finds every
  distinct event; the workers are started and ready before the clock starts.

Checks (else the run stops with ``CORRECTNESS FAILURE``): every store holds exactly the workload's
distinct events (counted by content with a digest of canonical JSON, as ``run.py`` does); after an
end-to-end run, each stored (timestamp, hash) pair is there once and they are exactly those of the
workload's rows (the workers encode what they received again: an event altered on the way would not
match), the workers' counters add up, and the publisher lost, dropped and resent nothing.

Memory: the publisher's ``RssAnon`` peak growth (``/proc/self/status``, every 20 ms) while it
publishes. Outage (own broker only; ``--outage-events``, 50,000; 0 skips it): with the broker
stopped, a publisher in a fresh process buffers the events (its RssAnon growth is what the buffer
costs), then the broker starts again and the drain is timed from the restart to ``flush()``.

The broker is a ``nats-server -js`` of the benchmark's own on a free loopback port, storing in the
temporary folder (``--workdir``, default ``$TMPDIR``); ``--bus URL`` uses a running one instead
(the streams the benchmark creates there are deleted). PostgreSQL: ``--url`` (default
``$CELFLOW_BENCH_POSTGRES_URL`` or the local test database), in ``celflow_bench_*`` schemas dropped
at the end. Everything also goes to ``bench/results/bus.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import logging
import multiprocessing
import os
import platform
import queue
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).parent))
import nats
import orjson

from _util import DistinctCounter, MemorySampler, remove_database, table
from celflow import EventDatabase, EventQuery, EventStore
from celflow._encoding import Row, prepare_batch
from celflow._postgres import PostgresStore
from celflow._sqlite import SQLiteStore
from celflow.bus import BusPublisher
from postgres import Server, ingest
from workload import generate

RESULTS = Path(__file__).resolve().parent / "results" / "bus.json"
DEFAULT_URL = os.environ.get("CELFLOW_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
POLL = 0.2  # seconds between two counts of the store in an end-to-end run
PAGE = 20_000  # events per select_events page of the content check
#: The worker runs the installed CLI's code: ``celflow ingest-worker`` without relying on PATH.
CLI = "import sys; from celflow.cli import main; sys.exit(main())"

Events = Sequence[dict[str, Any]]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200_000, help="events of the workload (default 200000)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each figure; medians shown (default 3)")
    p.add_argument("--batch", type=int, default=1000, help="events per insert_events / publish call (default 1000)")
    p.add_argument("--worker-batch", type=int, default=64, help="the workers' --batch: messages per commit (64)")
    p.add_argument("--outage-events", type=int, default=50_000, help="events buffered while the broker is away")
    p.add_argument("--bus", help="a running NATS server with JetStream (default: start one of our own)")
    p.add_argument("--nats-server", help="the nats-server binary (default: on PATH, or /usr/sbin/nats-server)")
    p.add_argument("--url", default=DEFAULT_URL, help="the PostgreSQL server's database URL")
    p.add_argument("--stall", type=float, default=60.0, help="seconds without progress before a run fails (60)")
    p.add_argument("--seed", type=int, default=42, help="workload seed (default 42)")
    p.add_argument("--workdir", help="folder of the SQLite files and the broker's store (default $TMPDIR)")
    return p.parse_args(argv)


def fail(message: str) -> SystemExit:
    return SystemExit(f"CORRECTNESS FAILURE: {message}")


# -- the broker and the database server -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Broker:
    """A ``nats-server -js`` of our own on a free loopback port, storing in ``folder``; it may stop and start."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary, self.folder = binary, folder
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.folder / "nats-server.log", "ab")  # noqa: SIM115 - the server writes it until it stops
        argv = [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.folder / "jetstream")]
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 15
        while not listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"nats-server did not start (see {self.folder / 'nats-server.log'})")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM and wait: a clean stop, JetStream's files written."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, check=False).stdout
        return out.strip().removeprefix("nats-server: ")


def find_nats_server(given: str | None) -> str:
    found = given or shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not os.access(found, os.X_OK):
        raise SystemExit(f"no nats-server at {found}: install it (apt-get install nats-server), or give --bus URL")
    return found


class Names:
    """A fresh stream, subject and durable consumer name for one run."""

    def __init__(self) -> None:
        token = uuid.uuid4().hex[:10]
        self.stream, self.subject, self.durable = f"BENCH_{token.upper()}", f"bench.{token}.events", f"bench-{token}"


async def _delete_stream(url: str, stream: str) -> None:
    nc = await nats.connect(url)
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def delete_stream(url: str, stream: str) -> None:
    asyncio.run(_delete_stream(url, stream))


# -- the figures --------------------------------------------------------------------------------------


def direct(store: EventStore, rows: Sequence[Row], batch: int) -> float:
    """:func:`postgres.ingest`'s seconds, the store closed after."""
    try:
        return ingest(store, rows, batch)
    finally:
        store.close()


async def publish(
    url: str, names: Names, events: Events, batch: int, memory: MemorySampler | None = None
) -> tuple[float, float, dict[str, Any]]:
    """Publish every event and flush: (monotonic start, monotonic end, the publisher's stats).

    ``start()`` (connecting, creating the stream) is not timed.
    """
    # queue_timeout: a full buffer waits for the broker rather than failing the run on a loaded machine
    publisher = BusPublisher(url, stream=names.stream, subject=names.subject, queue_timeout=120.0, name="bench")
    await publisher.start()
    try:
        if memory is not None:
            memory.rebase()
        started = time.monotonic()  # CLOCK_MONOTONIC: the same clock as the other processes'
        for lo in range(0, len(events), batch):
            await publisher.publish(events[lo : lo + batch])
        await publisher.flush()
        flushed = time.monotonic()
        stats = publisher.stats()
    finally:
        await publisher.stop()
    check_publisher(stats, len(events))
    return started, flushed, stats


def check_publisher(stats: dict[str, Any], offered: int) -> None:
    if stats["published"] != offered or stats["lost"] or stats["dropped"]:
        raise fail(f"the publisher acknowledged {stats['published']:,} of {offered:,} events: {stats}")


class Worker:
    """One ``celflow ingest-worker --json`` process; its status lines are collected as they come."""

    def __init__(self, argv: list[str], log: Path, cwd: Path, env: dict[str, str]) -> None:
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, cwd=cwd, env=env)
        self.statuses: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            with contextlib.suppress(orjson.JSONDecodeError):
                self.statuses.put(orjson.loads(line))

    def wait_for(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self.statuses.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the ingest worker gave no {event!r} line: {self.stderr_tail()}") from None
                continue
            if status.get("event") == event:
                return status

    def stop(self) -> dict[str, Any]:
        """SIGTERM, and the ``stopped`` line with the worker's counters."""
        self.proc.send_signal(signal.SIGTERM)
        status = self.wait_for("stopped", 60)
        if self.proc.wait(30) != 0:
            raise SystemExit(f"the ingest worker exited with {self.proc.returncode}: {self.stderr_tail()}")
        return status

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stderr_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] or "(nothing on stderr)"


class Expected:
    """What every store must hold: the workload's distinct events, as counts and (timestamp, hash) pairs."""

    def __init__(self, events: Events, rows: Sequence[Row]) -> None:
        counter = DistinctCounter()
        counter.add(events)
        self.distinct = counter.distinct
        self.keys = {(row.timestamp, row.hash) for row in rows}
        if len(self.keys) != self.distinct:
            raise fail(f"{len(self.keys):,} distinct rows, {self.distinct:,} distinct events by content")

    def check_count(self, store: EventStore, what: str) -> None:
        stored = store.count_events(EventQuery())
        if stored != self.distinct:
            raise fail(f"{what} holds {stored:,} events; the workload has {self.distinct:,} distinct ones")

    def check_keys(self, store: EventStore, what: str) -> None:
        """Every stored (timestamp, hash) pair once, and exactly the workload's."""
        seen: collections.Counter[tuple[float, str | None]] = collections.Counter()
        cursor: str | None = None
        while True:
            page, cursor = store.select_events(EventQuery(order="asc", limit=PAGE, cursor=cursor))
            seen.update((event.timestamp, event.hash) for event in page)
            if cursor is None or not page:
                break
        twice = sum(1 for n in seen.values() if n > 1)
        missing, foreign = len(self.keys - seen.keys()), len(seen.keys() - self.keys)
        if twice or missing or foreign:
            raise fail(f"{what}: {twice:,} events stored twice, {missing:,} missing, {foreign:,} not of the workload")


class Bench:
    """What every run needs: the workload, the servers, the folder, the options."""

    def __init__(self, args: argparse.Namespace, events: Events, rows: Sequence[Row], workdir: Path) -> None:
        self.args, self.events, self.rows, self.workdir = args, events, rows, workdir
        self.expected = Expected(events, rows)
        self.schemas = Server(args.url)
        self.broker: Broker | None = None
        self.bus_url: str = args.bus or ""
        config = workdir / "celflow.toml"  # ours only: not ./celflow.toml nor the user's
        config.write_text('[logging]\nlevel = "WARNING"\n')
        self.worker_argv = [sys.executable, "-c", CLI, "--config", str(config), "ingest-worker", "--json"]
        self.worker_env = {k: v for k, v in os.environ.items() if not k.startswith("CELFLOW_")}
        self.workers_started = 0

    def sqlite_path(self) -> str:
        path = str(self.workdir / "events.db")
        remove_database(path)
        return path

    # -- one run of each figure -------------------------------------------------------------------

    def run_direct(self, backend: str) -> dict[str, Any]:
        if backend == "sqlite":
            location = self.sqlite_path()
            seconds = direct(SQLiteStore(location), self.rows, self.args.batch)
        else:
            location = self.schemas.new()
            seconds = direct(PostgresStore(location), self.rows, self.args.batch)
        try:
            reader = EventDatabase(location, readonly=True)
            self.expected.check_count(reader.store, f"{backend} after insert_events")
            reader.close()
        finally:
            if backend == "pg":
                self.schemas.drop(location)
        return {"seconds": seconds, "rate": len(self.rows) / seconds}

    def run_publish(self) -> dict[str, Any]:
        names = Names()
        try:
            with MemorySampler() as memory:
                started, flushed, stats = asyncio.run(
                    publish(self.bus_url, names, self.events, self.args.batch, memory)
                )
        finally:
            delete_stream(self.bus_url, names.stream)
        seconds = flushed - started
        return {
            "seconds": seconds,
            "rate": len(self.events) / seconds,
            "rss_growth_mib": memory.peak - memory.before,
            "messages": stats["messages"],
        }

    def run_end_to_end(self, backend: str, workers: int) -> dict[str, Any]:
        names = Names()
        if backend == "sqlite":
            location = self.sqlite_path()
            SQLiteStore(location).close()  # created before the worker opens it (not timed)
        else:
            location = self.schemas.new()
            PostgresStore(location).close()  # the schema exists before the workers race to it
        procs: list[Worker] = []
        reader: EventDatabase | None = None
        try:
            for _ in range(workers):
                self.workers_started += 1
                argv = [*self.worker_argv, "--bus", self.bus_url, "--db", location, "--stream", names.stream]
                argv += ["--subject", names.subject, "--durable", names.durable, "--batch", str(self.args.worker_batch)]
                log = self.workdir / f"worker-{self.workers_started}.log"
                procs.append(Worker(argv, log, self.workdir, self.worker_env))
            for proc in procs:
                proc.wait_for("ready", 60)
            reader = EventDatabase(location, readonly=True)
            started, flushed, reached = asyncio.run(self._publish_until_stored(names, reader, procs))
            statuses = [proc.stop() for proc in procs]
            what = f"{backend} through {workers} worker(s)"
            self.expected.check_count(reader.store, what)
            self.expected.check_keys(reader.store, what)
        finally:
            for proc in procs:
                proc.kill()
            if reader is not None:
                reader.close()
            delete_stream(self.bus_url, names.stream)
            if backend == "pg":
                self.schemas.drop(location)
        counters = ("messages", "events", "stored", "duplicates", "redelivered", "invalid")
        totals = {key: sum(s[key] for s in statuses) for key in counters}
        # Every delivery is stored or found stored already; a redelivered message is counted twice.
        if totals["stored"] != self.expected.distinct or totals["invalid"] or totals["events"] < len(self.events):
            raise fail(f"the workers' counters {totals} (distinct events: {self.expected.distinct:,})")
        if totals["stored"] + totals["duplicates"] != totals["events"]:
            raise fail(f"the workers' counters do not add up: {totals}")
        seconds = reached - started
        return {
            "seconds": seconds,
            "rate": len(self.events) / seconds,
            "published_seconds": flushed - started,
            "workers": totals,
            "per_worker_events": [s["events"] for s in statuses],
        }

    async def _publish_until_stored(
        self, names: Names, reader: EventDatabase, procs: Sequence[Worker]
    ) -> tuple[float, float, float]:
        """(start, publisher flushed, store complete), all on the monotonic clock."""
        done = threading.Event()
        poll = asyncio.ensure_future(asyncio.to_thread(self._wait_stored, reader, procs, done))
        try:
            started, flushed, _ = await publish(self.bus_url, names, self.events, self.args.batch)
            reached = await poll
        finally:
            done.set()
            with contextlib.suppress(BaseException):
                await poll
        return started, flushed, reached

    def _wait_stored(self, reader: EventDatabase, procs: Sequence[Worker], done: threading.Event) -> float:
        """The monotonic time of the first count that finds every distinct event."""
        expected, last, progress = self.expected.distinct, -1, time.monotonic()
        while not done.is_set():
            count = reader.count_events()
            now = time.monotonic()
            if count >= expected:
                return now
            if count != last:
                last, progress = count, now
            elif now - progress > self.args.stall:
                raise fail(f"the store stayed at {count:,} of {expected:,} events for {self.args.stall:g} s")
            for proc in procs:
                if proc.proc.poll() is not None:
                    raise SystemExit(f"an ingest worker exited with {proc.proc.returncode}: {proc.stderr_tail()}")
            time.sleep(POLL)
        raise SystemExit("stopped before the store was complete")

    # -- the outage -----------------------------------------------------------------------------------

    def run_outage(self, n: int, end: float) -> dict[str, Any]:
        """The broker away: a fresh publisher process buffers ``n`` events, then the broker comes back."""
        assert self.broker is not None
        names = Names()
        self.broker.stop()
        ctx = multiprocessing.get_context("spawn")  # a fresh heap: its growth is the buffer's
        out = ctx.Queue()
        args = (self.broker.url, names.stream, names.subject, n, self.args.seed, end, self.args.batch, out)
        child = ctx.Process(target=_outage_child, args=args)
        child.start()
        try:
            buffered = _receive(out, child, 120)
            restarted = time.monotonic()
            self.broker.start()
            up = time.monotonic()
            flushed = _receive(out, child, 120)
            child.join(30)
        finally:
            if child.is_alive():
                child.kill()
            if self.broker.proc is None or self.broker.proc.poll() is not None:
                self.broker.start()
            delete_stream(self.broker.url, names.stream)
        check_publisher(flushed["stats"], n)
        return {
            "events": n,
            "buffered_events": buffered["events"],
            "buffer_seconds": buffered["seconds"],
            "buffered_bytes": buffered["bytes"],
            "rss_buffered_mib": buffered["rss"],
            "rss_peak_mib": flushed["rss_peak"],
            "broker_start_seconds": up - restarted,
            "drain_seconds": flushed["at"] - restarted,
            "reconnect_seconds": flushed["reconnected"] - restarted,
            "drain_rate": n / (flushed["at"] - restarted),
            "retries": flushed["stats"]["retries"],
        }


def _receive(out: Any, child: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result: dict[str, Any] = out.get(timeout=0.5)
            return result
        except queue.Empty:
            if child.exitcode is not None or time.monotonic() > deadline:
                raise SystemExit(f"the outage publisher process failed (exit {child.exitcode})") from None


def _outage_child(url: str, stream: str, subject: str, n: int, seed: int, end: float, batch: int, out: Any) -> None:
    """Buffer ``n`` events with the broker away, report, then flush once it is back and report again."""
    logging.getLogger("celflow").addHandler(logging.NullHandler())  # the expected "not reachable" warnings
    events = generate(n, seed=seed, end=end)
    gc.collect()
    gc.freeze()

    async def main() -> None:
        publisher = BusPublisher(url, stream=stream, subject=subject, queue_timeout=120.0, name="bench-outage")
        await publisher.start()  # the broker is away: it warns, and buffers
        try:
            with MemorySampler() as memory:
                started = time.monotonic()
                for lo in range(0, len(events), batch):
                    await publisher.publish(events[lo : lo + batch])
                seconds = time.monotonic() - started
                growth = memory.peak - memory.before
                held = publisher.stats()
                out.put(
                    {"events": held["buffered"], "bytes": held["buffered_bytes"], "seconds": seconds, "rss": growth}
                )
                watch = asyncio.ensure_future(connected(publisher))
                await publisher.flush(timeout=120)
                at = time.monotonic()
            reconnected = await watch
            out.put(
                {
                    "at": at,
                    "reconnected": reconnected,
                    "stats": publisher.stats(),
                    "rss_peak": memory.peak - memory.before,
                }
            )
        finally:
            await publisher.stop()

    async def connected(publisher: BusPublisher) -> float:
        """The monotonic time the publisher is connected again (polled every 5 ms)."""
        while not publisher.stats()["connected"]:
            await asyncio.sleep(0.005)
        return time.monotonic()

    asyncio.run(main())


# -- the run --------------------------------------------------------------------------------------------

FIGURES = {
    "sqlite": ("SQLiteStore.insert_events (baseline)", "sqlite"),
    "pg": ("PostgresStore.insert_events (baseline)", "pg"),
    "publish": ("BusPublisher -> JetStream acknowledged (publish only)", None),
    "e2e_sqlite_1": ("publish -> 1 ingest-worker -> SQLite", "sqlite"),
    "e2e_pg_1": ("publish -> 1 ingest-worker -> PostgreSQL", "pg"),
    "e2e_pg_2": ("publish -> 2 ingest-workers -> PostgreSQL", "pg"),
}


def run_figure(bench: Bench, key: str) -> dict[str, Any]:
    if key in ("sqlite", "pg"):
        return bench.run_direct(key)
    if key == "publish":
        return bench.run_publish()
    _, backend, workers = key.split("_")
    return bench.run_end_to_end(backend, int(workers))


def progress(key: str, result: dict[str, Any], distinct: int) -> str:
    line = f"  {key:<13} {result['rate']:>9,.0f} events/s  ({result['seconds']:.2f} s"
    if "rss_growth_mib" in result:
        line += f"; {result['messages']} messages; RssAnon +{result['rss_growth_mib']:.0f} MiB"
    if "workers" in result:
        w, split = result["workers"], "/".join(f"{n:,}" for n in result["per_worker_events"])
        line += (
            f"; published in {result['published_seconds']:.2f} s)\n"
            f"                check: {distinct:,} distinct events stored, each once, all of the workload's; "
            f"workers: {w['messages']:,} messages, {w['events']:,} events ({split}),"
            f" {w['stored']:,} new, {w['duplicates']:,} already stored, {w['redelivered']} redelivered"
        )
    else:
        line += ")"
    return line


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    total = time.perf_counter()
    end = time.time()
    events = generate(args.events, seed=args.seed, end=end)
    encoding = time.perf_counter()
    rows = prepare_batch(events)
    encoding = time.perf_counter() - encoding
    gc.collect()
    gc.freeze()  # the harness's heap: keep it out of the collector's scans while timing
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in FIGURES}
    outage: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="celflow-bench-bus-", dir=args.workdir) as folder:
        bench = Bench(args, events, rows, Path(folder))
        try:
            if not args.bus:
                bench.broker = Broker(find_nats_server(args.nats_server), Path(folder))
                bench.broker.start()
                bench.bus_url = bench.broker.url
            broker = bench.broker.version() if bench.broker else f"running at {args.bus}"
            pg_version = bench.schemas.settings()["server_version"]
            print(
                f"CelFlow {version('celflow')}, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
                f"PostgreSQL {pg_version}, nats-server {broker}, nats-py {version('nats-py')}, "
                f"{os.cpu_count()} CPUs\nworkload: {len(events):,} events (seed {args.seed}), "
                f"{bench.expected.distinct:,} distinct; encoded (prepare_batch) in {encoding:.1f} s = "
                f"{len(events) / encoding:,.0f} events/s (the baselines' rows, not timed in them); "
                f"calls of {args.batch}, workers' --batch {args.worker_batch}",
                flush=True,
            )
            for repeat in range(args.repeats):
                print(f"repeat {repeat + 1}/{args.repeats}", flush=True)
                for key in FIGURES:
                    result = run_figure(bench, key)
                    runs[key].append(result)
                    print(progress(key, result, bench.expected.distinct), flush=True)
            if bench.broker is not None and args.outage_events > 0:
                outage = bench.run_outage(args.outage_events, end)
                print(
                    f"  outage        {outage['events']:,} events buffered in {outage['buffer_seconds']:.2f} s; "
                    f"broker back, drained in {outage['drain_seconds']:.2f} s",
                    flush=True,
                )
        finally:
            bench.schemas.drop_all()
            if bench.broker is not None:
                bench.broker.stop()

    medians = {key: statistics.median(r["rate"] for r in results) for key, results in runs.items()}
    base = {"sqlite": medians["sqlite"], "pg": medians["pg"]}
    rows_out = []
    for key, (label, backend) in FIGURES.items():
        rate = medians[key]
        ratios = [f"{rate / base[b]:.2f}" if backend in (b, None) else "-" for b in ("sqlite", "pg")]
        seconds = statistics.median(r["seconds"] for r in runs[key])
        rows_out.append([label, f"{rate:,.0f}", *ratios, f"{seconds:.2f}"])
    print(
        f"\n{len(events):,} events ({bench.expected.distinct:,} distinct), medians of {args.repeats}; "
        "ratios: / the direct insert_events rate of this run\n"
    )
    print(table(["path", "events/s", "/ SQLite direct", "/ PG direct", "seconds"], rows_out))
    lag = {
        key: statistics.median(r["seconds"] - r["published_seconds"] for r in runs[key])
        for key in FIGURES
        if key.startswith("e2e")
    }
    print(
        "\nend to end, stored after the publisher's flush (median): "
        + ", ".join(f"{key} +{seconds:.2f} s" for key, seconds in lag.items())
        + f"\nchecks: every run held exactly the {bench.expected.distinct:,} distinct events; end to end, each once"
        " and all of the workload's (timestamp, hash) pairs, the workers' counters adding up"
    )
    rss = max(r["rss_growth_mib"] for r in runs["publish"])
    print(f"publisher RssAnon peak growth while publishing {len(events):,} events: +{rss:.0f} MiB (max of runs)")
    if outage is not None:
        o = outage
        print(
            f"broker away: {o['buffered_events']:,} events buffered ({o['buffered_bytes'] / 2**20:.1f} MiB of "
            f"messages): publisher RssAnon +{o['rss_buffered_mib']:.0f} MiB (peak +{o['rss_peak_mib']:.0f} MiB with "
            f"the drain); broker restarted: listening after {o['broker_start_seconds']:.2f} s, the publisher "
            f"reconnected after {o['reconnect_seconds']:.2f} s, all acknowledged after {o['drain_seconds']:.2f} s = "
            f"{o['drain_rate']:,.0f} events/s"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {"config": vars(args), "encoding_seconds": encoding, "medians": medians, "runs": runs, "outage": outage}
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results: {RESULTS}\ntotal {time.perf_counter() - total:,.0f} s")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
