"""The NATS JetStream ingest bus against a real nats-server: publish, flush, outages, workers, SIGKILL.

Tests that stop, pause or kill the broker start their own nats-server (a free loopback port, a
store folder in tmp_path); the others use the one on 127.0.0.1:4222, or one started for the
session when none runs there. Without a nats-server binary they are skipped, loudly.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from celflow import (
    Config,
    ConfigError,
    EventDatabase,
    EventPersistenceManager,
    PersistenceConfig,
    QueueFullError,
    ValidationError,
)
from celflow._encoding import prepare_event
from celflow._location import mask_url as shown_url
from celflow._worker import _with_database
from celflow.bus import BusError, BusPublisher, IngestWorker
from nats_server import NatsServer, Proc, bus_url, free_port, names, own_nats, procs, stream_events, wait_until
from pg_server import pg_url

__all__ = ["bus_url", "names", "own_nats", "pg_url", "procs"]  # the fixtures, re-exported for pytest

nats = pytest.importorskip("nats", reason="nats-py is not installed (pip install 'celflow[bus]')")

HELPERS = Path(__file__).parent / "helpers"
CLI = "import sys; from celflow.cli import main; sys.exit(main())"
SYSTEM_URL = "nats://127.0.0.1:4222"


async def consumer_info(url: str, stream: str, durable: str) -> Any:
    """The durable consumer's state on the server."""
    nc = await nats.connect(url)
    try:
        return await nc.jetstream().consumer_info(stream, durable)
    finally:
        await nc.close()


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait on the event loop until ``check()`` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.02)


def numbered(first: int, count: int, **fields: Any) -> list[dict[str, Any]]:
    """Events numbered ``first``.. in data["n"], without a timestamp unless given."""
    return [
        {"event_type": "bus_test", "source": "tests", "data": {"n": n}, **fields} for n in range(first, first + count)
    ]


# -- the publisher -------------------------------------------------------------------------------


def test_publish_flush_puts_every_event_in_the_stream_once(bus_url: str, names: tuple[str, str]) -> None:
    """After flush() the stream holds every published event once, in batches, stamped, with unique message ids."""
    stream, subject = names

    async def main() -> None:
        async with BusPublisher(bus_url, stream=stream, subject=subject, batch_size=100) as publisher:
            before = time.time()
            assert await publisher.publish(numbered(0, 250))
            after = time.time()
            assert await publisher.publish(numbered(250, 5, timestamp=1_700_000_000.25, action="made"))
            await publisher.flush(timeout=10)
            stats = publisher.stats()
        # batches of up to 100: the last 50 of the first call may travel with the 5 of the second
        assert stats["published"] == 255 and stats["buffered"] == 0 and stats["messages"] in (3, 4)
        events, ids = await stream_events(bus_url, stream)
        assert len(ids) == stats["messages"] and len(set(ids)) == len(ids) and all(ids)
        assert [e["data"]["n"] for e in events] == list(range(255))
        assert all(before <= e["timestamp"] <= after for e in events[:250])  # stamped at publish()
        assert events[250] == {
            "event_type": "bus_test",
            "source": "tests",
            "timestamp": 1_700_000_000.25,
            "action": "made",
            "data": {"n": 250},
        }

    asyncio.run(main())


def test_publish_validates_like_the_store(bus_url: str, names: tuple[str, str]) -> None:
    """A bad event rejects the whole call naming its index; an event over max_payload is refused; nothing is sent."""
    stream, subject = names

    async def main() -> None:
        async with BusPublisher(bus_url, stream=stream, subject=subject) as publisher:
            batch = numbered(0, 3)
            batch[2]["timestamp"] = 1_700_000_000_000  # milliseconds
            with pytest.raises(ValidationError) as bad:
                await publisher.publish(batch)
            assert bad.value.index == 2 and bad.value.field == "timestamp"
            with pytest.raises(ValidationError, match="max_payload") as big:
                await publisher.publish([*numbered(0, 1), {"event_type": "t", "source": "s", "data": "x" * 1_100_000}])
            assert big.value.index == 1
            assert publisher.stats()["buffered"] == 0
            await publisher.flush(timeout=5)
        events, _ = await stream_events(bus_url, stream)
        assert events == []

    asyncio.run(main())


