"""The per-minute counters answer counts, group-bys and histograms exactly as a scan of the events would."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celflow import EventDatabase
from celflow._encoding import prepare_batch
from celflow._sqlite._schema import _V1, APPLICATION_ID

BASE = 1_700_000_000.0 - 1_700_000_000.0 % 60  # a minute boundary

TYPES, SOURCES, ACTIONS = ["file_op", "app_focus", "process"], ["fs", "window", "proc", "browser"], [None, "a"]


def _spread(seed: int, n: int) -> list[dict[str, Any]]:
    """``n`` events spread evenly at random over ten minutes (hypothesis alone clusters them near 0)."""
    rng = random.Random(seed)
    return [
        {
            "event_type": rng.choice(TYPES),
            "source": rng.choice(SOURCES),
            "action": rng.choice(ACTIONS),
            "timestamp": BASE + round(rng.uniform(0, 600), 2),
            "data": {"i": rng.randrange(4)},
        }
        for _ in range(n)
    ]


events_strategy = st.builds(_spread, st.integers(0, 2**32), st.integers(0, 300))
bound = (
    st.none()
    | st.floats(min_value=BASE - 30, max_value=BASE + 630)
    | st.integers(0, 11).map(lambda m: BASE + 60 * m)
    | st.builds(lambda m, f: BASE + 60 * m + f, st.integers(0, 10), st.floats(0, 3))  # just past a minute
)


def _direct(path: Path, sql: str, params: list[Any]) -> list[Any]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _where(start: float | None, end: float | None, extra: str = "", value: Any = None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if start is not None:
        clauses.append("timestamp >= ?")
        params.append(start)
    if end is not None:
        clauses.append("timestamp < ?")
        params.append(end)
    if extra:
        clauses.append(f"{extra} = ?")
        params.append(value)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(events_strategy, min_size=1, max_size=3),
    cutoff=st.none() | st.floats(min_value=BASE, max_value=BASE + 600),
    start=bound,
    end=bound,
    kind=st.sampled_from(["event_type", "source"]),
    bucket=st.sampled_from([60.0, 120.0, 300.0, 45.0]),
)
def test_counters_match_a_scan(
    tmp_path_factory: Any,
    batches: list[list[dict[str, Any]]],
    cutoff: float | None,
    start: float | None,
    end: float | None,
    kind: str,
    bucket: float,
) -> None:
    """After inserts (with duplicates) and a delete, every count agrees with counting the rows."""
    path = tmp_path_factory.mktemp("counts") / "c.db"
    with EventDatabase(path) as db:
        for batch in batches:
            db.store_events_batch(batch + batch[:3])  # duplicates are not counted twice
        if cutoff is not None:
            db.store.delete_before(cutoff, limit=25)
        where, params = _where(start, end)
        assert (
            db.count_events(start_time=start, end_time=end)
            == _direct(path, f"SELECT count(*) FROM events{where}", params)[0][0]
        )
        expected = dict(_direct(path, f"SELECT {kind}, count(*) FROM events{where} GROUP BY 1", params))
        assert db.count_by(kind, start_time=start, end_time=end) == expected
        name = {"event_type": "process", "source": "fs"}[kind]
        where, params = _where(start, end, kind, name)
        expected_hist = [
            (b * bucket, n)
            for b, n in _direct(
                path,
                f"SELECT CAST(timestamp / ? AS INTEGER), count(*) FROM events{where} GROUP BY 1 ORDER BY 1",
                [bucket, *params],
            )
        ]
        assert db.histogram(bucket, start_time=start, end_time=end, **{kind: name}) == expected_hist
        assert db.count_events(start_time=start, end_time=end, **{kind: name}) == sum(n for _, n in expected_hist)


def test_stats_totals_come_from_the_counters(db: EventDatabase) -> None:
    """get_database_stats totals agree with the rows, and deleted rows leave the counters too."""
    rows = [{"event_type": f"t{i % 3}", "source": f"s{i % 2}", "timestamp": BASE + i} for i in range(300)]
    db.store_events_batch(rows)
    db.store.delete_before(BASE + 100)
    stats = db.get_database_stats()
    assert stats["total_events"] == 200
    assert stats["events_by_type"] == {"t0": 66, "t1": 67, "t2": 67}
    assert sum(stats["events_by_source"].values()) == 200


def test_rebuild_counts_after_rows_added_by_hand(db: EventDatabase) -> None:
    """Rows inserted with plain SQL are counted after rebuild_counts()."""
    db.store_event({"event_type": "t", "source": "s", "timestamp": BASE})
    conn = sqlite3.connect(db.db_path)
    conn.execute(
        "INSERT INTO events (timestamp, event_type, source, data_json, hash) VALUES (?, 't', 's', '{}', 'x')",
        (BASE + 1,),
    )
    conn.commit()
    conn.close()
    assert db.count_events() == 1  # the counters do not see hand-made rows...
    db.store.rebuild_counts()
    assert db.count_events() == 2  # ...until they are rebuilt


def test_migration_from_v1_fills_the_counters(tmp_path: Path) -> None:
    """A schema-1 database is migrated to the current schema and its existing events are counted."""
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in _V1:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    rows = prepare_batch([{"event_type": f"t{i % 2}", "source": "s", "timestamp": BASE + i} for i in range(50)])
    conn.executemany(
        "INSERT INTO events (timestamp, event_type, action, source, data_json, data_compressed, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.close()
    with EventDatabase(path) as db:
        assert db.count_by("event_type") == {"t0": 25, "t1": 25}
        assert db.histogram(60) == [(BASE, 50)]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()
