"""EventPersistenceManager: the seed's async API, batching, flush, overflow, stats, maintenance."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from celflow import (
    ConfigError,
    EventDatabase,
    EventPersistenceManager,
    ManagerStateError,
    QueueFullError,
    ValidationError,
    create_event_persistence,
)
from conftest import make_event


def run(coro: Awaitable[Any]) -> Any:
    """Run a coroutine on a fresh event loop."""
    return asyncio.run(coro)  # type: ignore[arg-type]


async def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``check`` until it holds (or fail after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def config(db_path: Path, **settings: Any) -> dict[str, Any]:
    return {"database_path": str(db_path), "stats_interval": 0, **settings}


def test_seed_config_shapes(db_path: Path) -> None:
    """Both seed shapes are accepted with the seed's defaults filled in."""
    whole = create_event_persistence({"enable_persistence": True, "persistence": {"database_path": str(db_path)}})
    part = create_event_persistence(
        {
            "database_path": str(db_path),
            "batch_size": 200,
            "batch_timeout": 3.0,
            "retention_days": 60,
            "cleanup_interval_hours": 12,
        }
    )
    default = create_event_persistence()
    assert whole.settings.batch_size == 100 and whole.settings.database_path == str(db_path)
    assert (part.settings.batch_size, part.settings.batch_timeout, part.settings.retention_days) == (200, 3.0, 60)
    assert (
        default.settings.database_path,
        default.settings.batch_size,
        default.settings.batch_timeout,
        default.settings.retention_days,
        default.settings.cleanup_interval_hours,
    ) == ("data/events.db", 100, 5.0, 30, 24)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_sise": 10}, "batch_sise"),
        ({"batch_timeout": -1}, "batch_timeout"),
        ({"durability": "sometimes"}, "durability"),
        ({"overflow": "explode"}, "overflow"),
        ({"persistence": {"retention_days": "forever"}}, "retention_days"),
    ],
)
def test_bad_config(bad: dict[str, Any], message: str) -> None:
    """Unknown keys and bad values raise ConfigError naming the key."""
    with pytest.raises(ConfigError, match=message):
        create_event_persistence(bad)


def test_lifecycle_errors(db_path: Path) -> None:
    """Queueing before start or after stop raises ManagerStateError; a manager starts once."""
    manager = create_event_persistence(config(db_path))
    with pytest.raises(ManagerStateError, match="start"):
        manager.queue_event(make_event())

    async def scenario() -> None:
        await manager.start()
        with pytest.raises(ManagerStateError, match="only once"):
            await manager.start()
        await manager.stop()
        with pytest.raises(ManagerStateError, match="stopped"):
            manager.queue_event(make_event())
        await manager.stop()  # idempotent

    run(scenario())


def test_validation_happens_at_the_call(db_path: Path) -> None:
    """A bad event raises from queue_event itself and nothing of that call is queued."""

    async def scenario() -> None:
        async with EventPersistenceManager(config(db_path)) as manager:
            with pytest.raises(ValidationError, match="event_type"):
                manager.queue_event({"source": "s"})
            with pytest.raises(ValidationError, match="event 1"):
                manager.queue_events_batch([make_event(), {"event_type": "t"}])
            assert manager.get_stats()["queue_size"] == 0
            await manager.flush()
            assert manager.get_events() == []

    run(scenario())


def test_batch_size_triggers_a_write(db_path: Path) -> None:
    """Reaching batch_size writes at once, long before batch_timeout; a write takes all that waits."""

    async def scenario() -> None:
        async with EventPersistenceManager(config(db_path, batch_size=10, batch_timeout=600)) as manager:
            manager.queue_events_batch([make_event() for _ in range(9)])
            await asyncio.sleep(0.1)
            assert manager.get_stats()["total_stored"] == 0  # below batch_size: waits for the timeout
            manager.queue_events_batch([make_event() for _ in range(16)])
            await wait_until(lambda: manager.get_stats()["total_stored"] == 25)
            assert manager.get_stats()["queue_size"] == 0
            assert manager.get_stats()["batches"] == 1

    run(scenario())


