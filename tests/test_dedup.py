"""Dedup: a retried event is stored once; equal payloads at different times are distinct events."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from celflow import EventDatabase
from celflow._encoding import prepare_batch
from conftest import make_event


def test_retry_is_stored_once(db: EventDatabase) -> None:
    """The same event sent twice is stored once and both calls return its id."""
    event = make_event()
    first = db.store_event(event)
    assert db.store_event(dict(event)) == first
    assert db.count_events() == 1


def test_duplicates_inside_a_batch(db: EventDatabase) -> None:
    """Duplicates within one batch and against stored events map to the stored id."""
    a, b, c = make_event(), make_event(), make_event()
    first = db.store_events_batch([a, b])
    ids = db.store_events_batch([c, a, c, b])
    assert ids[1] == first[0] and ids[3] == first[1]
    assert ids[0] == ids[2] and ids[0] not in first
    assert db.count_events() == 3


def test_equal_payloads_at_different_times_are_distinct(db: EventDatabase) -> None:
    """Two events that differ only in timestamp are both stored."""
    e1 = make_event(timestamp=1_700_000_000.0, data={"same": True})
    e2 = dict(e1, timestamp=1_700_000_000.001)
    ids = db.store_events_batch([e1, e2])
    assert ids[0] != ids[1]
    assert db.count_events() == 2


def test_any_field_difference_is_a_distinct_event(db: EventDatabase) -> None:
    """Type, source, action and data all take part in the content hash."""
    base = make_event(timestamp=1_700_000_000.0)
    variants = [
        base,
        dict(base, event_type="other"),
        dict(base, source="other"),
        dict(base, action="other"),
        dict(base, action=None),
        dict(base, data={"other": 1}),
    ]
    ids = db.store_events_batch(variants)
    assert len(set(ids)) == len(variants)


def test_key_order_does_not_matter(db: EventDatabase) -> None:
    """Data dicts with the same content in another key order are the same event."""
    e1 = make_event(timestamp=1_700_000_000.0, data={"a": 1, "b": 2})
    e2 = dict(e1, data={"b": 2, "a": 1})
    assert db.store_event(e1) == db.store_event(e2)


def test_idempotency_key(db: EventDatabase) -> None:
    """With an idempotency key the key decides: same key and time dedups even if the payload differs."""
    e1 = make_event(timestamp=1_700_000_000.0, idempotency_key="req-1", data={"try": 1})
    e2 = dict(e1, data={"try": 2})
    e3 = dict(e1, idempotency_key="req-2")
    assert db.store_event(e1) == db.store_event(e2)
    assert db.store_event(e3) != db.store_event(e1)
    assert db.count_events() == 2
    assert db.get_events(order="asc")[0]["data"] == {"try": 1}


def _empty_wal(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    assert Path(f"{path}-wal").stat().st_size == 0


def _wal_frames(path: Path) -> int:
    """Pages written to the WAL since it was emptied (its size only grows between checkpoints)."""
    return (Path(f"{path}-wal").stat().st_size - 32) // (4096 + 24)


def test_dedup_index_appends_at_scale(tmp_path: Path) -> None:
    """At 200k rows a new batch of 2,000 events dirties few pages: the dedup key is time-leading.

    A global UNIQUE index on a random hash touches a random leaf page per event (measured:
    ~1,300 WAL frames for this batch); appending in time order writes ~220.
    """
    path = tmp_path / "scale.db"
    start = 1_700_000_000.0
    with EventDatabase(path) as db:
        events = [
            {
                "event_type": f"type{i % 8}",
                "source": f"src{i % 20}",
                "action": "a",
                "timestamp": start + i * 0.01,
                "data": {"i": i, "path": f"/home/u/{i}"},
            }
            for i in range(200_000)
        ]
        rows = prepare_batch(events)
        for i in range(0, len(rows), 10_000):
            db.store.insert_events(rows[i : i + 10_000], want_ids=False)
        _empty_wal(path)
        batch = [dict(e, timestamp=e["timestamp"] + 2_000 + 0.005) for e in events[:2_000]]
        db.store_events_batch(batch)
        frames = _wal_frames(path)
        pages = db.get_database_stats()["page_count"]
    assert frames < 500, f"{frames} WAL frames for 2,000 appended events (database has {pages} pages)"


def test_no_global_unique_hash_index(db: EventDatabase) -> None:
    """The seed's hash column exists, unique only together with the timestamp."""
    conn = sqlite3.connect(db.db_path)
    indexes = {row[1]: row for row in conn.execute("PRAGMA index_list(events)")}
    columns = {name: [r[2] for r in conn.execute(f"PRAGMA index_info({name})")] for name in indexes}
    conn.close()
    unique = [columns[name] for name, row in indexes.items() if row[2]]
    assert unique == [["timestamp", "hash"]]
