"""What you store is what get_events returns: unicode, nesting, big integers, floats."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celflow import EventDatabase
from celflow._encoding import decode_data, encode_data, prepare_event

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**100), max_value=2**100)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, and floats equal bit for bit in kind (1.0 stays a float, -0.0 keeps its sign)."""
    if isinstance(a, float) or isinstance(b, float):
        return type(a) is type(b) and a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@given(json_values)
def test_encode_decode_is_exact(value: Any) -> None:
    """Canonical encoding then decoding gives the same value, type for type."""
    assert _same(decode_data(encode_data(value).decode(), None), value)


@given(json_values, st.integers(min_value=0, max_value=4000))
def test_prepared_rows_decode_exactly(value: Any, threshold: int) -> None:
    """Whether stored as text or compressed, a prepared row decodes to the original data."""
    from celflow._encoding import EncodingOptions

    row = prepare_event({"event_type": "t", "source": "s", "data": value}, EncodingOptions(threshold))
    assert _same(decode_data(row.data_json, row.data_compressed), value)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=json_values,
    event_type=st.text(min_size=1, max_size=40),
    source=st.text(min_size=1, max_size=40),
    action=st.none() | st.text(max_size=40),
    timestamp=st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False),
)
def test_database_round_trip(
    tmp_path: Path, data: Any, event_type: str, source: str, action: str | None, timestamp: float
) -> None:
    """An event stored in a real file comes back identical."""
    with EventDatabase(tmp_path / "rt.db", compression_threshold=64) as db:
        event_id = db.store_event(
            {"event_type": event_type, "source": source, "action": action, "timestamp": timestamp, "data": data}
        )
        (stored,) = [e for e in db.get_events(limit=None) if e["id"] == event_id]
    assert stored["event_type"] == event_type
    assert stored["source"] == source
    assert stored["action"] == action
    assert stored["timestamp"] == timestamp
    assert _same(stored["data"], data)


def test_examples_round_trip(db: EventDatabase) -> None:
    """Hand-picked hard cases survive a real database."""
    cases = [
        {"emoji": "🧠💾", "rtl": "שלום", "nul": "a\x00b", "cjk": "記憶"},
        {"big": 2**200, "neg": -(2**90), "u64": 2**64 - 1},
        {"floats": [0.1, 1e-300, 1.7976931348623157e308, -0.0, 5e-324, 1.0]},
        {"deep": [[[[[[{"x": [1, [2, [3]]]}]]]]]]},
        [1, "two", None, True, False],
        "just a string",
        None,
        12,
    ]
    ids = db.store_events_batch(
        [{"event_type": "t", "source": "s", "timestamp": 1000 + i, "data": c} for i, c in enumerate(cases)]
    )
    by_id = {e["id"]: e["data"] for e in db.get_events(limit=None)}
    for event_id, case in zip(ids, cases, strict=True):
        assert _same(by_id[event_id], case)