def test_a_stream_on_other_subjects_is_a_clear_error(bus_url: str, names: tuple[str, str]) -> None:
    """start() refuses an existing stream whose subjects do not cover the publisher's subject."""
    stream, subject = names

    async def main() -> None:
        async with BusPublisher(bus_url, stream=stream, subject=subject):
            pass
        with pytest.raises(BusError, match=f"{stream} exists with subjects {subject}"):
            await BusPublisher(bus_url, stream=stream, subject="elsewhere.events").start()

    asyncio.run(main())


def test_urls_are_shown_without_secrets() -> None:
    """Passwords and NATS tokens are masked in the URLs that messages and logs show."""
    assert shown_url("nats://alice:s3cret@10.0.0.1:4222") == "nats://alice:***@10.0.0.1:4222"
    assert shown_url("nats://t0ken@127.0.0.1:4222") == "nats://***@127.0.0.1:4222"
    assert shown_url("postgresql://postgres@127.0.0.1/test") == "postgresql://postgres@127.0.0.1/test"
    assert shown_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"


def test_a_resend_after_a_lost_puback_is_dropped_by_jetstream(own_nats: NatsServer) -> None:
    """While the broker is paused the same message is resent with its id; JetStream keeps it once."""

    async def main() -> None:
        publisher = BusPublisher(own_nats.url, stream="PAUSED", subject="paused.events", ack_timeout=0.3)
        await publisher.start()
        own_nats.signal(signal.SIGSTOP)
        try:
            await publisher.publish(numbered(0, 10))
            await until(lambda: publisher.retries >= 3, 10, "resends while the broker is paused")
        finally:
            own_nats.signal(signal.SIGCONT)
        await publisher.flush(timeout=15)
        stats = publisher.stats()
        await publisher.stop()
        events, ids = await stream_events(own_nats.url, "PAUSED")
        assert len(ids) == 1, f"the stream holds {len(ids)} copies of one message"
        assert [e["data"]["n"] for e in events] == list(range(10))
        assert stats["duplicates"] >= 1 and stats["published"] == 10

    asyncio.run(main())


def test_a_broker_outage_is_buffered_bounded_and_resent(own_nats: NatsServer) -> None:
    """Broker stopped: publish() buffers up to max_buffer (then drops), flush() waits; restarted: all resent, once."""

    async def main() -> None:
        publisher = BusPublisher(
            own_nats.url, stream="OUTAGE", subject="outage.events", batch_size=64, max_buffer=300, overflow="drop"
        )
        await publisher.start()
        await publisher.publish(numbered(0, 100))
        await publisher.flush(timeout=10)
        await asyncio.to_thread(own_nats.stop)
        for first in (100, 200, 300):
            assert await publisher.publish(numbered(first, 100))
        assert not await publisher.publish(numbered(400, 10))  # over max_buffer: dropped
        stats = publisher.stats()
        assert stats["buffered"] == 300 and stats["dropped"] == 10 and stats["published"] == 100
        with pytest.raises(BusError, match="not acknowledged"):
            await publisher.flush(timeout=1.0)
        assert not publisher.stats()["connected"]
        await asyncio.to_thread(own_nats.start)
        await publisher.flush(timeout=30)
        stats = publisher.stats()
        await publisher.stop()
        assert stats["published"] == 400 and stats["buffered"] == 0 and stats["lost"] == 0
        events, _ = await stream_events(own_nats.url, "OUTAGE")
        assert sorted(e["data"]["n"] for e in events) == list(range(400))

    asyncio.run(main())


@pytest.mark.parametrize("overflow", ["raise", "block"])
def test_a_full_buffer_raises_naming_max_buffer(overflow: str) -> None:
    """With no broker, a full buffer raises QueueFullError naming max_buffer: at once, or after queue_timeout."""
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there

    async def main() -> None:
        publisher = BusPublisher(url, max_buffer=100, overflow=overflow, queue_timeout=0.3, connect_timeout=0.2)
        await publisher.start()
        assert await publisher.publish(numbered(0, 60))
        started = time.monotonic()
        with pytest.raises(QueueFullError, match="60 of max_buffer 100 events"):
            await publisher.publish(numbered(60, 50))
        waited = time.monotonic() - started
        assert waited >= 0.3 if overflow == "block" else waited < 0.2
        with pytest.raises(QueueFullError, match="max_buffer"):  # can never fit: no wait, even for block
            await publisher.publish(numbered(0, 101))
        assert publisher.stats()["buffered"] == 60
        await publisher.stop(timeout=0.2)
        assert publisher.stats()["lost"] == 60

    asyncio.run(main())


