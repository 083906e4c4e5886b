"""Durability: restart recovery, SIGKILL mid-ingest, one writer process per database, thread safety,
graceful stop, and readers that work while a writer ingests.

Everything runs on real SQLite files in ``tmp_path``; crash and lock tests use real processes
(tests/helpers/durability_worker.py) started with this virtualenv's Python.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from celflow import EventDatabase, WriterBusyError, create_event_persistence, decode_data
from celflow._care import recover_database

HELPER = Path(__file__).parent / "helpers" / "durability_worker.py"
CELFLOW_EXE = Path(sys.executable).parent / "celflow"


def _load_worker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("durability_worker", HELPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()  # the helper's event(n)/payload(n): one definition for both processes


# -- helpers -----------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    """The environment of child processes, without CelFlow settings that could redirect them."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CELFLOW_")}


class Procs:
    """Starts ``script`` processes (under ``prefix``, e.g. libfiu's fiu-run) and kills (by pid) any still
    running at teardown."""

    script = HELPER

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen[str]] = []
        self.stderr_paths: dict[int, Path] = {}

    def spawn(self, *args: object, prefix: list[str] | None = None, interactive: bool = False) -> subprocess.Popen[str]:
        stderr_path = self.tmp_path / f"worker-{len(self.started)}.stderr"
        with open(stderr_path, "w") as err:  # the child writes to its own copy of the descriptor
            proc = subprocess.Popen(
                [*(prefix or []), sys.executable, str(self.script), *map(str, args)],
                cwd=self.tmp_path,
                env=_env(),
                text=True,
                stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
                stdout=subprocess.PIPE if interactive else subprocess.DEVNULL,
                stderr=err,
            )
        self.started.append(proc)
        self.stderr_paths[proc.pid] = stderr_path
        return proc

    def stderr(self, proc: subprocess.Popen[str]) -> str:
        """What the process wrote to stderr so far."""
        return self.stderr_paths[proc.pid].read_text()

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Helper processes of this test; none outlives it."""
    started = Procs(tmp_path)
    yield started
    started.cleanup()


def _acked(ack_log: Path) -> set[int]:
    """Event numbers the worker acknowledged (complete lines only: a kill may cut the last one)."""
    if not ack_log.exists():
        return set()
    numbers: set[int] = set()
    for line in ack_log.read_text().splitlines(keepends=True):
        if line.endswith("\n"):
            first, last = map(int, line.split())
            numbers.update(range(first, last + 1))
    return numbers


def _wait_for_acks(procs: Procs, proc: subprocess.Popen[str], ack_log: Path, timeout: float = 30.0) -> None:
    """Block until the worker acknowledged a first commit (fail if it died or never did)."""
    deadline = time.monotonic() + timeout
    while not _acked(ack_log):
        if proc.poll() is not None:
            pytest.fail(f"worker exited with {proc.returncode} before ingesting:\n{procs.stderr(proc)}")
        if time.monotonic() > deadline:
            pytest.fail(f"worker acknowledged nothing within {timeout} s:\n{procs.stderr(proc)}")
        time.sleep(0.01)


def _inspect_raw(db_path: Path) -> tuple[str, list[int]]:
    """``PRAGMA integrity_check`` and the event numbers stored, read with plain sqlite3, read-only.

    ``mode=ro`` leaves a crashed writer's WAL untouched (no checkpoint on close), so the next
    writer has to recover it itself. Every stored event's data is compared with what was sent.
    """
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        integrity = "\n".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
        numbers = []
        for event_type, data_json, data_compressed in conn.execute(
            "SELECT event_type, data_json, data_compressed FROM events ORDER BY id"
        ):
            data = decode_data(data_json, data_compressed)
            assert event_type == "durability"
            assert data == worker.payload(data["n"])
            numbers.append(data["n"])
    finally:
        conn.close()
    return integrity, numbers


def _inspect_counts(db_path: Path) -> tuple[str, int, int]:
    """``PRAGMA integrity_check``, the number of events and how many of them are stored compressed."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        integrity = "\n".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
        count, compressed = conn.execute("SELECT count(*), count(data_compressed) FROM events").fetchone()
    finally:
        conn.close()
    return integrity, count, compressed


