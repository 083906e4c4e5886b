"""EventDatabase: the seed's synchronous API and what it adds."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import pytest

from celflow import DatabaseClosedError, EventDatabase, StoredEvent, ValidationError
from conftest import make_event

DAY = 86400.0


def test_seed_signatures() -> None:
    """The seed's method names and parameters are there, with the seed's defaults."""
    params = inspect.signature(EventDatabase.get_events).parameters
    assert list(params)[:5] == ["self", "start_time", "end_time", "event_type", "limit"]
    assert params["limit"].default == 1000
    assert inspect.signature(EventDatabase.cleanup_old_events).parameters["days_to_keep"].default == 30
    for name in ("store_event", "store_events_batch", "get_database_stats"):
        assert callable(getattr(EventDatabase, name))


def test_store_and_get(db: EventDatabase) -> None:
    """store_event returns an int id; get_events returns dicts with the seed's columns and decoded data."""
    event_id = db.store_event({"event_type": "file_op", "source": "fs", "action": "modified", "data": {"p": "/x"}})
    assert isinstance(event_id, int)
    (event,) = db.get_events()
    assert event["id"] == event_id
    assert set(event) == {
        "id",
        "timestamp",
        "event_type",
        "action",
        "source",
        "data",
        "hash",
        "processed",
        "created_at",
    }
    assert event["data"] == {"p": "/x"} and event["processed"] is False


def test_get_events_filters(db: EventDatabase) -> None:
    """start/end time, type, source, action, search and order filter as documented."""
    now = time.time()
    db.store_events_batch(
        [
            {"event_type": "file_op", "source": "fs", "action": "created", "timestamp": now - 7200, "data": {"n": 1}},
            {"event_type": "file_op", "source": "fs", "action": "deleted", "timestamp": now - 60, "data": {"n": 2}},
            {"event_type": "app_focus", "source": "window", "timestamp": now - 30, "data": {"app": "Chrome"}},
        ]
    )
    assert [e["data"]["n"] for e in db.get_events(start_time=now - 3600, event_type="file_op")] == [2]
    assert [e["data"]["n"] for e in db.get_events(end_time=now - 3600)] == [1]
    assert [e["action"] for e in db.get_events(source="fs", order="asc")] == ["created", "deleted"]
    assert len(db.get_events(action="deleted")) == 1
    assert db.get_events(search="chrome")[0]["event_type"] == "app_focus"
    assert len(db.get_events(limit=2)) == 2
    assert db.count_events(source="fs") == 2
    assert db.count_by("event_type") == {"file_op": 2, "app_focus": 1}


def test_query_pages_and_iter_events(db: EventDatabase) -> None:
    """query() returns typed events with a cursor; iter_events walks everything in pages."""
    db.store_events_batch([make_event(timestamp=1000.0 + i) for i in range(25)])
    page = db.query(limit=10)
    assert all(isinstance(e, StoredEvent) for e in page.events) and page.next_cursor
    second = db.query(limit=10, cursor=page.next_cursor)
    assert second.events[0].timestamp == page.events[-1].timestamp - 1
    assert [e.timestamp for e in db.iter_events(order="asc", page_size=4)] == [1000.0 + i for i in range(25)]
    assert len(list(db.iter_events(page_size=4, limit=9))) == 9


def test_retention_boundaries(db: EventDatabase) -> None:
    """cleanup_old_events removes only events older than the cutoff and says how many."""
    now = time.time()
    old = make_event(timestamp=now - 30 * DAY - 10)
    edge = make_event(timestamp=now - 30 * DAY + 10)
    recent = make_event(timestamp=now)
    db.store_events_batch([old, edge, recent])
    assert db.cleanup_old_events(30) == 1
    assert sorted(e["timestamp"] for e in db.get_events()) == [edge["timestamp"], recent["timestamp"]]
    assert db.cleanup_old_events() == 0
    assert db.cleanup_old_events(days_to_keep=0) == 2
    assert db.count_events() == 0


