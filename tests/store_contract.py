"""The storage contract's tests: every backend's test module subclasses :class:`StoreContract`."""

from __future__ import annotations

import time
from typing import Any

import pytest

from celflow import DatabaseClosedError, EventQuery, EventStore, QueryTimeoutError, ValidationError
from celflow._encoding import Row, prepare_batch

T0 = 1_700_000_000.0


def rows(n: int, *, start: float = T0, step: float = 1.0, **fields: Any) -> list[Row]:
    """``n`` prepared rows, one every ``step`` seconds from ``start``."""
    events = [
        {
            "event_type": fields.get("event_type", ["file_op", "app_focus", "process"][i % 3]),
            "source": fields.get("source", ["filesystem", "window", "processes", "browser"][i % 4]),
            "action": fields.get("action", "created" if i % 2 else None),
            "timestamp": start + i * step,
            "data": fields.get("data", {"i": i, "text": f"event number {i}"}),
        }
        for i in range(n)
    ]
    return prepare_batch(events)


class StoreContract:
    """Behaviour every EventStore backend must show."""

    @pytest.fixture
    def store(self) -> EventStore:
        raise NotImplementedError("a backend's test module provides the store fixture")

    def test_insert_returns_ids_in_order(self, store: EventStore) -> None:
        """Ids come back in input order, increasing."""
        result = store.insert_events(rows(5))
        assert result.inserted == 5 and result.duplicates == 0
        assert result.ids == sorted(result.ids or []) and len(set(result.ids or [])) == 5

    def test_duplicates_are_counted_not_raised(self, store: EventStore) -> None:
        """Re-inserting rows inserts nothing and maps each to its stored id."""
        first = store.insert_events(rows(4))
        again = store.insert_events(rows(4) + rows(2, start=T0 + 100))
        assert again.inserted == 2 and again.duplicates == 4
        assert again.ids is not None and again.ids[:4] == first.ids

    def test_large_batch_with_scattered_duplicates(self, store: EventStore) -> None:
        """A batch larger than one insert statement maps every row, duplicates included, to its id."""
        batch = rows(700)
        batch[300] = batch[10]
        batch[650] = batch[299]
        result = store.insert_events(batch)
        assert result.inserted == 698 and result.duplicates == 2
        ids = result.ids or []
        assert ids[300] == ids[10] and ids[650] == ids[299]
        assert len(set(ids)) == 698
        stored = {e.id: e.timestamp for e in store.select_events(EventQuery(limit=None))[0]}
        assert all(stored[i] == row.timestamp for i, row in zip(ids, batch, strict=True))

    def test_created_at_is_the_storage_time(self, store: EventStore) -> None:
        """created_at holds the UTC storage time in CURRENT_TIMESTAMP's format."""
        store.insert_events(rows(1))
        (event,), _ = store.select_events(EventQuery())
        assert event.created_at is not None
        assert abs(time.mktime(time.strptime(event.created_at, "%Y-%m-%d %H:%M:%S")) - time.mktime(time.gmtime())) < 5

    def test_empty_batch(self, store: EventStore) -> None:
        """An empty batch is a no-op."""
        assert store.insert_events([]).inserted == 0

    def test_select_filters(self, store: EventStore) -> None:
        """Time range (start inclusive, end exclusive), type, source and action filters combine."""
        store.insert_events(rows(30))
        events, _ = store.select_events(EventQuery(start_time=T0 + 10, end_time=T0 + 20, limit=None))
        assert [e.timestamp for e in events] == [T0 + i for i in range(19, 9, -1)]
        events, _ = store.select_events(EventQuery(event_type="process", source="processes", limit=None))
        assert events and all(e.event_type == "process" and e.source == "processes" for e in events)
        events, _ = store.select_events(EventQuery(action="created", limit=None))
        assert len(events) == 15

    def test_order_and_limit(self, store: EventStore) -> None:
        """Newest first by default; oldest first on request; limit caps."""
        store.insert_events(rows(10))
        newest, _ = store.select_events(EventQuery(limit=3))
        oldest, _ = store.select_events(EventQuery(limit=3, order="asc"))
        assert [e.timestamp for e in newest] == [T0 + 9, T0 + 8, T0 + 7]
        assert [e.timestamp for e in oldest] == [T0, T0 + 1, T0 + 2]

    @pytest.mark.parametrize("order", ["desc", "asc"])
    def test_cursor_pagination_visits_everything_once(self, store: EventStore, order: str) -> None:
        """Paging with the cursor returns every event exactly once, ties on timestamp included."""
        store.insert_events(rows(25, step=0.0) + rows(25, start=T0 + 1))  # 25 share one timestamp
        seen: list[int] = []
        cursor = None
        while True:
            page, cursor = store.select_events(EventQuery(limit=7, order=order, cursor=cursor))  # type: ignore[arg-type]
            seen.extend(e.id for e in page)
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 50

    def test_select_after_reads_on_in_commit_order(self, store: EventStore) -> None:
        """From any id, the events after it in commit order, filtered; deleted ids are not reused."""
        assert store.last_id() == 0
        late = store.insert_events(rows(3, start=T0 + 1000)).ids or []
        early = store.insert_events(rows(3, start=T0)).ids or []  # older timestamps, committed later
        assert [e.id for e in store.select_after(0, EventQuery(limit=None))] == late + early
        assert [e.id for e in store.select_after(late[1], EventQuery(limit=2))] == [late[2], early[0]]
        assert [e.id for e in store.select_after(late[0], EventQuery(limit=None), until_id=early[0])] == [
            late[1],
            late[2],
            early[0],
        ]
        typed = store.select_after(0, EventQuery(event_type="file_op", limit=None))
        assert [e.id for e in typed] == [late[0], early[0]]
        assert store.last_id() == early[-1]
        store.delete_before(T0 + 10_000, limit=None)
        assert store.last_id() == early[-1]
        assert (store.insert_events(rows(1, start=T0 + 5)).ids or [0])[0] > early[-1]

    def test_time_limit_interrupts_a_long_read(self, store: EventStore) -> None:
        """A read past its time limit stops with QueryTimeoutError; the store stays usable."""
        store.insert_events(rows(3000))
        scan = EventQuery(search="no such text anywhere", limit=None)
        with store.time_limit(0.0), pytest.raises(QueryTimeoutError, match="limit"):
            store.count_events(scan)
        assert store.count_events(scan) == 0
        with store.time_limit(60.0):
            assert store.count_events(EventQuery(search="number 2999", limit=None)) == 1

    def test_numbers_past_64_bits_are_validation_errors(self, store: EventStore) -> None:
        """Ids beyond 64 bits are refused as bad input, not crashes."""
        with pytest.raises(ValidationError):
            store.select_patterns(event_id=2**70)
        with pytest.raises(ValidationError):
            store.select_after(2**64, EventQuery(limit=1))
        with pytest.raises(ValidationError, match="cursor"):
            store.select_events(EventQuery(cursor=f"1.5:{2**64}"))

    def test_bad_cursor(self, store: EventStore) -> None:
        """A cursor that was not made by a page is refused clearly."""
        with pytest.raises(ValidationError, match="cursor"):
            store.select_events(EventQuery(cursor="not-a-cursor"))

    def test_search_is_literal_substring(self, store: EventStore) -> None:
        """Search finds substrings in type, source, action and data; % and _ are literal."""
        store.insert_events(rows(1, event_type="web", data={"url": "https://Chrome.example/100%_done"}))
        store.insert_events(rows(1, start=T0 + 1, event_type="web", data={"url": "firefox 100 percent"}))
        store.insert_events(rows(1, start=T0 + 2, event_type="web", source="chrome_tabs", data={}))
        assert len(store.select_events(EventQuery(search="chrome"))[0]) == 2
        assert len(store.select_events(EventQuery(search="100%_"))[0]) == 1
        assert len(store.select_events(EventQuery(search="%"))[0]) == 1
        assert len(store.select_events(EventQuery(search="_"))[0]) == 2  # the url and "chrome_tabs"

    def test_search_reads_compressed_data(self, store: EventStore) -> None:
        """Events stored compressed are found by search too."""
        store.insert_events(rows(1, data={"text": "needle " + "hay " * 2000}))
        (event,), _ = store.select_events(EventQuery(search="NEEDLE"))
        assert event.data["text"].startswith("needle")

    def test_counts(self, store: EventStore) -> None:
        """count_events and count_by agree with the rows."""
        store.insert_events(rows(12))
        assert store.count_events(EventQuery()) == 12
        assert store.count_events(EventQuery(start_time=T0 + 6)) == 6
        assert store.count_by("event_type", EventQuery()) == {"file_op": 4, "app_focus": 4, "process": 4}
        with pytest.raises(ValidationError):
            store.count_by("data_json; DROP TABLE events", EventQuery())

    def test_histogram(self, store: EventStore) -> None:
        """Counts per time bucket, oldest first, with filters."""
        m0 = T0 - T0 % 3600  # an hour boundary
        store.insert_events(rows(30, start=m0, step=10.0))  # 5 minutes, 6 events each
        assert store.histogram(60.0, EventQuery()) == [(m0 + 60 * m, 6) for m in range(5)]
        assert store.histogram(60.0, EventQuery(start_time=m0 + 90, end_time=m0 + 150)) == [(m0 + 60, 3), (m0 + 120, 3)]
        assert store.histogram(3600.0, EventQuery(event_type="process")) == [(m0, 10)]

    def test_delete_before(self, store: EventStore) -> None:
        """Deleting before a cutoff removes exactly the older events, in chunks if asked."""
        store.insert_events(rows(10))
        assert store.delete_before(T0 + 3, limit=2) == 2
        assert store.delete_before(T0 + 3) == 1
        remaining, _ = store.select_events(EventQuery(limit=None, order="asc"))
        assert remaining[0].timestamp == T0 + 3 and len(remaining) == 7

    def test_maintain_reclaims_space(self, store: EventStore) -> None:
        """After a large delete, maintenance returns free pages until none are left."""
        store.insert_events(rows(3000, data={"pad": "x" * 500}))
        store.delete_before(T0 + 10_000)
        for _ in range(100):
            if store.maintain(vacuum_pages=50) == 0:
                break
        assert store.maintain() == 0

    def test_optimize_drops_emptied_counters(self, store: EventStore) -> None:
        """optimize() keeps the counts exact and forgets counters that reached zero."""
        store.insert_events(rows(10))
        store.delete_before(T0 + 5)
        store.optimize()
        assert store.count_events(EventQuery()) == 5
        assert store.count_by("event_type", EventQuery(end_time=T0 + 5)) == {}

    def test_stats(self, store: EventStore) -> None:
        """Stats report counts, the time span and sizes."""
        store.insert_events(rows(6))
        stats = store.stats()
        assert stats["total_events"] == 6
        assert stats["oldest_event"] == T0 and stats["newest_event"] == T0 + 5
        assert stats["database_size_mb"] > 0
        assert sum(stats["events_by_source"].values()) == 6

    def test_patterns(self, store: EventStore) -> None:
        """Patterns are stored and filtered by type, event, embryo and confidence."""
        (event_id,) = store.insert_events(rows(1)).ids or []
        store.insert_pattern("routine", 0.9, {"steps": [1, 2]}, event_id=event_id, embryo_id="e1")
        store.insert_pattern("routine", 0.4, {"steps": []}, event_id=None, embryo_id="e2")
        store.insert_pattern("anomaly", 0.95, "odd", event_id=event_id, embryo_id=None)
        assert len(store.select_patterns(pattern_type="routine")) == 2
        assert [p.pattern_type for p in store.select_patterns(min_confidence=0.9)] == ["anomaly", "routine"]
        assert len(store.select_patterns(event_id=event_id)) == 2
        (p,) = store.select_patterns(embryo_id="e1")
        assert p.pattern_data == {"steps": [1, 2]} and p.confidence == 0.9

    def test_quick_check_of_a_healthy_store(self, store: EventStore) -> None:
        store.insert_events(rows(50))
        assert store.quick_check() == []

    def test_pattern_summary(self, store: EventStore) -> None:
        """Counts and average confidence per pattern type, most frequent first."""
        assert store.pattern_summary() == []
        for kind, confidence in (("routine", 0.5), ("routine", 0.7), ("anomaly", 0.9)):
            store.insert_pattern(kind, confidence, {}, event_id=None, embryo_id=None)
        summary = store.pattern_summary()
        assert [(k, n) for k, n, _ in summary] == [("routine", 2), ("anomaly", 1)]
        assert summary[0][2] == pytest.approx(0.6)

    def test_system_stats(self, store: EventStore) -> None:
        """System stats snapshots come back newest first within a time range."""
        now = time.time()
        for i in range(3):
            store.insert_system_stats(
                {
                    "timestamp": now + i,
                    "total_events": i,
                    "events_per_second": 1.5,
                    "active_embryos": 2,
                    "avg_fitness": 0.5,
                    "storage_mb": 1.0,
                }
            )
        snaps = store.select_system_stats(start_time=now + 1)
        assert [s.total_events for s in snaps] == [2, 1]

    def test_closed_store_refuses_use(self, store: EventStore) -> None:
        """After close, use raises DatabaseClosedError."""
        store.close()
        with pytest.raises(DatabaseClosedError):
            store.select_events(EventQuery())
