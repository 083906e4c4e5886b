"""10. Hostile input: the event validator and decoder (hypothesis, and atheris when it is installed),
the search syntax, and the HTTP API of a real `celflow run` (oversized bodies, gzip bombs, deep
nesting, wrong types, invalid UTF-8, odd numbers): every answer is a value or a refusal that names
what was wrong; never another exception, a server error, a runaway query or unbounded memory."""

from __future__ import annotations

import contextlib
import datetime
import gzip
import json
import math
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from _reliability import Record, trials
from celflow import EventDatabase
from celflow._encoding import MAX_TIMESTAMP, decode_data, prepare_batch, prepare_each, prepare_event
from celflow._exceptions import CorruptDatabaseError, ValidationError
from celflow._types import EventQuery
from live_service import Service

CELFLOW = str(Path(sys.executable).parent / "celflow")
FUZZER = Path(__file__).parents[1] / "helpers" / "fuzz_events.py"
EXAMPLES = trials(150, 5000)  # per property

# -- 1. the validator and the decoder ------------------------------------------------------------


class Refused:
    """The oracle's verdict for a value the validator must refuse."""


class Either:
    """The oracle's verdict for a value that may be refused or kept (e.g. very deep nesting)."""


REFUSED, EITHER = Refused(), Either()

surrogate_text = st.builds(
    lambda a, s, b: a + s + b,
    st.text(max_size=4),
    st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=2),
    st.text(max_size=4),
)
exact_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**130), max_value=2**130)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def nested(depth: int, inner: Any, as_dict: bool) -> Any:
    value = inner
    for _ in range(depth):
        value = {"k": value} if as_dict else [value]
    return value


hostile_data = st.one_of(
    st.sets(st.integers(), max_size=2),
    st.binary(max_size=4),
    st.builds(object),
    st.complex_numbers(),
    st.sampled_from([math.nan, math.inf, -math.inf]).map(lambda x: {"x": [1, x]}),
    st.dictionaries(st.integers() | st.none() | st.tuples(st.integers()), st.integers(), min_size=1, max_size=2),
    surrogate_text,
    surrogate_text.map(lambda s: {s: 1}),
    st.builds(lambda: 10**5000),  # past the 4,300 digits Python writes as text
    st.just(datetime.datetime(2024, 1, 1)),
)
# Deeper than orjson's 254 levels: refused, or (around an integer past 64 bits) kept exactly.
deep_data = st.builds(nested, st.integers(255, 3000), st.sampled_from([None, "x", 2**70]), st.booleans())
good_names = st.text(min_size=1, max_size=40)
bad_names = st.one_of(
    st.just(""),
    st.text(min_size=257, max_size=260),
    surrogate_text,
    st.integers(),
    st.floats(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.binary(max_size=3),
)
bad_actions = bad_names.filter(lambda v: v != "")  # an empty action is allowed
good_times = st.floats(min_value=0.0, max_value=MAX_TIMESTAMP, exclude_max=True)
aware = st.datetimes(
    min_value=datetime.datetime(1971, 1, 1),
    max_value=datetime.datetime(2199, 1, 1),
    timezones=st.sampled_from([datetime.UTC, datetime.timezone(datetime.timedelta(hours=-11, minutes=-30))]),
)
bad_times = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -1e-300, MAX_TIMESTAMP, 1e308, -(10**400), 10**400, True]),
    st.integers(min_value=10**10, max_value=10**500),
    st.datetimes(min_value=datetime.datetime(1971, 1, 1)),  # naive: no UTC offset
    st.lists(st.integers(), max_size=2),
    st.none().map(lambda _: object()),
)


def event_parts() -> st.SearchStrategy[tuple[dict[str, Any], dict[str, Any]]]:
    """An event whose fields are each valid or hostile, with the oracle's verdict per field."""

    def field(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, Any]]:
        return good.map(lambda v: (v, v)) | bad.map(lambda v: (v, REFUSED))

    times = st.one_of(
        good_times.map(lambda v: (v, v)),
        aware.map(lambda d: (d, d.timestamp())),
        aware.map(lambda d: (d.isoformat(), d.timestamp())),
        st.text(max_size=30).map(lambda v: (v, EITHER)),  # fromisoformat takes more forms than one thinks
        bad_times.map(lambda v: (v, REFUSED)),
    )
    data = st.one_of(
        exact_json.map(lambda v: (v, v)), hostile_data.map(lambda v: (v, REFUSED)), deep_data.map(lambda v: (v, EITHER))
    )
    keys = st.text(min_size=1, max_size=20).map(lambda v: (v, v)) | st.one_of(
        st.just(""), st.text(min_size=257, max_size=260), surrogate_text, st.integers()
    ).map(lambda v: (v, REFUSED))
    return st.fixed_dictionaries(
        {"event_type": field(good_names, bad_names), "source": field(good_names, bad_names)},
        optional={
            "action": field(st.none() | st.just("") | good_names, bad_actions),
            "timestamp": times,
            "data": data,
            "idempotency_key": keys,
            "colour": st.just(("blue", REFUSED)),  # not a field of an event
        },
    ).map(lambda parts: ({k: v for k, (v, _) in parts.items()}, {k: w for k, (_, w) in parts.items()}))