def _varied_events(now: float) -> list[dict[str, Any]]:
    """Events covering the shapes data can take: unicode, nesting, big ints, compressed, no action..."""
    return [
        {"event_type": "file_op", "source": "filesystem", "action": "created", "timestamp": now - 50,
         "data": {"path": "/home/ünï/ファイル 📄.txt", "size": 12}},
        {"event_type": "process", "source": "procmon", "timestamp": now - 40.123456789,
         "data": {"nested": {"list": [1, 2.5, None, True, "x"], "deep": {"a": {"b": {"c": []}}}}}},
        {"event_type": "metric", "source": "sensor", "action": "sample", "timestamp": now - 30,
         "data": {"big": 2**70, "neg": -(2**63), "tiny": 5e-324, "float": 0.1}},
        {"event_type": "blob", "source": "capture", "action": "snapshot", "timestamp": now - 20,
         "data": {"text": "".join(f"line {i}: lorem ipsum\n" for i in range(500))}},
        {"event_type": "empty", "source": "capture", "timestamp": now - 10, "data": {}},
        {"event_type": "scalar", "source": "capture", "action": "list", "timestamp": now - 5, "data": [1, "two", 3.0]},
        {"event_type": "keyed", "source": "api", "action": "retry", "timestamp": now - 1,
         "idempotency_key": "request-42", "data": {"attempt": 1}},
        {"event_type": "no_time", "source": "api", "data": {"when": "now"}},
    ]  # fmt: skip


def _assert_same_events(stored: list[dict[str, Any]], sent: list[dict[str, Any]]) -> None:
    """Stored events (oldest first) carry exactly the fields that were sent."""
    assert len(stored) == len(sent)
    for got, want in zip(stored, sent, strict=True):
        assert got["event_type"] == want["event_type"]
        assert got["source"] == want["source"]
        assert got["action"] == want.get("action")
        assert got["data"] == want["data"]
        assert type(got["data"]) is type(want["data"])
        if "timestamp" in want:
            assert got["timestamp"] == want["timestamp"]


# -- 1. restart recovery -----------------------------------------------------------------------


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_event_database_events_survive_close_and_reopen(tmp_path: Path, durability: str) -> None:
    """Events stored with EventDatabase are all there, with identical data and ids, after reopening."""
    path = tmp_path / "events.db"
    sent = _varied_events(time.time())
    with EventDatabase(path, durability=durability) as database:  # type: ignore[arg-type]
        first_id = database.store_event(sent[0])
        ids = [first_id, *database.store_events_batch(sent[1:])]
    assert len(set(ids)) == len(sent)

    with EventDatabase(path, readonly=True) as reader:
        stored = reader.get_events(limit=None, order="asc")
        assert reader.count_events() == len(sent)
    _assert_same_events(sorted(stored, key=lambda e: ids.index(e["id"])), sent)
    assert {e["id"] for e in stored} == set(ids)

    with EventDatabase(path) as writer:  # a writable reopen sees the same and can append
        assert [e["id"] for e in writer.get_events(limit=None, order="asc")] == [e["id"] for e in stored]
        extra = writer.store_event({"event_type": "after", "source": "reopen", "data": {"ok": True}})
        assert extra > max(ids)
    integrity, count, compressed = _inspect_counts(path)
    assert integrity == "ok"
    assert count == len(sent) + 1
    assert compressed >= 1  # the large event went through the compressed path and came back identical