def test_retention_in_chunks(db: EventDatabase) -> None:
    """Retention over more than one chunk removes them all."""
    db.store_events_batch([make_event(timestamp=1000.0 + i * 0.001) for i in range(25_000)])
    assert db.cleanup_old_events(1) == 25_000


def test_cleanup_rejects_bad_days(db: EventDatabase) -> None:
    """A negative or non-numeric days_to_keep is refused before anything is deleted."""
    db.store_event(make_event())
    for bad in (-1, float("nan"), "7", True):
        with pytest.raises(ValidationError, match="days_to_keep"):
            db.cleanup_old_events(bad)  # type: ignore[arg-type]
    assert db.count_events() == 1


def test_patterns_api(db: EventDatabase) -> None:
    """Patterns are stored and queried through the database object, and bad values are refused."""
    event_id = db.store_event(make_event())
    pid = db.store_pattern("routine", 0.8, {"steps": ["open", "save"]}, event_id=event_id, embryo_id="emb-1")
    (pattern,) = db.get_patterns(pattern_type="routine")
    assert pattern["id"] == pid and pattern["pattern_data"] == {"steps": ["open", "save"]}
    assert db.get_patterns(min_confidence=0.9) == []
    with pytest.raises(ValidationError, match="confidence"):
        db.store_pattern("routine", float("nan"), {})
    with pytest.raises(ValidationError, match="pattern_type"):
        db.store_pattern("", 0.5, {})
    with pytest.raises(ValidationError, match="data"):
        db.store_pattern("routine", 0.5, {"x": {1, 2}})


def test_system_stats_api(db: EventDatabase) -> None:
    """System stats are recorded and read back, newest first."""
    now = time.time()
    db.record_system_stats(timestamp=now - 10, total_events=5, events_per_second=0.5, storage_mb=1.0)
    db.record_system_stats(timestamp=now, total_events=7, active_embryos=3, avg_fitness=0.7)
    stats = db.get_system_stats()
    assert [s["total_events"] for s in stats] == [7, 5]
    assert stats[0]["active_embryos"] == 3 and stats[0]["avg_fitness"] == 0.7
    assert len(db.get_system_stats(start_time=now - 5)) == 1
    with pytest.raises(ValidationError, match="events_per_second"):
        db.record_system_stats(events_per_second=float("inf"))


def test_database_stats(db: EventDatabase) -> None:
    """get_database_stats has the seed's database_size_mb and counts."""
    db.store_events_batch([make_event(), make_event(event_type="app_focus")])
    stats = db.get_database_stats()
    assert stats["total_events"] == 2
    assert stats["events_by_type"] == {"file_op": 1, "app_focus": 1}
    assert stats["database_size_mb"] > 0


def test_context_manager_and_close(db_path: Path) -> None:
    """Used as a context manager it closes; afterwards every call raises DatabaseClosedError."""
    with EventDatabase(db_path) as db:
        db.store_event(make_event())
    with pytest.raises(DatabaseClosedError):
        db.get_events()
    with pytest.raises(DatabaseClosedError):
        db.store_event(make_event())


def test_readonly_does_not_write(db_path: Path) -> None:
    """A read-only database reads what a writer stored and refuses to write."""
    with EventDatabase(db_path) as writer:
        writer.store_event(make_event())
        with EventDatabase(db_path, readonly=True) as reader:
            assert len(reader.get_events()) == 1
            with pytest.raises(Exception, match="read-only"):
                reader.store_event(make_event())


def test_restart_keeps_events(db_path: Path) -> None:
    """Events committed before close are there after reopening."""
    with EventDatabase(db_path) as db:
        ids = db.store_events_batch([make_event() for _ in range(100)])
    with EventDatabase(db_path) as db:
        assert sorted(e["id"] for e in db.get_events(limit=None)) == sorted(ids)
