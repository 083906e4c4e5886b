"""The storage contract on a real PostgreSQL server, and what is PostgreSQL-specific."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import zstandard
from psycopg import sql

from celflow import EventQuery, EventStore
from celflow._encoding import data_text, decode_data, encode_data, prepare_batch
from celflow._location import split_schema as _split_schema
from celflow._postgres import PostgresStore
from celflow._postgres._store import _SCHEMA
from pg_server import pg_url
from store_contract import T0, StoreContract, rows

__all__ = ["pg_url"]  # the fixture, re-exported for pytest


class TestPostgresContract(StoreContract):
    """The contract, on a fresh schema of a real PostgreSQL database."""

    @pytest.fixture
    def store(self, pg_url: str) -> Iterator[EventStore]:
        s = PostgresStore(pg_url)
        yield s
        s.close()


def test_events_are_partitioned_by_day_and_retention_drops_days(pg_url: str) -> None:
    """Each UTC day gets its own partition; a cutoff past whole days drops them and keeps counts exact."""
    store = PostgresStore(pg_url)
    try:
        day0 = T0 - T0 % 86400
        store.insert_events(rows(30, start=day0, step=8640.0))  # 30 events over 3 days
        assert store.stats()["partitions"] == 3
        assert store.delete_before(day0 + 2 * 86400 + 1) == 21  # two whole days, and one event of the third
        assert store.stats()["partitions"] == 1
        assert store.count_events(EventQuery()) == 9 == len(store.select_events(EventQuery(limit=None))[0])
        assert sum(store.count_by("source", EventQuery()).values()) == 9
    finally:
        store.close()


def test_data_jsonb_cannot_keep_is_stored_exactly(pg_url: str) -> None:
    """Floats in exponent form, -0.0 and NUL characters come back exactly as sent, keys in their order."""
    store = PostgresStore(pg_url)
    try:
        data = {"big": 1e300, "f": 0.1, "int": 2**62, "neg_zero": -0.0, "nul": "a\x00b", "tiny": 2.5e-300}
        (event_id,) = store.insert_events(prepare_batch([{"event_type": "t", "source": "s", "data": data}])).ids or []
        (event,) = store.select_after(event_id - 1, EventQuery(limit=1))
        assert event.data == data and type(event.data["big"]) is float and str(event.data["neg_zero"]) == "-0.0"
        assert list(event.data) == list(data)  # sorted, as written (jsonb would put "f" first: keys by length)
    finally:
        store.close()


def test_two_stores_dedup_the_same_batch(pg_url: str) -> None:
    """Two writers inserting the same events store each once and both get the same ids."""
    first, second = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        batch = rows(50)
        a = first.insert_events(batch)
        b = second.insert_events(batch)
        assert a.inserted == 50 and b.inserted == 0 and a.ids == b.ids
    finally:
        first.close()
        second.close()


def test_concurrent_writers_dedup_count_exactly_and_give_ids_in_commit_order(pg_url: str) -> None:
    """Four writers on overlapping batches (duplicates within and across them): each event once, counters exact,
    and a reader following "ids after the last seen" meanwhile misses none (ids are given in commit order)."""
    everything = rows(8000, step=7.0)  # ~16 hours: counters of many minutes
    rng = random.Random(7)
    batches = []
    for first in (0, 4000):  # overlapping batches; all of them again (duplicates only); new ones
        for _ in range(40):
            lo = rng.randrange(first, first + 3800)
            batch = everything[lo : lo + rng.randint(50, 200)]
            batches.append(batch + rng.sample(batch, 5))  # duplicates within the batch too
        if first == 0:
            batches += batches[:]
    stores = [PostgresStore(pg_url) for _ in range(5)]
    done = threading.Event()
    seen: list[int] = []

    def write(k: int) -> None:
        for batch in batches[k::4]:
            stores[k].insert_events(batch)

    def follow() -> None:
        last = 0
        while True:
            finished = done.is_set()
            new = [e.id for e in stores[4].select_after(last, EventQuery(limit=None))]
            seen.extend(new)
            last = max([last, *new])
            if finished:
                return

    writers = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    reader = threading.Thread(target=follow)
    try:
        reader.start()
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join()
        done.set()
        reader.join()
        store = stores[0]
        events, _ = store.select_events(EventQuery(limit=None))
        assert len(events) == len({r.hash for batch in batches for r in batch}) == len({e.hash for e in events})
        assert sorted(seen) == sorted(e.id for e in events)  # each once, none skipped
        for field in ("event_type", "source"):
            exact = dict(store._read(f"SELECT {field}, count(*) FROM events GROUP BY 1"))
            assert store.count_by(field, EventQuery()) == exact  # from the counters
        exact_minutes = store._read("SELECT floor(timestamp / 60), count(*) FROM events GROUP BY 1 ORDER BY 1")
        assert store.histogram(60.0, EventQuery()) == [(b * 60.0, n) for b, n in exact_minutes]
    finally:
        for s in stores:
            s.close()


# -- schema 1 ------------------------------------------------------------------------------------


def _connect(url: str) -> psycopg.Connection[Any]:
    base, schema = _split_schema(url)
    conn = psycopg.connect(base, autocommit=True)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema or "public")))
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema or "public")))
    return conn


#: jsonb could not hold these as written: schema 1 kept them zstd-compressed (its _NOT_JSONB).
_V1_NOT_JSONB = re.compile(r"[0-9][eE][+-]?[0-9]|-0\.0(?![0-9])|\\u0000")


def _schema_1(url: str, events: list[dict[str, Any]]) -> None:
    """A schema 1 as the previous CelFlow wrote it: data jsonb, what jsonb cannot hold compressed, counters."""
    statements = [s.replace("data_json json,", "data_json jsonb,") for s in _SCHEMA]
    assert sum(a != b for a, b in zip(statements, _SCHEMA, strict=True)) == 1  # the one difference
    batch = prepare_batch(events)
    with _connect(url) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO celflow_meta (key, value) VALUES ('schema_version', '1')")
        for day in sorted({int(row.timestamp // 86400) for row in batch}):
            bounds = f"FROM ({day * 86400}) TO ({(day + 1) * 86400})"
            conn.execute(f"CREATE TABLE events_d{day} PARTITION OF events FOR VALUES {bounds}")
        for row in batch:
            text = data_text(row.data_json, row.data_compressed)
            blob = zstandard.ZstdCompressor().compress(text.encode()) if _V1_NOT_JSONB.search(text) else None
            conn.execute(
                "INSERT INTO events (timestamp, event_type, action, source, data_json, data_compressed, hash) "
                "VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s)",
                (row.timestamp, row.event_type, row.action, row.source, None if blob else text, blob, row.hash),
            )
        for kind in ("event_type", "source"):
            conn.execute(
                f"INSERT INTO event_counts SELECT %s, floor(timestamp / 60)::bigint, {kind}, count(*) "
                "FROM events GROUP BY 2, 3",
                (kind,),
            )


_V1_EVENTS: list[dict[str, Any]] = [
    {"event_type": "t", "source": "s", "timestamp": T0 + i, "data": {"i": i, "text": f"event number {i}"}}
    for i in range(40)
] + [
    {"event_type": "num", "source": "s", "timestamp": T0 + 50, "data": {"big": 1e300, "neg_zero": -0.0}},
    {"event_type": "nul", "source": "s", "timestamp": T0 + 51, "data": {"nul": "a\x00b", "b": 1, "aa": 2}},
    {"event_type": "big", "source": "s", "timestamp": T0 + 86400, "data": {"log": "Needle " + "hay " * 500}},
]


def test_schema_1_is_read_as_it_is_and_upgraded_by_a_writer(pg_url: str) -> None:
    """A reader reads schema 1 unchanged; a writer rewrites its data as canonical json, searchable like SQLite's."""
    _schema_1(pg_url, _V1_EVENTS)
    expected = [e["data"] for e in _V1_EVENTS]
    reader = PostgresStore(pg_url, readonly=True)
    try:
        events, _ = reader.select_events(EventQuery(limit=None, order="asc"))
        assert [e.data for e in events] == expected and reader.stats()["schema_version"] == 1
        assert reader.count_events(EventQuery(search="NUMBER 39")) == 1  # search works, on jsonb's text
    finally:
        reader.close()
    writer = PostgresStore(pg_url)
    try:
        assert writer.stats()["schema_version"] == 2
        events, _ = writer.select_events(EventQuery(limit=None, order="asc"))
        assert [e.data for e in events] == expected
        canonical = [decode_data(encode_data(d).decode(), None) for d in expected]  # keys sorted, as SQLite has them
        assert [repr(e.data) for e in events] == [repr(d) for d in canonical]  # -0.0 too
        assert writer.count_by("event_type", EventQuery()) == {"t": 40, "num": 1, "nul": 1, "big": 1}
        for needle, n in (('"i":3,', 1), ('"i": 3', 0), ("1E+300", 1), ("\\u0000", 1), ('"aa":2,"b":1', 1)):
            assert writer.count_events(EventQuery(search=needle)) == n, needle
        assert writer.count_events(EventQuery(search="needle hay")) == 1
        writer.insert_events(rows(3, start=T0 + 100))
        assert writer.count_events(EventQuery()) == len(_V1_EVENTS) + 3
    finally:
        writer.close()
    with _connect(pg_url) as conn:
        assert conn.execute("SELECT value FROM celflow_meta WHERE key = 'schema_version'").fetchone() == ("2",)
        assert conn.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = 'events' AND column_name = 'data_json'"
        ).fetchone() == ("json",)
        assert conn.execute("SELECT count(*) FROM events WHERE data_compressed IS NOT NULL").fetchone() == (0,)
    writer = PostgresStore(pg_url)  # opened again: the schema is up to date; the finished days get indexed
    try:
        assert writer.build_search_index() == 2 and all(_search_indexes(pg_url).values())
        assert writer.count_events(EventQuery(search='"i":3,')) == 1
    finally:
        writer.close()