def test_manager_events_survive_stop_and_restart(tmp_path: Path) -> None:
    """Events given to the manager (queue_event, queue_events_batch, store_event) are all there after a restart."""
    path = str(tmp_path / "events.db")
    now = time.time()
    sent = _varied_events(now)
    numbered = [
        {"event_type": "tick", "source": "manager", "timestamp": now - 100 + i * 1e-3, "data": {"i": i}}
        for i in range(500)
    ]

    async def ingest() -> dict[str, Any]:
        manager = create_event_persistence({"database_path": path, "batch_timeout": 0.1})
        await manager.start()
        try:
            for event in numbered[:300]:
                assert manager.queue_event(event)
            assert manager.queue_events_batch(numbered[300:])
            for event in sent[:-1]:
                assert manager.queue_event(event)
            await manager.store_event(sent[-1])
        finally:
            await manager.stop()
        return manager.get_stats()

    stats = asyncio.run(ingest())
    expected = len(numbered) + len(sent)
    assert stats["total_stored"] == expected
    assert stats["dropped"] == 0 and stats["duplicates"] == 0 and stats["errors"] == 0

    with EventDatabase(path, readonly=True) as reader:
        assert reader.count_events() == expected
        ticks = reader.get_events(event_type="tick", limit=None, order="asc")
        others = [e for e in reader.get_events(limit=None, order="asc") if e["event_type"] != "tick"]
    _assert_same_events(ticks, numbered)
    _assert_same_events(sorted(others, key=lambda e: e["id"]), sent)

    async def restart() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        manager = create_event_persistence({"database_path": path, "batch_timeout": 0.1})
        await manager.start()
        try:
            return manager.get_stats(), manager.get_events(limit=None, order="asc")
        finally:
            await manager.stop()

    stats, again = asyncio.run(restart())
    assert stats["database_stats"]["total_events"] == expected
    assert [e["data"] for e in again if e["event_type"] == "tick"] == [e["data"] for e in numbered]


@pytest.mark.timeout(120)
def test_flush_and_store_events_acknowledge_only_committed_events(tmp_path: Path) -> None:
    """Once flush() or store_events() returns, another connection already sees every event they cover."""
    path = str(tmp_path / "events.db")

    async def scenario() -> None:
        # batch_size above a round's size and a long timeout: only the flush makes the writer commit
        manager = create_event_persistence({"database_path": path, "batch_timeout": 60, "batch_size": 2000})
        await manager.start()
        reader = EventDatabase(path, readonly=True)  # its own connection, as another process would read
        try:
            expected = 0
            for round_no in range(10):
                for i in range(500):
                    assert manager.queue_event({"event_type": "ack", "source": "flush", "data": [round_no, i]})
                expected += 500
                await manager.flush()
                assert reader.count_events() == expected, f"round {round_no}: flush() returned before the commit"
                ids = await manager.store_events(
                    [{"event_type": "ack", "source": "store", "data": [round_no, i]} for i in range(300)]
                )
                expected += 300
                assert reader.count_events() == expected, f"round {round_no}: store_events() returned early"
                assert {e["id"] for e in reader.get_events(source="store", limit=300)} == set(ids)
        finally:
            reader.close()
            await manager.stop()

    asyncio.run(scenario())


# -- 2. SIGKILL mid-ingest ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_mid_ingest_loses_no_acknowledged_event(tmp_path: Path, procs: Procs) -> None:
    """After SIGKILLs at different moments the file is intact and every acknowledged event is there exactly once."""
    db_path = tmp_path / "events.db"
    acked: set[int] = set()
    # (seconds of ingest before the kill, kill the instant a new acknowledgement is logged?)
    moments = [(0.3, True), (0.7, False), (1.2, False)]
    for round_no, (delay, on_ack) in enumerate(moments):
        ack_log = tmp_path / f"acks-{round_no}.log"
        proc = procs.spawn("ingest", db_path, ack_log, (round_no + 1) * 1_000_000)
        _wait_for_acks(procs, proc, ack_log)  # also proves a restart on a crashed file works
        time.sleep(delay)
        if on_ack:  # the riskiest moment: right after the writer said "committed"
            size = ack_log.stat().st_size
            deadline = time.monotonic() + 10
            while ack_log.stat().st_size == size and time.monotonic() < deadline:
                pass
        assert proc.poll() is None, f"worker stopped on its own:\n{procs.stderr(proc)}"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL

        round_acked = _acked(ack_log)
        assert round_acked, "the worker acknowledged nothing before the kill"
        acked |= round_acked
        integrity, numbers = _inspect_raw(db_path)
        assert integrity == "ok", f"round {round_no}: integrity_check says {integrity}"
        counts = collections.Counter(numbers)
        duplicated = sorted(n for n, c in counts.items() if c > 1)
        assert not duplicated, f"round {round_no}: events stored more than once: {duplicated[:20]}"
        missing = sorted(acked - counts.keys())
        assert not missing, f"round {round_no}: {len(missing)} acknowledged events lost, e.g. {missing[:20]}"

    # After the last crash the lock is free and the file is writable and readable by the library.
    with EventDatabase(db_path) as database:
        database.store_event({"event_type": "after", "source": "crash", "data": {}})
        assert database.count_events() == len(numbers) + 1
        assert database.count_events(event_type="durability") == len(numbers)