def test_a_backlog_drains_in_large_transactions(db_path: Path) -> None:
    """Events that pile up behind a busy database are committed in a few large transactions."""

    async def scenario() -> None:
        async with EventPersistenceManager(config(db_path, batch_size=10, batch_timeout=600)) as manager:
            blocker = sqlite3.connect(db_path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock for a while
            try:
                for _ in range(300):
                    manager.queue_events_batch([make_event() for _ in range(10)])
                await asyncio.sleep(0.2)
            finally:
                blocker.execute("COMMIT")
                blocker.close()
            await manager.flush()
            stats = manager.get_stats()
            assert stats["total_stored"] == 3000
            # one batch_size write was waiting for the lock; the backlog behind it went in one
            # transaction of at most BACKLOG_BATCH (5000) events, not 299 writes of 10
            assert stats["batches"] <= 3, stats["batches"]

    run(scenario())


def test_batch_timeout_triggers_a_write(db_path: Path) -> None:
    """A partial batch is written once batch_timeout has passed."""

    async def scenario() -> None:
        async with EventPersistenceManager(config(db_path, batch_size=1000, batch_timeout=0.2)) as manager:
            manager.queue_event(make_event())
            await asyncio.sleep(0.05)
            assert manager.get_stats()["total_stored"] == 0
            await wait_until(lambda: manager.get_stats()["total_stored"] == 1)

    run(scenario())


def test_flush_and_store_events(db_path: Path) -> None:
    """flush() returns after everything queued is committed; store_events returns committed ids."""

    async def scenario() -> None:
        async with EventPersistenceManager(config(db_path, batch_size=7, batch_timeout=600)) as manager:
            manager.queue_events_batch([make_event() for _ in range(10)])
            await manager.flush()
            assert len(manager.get_events(limit=None)) == 10
            batch = [make_event() for _ in range(30)]
            ids = await manager.store_events(batch)
            assert len(ids) == 30 and len(set(ids)) == 30
            assert await manager.store_events([batch[3]]) == [ids[3]]  # a retry: same id
            assert await manager.store_event(make_event()) > max(ids)
            stats = manager.get_stats()
            assert stats["duplicates"] == 1 and stats["total_stored"] == 41

    run(scenario())


def test_stop_flushes_everything(db_path: Path) -> None:
    """A graceful stop commits everything that was accepted."""

    async def scenario() -> None:
        manager = EventPersistenceManager(config(db_path, batch_size=100, batch_timeout=600))
        await manager.start()
        manager.queue_events_batch([make_event() for _ in range(2500)])
        for _ in range(50):
            manager.queue_event(make_event())
        await manager.stop()

    run(scenario())
    with EventDatabase(db_path) as db:
        assert db.count_events() == 2550


def test_overflow_drop_counts(db_path: Path) -> None:
    """With overflow='drop' a full queue drops new events and counts every one."""

    async def scenario() -> None:
        settings = config(db_path, batch_size=1000, batch_timeout=600, max_queue_size=10, overflow="drop")
        async with EventPersistenceManager(settings) as manager:
            accepted = [manager.queue_event(make_event()) for _ in range(15)]
            assert accepted == [True] * 10 + [False] * 5
            assert manager.queue_events_batch([make_event(), make_event()]) is False
            stats = manager.get_stats()
            assert stats["dropped"] == 7 and stats["queue_size"] == 10
            await manager.flush()
            assert manager.get_stats()["total_stored"] == 10

    run(scenario())


def test_overflow_raise(db_path: Path) -> None:
    """With overflow='raise' a full queue raises QueueFullError and keeps what it had."""

    async def scenario() -> None:
        settings = config(db_path, batch_size=1000, batch_timeout=600, max_queue_size=5, overflow="raise")
        async with EventPersistenceManager(settings) as manager:
            for _ in range(5):
                manager.queue_event(make_event())
            with pytest.raises(QueueFullError, match="max_queue_size"):
                manager.queue_event(make_event())
            await manager.flush()
            assert manager.get_stats()["total_stored"] == 5

    run(scenario())


def test_overflow_block_waits_then_raises(db_path: Path) -> None:
    """With overflow='block' a producer waits for room and raises after queue_timeout."""

    async def scenario() -> None:
        settings = config(
            db_path, batch_size=1000, batch_timeout=600, max_queue_size=5, overflow="block", queue_timeout=0.2
        )
        async with EventPersistenceManager(settings) as manager:
            for _ in range(5):
                manager.queue_event(make_event())
            started = time.monotonic()
            with pytest.raises(QueueFullError, match=r"for 0\.2 s"):
                await asyncio.to_thread(manager.queue_event, make_event())
            assert time.monotonic() - started >= 0.19
            # once the writer makes room, a blocked producer goes through
            blocked = asyncio.create_task(asyncio.to_thread(manager.queue_event, make_event()))
            await asyncio.sleep(0.05)
            await manager.flush()
            assert await blocked is True
            await manager.flush()
            assert manager.get_stats()["total_stored"] == 6

    run(scenario())


def test_stats_keys(db_path: Path) -> None:
    """get_stats has the seed's keys and the rates and counters CelFlow adds."""

    async def scenario() -> dict[str, Any]:
        async with EventPersistenceManager(config(db_path, batch_timeout=0.05)) as manager:
            manager.queue_events_batch([make_event() for _ in range(50)])
            await manager.flush()
            return manager.get_stats()

    stats = run(scenario())
    for key in (
        "total_stored",
        "queue_size",
        "duplicates",
        "dropped",
        "batches",
        "last_flush",
        "events_per_second",
        "avg_batch_ms",
        "healthy",
    ):
        assert key in stats
    assert stats["total_stored"] == 50 and stats["database_stats"]["database_size_mb"] > 0
    assert stats["database_stats"]["total_events"] == 50


def test_retention_runs_at_start(db_path: Path) -> None:
    """Background maintenance deletes events older than retention_days."""
    now = time.time()
    with EventDatabase(db_path) as db:
        db.store_events_batch([make_event(timestamp=now - 3 * 86400), make_event(timestamp=now - 3600)])

    async def scenario() -> None:
        async with EventPersistenceManager(config(db_path, retention_days=2)) as manager:
            await wait_until(lambda: manager.get_stats()["removed_by_retention"] == 1)
            assert manager.get_stats()["database_stats"]["total_events"] == 1
            assert await manager.run_maintenance() == 0

    run(scenario())
    with EventDatabase(db_path) as db:
        assert db.count_events() == 1


def test_retention_zero_keeps_everything(db_path: Path) -> None:
    """retention_days = 0 means keep forever."""
    with EventDatabase(db_path) as db:
        db.store_event(make_event(timestamp=1000.0))

    async def scenario() -> None:
        async with EventPersistenceManager(config(db_path, retention_days=0)) as manager:
            assert await manager.run_maintenance() == 0

    run(scenario())
    with EventDatabase(db_path) as db:
        assert db.count_events() == 1


def test_system_stats_snapshots(db_path: Path) -> None:
    """The manager records system_stats snapshots every stats_interval seconds."""

    async def scenario() -> None:
        settings = {**config(db_path, batch_timeout=0.05), "stats_interval": 0.1}
        async with EventPersistenceManager(settings) as manager:
            manager.queue_events_batch([make_event() for _ in range(20)])
            await manager.flush()
            await wait_until(lambda: len(EventDatabase(db_path, readonly=True).get_system_stats()) >= 2)

    run(scenario())
    with EventDatabase(db_path) as db:
        snap = db.get_system_stats()[0]
        assert snap["total_events"] == 20 and snap["storage_mb"] > 0


def test_full_durability_manager(db_path: Path) -> None:
    """durability='full' stores the same way (with an fsync per batch)."""

    async def scenario() -> list[int]:
        async with EventPersistenceManager(config(db_path, durability="full")) as manager:
            return await manager.store_events([make_event() for _ in range(5)])

    assert len(run(scenario())) == 5


# -- the byte bound of the queue (max_queue_bytes) -----------------------------------------------

_MiB = 1024 * 1024


def _big_event(n: int, size: int = 100_000) -> dict[str, Any]:
    """An event with ``size`` bytes of data, stored as JSON text (the configs below switch compression off)."""
    return make_event(data={"n": n, "pad": "x" * size})


def _byte_config(db_path: Path, **settings: Any) -> dict[str, Any]:
    """A writer that waits (600 s, a batch far above the queue), a 1 MiB byte bound, no compression."""
    return config(
        db_path,
        batch_size=100_000,
        batch_timeout=600,
        max_queue_bytes=_MiB,
        compression_threshold=16 * _MiB,
        **settings,
    )


def test_max_queue_bytes_setting() -> None:
    """max_queue_bytes defaults to 64 MiB; below 1 MiB it is a ConfigError naming the key."""
    assert create_event_persistence({}).settings.max_queue_bytes == 64 * _MiB
    with pytest.raises(ConfigError, match="max_queue_bytes"):
        create_event_persistence({"max_queue_bytes": 1000})


def test_max_queue_bytes_drops_what_would_not_fit(db_path: Path) -> None:
    """With overflow='drop' the queue takes 100 KB events up to 1 MiB, well below max_queue_size, and drops the rest."""

    async def scenario() -> None:
        async with EventPersistenceManager(_byte_config(db_path, overflow="drop")) as manager:
            accepted = [manager.queue_event(_big_event(n)) for n in range(30)]
            assert accepted == [True] * 10 + [False] * 20
            stats = manager.get_stats()
            assert stats["queue_size"] == 10 and stats["dropped"] == 20
            assert manager._writer is not None and 10 * 100_000 < manager._writer.queue_bytes <= _MiB
            await manager.flush()
            assert manager._writer.queue_bytes == 0
            assert manager.queue_event(_big_event(30))  # room again once the writer took the queue
            await manager.flush()
            assert manager.get_stats()["total_stored"] == 11

    run(scenario())


def test_max_queue_bytes_raise_names_the_setting(db_path: Path) -> None:
    """With overflow='raise' a full byte bound raises QueueFullError naming max_queue_bytes and the numbers."""

    async def scenario() -> None:
        async with EventPersistenceManager(_byte_config(db_path, overflow="raise")) as manager:
            for n in range(10):
                manager.queue_event(_big_event(n))
            with pytest.raises(QueueFullError, match=r"of max_queue_bytes 1,048,576 bytes waiting; 100,\d+ more"):
                manager.queue_event(_big_event(10))
            await manager.flush()
            assert manager.get_stats()["total_stored"] == 10

    run(scenario())


def test_max_queue_bytes_blocks_until_the_writer_makes_room(db_path: Path) -> None:
    """With overflow='block' a producer waits for bytes to free up, then goes through; past queue_timeout it raises."""

    async def scenario() -> None:
        settings = _byte_config(db_path, overflow="block", queue_timeout=0.2)
        async with EventPersistenceManager(settings) as manager:
            for n in range(10):
                manager.queue_event(_big_event(n))
            with pytest.raises(QueueFullError, match=r"max_queue_bytes .* for 0\.2 s"):
                await asyncio.to_thread(manager.queue_event, _big_event(10))
            blocked = asyncio.create_task(asyncio.to_thread(manager.queue_event, _big_event(11)))
            await asyncio.sleep(0.05)
            assert not blocked.done()
            await manager.flush()
            assert await blocked is True
            await manager.flush()
            assert manager.get_stats()["total_stored"] == 11

    run(scenario())


@pytest.mark.parametrize("overflow", ["drop", "raise", "block"])
def test_an_event_larger_than_max_queue_bytes_still_goes_through(db_path: Path, overflow: str) -> None:
    """An empty queue takes one event over the byte bound (2 MiB of 1 MiB), and a flush behind it is never refused."""

    async def scenario() -> None:
        async with EventPersistenceManager(_byte_config(db_path, overflow=overflow, queue_timeout=0.1)) as manager:
            assert manager.queue_event(_big_event(0, size=2 * _MiB))
            await manager.flush()  # an empty marker fits any queue, even one over its bounds
            assert manager.queue_event(_big_event(1, size=2 * _MiB))
            ids = await manager.store_events([])
            assert ids == []
            await manager.flush()
        assert manager.get_stats()["total_stored"] == 2

    run(scenario())


@pytest.mark.parametrize("overflow", ["drop", "raise", "block"])
def test_a_flush_behind_a_batch_over_max_queue_size_is_never_refused(db_path: Path, overflow: str) -> None:
    """A batch of 50 taken by an empty queue of max_queue_size 10 does not make flush() fail or drop its marker."""

    async def scenario() -> None:
        settings = config(
            db_path, batch_size=1000, batch_timeout=600, max_queue_size=10, overflow=overflow, queue_timeout=0.1
        )
        async with EventPersistenceManager(settings) as manager:
            assert manager.queue_events_batch([make_event() for _ in range(50)])
            await manager.flush()
            assert manager.get_stats()["total_stored"] == 50

    run(scenario())


def test_a_full_database_is_a_clear_error_and_its_connection_is_replaced(db_path: Path) -> None:
    """SQLITE_FULL names itself and says to free space; the connection it happened on is closed, so a
    limit of that connection (max_page_count, standing in for a full disk) does not outlive it."""
    import secrets

    from celflow import OperationalError

    with EventDatabase(db_path) as db:
        db.store_events_batch([make_event() for _ in range(10)])
        conn = db.store._connection()  # type: ignore[attr-defined]  # this thread's, the one that writes
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
        big = [make_event(data={"blob": secrets.token_hex(2000)}) for _ in range(50)]
        with pytest.raises(OperationalError, match=r"\[SQLITE_FULL\].*free some disk space"):
            db.store_events_batch(big)
        assert db.store._connection() is not conn  # type: ignore[attr-defined]
        assert len(set(db.store_events_batch(big))) == 50
        assert db.count_events() == 60 and db.store.quick_check() == []


def test_the_writer_retries_a_batch_refused_for_space_on_a_new_connection(db_path: Path) -> None:
    """A batch refused with SQLITE_FULL is retried on a new connection and stored once; the writer
    reports the error by type and is healthy again, nothing lost."""
    import secrets

    async def scenario() -> None:
        async with EventPersistenceManager(config(db_path, batch_timeout=0.01)) as manager:
            assert manager.database is not None
            store: Any = manager.database.store
            capped: list[sqlite3.Connection] = []

            def cap_once(seconds: float, inserted: int) -> None:
                """On the writer thread, after a commit: its connection may grow no more."""
                if not capped:
                    capped.append(store._local.conn)
                    pages = capped[0].execute("PRAGMA page_count").fetchone()[0]
                    capped[0].execute(f"PRAGMA max_page_count = {pages}")

            await wait_until(lambda: manager.get_stats()["last_cleanup"] is not None)  # maintenance writes too
            manager.add_batch_observer(cap_once)
            await manager.store_events([make_event()])
            big = [make_event(data={"blob": secrets.token_hex(2000)}) for _ in range(50)]
            ids = await asyncio.wait_for(manager.store_events(big), 30)
            stats = manager.get_stats()
            assert len(set(ids)) == 50 and stats["healthy"] and stats["errors"] >= 1 and stats["lost"] == 0
            assert stats["last_error"].startswith("OperationalError: database or disk is full [SQLITE_FULL]")
        with EventDatabase(db_path, readonly=True) as db:
            assert db.count_events() == 51

    run(scenario())