# -- the search index ----------------------------------------------------------------------------


def _search_indexes(url: str) -> dict[str, bool]:
    """The day partitions' search indexes: name -> valid."""
    with _connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relnamespace = current_schema()::regnamespace AND c.relname LIKE 'events\\_d%\\_search'"
        ).fetchall()
    return dict(rows)


def test_a_selective_search_reads_the_trigram_index_of_finished_days(pg_url: str) -> None:
    """Finished days get a pg_trgm index; after ANALYZE a rare word is a Bitmap Index Scan there, not a row scan."""
    store = PostgresStore(pg_url)
    try:
        events = [
            {"event_type": "t", "source": "s", "timestamp": T0 + i, "data": {"i": i, "text": f"event number {i}"}}
            for i in range(20_000)
        ]
        events[12_345]["data"] = {"text": "the Quetzalcoatl event"}
        batch = prepare_batch(events)
        for lo in range(0, len(batch), 5000):
            store.insert_events(batch[lo : lo + 5000], want_ids=False)
        now = time.time()
        store.insert_events(prepare_batch([{"event_type": "t", "source": "s", "timestamp": now, "data": "Quetzal"}]))
        assert store.build_search_index() == 2  # T0's two days; today's stays as it is
        assert store.build_search_index() == 0
        assert _search_indexes(pg_url) == {"events_d19675_search": True, "events_d19676_search": True}
        store.optimize()  # ANALYZE
        query = EventQuery(search="quetzalCOATL", limit=10)
        statement, params = store._select_sql(query)
        plan = "\n".join(r[0] for r in store._read(f"EXPLAIN {statement}", params))
        for day in (19675, 19676):
            assert f"Bitmap Index Scan on events_d{day}_search" in plan, plan
        assert f"Seq Scan on events_d{int(now // 86400)}" in plan  # today: read in full
        assert "Seq Scan on events_d1967" not in plan, plan
        assert [e.data for e in store.select_events(query)[0]] == [{"text": "the Quetzalcoatl event"}]
        assert store.count_events(EventQuery(search="QUETZAL")) == 2
    finally:
        store.close()