# -- 3. many writer processes, one file; a recovery needs it alone -----------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("holder", ["hold-manager", "hold-database"])
def test_a_second_writer_process_writes_beside_the_first(tmp_path: Path, procs: Procs, holder: str) -> None:
    """While another process writes, this one writes too (an EventDatabase and a manager); a recovery,
    which needs the file alone, is refused naming the path; afterwards every event is there once."""
    db_path = tmp_path / "events.db"
    EventDatabase(db_path).close()
    proc = procs.spawn(holder, db_path, interactive=True)
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", f"holder did not start:\n{procs.stderr(proc)}"
    held = [worker.payload(i) for i in range(worker.HOLD_EVENTS)]

    async def write_with_manager(number: int) -> int:
        manager = create_event_persistence({"database_path": str(db_path), "batch_timeout": 0.1})
        await manager.start()
        try:
            event_id = await manager.store_event(worker.event(number))
            assert event_id is not None
            return event_id
        finally:
            await manager.stop()

    try:
        with EventDatabase(db_path) as other:
            assert other.store_event(worker.event(100)) > 0
            assert len(other.store_events_batch([worker.event(101), worker.event(102)])) == 2
        assert asyncio.run(write_with_manager(103)) > 0
        with pytest.raises(WriterBusyError, match=re.escape(str(db_path))):
            recover_database(db_path)
        with EventDatabase(db_path, readonly=True) as reader:
            assert reader.count_events() == worker.HOLD_EVENTS + 4
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0, procs.stderr(proc)
    with EventDatabase(db_path, readonly=True) as reader:
        stored = [e["data"] for e in reader.get_events(order="asc")]
    assert stored == [*held, *(worker.payload(n) for n in (100, 101, 102, 103))]


@pytest.mark.timeout(60)
def test_a_recovery_through_a_symlink_is_refused_while_a_writer_runs(tmp_path: Path, procs: Procs) -> None:
    """The lock is the real file's: a recovery reaching it through a symlink finds the writer too."""
    real = tmp_path / "real" / "events.db"
    link = tmp_path / "elsewhere" / "link.db"
    EventDatabase(real).close()
    link.parent.mkdir()
    link.symlink_to(real)
    proc = procs.spawn("hold-database", real, interactive=True)
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "ready", f"holder did not start:\n{procs.stderr(proc)}"
    try:
        with pytest.raises(WriterBusyError, match=re.escape(str(link))):
            recover_database(link)
        assert real.exists() and not list(real.parent.glob("*.damaged-*"))
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


