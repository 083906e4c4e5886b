"""The storage contract on a real PostgreSQL server, and what is PostgreSQL-specific."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from celflow import EventQuery, EventStore
from celflow._encoding import prepare_batch
from celflow._postgres import PostgresStore
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
    """Floats in exponent form, -0.0 and NUL characters come back exactly as sent."""
    store = PostgresStore(pg_url)
    try:
        data = {"big": 1e300, "neg_zero": -0.0, "nul": "a\x00b", "tiny": 2.5e-300, "int": 2**62, "f": 0.1}
        (event_id,) = store.insert_events(prepare_batch([{"event_type": "t", "source": "s", "data": data}])).ids or []
        (event,) = store.select_after(event_id - 1, EventQuery(limit=1))
        assert event.data == data and type(event.data["big"]) is float and str(event.data["neg_zero"]) == "-0.0"
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