def test_an_index_left_invalid_is_built_again(pg_url: str) -> None:
    """A build that was stopped leaves an invalid index; the next build replaces it with a valid one."""
    store = PostgresStore(pg_url)
    try:
        store.insert_events(rows(100))
        assert store.build_search_index() == 1
        (name,) = _search_indexes(pg_url)
        with _connect(pg_url) as conn:  # what a cancelled CREATE INDEX CONCURRENTLY leaves
            conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass", (name,))
        assert _search_indexes(pg_url) == {name: False}
        assert store.build_search_index() == 1
        assert _search_indexes(pg_url) == {name: True}
        assert store.count_events(EventQuery(search="number 42")) == 1
    finally:
        store.close()


def test_close_stops_a_build_in_the_background(pg_url: str) -> None:
    """optimize() builds on a thread of its own; close() stops it, and a later build finishes the work."""
    store = PostgresStore(pg_url)
    batch = rows(30_000, step=10.0)  # ~3.5 days from late in a day: five finished days to index
    for lo in range(0, len(batch), 10_000):
        store.insert_events(batch[lo : lo + 10_000], want_ids=False)
    store.optimize()
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 10
    assert store._builder is not None and not store._builder.is_alive()
    store = PostgresStore(pg_url)
    try:
        store.build_search_index()
        assert len(_search_indexes(pg_url)) == 5 and all(_search_indexes(pg_url).values())
    finally:
        store.close()


def test_two_builders_take_turns(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A build waits for another's turn without a deadlock (CREATE INDEX CONCURRENTLY waits for older transactions)."""
    first, second = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        batch = rows(30_000, step=10.0)
        for lo in range(0, len(batch), 10_000):
            first.insert_events(batch[lo : lo + 10_000], want_ids=False)
        with caplog.at_level("WARNING", logger="celflow.postgres"):
            first.optimize()  # builds on its thread
            second.build_search_index()  # waits for the first's turn (or takes its own first)
            assert first._builder is not None
            first._builder.join(timeout=60)
        assert caplog.records == []  # the background build did not stop (a deadlock would stop one of them)
        assert len(_search_indexes(pg_url)) == 5 and all(_search_indexes(pg_url).values())
    finally:
        first.close()
        second.close()


def test_without_pg_trgm_search_works_and_one_warning_says_why(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An extension that cannot be created leaves the store without indexes, searching every row; one warning."""
    monkeypatch.setattr("celflow._postgres._store._TRGM", "celflow_no_such_extension")
    with caplog.at_level("WARNING", logger="celflow.postgres"):
        store = PostgresStore(pg_url)
    try:
        (warning,) = caplog.records
        assert "celflow_no_such_extension" in warning.getMessage() and "reads every event" in warning.getMessage()
        store.insert_events(rows(50))
        assert store.build_search_index() == 0
        store.optimize()
        assert store.count_events(EventQuery(search="NUMBER 4")) == 11
        assert _search_indexes(pg_url) == {}
        assert len(caplog.records) == 1
    finally:
        store.close()
    monkeypatch.undo()
    store = PostgresStore(pg_url)  # pg_trgm there: the next writer indexes the finished days
    try:
        assert store.build_search_index() == 1
    finally:
        store.close()