# -- 4. concurrency ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_threads_store_batches_on_one_shared_event_database(tmp_path: Path) -> None:
    """8 threads storing 20 batches of 100 on one EventDatabase lose nothing and get the right ids."""
    threads, batches, size = 8, 20, 100
    barrier = threading.Barrier(threads)

    with EventDatabase(tmp_path / "events.db") as database:

        def work(t: int) -> list[int]:
            barrier.wait()
            ids: list[int] = []
            for b in range(batches):
                batch = [
                    {"event_type": "conc", "source": f"thread-{t}", "data": {"t": t, "b": b, "i": i}}
                    for i in range(size)
                ]
                ids.extend(database.store_events_batch(batch))
            return ids

        with ThreadPoolExecutor(max_workers=threads) as pool:
            futures = [pool.submit(work, t) for t in range(threads)]
            ids_by_thread = [future.result(timeout=100) for future in futures]  # re-raises a thread's error

        expected = threads * batches * size
        all_ids = [i for ids in ids_by_thread for i in ids]
        assert len(all_ids) == expected
        assert len(set(all_ids)) == expected
        assert database.count_events() == expected
        stored = {e.id: e.data for e in database.iter_events(page_size=5000)}
    assert set(stored) == set(all_ids)
    for t, ids in enumerate(ids_by_thread):  # every returned id is the id of the event it was returned for
        for k, event_id in enumerate(ids):
            assert stored[event_id] == {"t": t, "b": k // size, "i": k % size}


@pytest.mark.timeout(120)
def test_threads_queue_events_into_a_running_manager(tmp_path: Path) -> None:
    """8 threads calling queue_event while the loop flushes: every event stored once, stats agree, none dropped."""
    path = str(tmp_path / "events.db")
    threads, per_thread = 8, 2000
    expected = threads * per_thread
    barrier = threading.Barrier(threads)

    async def scenario() -> tuple[dict[str, Any], int, int, list[int], list[Any]]:
        manager = create_event_persistence({"database_path": path, "batch_timeout": 0.1})
        await manager.start()
        try:

            def produce(t: int) -> int:
                barrier.wait()
                refused = 0
                for i in range(per_thread):
                    if not manager.queue_event({"event_type": "conc", "source": "mt", "data": {"t": t, "i": i}}):
                        refused += 1
                return refused

            with ThreadPoolExecutor(max_workers=threads) as pool:
                produced = asyncio.gather(*(asyncio.wrap_future(pool.submit(produce, t)) for t in range(threads)))
                flushes = 0
                while not produced.done():  # the loop keeps working (and flushing) while threads produce
                    await manager.flush()
                    flushes += 1
                    await asyncio.sleep(0.005)
                refused = await produced  # re-raises a thread's error
            await manager.flush()
            stats = manager.get_stats()
            assert manager.database is not None
            count = manager.database.count_events()
            data = [e.data for e in manager.database.iter_events(page_size=5000)]
        finally:
            await manager.stop()
        return stats, count, flushes, refused, data

    stats, count, flushes, refused, data = asyncio.run(scenario())
    assert refused == [0] * threads
    assert flushes >= 1
    assert count == expected
    assert stats["total_stored"] == expected
    assert stats["dropped"] == 0
    assert stats["duplicates"] == 0
    assert stats["queue_size"] == 0
    assert sorted((d["t"], d["i"]) for d in data) == [(t, i) for t in range(threads) for i in range(per_thread)]


async def _race_drops(path: str, threads: int, per_thread: int) -> tuple[dict[str, Any], list[list[int]], list[Any]]:
    """Producers race to queue into a small dropping queue; returns stats, what each kept, what was stored."""
    manager = create_event_persistence(
        {"database_path": path, "batch_timeout": 0.05, "batch_size": 1000, "max_queue_size": 5000, "overflow": "drop"}
    )
    await manager.start()
    barrier = threading.Barrier(threads)

    def produce(t: int) -> list[int]:
        barrier.wait()
        return [
            i for i in range(per_thread) if manager.queue_event({"event_type": "drop", "source": "mt", "data": [t, i]})
        ]

    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            kept = await asyncio.gather(*(asyncio.wrap_future(pool.submit(produce, t)) for t in range(threads)))
        await manager.flush()
        assert manager.database is not None
        return manager.get_stats(), kept, [e.data for e in manager.database.iter_events(page_size=5000)]
    finally:
        await manager.stop()


@pytest.mark.timeout(120)
def test_queue_event_return_value_is_exact_under_concurrent_drops(tmp_path: Path) -> None:
    """With overflow="drop", queue_event returns False exactly for the events that were not stored."""
    threads, per_thread = 8, 4000
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the producer threads finely, as on a busy multi-core machine
    try:
        for attempt in range(3):
            stats, kept, data = asyncio.run(_race_drops(str(tmp_path / f"events-{attempt}.db"), threads, per_thread))
            stored = [(t, i) for t, i in data]
            reported = {(t, i) for t in range(threads) for i in kept[t]}
            assert len(stored) == len(set(stored))
            wrongly_dropped = sorted(set(stored) - reported)
            assert not wrongly_dropped, (
                f"attempt {attempt}: queue_event returned False for {len(wrongly_dropped)} events that were "
                f"stored, e.g. {wrongly_dropped[:5]} (dropped counter: {stats['dropped']})"
            )
            assert set(stored) == reported
            assert stats["dropped"] == threads * per_thread - len(stored)
    finally:
        sys.setswitchinterval(old_interval)


# -- 5. graceful stop --------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("batch_size", [100, 50_000])
def test_graceful_stop_commits_everything_queued(tmp_path: Path, batch_size: int) -> None:
    """stop() commits all 10,000 queued events at once, without waiting for a 60 s batch_timeout."""
    path = str(tmp_path / "events.db")
    total = 10_000

    async def scenario() -> tuple[dict[str, Any], float]:
        manager = create_event_persistence({"database_path": path, "batch_timeout": 60, "batch_size": batch_size})
        await manager.start()
        for i in range(total):
            assert manager.queue_event({"event_type": "stop", "source": "graceful", "data": {"i": i}})
        started = time.monotonic()
        await manager.stop()
        return manager.get_stats(), time.monotonic() - started

    stats, stop_seconds = asyncio.run(scenario())
    assert stop_seconds < 15, f"stop() took {stop_seconds:.1f} s: it waited for the batch timeout"
    assert stats["state"] == "stopped"
    assert stats["total_stored"] == total
    assert stats["dropped"] == 0
    with EventDatabase(path, readonly=True) as reader:
        assert reader.count_events() == total
        assert sorted(e.data["i"] for e in reader.iter_events(page_size=5000)) == list(range(total))


# -- 6. a reader process while a writer process ingests ----------------------------------------


@pytest.mark.timeout(120)
def test_cli_events_list_works_while_a_writer_process_ingests(tmp_path: Path, procs: Procs) -> None:
    """`celflow events list --json` exits 0 with valid JSON of live events while another process writes."""
    assert CELFLOW_EXE.exists(), f"no celflow executable next to {sys.executable}"
    db_path = tmp_path / "events.db"
    ack_log = tmp_path / "acks.log"
    proc = procs.spawn("ingest", db_path, ack_log, 0)
    _wait_for_acks(procs, proc, ack_log)

    newest_ids = []
    for _ in range(3):
        result = subprocess.run(
            [str(CELFLOW_EXE), "events", "list", "--db", str(db_path), "--json", "--limit", "20"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=_env(),
        )
        assert proc.poll() is None, f"the writer stopped during the read:\n{procs.stderr(proc)}"
        assert result.returncode == 0, result.stderr
        events = json.loads(result.stdout)
        assert isinstance(events, list)
        assert 0 < len(events) <= 20
        for event in events:
            assert event["event_type"] == "durability"
            assert event["data"] == worker.payload(event["data"]["n"])
        ids = [event["id"] for event in events]
        assert ids == sorted(ids, reverse=True)  # newest first
        newest_ids.append(ids[0])
    assert newest_ids[-1] > newest_ids[0], "the reader did not see events committed between its runs"

    os.kill(proc.pid, signal.SIGTERM)  # graceful stop: everything acknowledged, and more, is kept
    assert proc.wait(timeout=30) == 0, procs.stderr(proc)
    integrity, numbers = _inspect_raw(db_path)
    assert integrity == "ok"
    assert len(numbers) == len(set(numbers))
    assert _acked(ack_log) <= set(numbers)