def same(a: Any, b: Any) -> bool:
    """Equal, type for type: 1.0 is not 1, True is not 1, -0.0 keeps its sign."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def check_event(event: dict[str, Any], verdict: dict[str, Any]) -> bool:
    """One event through prepare_event, against the oracle; True if it was accepted."""
    refused = {k for k, v in verdict.items() if v is REFUSED}
    either = {k for k, v in verdict.items() if v is EITHER}
    try:
        row = prepare_event(event)
    except ValidationError as exc:
        assert refused or either, f"a valid event was refused: {exc}"
        assert exc.field in refused | either, f"the error names {exc.field!r}, not one of {refused | either}: {exc}"
        return False
    assert not refused, f"accepted an event with bad {sorted(refused)}"
    assert row is not None
    assert row.event_type == event["event_type"] and row.source == event["source"]
    assert row.action == event.get("action")
    if verdict.get("timestamp") not in (None, EITHER):
        assert row.timestamp == verdict["timestamp"]
    if verdict.get("data", {}) is not EITHER:
        assert same(decode_data(row.data_json, row.data_compressed), verdict.get("data", {}))
    return True


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_parts())
def test_prepare_event_keeps_exactly_or_refuses_naming_the_field(parts: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """Any event becomes a row that decodes to exactly what was given, or a ValidationError naming a bad field."""
    check_event(*parts)


@pytest.mark.parametrize(
    ("field", "make"),
    [
        ("event_type", lambda: "\ud800"),
        ("source", lambda: "ok\udfffok"),
        ("action", lambda: "\udbff"),
        ("idempotency_key", lambda: "key-\ud800"),
        ("event_type", lambda: ""),
        ("source", lambda: "s" * 257),
        ("action", lambda: 5),
        ("timestamp", lambda: 10**400),
        ("timestamp", lambda: -(10**400)),
        ("timestamp", lambda: math.nan),
        ("timestamp", lambda: 1e308),
        ("timestamp", lambda: "2024-05-01T12:00:00"),
        ("timestamp", lambda: datetime.datetime(2024, 5, 1)),
        ("timestamp", lambda: "0001-01-01T00:00:00+14:00"),
        ("data", lambda: {"a": [1, math.nan]}),
        ("data", lambda: {1: "x"}),
        ("data", lambda: {"x": {1, 2}}),
        ("data", lambda: b"bytes"),
        ("data", lambda: 10**5000),
        ("data", lambda: "\ud800"),
        ("data", lambda: {"big": 2**70, "text": "\udcec"}),  # found by the full-count fuzz
        ("data", lambda: nested(3000, 1, False)),
        ("data", lambda: [2**70, nested(3000, 2**70, False)]),
        ("data", lambda: {"big": 2**70, "deep": nested(2000, 1, True), "nan": math.nan}),
        ("colour", lambda: "blue"),
    ],
    ids=lambda p: p if isinstance(p, str) else "",
)
def test_known_hostile_events_are_refused_naming_the_field(field: str, make: Any) -> None:
    """Known hostile values (surrogates, huge integers, NaN, deep nesting...) are ValidationErrors naming the field."""
    event = {"event_type": "t", "source": "s", field: make()}
    with pytest.raises(ValidationError) as refused:
        prepare_event(event)
    assert refused.value.field == field, str(refused.value)
    with pytest.raises(ValidationError) as in_batch:
        prepare_batch([{"event_type": "ok", "source": "s"}, event])
    assert (in_batch.value.index, in_batch.value.field) == (1, field)
    rows, errors = prepare_each([event, {"event_type": "ok", "source": "s"}])
    assert len(rows) == 1 and [(e.index, e.field) for e in errors] == [(0, field)]


@settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_parts(), max_size=5))
def test_batches_agree_with_their_events(batch: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """prepare_batch refuses at the first bad event (its index); prepare_each lists exactly the bad ones."""
    events = [e for e, _ in batch]
    accepted = [check_event(e, v) for e, v in batch]
    rows, errors = prepare_each(events)
    assert len(rows) == sum(accepted)
    assert [e.index for e in errors] == [i for i, ok in enumerate(accepted) if not ok]
    if all(accepted):
        assert len(prepare_batch(events)) == len(events)
    else:
        with pytest.raises(ValidationError) as refused:
            prepare_batch(events)
        assert refused.value.index == accepted.index(False)


@pytest.mark.parametrize(
    "batch", [None, 5, 1.5, object(), "events", b"events", {"event_type": "t", "source": "s"}, True]
)
def test_a_batch_that_is_not_a_list_is_refused(batch: Any) -> None:
    """A batch that is not a list of events (None, a number, a string, one dict) is a ValidationError."""
    for prepare in (prepare_batch, prepare_each):
        with pytest.raises(ValidationError, match="batch"):
            prepare(batch)


def _gzip(raw: bytes) -> bytes:
    return gzip.compress(raw)


def _damaged(blob: bytes, at: int, byte: int) -> bytes:
    """``blob`` with one byte replaced (past the magic number): a real stream, damaged inside."""
    at = 4 + at % max(1, len(blob) - 4)
    return blob[:at] + bytes([byte]) + blob[at + 1 :]


_REAL = json.dumps({"text": "hello " * 50, "n": list(range(40))}).encode()


stored_blobs = st.one_of(
    st.binary(max_size=64),
    st.binary(max_size=64).map(lambda b: b"\x28\xb5\x2f\xfd" + b),  # a zstd magic number, then anything
    st.binary(max_size=64).map(lambda b: b"\x1f\x8b" + b),  # a gzip magic number, then anything
    st.binary(max_size=64).map(zstandard.ZstdCompressor().compress),  # valid zstd of anything
    st.binary(max_size=64).map(_gzip),
    st.builds(_damaged, st.just(zstandard.ZstdCompressor().compress(_REAL)), st.integers(0), st.integers(0, 255)),
    st.builds(_damaged, st.just(gzip.compress(_REAL)), st.integers(0), st.integers(0, 255)),
)


@pytest.mark.parametrize(
    "blob",
    [
        b"abcd",
        b"\x28\xb5\x2f\xfdxxxx",
        b"\x1f\x8bxxxx",
        gzip.compress(_REAL)[:-9],  # truncated
        _damaged(gzip.compress(_REAL), 12, 0xFF),  # damaged deflate blocks: zlib.error
        _damaged(gzip.compress(_REAL), 40, 0x00),
        gzip.compress(b"not json"),
        zstandard.ZstdCompressor().compress(b"\xff\xfe"),  # not UTF-8
        zstandard.ZstdCompressor().compress(_REAL)[:-3],
    ],
    ids=[
        "no-codec",
        "zstd-header",
        "gzip-header",
        "gzip-truncated",
        "gzip-blocks",
        "gzip-crc",
        "gzip-not-json",
        "zstd-not-utf8",
        "zstd-truncated",
    ],
)
def test_known_damaged_rows_are_corrupt_database_errors(blob: bytes) -> None:
    """Damaged blobs of every codec (truncated, bad blocks, not JSON, not UTF-8) raise CorruptDatabaseError."""
    with pytest.raises(CorruptDatabaseError, match="celflow db recover"):
        decode_data(None, blob)
    with pytest.raises(CorruptDatabaseError):
        decode_data('{"broken": ', None)


def _declares_a_huge_frame(blob: bytes) -> bool:
    try:
        return blob[:4] == b"\x28\xb5\x2f\xfd" and zstandard.frame_content_size(blob) > 64 * 1024 * 1024
    except zstandard.ZstdError:
        return False


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.none() | st.text(max_size=64), st.none() | stored_blobs.filter(lambda b: not _declares_a_huge_frame(b)))
def test_decode_data_of_damaged_rows_is_a_celflow_error(data_json: str | None, data_compressed: bytes | None) -> None:
    """decode_data of any stored text or blob gives a value or raises CorruptDatabaseError, nothing else."""
    with contextlib.suppress(CorruptDatabaseError):
        decode_data(data_json, data_compressed)


@settings(max_examples=EXAMPLES, deadline=None)
@given(exact_json, st.sampled_from(["zstd", "gzip", "text"]))
def test_decode_data_reads_every_codec_exactly(value: Any, codec: str) -> None:
    """Data written as text, zstd or gzip (the seed's codec) decodes to exactly the value."""
    text = json.dumps(value, ensure_ascii=False)
    if codec == "text":
        assert same(decode_data(text, None), value)
    else:
        blob = zstandard.ZstdCompressor().compress(text.encode()) if codec == "zstd" else gzip.compress(text.encode())
        assert same(decode_data(None, blob), value)


@pytest.mark.xfail(strict=True, reason="defect: zstandard allocates the content size a frame header declares")
def test_a_row_declaring_a_huge_size_is_a_corrupt_row() -> None:
    """A damaged blob whose zstd header claims 256 GiB is refused as corrupt (not a MemoryError)."""
    frame = b"\x28\xb5\x2f\xfd\xe0" + (2**38).to_bytes(8, "little") + b"\x01\x00\x00"
    with pytest.raises(CorruptDatabaseError):
        decode_data(None, frame)


def test_atheris_fuzz_of_the_validator_and_decoder(tmp_path: Path, record: Record) -> None:
    """A coverage-guided fuzz (atheris/libFuzzer) of validator and decoder finds no crash."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        pytest.skip(
            "SKIPPED LOUDLY: atheris is not installed (pip install atheris): the coverage-guided fuzz did not run"
        )
    runs = trials(3000, 300_000)
    result = subprocess.run(
        [sys.executable, str(FUZZER), f"-runs={runs}", "-seed=1", "-max_len=4096", f"-artifact_prefix={tmp_path}/"],
        capture_output=True,
        text=True,
        timeout=3000,
        cwd=tmp_path,
    )
    record(
        trials=runs, failures=0 if result.returncode == 0 else 1, worst_loss=f"{int(result.returncode != 0)} crashes"
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Done {runs} runs" in result.stderr


# -- 2. the search syntax ------------------------------------------------------------------------

SEARCH_EVENTS: list[dict[str, Any]] = [
    {"event_type": "web", "source": "chrome", "action": "visit", "data": {"url": "https://Chrome.example/100%_done"}},
    {"event_type": "web", "source": "firefox", "data": {"url": "firefox 100 percent", "q": "a_b"}},
    {"event_type": "file_op", "source": "back\\slash", "action": "it's", "data": {"path": "C:\\Temp\\x.txt"}},
    {"event_type": 'quote"d', "source": "s", "data": {"text": 'say "hi" AND OR NOT NEAR(x, y) * ( ) : -'}},
    {"event_type": "nul\x00name", "source": "s\x00s", "action": "a\x00", "data": {"nul": "a\x00b"}},
    {"event_type": "Émile", "source": "İstanbul", "action": "ß", "data": {"names": ["ÉMILE", "émile", "straße"]}},
    {"event_type": "fts", "source": "sqlite", "data": {"q": 'title:"x" OR body:y*', "m": "MATCH 'z'"}},
    {"event_type": "cjk", "source": "記憶", "data": {"text": "日本語のテキスト", "emoji": "🧠💾"}},
    {"event_type": "big", "source": "capture", "data": {"text": "needle " + "Hay_%\\ " * 400}},  # compressed
    {"event_type": "big", "source": "capture", "data": {"text": "ÉCLAIR " + "ü€ " * 400, "tail": "Z_z%"}},
    {"event_type": "plain", "source": "s", "action": None, "data": None},
    {"event_type": "plain", "source": "s", "data": [1, 2.5, True, None, "x%y"]},
]
TOKENS = ["%", "_", "\\", "\\%", "%_", "'", '"', "''", "*", "(", ")", ":", "-", "AND", "OR", "NOT", "NEAR",
          "MATCH", "\x00", "a\x00", "\x00b", "é", "É", "ß", "İ", "i̇", "🧠", "  ", "\\u0000", '\\"', "/*", "--",
          ";", "[", "]"]  # fmt: skip


def ascii_fold(text: str) -> str:
    """Lower-case ASCII letters only: how SQLite's LIKE (and CelFlow's search) ignores case."""
    return text.translate({c: c + 32 for c in range(ord("A"), ord("Z") + 1)})


def ascii_swapcase(text: str) -> str:
    return "".join(c.swapcase() if c.isascii() else c for c in text)


@pytest.fixture(scope="module")
def search_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EventDatabase, dict[int, list[str]]]]:
    """The known events in a real file (long data stored compressed), and the texts search looks in, per id."""
    path = tmp_path_factory.mktemp("search") / "events.db"
    with EventDatabase(path) as writer:
        writer.store_events_batch([{**e, "timestamp": 1_700_000_000 + i} for i, e in enumerate(SEARCH_EVENTS)])
    texts: dict[int, list[str]] = {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    for event_id, event_type, source, action, data_json, data_compressed in conn.execute(
        "SELECT id, event_type, source, action, data_json, data_compressed FROM events"
    ):
        data = data_json if data_compressed is None else zstandard.ZstdDecompressor().decompress(data_compressed)
        texts[event_id] = [event_type, source, action or "", data if isinstance(data, str) else data.decode()]
    compressed = conn.execute("SELECT count(*) FROM events WHERE data_compressed IS NOT NULL").fetchone()[0]
    conn.close()
    assert compressed == 2  # both stored paths are searched
    database = EventDatabase(path, readonly=True)
    yield database, texts
    database.close()


def expected_ids(texts: dict[int, list[str]], needle: str) -> set[int]:
    """The literal, ASCII-case-insensitive substring match, computed here."""
    folded = ascii_fold(needle)
    return {i for i, fields in texts.items() if any(folded in ascii_fold(f) for f in fields)}


def needles(texts: dict[int, list[str]]) -> st.SearchStrategy[str]:
    pieces = [f for fields in texts.values() for f in fields if f]
    substrings = st.builds(
        lambda text, a, n: text[a % len(text) : a % len(text) + n],
        st.sampled_from(pieces),
        st.integers(0),
        st.integers(1, 12),
    )
    return st.one_of(
        st.sampled_from(TOKENS),
        substrings,
        substrings.map(ascii_swapcase),
        substrings.map(str.lower) | substrings.map(str.upper),  # Unicode case: É is not é for search
        st.lists(st.sampled_from(TOKENS) | substrings, min_size=2, max_size=4).map("".join),
        st.text(alphabet="%_\\'\"*():-\x00aAéÉ ", min_size=1, max_size=8),
        st.text(min_size=1, max_size=10),
    )


def test_search_matches_literally(search_db: tuple[EventDatabase, dict[int, list[str]]], record: Record) -> None:
    """search= of %, _, \\, quotes, FTS operators, NUL, unicode: exactly the literal ASCII-case-insensitive matches."""
    database, texts = search_db
    checked = 0

    @settings(max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(needles(texts))
    def check(needle: str) -> None:
        nonlocal checked
        want = expected_ids(texts, needle)
        assert {e["id"] for e in database.get_events(search=needle, limit=None)} == want, repr(needle)
        assert database.count_events(search=needle) == len(want)
        assert {e.id for e in database.store.select_after(0, EventQuery(search=needle, limit=None))} == want
        checked += 1

    check()
    record(trials=checked, failures=0, worst_loss="0 wrong results")


@pytest.mark.parametrize(
    ("needle", "message"),
    [
        ("x" * 1001, "limit is 1000"),
        ("é" * 100_000, "limit is 1000"),
        ("a" * 100 * 1024, "limit is 1000"),
        ("ab\ud800", "surrogate"),
    ],
)
def test_search_too_long_or_not_text_is_refused(
    search_db: tuple[EventDatabase, dict[int, list[str]]], needle: str, message: str
) -> None:
    """A search past 1,000 characters (100 KB too), or with a lone surrogate, is a ValidationError naming search."""
    database, _ = search_db
    for call in (database.get_events, database.count_events):
        with pytest.raises(ValidationError, match=message) as refused:
            call(search=needle)
        assert refused.value.field == "search"
    with pytest.raises(ValidationError, match=message):  # the store refuses it too (no SQL error)
        database.store.select_events(EventQuery(search=needle))


def test_search_of_1000_characters_is_matched(search_db: tuple[EventDatabase, dict[int, list[str]]]) -> None:
    """A search at the limit (1,000 characters of escapes and wildcards) runs and matches literally."""
    database, texts = search_db
    for needle in ("%_\\" * 334)[:1000], ("Hay_%\\ " * 200)[:1000], "é" * 1000:
        assert {e["id"] for e in database.get_events(search=needle, limit=None)} == expected_ids(texts, needle)


def test_search_over_http_matches_literally(
    tmp_path: Path, search_db: tuple[EventDatabase, dict[int, list[str]]]
) -> None:
    """The API's search parameter gives the same literal matches, or 400 naming search; never a 500."""
    _, texts = search_db
    service = Service(tmp_path / "events.db")
    try:
        with service.client() as c:
            ids = c.post(
                "/api/v1/events?wait=true",
                json=[{**e, "timestamp": 1_700_000_000 + i} for i, e in enumerate(SEARCH_EVENTS)],
            ).json()["ids"]
            assert ids == sorted(texts)  # the same ids as the reference file

            @settings(max_examples=trials(60, 2000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
            @given(needles(texts) | st.just("y" * 1001) | st.just("%" * 5000))
            def check(needle: str) -> None:
                response = c.get("/api/v1/events", params={"search": needle, "limit": 1000})
                assert response.status_code < 500, response.text
                if len(needle) > 1000:
                    assert response.status_code in (400, 414, 431), response.text
                    if response.status_code == 400 and response.headers["content-type"] == "application/json":
                        assert response.json()["error"].get("field") in ("search", None)
                    return
                assert response.status_code == 200, response.text
                assert {e["id"] for e in response.json()["events"]} == expected_ids(texts, needle), repr(needle)
                count = c.get("/api/v1/events/count", params={"search": needle})
                assert count.json()["total"] == len(expected_ids(texts, needle))

            check()
            # 100 KB in the URL: more than httpx sends (64 KB), so a raw request
            status = raw_status(service.http.url, f"/api/v1/events?search={'x' * 100 * 1024}", service.token)
            assert 400 <= status < 500, status
            assert c.get("/api/v1/events", params={"search": "chrome"}).status_code == 200
    finally:
        service.close()


def raw_status(url: str, target: str, token: str | None) -> int:
    """The status of a GET sent over a plain socket (no client-side limit on the URL's length)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n".encode())
        head = sock.recv(64)
    return int(head.split()[1])


def test_a_long_search_is_stopped_by_query_timeout(tmp_path: Path, record: Record) -> None:
    """A search that would scan for ~half a minute answers 503 naming the limit soon after query_timeout."""
    service = Service(tmp_path / "events.db", query_timeout=0.5)
    try:
        database = service.manager.database
        assert database is not None
        # 20,000 rows of 900 'a's (stored as text): a needle of 999 'a's then 'b' costs LIKE
        # ~1.8 ms a row, ~36 s for the table (measured on the 2-core machine).
        rows = [
            {"event_type": "t", "source": "s", "timestamp": 1e9 + i, "data": {"t": "a" * 900}} for i in range(20_000)
        ]
        service.call(service.manager.store_events(rows), timeout=120)
        with service.client() as c:
            started = time.monotonic()
            response = c.get("/api/v1/events", params={"search": "a" * 999 + "b", "limit": 10}, timeout=120)
            elapsed = time.monotonic() - started
            assert response.status_code == 503, response.text
            assert "0.5 s limit" in response.json()["error"]["message"]
            assert elapsed < 15, f"the query ran {elapsed:.1f} s past a 0.5 s limit"
            count = c.get("/api/v1/events/count", params={"search": "a" * 999 + "b"}, timeout=120)
            assert count.status_code == 503
            assert c.get("/api/v1/events", params={"limit": 1}).status_code == 200  # the service goes on
            assert c.get("/health").status_code == 200
        record(trials=2, failures=0, worst_loss=f"stopped after {elapsed:.1f} s (limit 0.5 s)")
    finally:
        service.close()


# -- 3. the HTTP API of a real `celflow run` ----------------------------------------------------

MAX_BODY = 1024 * 1024


def rss_anon_kib(pid: int) -> int:
    """The process's anonymous resident memory (heap, not file pages), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc status")


class LiveService:
    """`celflow run` in a child process on a free port, with a 1 MiB body limit."""

    def __init__(self, data: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELFLOW_")}
        env.update(CELFLOW_HTTP_MAX_BODY_BYTES=str(MAX_BODY), CELFLOW_BATCH_TIMEOUT="0.05", CELFLOW_STATS_INTERVAL="0")
        self.proc = subprocess.Popen(
            [CELFLOW, "run", "--db", str(data / "events.db"), "--no-fs", "--no-processes", "--port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=data.parent,
            env=env,
        )
        deadline = time.monotonic() + 60
        while not (data / "service.json").exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, "the service did not start"
            time.sleep(0.05)
        self.url = json.loads((data / "service.json").read_text())["url"]
        self.token = (data / "token").read_text().strip()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)

    def alive(self) -> None:
        assert self.proc.poll() is None, f"the service died ({self.proc.returncode})"
        with self.client() as c:
            assert c.get("/health").status_code == 200

    def close(self) -> None:
        self.proc.terminate()
        assert self.proc.wait(60) == 0


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    service = LiveService(tmp_path_factory.mktemp("hostile") / "data")
    yield service
    service.close()


def refused(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """A JSON error with one of ``statuses``."""
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    error: dict[str, Any] = response.json()["error"]
    assert error["status"] == response.status_code and error["message"]
    return error


def gzip_bomb(inflated: int) -> bytes:
    """A gzip member of ``inflated`` zero bytes (about 1/1000 of that on the wire)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1024 * 1024)
    parts = [packer.compress(chunk) for _ in range(inflated // len(chunk))]
    return b"".join(parts) + packer.flush()


def test_bodies_over_the_limit_and_gzip_bombs_are_413_in_bounded_memory(live: LiveService, record: Record) -> None:
    """Oversized bodies (declared or chunked) and gzip bombs (one member or many) get 413; RssAnon stays bounded."""
    rounds = trials(10, 200)
    bomb = gzip_bomb(256 * 1024 * 1024)  # 256 MiB of zeros in ~250 KB
    members = gzip.compress(bytes(MAX_BODY // 4)) * 8  # 8 members, each a quarter of the limit
    with live.client() as c:
        for _ in range(3):  # warm up: the first requests allocate the server's steady state
            c.post("/api/v1/events?wait=true", json=[{"event_type": "warm", "source": "s", "data": {"n": 1}}])
            refused(c.post("/api/v1/events", content=bytes(MAX_BODY + 1)), 413)
            refused(c.post("/api/v1/events", content=bomb, headers={"Content-Encoding": "gzip"}), 413)
        before = rss_anon_kib(live.proc.pid)
        peak = before
        for _ in range(rounds):
            refused(c.post("/api/v1/events", content=b"[" + b" " * MAX_BODY + b"]"), 413)

            def chunks() -> Iterator[bytes]:
                for _ in range(40):
                    yield b" " * 32768

            refused(c.post("/api/v1/events", content=chunks()), 413)  # no Content-Length
            refused(c.post("/api/v1/events", content=bomb, headers={"Content-Encoding": "gzip"}), 413)
            refused(c.post("/api/v1/events", content=members, headers={"Content-Encoding": "gzip"}), 413)
            refused(c.post("/api/v1/patterns", content=bomb, headers={"Content-Encoding": "gzip"}), 413)
            refused(
                c.post("/api/v1/events", content=bomb[: len(bomb) // 2], headers={"Content-Encoding": "gzip"}), 400, 413
            )
            refused(c.post("/api/v1/events", content=b"\x1f\x8b\x08garbage", headers={"Content-Encoding": "gzip"}), 400)
            refused(c.post("/api/v1/events", content=b"{}", headers={"Content-Encoding": "br"}), 415)
            peak = max(peak, rss_anon_kib(live.proc.pid))
        small = gzip.compress(json.dumps([{"event_type": "gz", "source": "s"}]).encode())
        assert c.post("/api/v1/events", content=small, headers={"Content-Encoding": "gzip"}).status_code == 202
        after = rss_anon_kib(live.proc.pid)
    growth_mib = (after - before) / 1024
    record(
        trials=rounds * 8, failures=0, worst_loss=f"RssAnon +{growth_mib:.1f} MiB (peak +{(peak - before) / 1024:.1f})"
    )
    assert growth_mib < 32, f"RssAnon grew by {growth_mib:.1f} MiB over {rounds * 8} refused bodies"
    live.alive()


def test_deep_nesting_is_refused_without_recursion_errors(live: LiveService) -> None:
    """JSON nested 10,000 (or 1,000) levels deep, in any endpoint and form, gets 400 or 422, never a 500."""
    deep = b"[" * 10_000 + b"]" * 10_000
    deep_object = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    data_1000 = "[" * 1000 + "1" + "]" * 1000  # within orjson's 1,024 levels, past CelFlow's 254
    data_1000_big = "[" * 1000 + str(2**70) + "]" * 1000
    bodies = [
        deep,
        deep_object,
        b'{"event_type": "t", "source": "s", "data": ' + deep + b"}",
        f'{{"event_type": "t", "source": "s", "data": {data_1000}}}'.encode(),
        f'{{"event_type": "t", "source": "s", "data": {data_1000_big}}}'.encode(),
        b'[{"event_type": "t", "source": "s", "data": ' + b'{"k": ' * 300 + b'"x"' + b"}" * 300 + b"}]",
    ]
    with live.client() as c:
        for body in bodies:
            refused(c.post("/api/v1/events", content=body), 400, 422)
            refused(c.post("/api/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"}), 400, 422)
            refused(c.post("/api/v1/patterns", content=body), 400, 422)
            refused(c.post("/api/v1/system-stats", content=body), 400, 422)
        pattern = f'{{"pattern_type": "p", "confidence": 0.5, "pattern_data": {data_1000}}}'.encode()
        refused(c.post("/api/v1/patterns", content=pattern), 400, 422)
    live.alive()


HOSTILE_JSON = [
    "null", "true", "0", "-1", "1.5", "1e308", "-1e308", "123456789012345678901234567890", "-0", '""', '"x"',
    json.dumps("x" * 300), '"2024-01-01"', '"2024-01-01T00:00:00Z"', "[]", "{}", "[[[]]]", '{"a": {}}',
    '"\\u0000"', '"\\ud83e\\udde0"', '"\\uffff"', '["\\u00e9"]',
]  # fmt: skip


def test_wrong_types_in_every_field_are_422_or_accepted(live: LiveService, record: Record) -> None:
    """Every JSON type in every field of an event, a pattern and a system-stats row: 2xx, 400 or 422 with the field."""
    requests = 0
    with live.client() as c:
        for name in ("event_type", "source", "action", "timestamp", "data", "idempotency_key", "colour", "id"):
            for value in HOSTILE_JSON:
                body = f'{{"event_type": "t", "source": "s", "{name}": {value}}}'.encode()
                response = c.post("/api/v1/events?wait=true", content=body)
                requests += 1
                assert response.status_code in (201, 422), (body, response.text)
                if response.status_code == 422:
                    assert response.json()["error"]["errors"][0]["field"] == name, (body, response.text)
        for value in HOSTILE_JSON:
            for body in (
                value.encode(),
                f"[{value}]".encode(),
                f'{{"pattern_type": {value}, "confidence": 0.5, "pattern_data": {{}}}}'.encode(),
                (
                    f'{{"pattern_type": "p", "confidence": {value}, "pattern_data": {value}, "event_id": {value}}}'
                ).encode(),
                f'{{"timestamp": {value}, "total_events": {value}, "avg_fitness": {value}}}'.encode(),
            ):
                for path in ("/api/v1/events", "/api/v1/patterns", "/api/v1/system-stats"):
                    response = c.post(path, content=body)
                    requests += 1
                    assert response.status_code < 500, (path, body, response.text)
                    if response.status_code >= 400:
                        refused(response, 400, 413, 422)
    record(trials=requests, failures=0, worst_loss="0 server errors")
    live.alive()


QUERY_VALUES = [
    "", "abc", "-1", "0", "1", "1.5", "1e999", "nan", "inf", "-inf", "1e-320", "99999999999999999999999", "²", "٣",
    "\x00", "é", "%", "%%", "_", "[]", "{}", " 1", "1 ", "0x10", "2024-01-01T00:00:00Z", "2024-01-01", "1:2", "nan:1",
    "1e308:99999999999999999999", "desc", "asc", "event_type", "jsonl", "csv", "x" * 2000,
]  # fmt: skip
ENDPOINTS = {
    "/api/v1/events": [
        "start_time",
        "end_time",
        "event_type",
        "source",
        "action",
        "search",
        "order",
        "limit",
        "cursor",
    ],
    "/api/v1/events/count": ["start_time", "end_time", "event_type", "source", "search", "group_by"],
    "/api/v1/events/histogram": ["start_time", "end_time", "event_type", "bucket", "search"],
    "/api/v1/export": ["start_time", "end_time", "event_type", "format", "order", "search", "cursor"],
    "/api/v1/patterns": ["pattern_type", "event_id", "embryo_id", "min_confidence", "limit"],
    "/api/v1/system-stats": ["start_time", "end_time", "limit"],
    "/api/v1/stream/sse": ["event_type", "search", "after"],
}


def test_wrong_types_in_every_query_parameter_are_4xx(live: LiveService, record: Record) -> None:
    """Odd values (NaN, 1e999, huge integers, NUL, unicode digits, 2,000 characters) in every parameter: no 500."""
    requests = 0
    with live.client() as c:
        for path, names in ENDPOINTS.items():
            for name in [*names, "unknown"]:
                for value in QUERY_VALUES:
                    with c.stream("GET", path, params={name: value}) as response:  # a valid stream would not end
                        requests += 1
                        assert response.status_code < 500, (path, name, value, response.read()[:300])
                        if response.status_code >= 400:
                            response.read()
                            refused(response, 400, 414, 422)
        raw = c.get("/api/v1/events?search=%ff%fe%00&event_type=%c3%28&limit=1")  # not UTF-8 once decoded
        assert raw.status_code < 500
        sse = c.get("/api/v1/stream/sse", headers={"Last-Event-ID": "not-an-id"})
        refused(sse, 400)
    for params in ({"search": "x" * 1001}, {"after": "-1"}, {"after": "1e999"}, {"after": "²"}, {"colour": "1"}):
        url = live.url.replace("http://", "ws://") + "/api/v1/stream?" + urllib.parse.urlencode(params)
        with ws_connect(url, additional_headers={"Authorization": f"Bearer {live.token}"}) as ws:
            assert json.loads(ws.recv(timeout=30))["error"]["status"] == 400, params
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        requests += 1
    record(trials=requests, failures=0, worst_loss="0 server errors")
    live.alive()


def test_invalid_utf8_odd_numbers_and_nan_literals_are_400(live: LiveService) -> None:
    """Bodies that are not UTF-8, not JSON, or hold NaN/Infinity or numbers past a double: 400 naming the problem."""
    bodies = [
        b'{"event_type": "\xff\xfe", "source": "s"}',
        b"\xef\xbb\xbf{}",
        b'{"event_type": "t", "source": "s", "data": NaN}',
        b'{"event_type": "t", "source": "s", "data": Infinity}',
        b'{"event_type": "t", "source": "s", "data": -Infinity}',
        b'{"event_type": "t", "source": "s", "timestamp": 1e400}',
        b'{"event_type": "t", "source": "s", "data": {"x": -1e999}}',
        b'{"event_type": "t", "source": "s", "data": "\\ud800"}',
        b'{"event_type": "\\udfff", "source": "s"}',
        b'{"event_type": "t", "source": "s",}',
        b"",
        b"[",
    ]
    with live.client() as c:
        for body in bodies:
            for media in ("application/json", "application/x-ndjson"):
                response = c.post("/api/v1/events", content=body, headers={"Content-Type": media})
                refused(response, 400)
        ndjson = b'{"event_type": "t", "source": "s"}\n\xff\n'
        assert (
            "line 2"
            in refused(c.post("/api/v1/events", content=ndjson, headers={"Content-Type": "application/x-ndjson"}), 400)[
                "message"
            ]
        )
        refused(c.post("/api/v1/events", content=b"{}", headers={"Content-Type": "text/plain"}), 415)
        refused(c.post("/api/v1/events", content=b"{}", headers={"Content-Encoding": "gzip, gzip"}), 415)
    live.alive()


@pytest.mark.xfail(
    strict=True,
    reason="defect: the API reads bodies with orjson, which turns integers past 64 bits into floats "
    "(reading them exactly first needs export_events' CSV/JSON writers to accept them)",
)
def test_integers_past_64_bits_are_stored_exactly_over_http(live: LiveService) -> None:
    """An integer past 64 bits in a posted event is stored and returned exactly, not turned into a float."""
    data = b'{"n": 123456789012345678901234567890, "m": -18446744073709551617}'
    body = b'{"event_type": "bigint", "source": "http", "data": ' + data + b"}"
    with live.client() as c:
        assert c.post("/api/v1/events?wait=true", content=body).status_code == 201
        (event,) = c.get("/api/v1/events", params={"event_type": "bigint"}).json()["events"]
    assert event["data"] == {"n": 123456789012345678901234567890, "m": -18446744073709551617}


def test_a_pattern_with_an_integer_past_64_bits_is_stored(tmp_path: Path) -> None:
    """store_pattern accepts what validation accepts: pattern data holding an integer past 64 bits is stored exactly."""
    with EventDatabase(tmp_path / "events.db") as database:
        database.store_pattern("p", 0.5, {"n": 2**70})
        assert database.get_patterns()[0]["pattern_data"] == {"n": 2**70}