def test_the_buffer_holds_about_its_messages_size_in_memory() -> None:
    """While the broker is away, a buffered event costs about its message's bytes (not orjson's 4 KiB buffer)."""
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there

    async def main() -> None:
        publisher = BusPublisher(url, connect_timeout=0.2)
        await publisher.start()
        events = numbered(0, 20_000)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        await publisher.publish(events)
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        held = publisher.stats()["buffered_bytes"]
        assert grown < 2 * held + 200 * len(events), f"{grown:,} B traced for {held:,} B of messages"
        await publisher.stop(timeout=0.2)

    asyncio.run(main())


# -- the ingest worker ---------------------------------------------------------------------------


async def _worker(db_path: Path, url: str, stream: str, subject: str, **options: Any) -> tuple[Any, Any, Any]:
    """A started manager on ``db_path``, and an IngestWorker running on it, once it consumes."""
    manager = EventPersistenceManager(PersistenceConfig(database_path=str(db_path), stats_interval=0))
    await manager.start()
    statuses: list[dict[str, Any]] = []
    worker = IngestWorker(
        manager,
        url,
        stream=stream,
        subject=subject,
        durable="tests",
        fetch_timeout=0.2,
        on_status=statuses.append,
        **options,
    )
    task = asyncio.create_task(worker.run())
    await until(lambda: any(s["event"] == "ready" for s in statuses) or task.done(), 10, "the worker ready")
    return manager, worker, task


def test_a_message_is_acknowledged_only_after_its_events_are_committed(
    tmp_path: Path, bus_url: str, names: tuple[str, str]
) -> None:
    """While the commit waits for a lock the message stays unacknowledged and nobody else's; then it is acked."""
    stream, subject = names
    db_path = tmp_path / "events.db"

    async def main() -> None:
        manager, worker, task = await _worker(db_path, bus_url, stream, subject, ack_wait=1.0)
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # holds SQLite's write lock: the commit must wait
        try:
            async with BusPublisher(bus_url, stream=stream, subject=subject) as publisher:
                await publisher.publish(numbered(0, 20))
                await publisher.flush(timeout=10)
            deadline = time.monotonic() + 10
            while (await consumer_info(bus_url, stream, "tests")).num_ack_pending != 1:
                assert time.monotonic() < deadline, "the worker did not fetch the message"
            # Another worker of the same durable gets nothing, although the commit outlasts ack_wait:
            # the worker tells the broker it is still working on the message.
            nc = await nats.connect(bus_url)
            other = await nc.jetstream().pull_subscribe_bind("tests", stream=stream)
            with pytest.raises(nats.errors.TimeoutError):
                await other.fetch(1, timeout=2.5)
            await nc.close()
            assert (await consumer_info(bus_url, stream, "tests")).num_ack_pending == 1, "acked before the commit"
            assert blocker.execute("SELECT count(*) FROM events").fetchone()[0] == 0
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await until(lambda: worker.stats.messages == 1, 35, "the commit")
        info = await consumer_info(bus_url, stream, "tests")
        assert info.num_ack_pending == 0 and info.num_pending == 0
        worker.request_stop()
        stats = await task
        await manager.stop()
        assert stats.events == 20 and stats.stored == 20
        with EventDatabase(db_path, readonly=True) as db:
            assert sorted(e["data"]["n"] for e in db.get_events(limit=None)) == list(range(20))

    asyncio.run(main())


