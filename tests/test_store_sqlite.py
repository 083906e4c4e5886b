"""The storage contract on the SQLite backend, and what is SQLite-specific."""

from __future__ import annotations

import gzip
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from celflow import (
    DatabaseNotFoundError,
    EventDatabase,
    EventStore,
    NotACelflowDatabaseError,
    SchemaVersionError,
    open_store,
)
from celflow._sqlite import SQLiteStore
from store_contract import StoreContract


class TestSQLiteContract(StoreContract):
    """The contract, on a real SQLite file."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[EventStore]:
        s = SQLiteStore(tmp_path / "contract.db")
        yield s
        s.close()


def test_seed_schema_and_pragmas(db: EventDatabase) -> None:
    """The seed's tables and columns exist; WAL, incremental auto-vacuum, indexes for time, type, source."""
    conn = sqlite3.connect(db.db_path)
    columns = {
        t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in ("events", "patterns", "system_stats")
    }
    assert columns["events"] == [
        "id",
        "timestamp",
        "event_type",
        "action",
        "source",
        "data_json",
        "data_compressed",
        "hash",
        "processed",
        "created_at",
    ]
    assert columns["patterns"] == [
        "id",
        "event_id",
        "pattern_type",
        "confidence",
        "pattern_data",
        "embryo_id",
        "created_at",
    ]
    assert columns["system_stats"] == [
        "id",
        "timestamp",
        "total_events",
        "events_per_second",
        "active_embryos",
        "avg_fitness",
        "storage_mb",
        "created_at",
    ]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    indexes = {
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'")
    }
    assert {"idx_events_time_hash", "idx_events_type_time", "idx_events_source_time"} <= indexes
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_seed_maintenance_recipes_work(db: EventDatabase) -> None:
    """The seed's sqlite3 recipes (integrity_check, ANALYZE, VACUUM, REINDEX) run on our file."""
    db.store_events_batch([{"event_type": "t", "source": "s", "timestamp": 1000 + i} for i in range(50)])
    conn = sqlite3.connect(db.db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.execute("ANALYZE")
    conn.execute("REINDEX")
    conn.execute("VACUUM")
    conn.close()
    assert db.count_events() == 50


def test_mmap_and_busy_timeout(db: EventDatabase) -> None:
    """Connections use the seed's 256 MB memory map and a busy timeout."""
    conn = db.store._connection()  # type: ignore[attr-defined]
    assert conn.execute("PRAGMA mmap_size").fetchone()[0] == 256 * 1024 * 1024
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_full_durability_syncs(tmp_path: Path) -> None:
    """durability='full' sets synchronous=FULL."""
    with EventDatabase(tmp_path / "full.db", durability="full") as db:
        assert db.store._connection().execute("PRAGMA synchronous").fetchone()[0] == 2  # type: ignore[attr-defined]


def test_files_are_private(tmp_path: Path) -> None:
    """The folder is created 0700 and the database, WAL, SHM and lock files 0600, even with umask 0."""
    old = os.umask(0)
    try:
        path = tmp_path / "private" / "events.db"
        with EventDatabase(path) as db:
            db.store_event({"event_type": "t", "source": "s"})
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
            folder = stat.S_IMODE(path.parent.stat().st_mode)
    finally:
        os.umask(old)
    assert folder == 0o700
    assert set(modes) >= {"events.db", "events.db-wal", "events.db-shm", "events.db.lock"}
    assert all(mode == 0o600 for mode in modes.values()), modes


def test_compressed_round_trip_and_threshold(tmp_path: Path) -> None:
    """Data above the threshold is stored zstd-compressed in data_compressed, below it as JSON text."""
    with EventDatabase(tmp_path / "c.db", compression_threshold=1024) as db:
        small = db.store_event({"event_type": "t", "source": "s", "data": {"x": "a" * 100}})
        large = db.store_event({"event_type": "t", "source": "s", "data": {"x": "log line\n" * 500}})
        conn = sqlite3.connect(db.db_path)
        stored = {r[0]: r[1:] for r in conn.execute("SELECT id, data_json, data_compressed FROM events")}
        conn.close()
        assert stored[small][0] is not None and stored[small][1] is None
        assert stored[large][0] is None and stored[large][1][:4] == b"\x28\xb5\x2f\xfd"  # zstd frame
        assert len(stored[large][1]) < 500
        data = {e["id"]: e["data"] for e in db.get_events()}
        assert data[large] == {"x": "log line\n" * 500}


def test_gzip_rows_stay_readable(db: EventDatabase) -> None:
    """Rows compressed with gzip (the seed's codec) are decoded transparently."""
    payload = b'{"legacy":"gzip row","n":[1,2,3]}'
    conn = sqlite3.connect(db.db_path)
    conn.execute(
        "INSERT INTO events (timestamp, event_type, source, data_compressed, hash) VALUES (?, ?, ?, ?, ?)",
        (1000.0, "legacy", "seed", gzip.compress(payload), "abc"),
    )
    conn.commit()
    conn.close()
    (event,) = db.get_events(event_type="legacy")
    assert event["data"] == {"legacy": "gzip row", "n": [1, 2, 3]}
    assert db.get_events(search="gzip row")[0]["id"] == event["id"]


def test_missing_database_readonly(tmp_path: Path) -> None:
    """Opening a missing database read-only fails clearly and creates nothing."""
    path = tmp_path / "nope" / "events.db"
    with pytest.raises(DatabaseNotFoundError, match="no CelFlow database"):
        EventDatabase(path, readonly=True)
    assert not path.parent.exists()


def test_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    """A file that is not SQLite is refused and left byte for byte as it was."""
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are my notes, not a database\n" * 10)
    before = path.read_bytes()
    with pytest.raises(NotACelflowDatabaseError, match="not an SQLite database"):
        EventDatabase(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_foreign_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    """Another application's SQLite database is refused and not modified."""
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE contacts (name TEXT)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(NotACelflowDatabaseError, match="not a CelFlow one"):
        EventDatabase(path)
    assert path.read_bytes() == before


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database written by a newer CelFlow fails with a clear message."""
    path = tmp_path / "new.db"
    EventDatabase(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(SchemaVersionError, match="newer CelFlow"):
        EventDatabase(path)


def test_open_store_accepts_sqlite_urls(tmp_path: Path) -> None:
    """``sqlite:///path`` and a plain path open the same SQLite backend."""
    path = tmp_path / "url.db"
    store = open_store(f"sqlite:///{path}")
    assert isinstance(store, SQLiteStore) and store.path == str(path)
    store.close()


def test_query_plans_use_indexes(db: EventDatabase) -> None:
    """Time, type and source queries are answered from an index, not a table scan."""
    db.store_events_batch(
        [{"event_type": f"t{i % 3}", "source": f"s{i % 4}", "timestamp": 1000 + i} for i in range(300)]
    )
    conn = db.store._connection()  # type: ignore[attr-defined]
    conn.execute("ANALYZE")
    plans = {
        "time": "SELECT id FROM events WHERE timestamp >= 1100 ORDER BY timestamp DESC LIMIT 10",
        "type": "SELECT id FROM events WHERE event_type = 't1' AND timestamp >= 1100 ORDER BY timestamp DESC LIMIT 10",
        "source": "SELECT id FROM events WHERE source = 's1' AND timestamp >= 1100 ORDER BY timestamp DESC LIMIT 10",
    }
    for name, sql in plans.items():
        plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "USING" in plan and "INDEX" in plan, (name, plan)
