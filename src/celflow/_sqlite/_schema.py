"""The SQLite schema (the seed's three tables) and its forward migrations.

Dedup does not use the seed's global ``hash TEXT UNIQUE``: a unique index on a random hash makes
every insert dirty a random B-tree page, and ingest collapses as the table grows. Equal hashes
imply equal timestamps (the timestamp is hashed), so uniqueness on ``(timestamp, hash)`` dedups
the same events while new rows append at the right edge of the index, which doubles as the time
index. An idempotency key is therefore unique per timestamp: a retry must resend the timestamp.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

__all__ = ["APPLICATION_ID", "COUNT_NEW_EVENTS", "SCHEMA_VERSION", "migrate", "rebuild_counts"]

#: ``PRAGMA application_id`` of a CelFlow database ("CELF").
APPLICATION_ID = 0x43454C46
SCHEMA_VERSION = 2

_V1 = [
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        timestamp REAL NOT NULL,
        event_type TEXT NOT NULL,
        action TEXT,
        source TEXT NOT NULL,
        data_json TEXT,
        data_compressed BLOB,
        hash TEXT,
        processed BOOLEAN DEFAULT FALSE,
        created_at DATETIME DEFAULT CURRENT_TIMESTAMP
    )""",
    "CREATE UNIQUE INDEX idx_events_time_hash ON events (timestamp, hash)",
    "CREATE INDEX idx_events_type_time ON events (event_type, timestamp)",
    "CREATE INDEX idx_events_source_time ON events (source, timestamp)",
    """CREATE TABLE patterns (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id INTEGER,
        pattern_type TEXT NOT NULL,
        confidence REAL NOT NULL,
        pattern_data TEXT NOT NULL,
        embryo_id TEXT,
        created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
        FOREIGN KEY (event_id) REFERENCES events (id)
    )""",
    "CREATE INDEX idx_patterns_type_confidence ON patterns (pattern_type, confidence)",
    "CREATE INDEX idx_patterns_event ON patterns (event_id)",
    """CREATE TABLE system_stats (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        timestamp REAL NOT NULL,
        total_events INTEGER,
        events_per_second REAL,
        active_embryos INTEGER,
        avg_fitness REAL,
        storage_mb REAL,
        created_at DATETIME DEFAULT CURRENT_TIMESTAMP
    )""",
    "CREATE INDEX idx_system_stats_time ON system_stats (timestamp)",
]


# Version 2: per-minute event counts by type and by source, so counts and rates over long
# windows read a few thousand rows instead of scanning millions. The writer adds each batch's
# counts in its transaction; a trigger subtracts deleted rows, whoever deletes them.
_V2 = [
    """CREATE TABLE event_counts (
        kind TEXT NOT NULL,
        minute INTEGER NOT NULL,
        name TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (kind, minute, name)
    ) WITHOUT ROWID""",
    """CREATE TRIGGER events_counts_delete AFTER DELETE ON events BEGIN
        UPDATE event_counts SET n = n - 1
            WHERE kind = 'event_type' AND minute = CAST(old.timestamp / 60 AS INTEGER) AND name = old.event_type;
        UPDATE event_counts SET n = n - 1
            WHERE kind = 'source' AND minute = CAST(old.timestamp / 60 AS INTEGER) AND name = old.source;
    END""",
]

#: Adds the counts of the events with ``id > ?``: one statement (one pass over the new rows) for
#: both kinds, since the writer pays for every statement it runs.
COUNT_NEW_EVENTS = (
    "WITH new AS MATERIALIZED ("
    "SELECT CAST(timestamp / 60 AS INTEGER) AS minute, event_type, source FROM events WHERE id > ?) "
    "INSERT INTO event_counts (kind, minute, name, n) "
    "SELECT 'event_type', minute, event_type, count(*) FROM new GROUP BY 2, 3 "
    "UNION ALL SELECT 'source', minute, source, count(*) FROM new GROUP BY 2, 3 "
    "ON CONFLICT (kind, minute, name) DO UPDATE SET n = n + excluded.n"
)


def rebuild_counts(conn: sqlite3.Connection) -> None:
    """Recount ``event_counts`` from the events table (inside the caller's transaction)."""
    conn.execute("DELETE FROM event_counts")
    conn.execute(COUNT_NEW_EVENTS, (-1,))


def _to_v1(conn: sqlite3.Connection) -> None:
    for statement in _V1:
        conn.execute(statement)


def _to_v2(conn: sqlite3.Connection) -> None:
    for statement in _V2:
        conn.execute(statement)
    rebuild_counts(conn)


#: MIGRATIONS[n] takes a database from version n - 1 to version n.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _to_v1, 2: _to_v2}


def migrate(conn: sqlite3.Connection, current: int) -> None:
    """Bring a database from ``current`` to :data:`SCHEMA_VERSION`, one transaction per step.

    Each step looks at the version again once it holds the write lock: another process opening
    the same file may have taken it there meanwhile.
    """
    for version in range(current + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] >= version:
                conn.execute("COMMIT")
                continue
            MIGRATIONS[version](conn)
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