def test_a_message_that_is_not_celflow_events_is_terminated(
    tmp_path: Path, bus_url: str, names: tuple[str, str]
) -> None:
    """Invalid messages are terminated and counted, never redelivered; the worker goes on storing valid ones."""
    stream, subject = names
    db_path = tmp_path / "events.db"
    invalid = [
        b"not json",
        b"[1, 2]",
        b'{"event_type": "", "source": "s"}',
        b'[{"event_type": "t", "source": "s", "colour": "red"}]',
    ]

    async def main() -> None:
        manager, worker, task = await _worker(db_path, bus_url, stream, subject, ack_wait=1.0)
        nc = await nats.connect(bus_url)
        js = nc.jetstream()
        for body in invalid:
            await js.publish(subject, body)
        await js.publish(subject, orjson.dumps(numbered(0, 3, timestamp=1_700_000_000.0)))
        await nc.close()
        await until(lambda: worker.stats.messages == 1, 10, "the valid message")
        await asyncio.sleep(1.5)  # past ack_wait: a message left unacknowledged would come back
        assert not task.done()
        info = await consumer_info(bus_url, stream, "tests")
        worker.request_stop()
        stats = await task
        await manager.stop()
        assert stats.invalid == 4 and stats.redelivered == 0 and stats.events == 3
        assert info.num_ack_pending == 0 and info.num_pending == 0 and info.num_redelivered == 0
        with EventDatabase(db_path, readonly=True) as db:
            assert db.count_events() == 3

    asyncio.run(main())


def test_events_arrive_exactly_as_stored_locally(tmp_path: Path, bus_url: str, names: tuple[str, str]) -> None:
    """Through the bus, tricky data is stored with the same hash and data as a local store would give it."""
    stream, subject = names
    db_path = tmp_path / "events.db"
    data = [
        {"big": 2**80, "neg": -(2**70), "f": 1e300, "z": -0.0, "tiny": 5e-324},
        {"text": "ünïcødé 🎉 \u2028", "nested": [[[{"a": None}]]], "b": [True, False]},
        {"long": "x" * 5000},  # compressed in the database
        "just a string",
    ]
    events = [
        {"event_type": "tricky", "source": "tests", "timestamp": 1_700_000_000.0 + i / 7, "data": d}
        for i, d in enumerate(data)
    ]
    events.append({"event_type": "keyed", "source": "tests", "idempotency_key": "k-1", "data": {}})

    async def main() -> None:
        manager, worker, task = await _worker(db_path, bus_url, stream, subject)
        async with BusPublisher(bus_url, stream=stream, subject=subject) as publisher:
            await publisher.publish(events)
            await publisher.flush(timeout=10)
        await until(lambda: worker.stats.events == len(events), 10, "the events")
        worker.request_stop()
        await task
        await manager.stop()

    asyncio.run(main())
    with EventDatabase(db_path, readonly=True) as db:
        stored = {e["hash"]: e for e in db.get_events(limit=None)}
    for event in events[:-1]:
        row = prepare_event(event)
        assert row is not None and row.hash in stored, event
        assert stored[row.hash]["data"] == event["data"] and stored[row.hash]["timestamp"] == event["timestamp"]
    assert prepare_event(events[-1]).hash in stored  # type: ignore[union-attr]


# -- end to end: two producers, two worker processes, one killed ---------------------------------


