"""Peers' write paths on the same events, each with its own defaults (WAL, ``synchronous`` FULL).

Mapping our event dicts to a peer's model (aw-core ``Event``, eventsourcing ``StoredEvent``) is
not timed; the peer's own serialisation is, where the peer does it (aw-core ``json.dumps``,
persist-queue ``pickle``). eventsourcing's recorder takes already serialised events (its mapper
does that above it), so its figure times the recorder alone. No peer deduplicates: each stores
every offered event, which each run checks.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aw_core.models import Event as AwEvent
from aw_datastore.storages import PeeweeStorage, SqliteStorage
from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
from persistqueue import SQLiteQueue

BATCH = 1000
BUCKET = "celflow-bench"

Events = Sequence[dict[str, Any]]


def _count(path: str, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def _check(path: str, table: str, want: int, who: str) -> None:
    got = _count(path, table)
    if got != want:
        raise SystemExit(f"CORRECTNESS FAILURE: {who} stored {got:,} events, expected {want:,}")


def to_aw(events: Events) -> list[AwEvent]:
    """aw-core events: our timestamp, no duration, type/source/action and data in ``data``."""
    return [
        AwEvent(
            timestamp=datetime.fromtimestamp(e["timestamp"], UTC),
            duration=0,
            data={"type": e["event_type"], "source": e["source"], "action": e["action"], "data": e["data"]},
        )
        for e in events
    ]


def _bucket(storage: SqliteStorage | PeeweeStorage) -> None:
    created = datetime.now(UTC).isoformat()
    storage.create_bucket(BUCKET, "celflow.event", "celflow-bench", "bench-host", created)


def run_aw_batch(workdir: str, events: Events) -> float:
    """aw-core ``SqliteStorage.insert_many`` of 1000 events a call (it commits each call)."""
    path = os.path.join(workdir, "aw-sqlite.db")
    storage = SqliteStorage(testing=True, filepath=path)
    _bucket(storage)
    aw_events = to_aw(events)
    started = time.perf_counter()
    for i in range(0, len(aw_events), BATCH):
        storage.insert_many(BUCKET, aw_events[i : i + BATCH])
    storage.commit()
    elapsed = time.perf_counter() - started
    storage.conn.close()
    _check(path, "events", len(events), "aw-core SqliteStorage")
    return elapsed


def run_aw_single(workdir: str, events: Events) -> float:
    """aw-core ``PeeweeStorage.insert_one`` per event (a transaction each)."""
    path = os.path.join(workdir, "aw-peewee.db")
    storage = PeeweeStorage(testing=True, filepath=path)
    _bucket(storage)
    aw_events = to_aw(events)
    started = time.perf_counter()
    for event in aw_events:
        storage.insert_one(BUCKET, event)
    elapsed = time.perf_counter() - started
    storage.db.close()
    _check(path, "eventmodel", len(events), "aw-core PeeweeStorage")
    return elapsed


def run_persistqueue(workdir: str, events: Events) -> float:
    """persist-queue ``SQLiteQueue.put`` per event (``auto_commit``: a transaction each)."""
    folder = os.path.join(workdir, "persistqueue")
    queue = SQLiteQueue(folder, auto_commit=True)
    started = time.perf_counter()
    for event in events:
        queue.put(event)
    elapsed = time.perf_counter() - started
    queue.close()
    _check(os.path.join(folder, "data.db"), "queue_default", len(events), "persist-queue SQLiteQueue")
    return elapsed


def to_stored(events: Events) -> list[StoredEvent]:
    """eventsourcing stored events: one aggregate per source, the event as JSON in ``state``."""
    versions: dict[uuid.UUID, int] = {}
    stored = []
    for e in events:
        originator = uuid.uuid5(uuid.NAMESPACE_URL, f"celflow:{e['source']}")
        versions[originator] = version = versions.get(originator, 0) + 1
        stored.append(StoredEvent(originator, version, f"celflow.events:{e['event_type']}", json.dumps(e).encode()))
    return stored


def run_eventsourcing(workdir: str, events: Events) -> float:
    """eventsourcing ``SQLiteApplicationRecorder.insert_events`` of 1000 stored events a call."""
    path = os.path.join(workdir, "eventsourcing.db")
    datastore = SQLiteDatastore(path)
    recorder = SQLiteApplicationRecorder(datastore)
    recorder.create_table()
    stored = to_stored(events)
    started = time.perf_counter()
    for i in range(0, len(stored), BATCH):
        recorder.insert_events(stored[i : i + BATCH])
    elapsed = time.perf_counter() - started
    datastore.close()
    _check(path, "stored_events", len(events), "eventsourcing SQLiteApplicationRecorder")
    return elapsed
