"""Bad input is refused at the call, with the field named, and nothing of the call is stored."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from celflow import EventDatabase, ValidationError
from celflow._encoding import EncodingOptions, parse_timestamp, prepare_event
from conftest import make_event

BAD_EVENTS: list[tuple[dict[str, Any], str]] = [
    ({"source": "s"}, "event_type"),
    ({"event_type": "", "source": "s"}, "event_type"),
    ({"event_type": 5, "source": "s"}, "event_type"),
    ({"event_type": "t"}, "source"),
    ({"event_type": "t", "source": ["s"]}, "source"),
    ({"event_type": "t", "source": "s", "action": 3}, "action"),
    ({"event_type": "t" * 300, "source": "s"}, "event_type"),
    ({"event_type": "t", "source": "s", "timestamp": math.nan}, "timestamp"),
    ({"event_type": "t", "source": "s", "timestamp": math.inf}, "timestamp"),
    ({"event_type": "t", "source": "s", "timestamp": -5.0}, "timestamp"),
    ({"event_type": "t", "source": "s", "timestamp": 1_700_000_000_000}, "timestamp"),
    ({"event_type": "t", "source": "s", "timestamp": True}, "timestamp"),
    ({"event_type": "t", "source": "s", "timestamp": "yesterday"}, "timestamp"),
    ({"event_type": "t", "source": "s", "timestamp": "2024-05-01T12:00:00"}, "timestamp"),
    ({"event_type": "t", "source": "s", "timestamp": datetime(2024, 5, 1)}, "timestamp"),
    ({"event_type": "t", "source": "s", "timestamp": [1.0]}, "timestamp"),
    ({"event_type": "t", "source": "s", "data": {1, 2}}, "data"),
    ({"event_type": "t", "source": "s", "data": b"bytes"}, "data"),
    ({"event_type": "t", "source": "s", "data": {"when": datetime.now(UTC)}}, "data"),
    ({"event_type": "t", "source": "s", "data": {"x": object()}}, "data"),
    ({"event_type": "t", "source": "s", "data": {"nested": [1, {"bad": math.nan}]}}, "data"),
    ({"event_type": "t", "source": "s", "data": {"big": 2**70, "bad": -math.inf}}, "data"),
    ({"event_type": "t", "source": "s", "data": {3: "int key"}}, "data"),
    ({"event_type": "t", "source": "s", "idempotency_key": ""}, "idempotency_key"),
    ({"event_type": "t", "source": "s", "idempotency_key": 7}, "idempotency_key"),
    ({"event_type": "t", "source": "s", "colour": "red"}, "colour"),
]


@pytest.mark.parametrize(("event", "field"), BAD_EVENTS)
def test_bad_event_names_the_field(db: EventDatabase, event: dict[str, Any], field: str) -> None:
    """Each malformed event raises ValidationError naming the field, and stores nothing."""
    with pytest.raises(ValidationError) as info:
        db.store_event(event)
    assert info.value.field == field
    assert field in str(info.value)
    assert db.count_events() == 0


def test_non_json_value_is_located(db: EventDatabase) -> None:
    """The error says where inside data the offending value is."""
    with pytest.raises(ValidationError, match=r"data\.items\[1\]\.tags is a set"):
        db.store_event({"event_type": "t", "source": "s", "data": {"items": [{}, {"tags": {"a"}}]}})


def test_not_a_dict() -> None:
    """An event that is not a mapping is refused."""
    with pytest.raises(ValidationError, match="must be a dict"):
        prepare_event(["event_type", "t"])  # type: ignore[arg-type]


def test_size_limit_is_configurable(tmp_path: Any) -> None:
    """An event over max_event_bytes is refused with the size and the limit in the message."""
    with EventDatabase(tmp_path / "e.db", max_event_bytes=2048) as db:
        db.store_event({"event_type": "t", "source": "s", "data": "x" * 1000})
        with pytest.raises(ValidationError, match=r"limit is 2,048 bytes \(max_event_bytes\)"):
            db.store_event({"event_type": "t", "source": "s", "data": "x" * 3000})
        assert db.count_events() == 1


def test_default_size_limit_is_16_mib() -> None:
    """The default limit is 16 MiB of encoded event."""
    assert EncodingOptions().max_event_bytes == 16 * 1024 * 1024
    with pytest.raises(ValidationError, match="16,777,216"):
        prepare_event({"event_type": "t", "source": "s", "data": "x" * (16 * 1024 * 1024)})


def test_batch_is_all_or_nothing(db: EventDatabase) -> None:
    """A bad event in a batch rejects the whole batch, naming its index."""
    batch = [make_event(), make_event(), make_event(timestamp="not a time"), make_event()]
    with pytest.raises(ValidationError) as info:
        db.store_events_batch(batch)
    assert info.value.index == 2
    assert info.value.field == "timestamp"
    assert str(info.value).startswith("event 2: ")
    assert db.count_events() == 0


def test_batch_must_be_a_list(db: EventDatabase) -> None:
    """Passing one event where a batch is expected is a clear error, not 5 bogus events."""
    with pytest.raises(ValidationError, match="a batch must be a list"):
        db.store_events_batch(make_event())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_700_000_000, 1_700_000_000.0),
        (1_700_000_000.25, 1_700_000_000.25),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000.0),
        (datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), 1_700_000_000.0),
        (datetime(2023, 11, 14, 20, 13, 20, tzinfo=timezone(timedelta(hours=-2))), 1_700_000_000.0),
    ],
)
def test_timestamp_forms(value: object, expected: float) -> None:
    """Numbers, ISO-8601 strings with an offset, and aware datetimes are all accepted."""
    assert parse_timestamp(value) == expected


def test_timestamp_defaults_to_now(db: EventDatabase) -> None:
    """An event without a timestamp gets the current time."""
    import time

    before = time.time()
    event_id = db.store_event({"event_type": "t", "source": "s"})
    stored = db.get_events()[0]
    assert stored["id"] == event_id
    assert before <= stored["timestamp"] <= time.time()
    assert stored["data"] == {}


def test_milliseconds_hint() -> None:
    """A timestamp in milliseconds gets a hint."""
    with pytest.raises(ValidationError, match="milliseconds"):
        parse_timestamp(1_700_000_000_000)


def test_output_fields_are_accepted_and_ignored(db: EventDatabase) -> None:
    """An event read back (with id, hash, processed, created_at) can be stored again: it dedups."""
    first = db.store_event(make_event())
    again = db.get_events()[0]
    again["id"] = 999
    assert db.store_event(again) == first
    assert db.count_events() == 1


def test_uuid_and_tuple_are_stored_as_json(db: EventDatabase) -> None:
    """Values with an obvious JSON form (tuples, UUIDs) are stored as that form."""
    u = uuid.UUID(int=5)
    db.store_event({"event_type": "t", "source": "s", "data": {"t": (1, 2), "u": u}})
    assert db.get_events()[0]["data"] == {"t": [1, 2], "u": str(u)}


def test_query_arguments_are_checked(db: EventDatabase) -> None:
    """Bad query arguments name the argument."""
    for kwargs, field in [
        ({"limit": -1}, "limit"),
        ({"limit": True}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"start_time": "soon"}, "start_time"),
        ({"search": "x" * 5000}, "search"),
        ({"cursor": "nonsense"}, "cursor"),
        ({"source": 5}, "source"),
    ]:
        with pytest.raises(ValidationError) as info:
            db.get_events(**kwargs)
        assert info.value.field == field, kwargs


@pytest.mark.parametrize(
    "data",
    [[2**70, {True: None}], {"big": 2**70, "inner": {1: "x"}}, [-(10**100), {"k": {None: 1}}]],
    ids=["bool-key", "int-key", "none-key"],
)
def test_a_key_that_is_not_text_is_refused_beside_a_big_integer(data: object) -> None:
    """Data with an integer past 64 bits takes another encoder; a dict key that is not text is refused there too
    (it was written as text, "true" for True, and came back different)."""
    with pytest.raises(ValidationError, match="keys must be str") as refused:
        prepare_event({"event_type": "t", "source": "s", "data": data})
    assert refused.value.field == "data"