def _end_to_end(
    location: str, bus_url: str, stream: str, subject: str, tmp_path: Path, procs: list[Proc], lock: Any
) -> None:
    """Two producers, two ingest-worker processes, one SIGKILLed while holding messages; then compare."""
    per_producer = 600

    def worker(name: str) -> Proc:
        args = [sys.executable, "-c", CLI, "ingest-worker", "--bus", bus_url, "--db", location]
        args += ["--stream", stream, "--subject", subject, "--durable", "e2e", "--batch", "8", "--ack-wait", "2"]
        proc = Proc([*args, "--json"], tmp_path / f"{name}.log", tmp_path)
        procs.append(proc)
        return proc

    workers = [worker("w1"), worker("w2")]
    wait_until(lambda: all(w.first() for w in workers), 30, "both workers up (ready or standby)")
    producers = []
    for name in ("p1", "p2"):
        args = [sys.executable, str(HELPERS / "bus_producer.py"), bus_url, stream, subject, name]
        producers.append(
            Proc([*args, str(per_producer), str(tmp_path / f"{name}.jsonl")], tmp_path / f"{name}.log", tmp_path)
        )
        procs.append(producers[-1])

    def stored() -> int:
        with EventDatabase(location, readonly=True) as db:
            return db.count_events()

    wait_until(lambda: stored() >= 150, 30, "the first events stored")
    victim = next(w for w in workers if w.first() == "ready")
    survivor = next(w for w in workers if w is not victim)
    with lock():  # the writers block in their commit, holding the messages they fetched
        held, deadline, streak = 0, time.monotonic() + 20, 0
        while streak < 3:  # nobody fetching, messages held: every live worker is stuck in its commit
            assert time.monotonic() < deadline, "the workers never held messages"
            info = asyncio.run(consumer_info(bus_url, stream, "e2e"))
            held = info.num_ack_pending
            streak = streak + 1 if held and not info.num_waiting else 0
            time.sleep(0.2)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
    for p in producers:
        assert p.proc.wait(60) == 0, p.stderr()
        assert p.lines[-1] == f"done {per_producer}"
    total = 2 * per_producer
    wait_until(lambda: stored() >= total, 40, f"{total} events stored")
    time.sleep(0.5)
    survivor.proc.send_signal(signal.SIGTERM)
    assert survivor.proc.wait(20) == 0, survivor.stderr()
    final = survivor.statuses()[-1]
    assert final["event"] == "stopped", survivor.lines
    assert final["redelivered"] >= 1, f"nothing of the {held} held messages came back"
    assert final["invalid"] == 0

    sent: dict[tuple[str, int], dict[str, Any]] = {}
    for name in ("p1", "p2"):
        for line in (tmp_path / f"{name}.jsonl").read_bytes().splitlines():
            record = orjson.loads(line)
            sent[(record["data"]["producer"], record["data"]["n"])] = record
    with EventDatabase(location, readonly=True) as db:
        rows = db.get_events(limit=None, event_type="bus_test")
    keys = [(e["data"]["producer"], e["data"]["n"]) for e in rows]
    assert len(keys) == len(set(keys)), "an event was stored twice"
    assert set(keys) == set(sent) and len(sent) == total
    for e in rows:
        record = sent[(e["data"]["producer"], e["data"]["n"])]
        assert record["not_before"] <= e["timestamp"] <= record["not_after"]
        assert e["source"] == e["data"]["producer"]


def test_end_to_end_sqlite_two_producers_two_workers_one_killed(
    tmp_path: Path, bus_url: str, names: tuple[str, str], procs: list[Proc]
) -> None:
    """SQLite: one worker writes, the other stands by; the writer is SIGKILLed mid-stream; each event is stored once."""
    stream, subject = names
    db_path = tmp_path / "events.db"
    EventDatabase(db_path).close()  # exists before the workers race to create it

    class Locked:
        def __enter__(self) -> None:
            self.conn = sqlite3.connect(db_path, isolation_level=None, timeout=10)
            self.conn.execute("BEGIN IMMEDIATE")

        def __exit__(self, *exc: object) -> None:
            self.conn.execute("ROLLBACK")
            self.conn.close()

    _end_to_end(str(db_path), bus_url, stream, subject, tmp_path, procs, Locked)


def test_end_to_end_postgres_two_producers_two_workers_one_killed(
    tmp_path: Path, bus_url: str, names: tuple[str, str], procs: list[Proc], pg_url: str
) -> None:
    """PostgreSQL: two workers write at once; one is SIGKILLed mid-stream; every event is stored once."""
    try:
        _with_database(Config(), pg_url)
    except ConfigError as exc:
        message = f"the PostgreSQL bus test is SKIPPED: {exc}"
        print("\n" + "!" * 20 + " " + message)
        pytest.skip(message)
    import psycopg
    from psycopg import sql

    stream, subject = names
    schema = pg_url.rsplit("schema=", 1)[1]
    base = pg_url.split("?")[0]
    EventDatabase(pg_url).close()  # the schema exists before the workers start

    class Locked:
        def __enter__(self) -> None:
            self.conn = psycopg.connect(base)
            self.conn.execute(sql.SQL("LOCK TABLE {}.events IN EXCLUSIVE MODE").format(sql.Identifier(schema)))

        def __exit__(self, *exc: object) -> None:
            self.conn.rollback()
            self.conn.close()

    _end_to_end(pg_url, bus_url, stream, subject, tmp_path, procs, Locked)
