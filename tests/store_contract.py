"""The storage contract's tests: every backend's test module subclasses :class:`StoreContract`."""

from __future__ import annotations

import random
import time
from typing import Any

import msgspec
import pytest

from celflow import DatabaseClosedError, EventQuery, EventStore, QueryTimeoutError, ValidationError
from celflow._encoding import Row, data_text, prepare_batch

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


def ascii_fold(text: str) -> str:
    """Lower-case ASCII letters only: how search ignores case (SQLite's LIKE; ``É`` is not ``é``)."""
    return text.translate({c: c + 32 for c in range(ord("A"), ord("Z") + 1)})


def store_texts(store: EventStore, events: list[dict[str, Any]]) -> dict[int, list[str]]:
    """Store ``events`` (one a second from T0); each id -> the texts search reads, as SQLite keeps them."""
    batch = prepare_batch([{**e, "timestamp": T0 + i} for i, e in enumerate(events)])
    ids = store.insert_events(batch).ids or []
    return {
        event_id: [row.event_type, row.source, row.action or "", data_text(row.data_json, row.data_compressed)]
        for event_id, row in zip(ids, batch, strict=True)
    }


def expected_ids(texts: dict[int, list[str]], needle: str) -> set[int]:
    """The oracle: a literal substring of one of the texts, ASCII letters folded on both sides."""
    folded = ascii_fold(needle)
    return {i for i, fields in texts.items() if any(folded in ascii_fold(f) for f in fields)}


def found(store: EventStore, needle: str, **filters: Any) -> set[int]:
    """The ids search finds (after checking that count_events agrees)."""
    events, _ = store.select_events(EventQuery(search=needle, limit=None, **filters))
    assert store.count_events(EventQuery(search=needle, **filters)) == len(events), repr(needle)
    return {e.id for e in events}


#: Events whose texts hold what search must take literally: case beyond ASCII, wildcards, escapes,
#: JSON structure, data SQLite compresses and data jsonb cannot hold.
SEARCH_EVENTS: list[dict[str, Any]] = [
    {"event_type": "web", "source": "chrome", "action": "visit", "data": {"url": "https://Chrome.example/100%_done"}},
    {"event_type": "web", "source": "firefox", "data": {"url": "firefox 100 percent", "q": "a_b", "n": 1}},
    {"event_type": "file_op", "source": "back\\slash", "action": "it's", "data": {"path": "C:\\Temp\\x.txt"}},
    {"event_type": 'quote"d', "source": "s", "data": {"text": 'say "hi" AND OR NOT * ( ) : -', "z": [1, 2]}},
    {"event_type": "Émile", "source": "İstanbul", "action": "ß", "data": {"names": ["ÉMILE", "émile", "straße"]}},
    {"event_type": "émile", "source": "istanbul", "action": "SS", "data": {"word": "kapı", "other": "KAPI"}},
    {"event_type": "two\nlines", "source": "tab\there", "data": {"text": "line one\nline two\t\u2028"}},
    {"event_type": "cjk", "source": "記憶", "data": {"text": "日本語のテキスト", "emoji": "🧠💾"}},
    {"event_type": "nums", "source": "s", "data": {"big": 1e300, "neg_zero": -0.0, "tiny": 2.5e-300, "x": 2**70}},
    {"event_type": "nul", "source": "s", "data": {"nul": "a\x00b", "ctl": "\x01\x1f\x7f"}},
    {"event_type": "big", "source": "capture", "data": {"text": "needle " + "Hay_%\\ " * 400}},
    {"event_type": "big", "source": "capture", "data": {"text": "ÉCLAIR " + "ü€ " * 400, "tail": "Z_z%"}},
    {"event_type": "plain", "source": "s", "action": None, "data": None},
    {"event_type": "plain", "source": "s", "data": [1, 2.5, True, None, "x%y", {"b": 1, "aa": {}}]},
]
TOKENS = ["%", "_", "\\", "\\%", "%_", "'", '"', "*", ":", ",", '":', '","', ": ", ", ", "{", "}", "[", "]",
          "\x00", "a\x00", "é", "É", "ß", "SS", "İ", "ı", "I", "i", "🧠", "\\u0000", "\\u2028", "\u2028", '\\"',
          "\n", "\t", "\\n", "1e300", "-0.0", "null", "true", "E", "e"]  # fmt: skip


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

    def test_search_folds_ascii_letters_only(self, store: EventStore) -> None:
        """É is not é, ß is not ss, İ and ı are not i; ASCII letters match in either case, in every field."""
        texts = store_texts(
            store,
            [
                {"event_type": "t", "source": "s", "data": {"name": "Émile"}},
                {"event_type": "t", "source": "s", "data": {"name": "émile"}},
                {"event_type": "t", "source": "s", "data": {"street": "Straße"}},
                {"event_type": "t", "source": "s", "data": {"street": "STRASSE"}},
                {"event_type": "t", "source": "İstanbul", "data": {}},
                {"event_type": "t", "source": "istanbul", "data": {}},
                {"event_type": "t", "source": "s", "data": {"word": "kapı"}},
                {"event_type": "KAPI", "source": "s", "action": "Émile", "data": {}},
            ],
        )
        ids = list(texts)
        for needle, want in [
            ("émile", {1}),
            ("ÉMILE", {0, 7}),
            ("Émile", {0, 7}),
            ("mile", {0, 1, 7}),
            ("MiLe", {0, 1, 7}),
            ("ß", {2}),
            ("straße", {2}),
            ("ss", {3}),
            ("STRASSE", {3}),
            ("İstanbul", {4}),
            ("istanbul", {5}),
            ("STANBUL", {4, 5}),
            ("kapı", {6}),
            ("ı", {6}),
            ("kapi", {7}),
            ("KaPi", {7}),
        ]:
            assert found(store, needle) == {ids[k] for k in want} == expected_ids(texts, needle), needle

    def test_search_wildcards_and_backslashes_are_literal(self, store: EventStore) -> None:
        """%, _ and \\ are plain characters; search reads the JSON text, where a backslash is written twice."""
        texts = store_texts(
            store,
            [
                {"event_type": "t", "source": "back\\slash", "data": {}},
                {"event_type": "t", "source": "s", "data": {"path": "C:\\Temp"}},  # JSON text: "C:\\\\Temp"
                {"event_type": "t", "source": "s", "data": {"p": "100%"}},
                {"event_type": "t", "source": "s", "data": {"p": "a_b"}},
                {"event_type": "t", "source": "s", "data": {"p": "aXb"}},
            ],
        )
        ids = list(texts)
        for needle, want in [
            ("\\", {0, 1}),
            ("k\\s", {0}),
            ("C:\\\\T", {1}),
            ("C:\\T", set()),
            ("%", {2}),
            ("0%", {2}),
            ("1%", set()),
            ("a_b", {3}),
            ("_", {3}),
            ("a%b", set()),
        ]:
            assert found(store, needle) == {ids[k] for k in want} == expected_ids(texts, needle), needle

    def test_search_reads_data_in_every_stored_form(self, store: EventStore) -> None:
        """Data over the compression threshold, and data jsonb cannot hold (1e300, -0.0, NUL), is searched."""
        texts = store_texts(
            store,
            [
                {"event_type": "t", "source": "s", "data": {"text": "Needle " + "hay " * 2000}},  # compressed
                {"event_type": "t", "source": "s", "data": {"big": 1e300, "neg_zero": -0.0}},
                {"event_type": "t", "source": "s", "data": {"nul": "a\x00b"}},
                {"event_type": "t", "source": "s", "data": {"plain": 1}},
            ],
        )
        ids = list(texts)
        for needle, want in [
            ("NEEDLE", {0}),
            ("hay hay", {0}),
            ("1E+300", {1}),
            ('"neg_zero":-0.0', {1}),
            ("\\u0000", {2}),  # the JSON escape, as text
            ("a\x00b", set()),  # a NUL: JSON text never holds one raw
            ("\x00", set()),
        ]:
            assert found(store, needle) == {ids[k] for k in want} == expected_ids(texts, needle), needle
        for event_id, data in ((ids[1], {"big": 1e300, "neg_zero": -0.0}), (ids[2], {"nul": "a\x00b"})):
            (event,) = store.select_after(event_id - 1, EventQuery(limit=1))
            assert event.data == data and repr(event.data) == repr(data)

    def test_search_reads_type_source_action_and_the_json_text(self, store: EventStore) -> None:
        """Each field is searched on its own (never across two) and the data as its compact JSON text."""
        texts = store_texts(
            store,
            [
                {"event_type": "alpha_type", "source": "beta_source", "action": "gamma_act", "data": {"delta": 1}},
                {"event_type": "two\nlines", "source": "src2", "data": {"b": 2, "aa": [True, None]}},
                {"event_type": "other", "source": "s", "data": {}},
            ],
        )
        ids = list(texts)
        for needle, want in [
            ("ALPHA", {0}),
            ("beta_s", {0}),
            ("GAMMA_act", {0}),
            ("_type", {0}),
            ('{"delta":1}', {0}),
            ('"delta": 1', set()),  # jsonb's spacing is not the stored text
            ('{"aa":[true,null],"b":2}', {1}),  # keys sorted, compact
            ("type\nbeta", set()),  # across two fields
            ("alpha_typebeta", set()),
            ("two\nlines", {1}),
            ("lines\nsrc2", set()),
            ("o\nl", {1}),
        ]:
            assert found(store, needle) == {ids[k] for k in want} == expected_ids(texts, needle), needle

    @pytest.mark.parametrize("order", ["desc", "asc"])
    def test_search_with_filters_pages_and_select_after(self, store: EventStore, order: str) -> None:
        """Search combines with time, type and source filters, pages with the cursor and reads on by id."""
        store.insert_events(rows(120, step=0.5))
        # "number 1" is in 1, 10-19 and 100-119; app_focus is i % 3 == 1; window is i % 4 == 1
        want = [i for i in range(120) if f"number {i}".startswith("number 1") and i % 3 == 1 and i >= 10]
        query = EventQuery(search="NUMBER 1", event_type="app_focus", start_time=T0 + 5, limit=3, order=order)  # type: ignore[arg-type]
        seen: list[float] = []
        cursor = None
        while True:
            page, cursor = store.select_events(msgspec.structs.replace(query, cursor=cursor))
            seen.extend(e.timestamp for e in page)
            if cursor is None:
                break
        expected = [T0 + i * 0.5 for i in want]
        assert seen == (expected if order == "asc" else expected[::-1])
        assert store.count_events(msgspec.structs.replace(query, limit=None)) == len(want)
        both = EventQuery(search="number 1", event_type="app_focus", source="window", start_time=T0 + 5, limit=None)
        assert {e.timestamp for e in store.select_events(both)[0]} == {T0 + i * 0.5 for i in want if i % 4 == 1}
        after = store.select_after(0, EventQuery(search="NUMBER 11", limit=None))
        assert [e.timestamp for e in after] == [T0 + i * 0.5 for i in (11, *range(110, 120))]

    def test_search_agrees_with_a_python_oracle(self, store: EventStore) -> None:
        """Seeded random needles (substrings, case changes, wildcards, escapes, Unicode) match as the oracle says."""
        texts = store_texts(store, SEARCH_EVENTS)
        rng = random.Random(20240501)
        pieces = [f for fields in texts.values() for f in fields if f]
        alphabet = "%_\\'\":,{}[]aAzZéÉıİß \n\t\x00"
        for _ in range(400):
            kind = rng.randrange(6)
            if kind == 0:
                needle = rng.choice(TOKENS)
            elif kind == 5:
                needle = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
            else:
                text = rng.choice(pieces)
                start = rng.randrange(len(text))
                needle = text[start : start + rng.randint(1, 14)]
                if kind == 2:
                    needle = "".join(c.swapcase() if c.isascii() and rng.random() < 0.5 else c for c in needle)
                elif kind == 3:
                    needle = needle.upper() if rng.random() < 0.5 else needle.lower()  # Unicode case too
                elif kind == 4:
                    needle += rng.choice(TOKENS)
            assert found(store, needle) == expected_ids(texts, needle), repr(needle)

    def test_search_length_and_text_are_checked(self, store: EventStore) -> None:
        """A search past 1,000 characters, or with a lone surrogate, is a ValidationError naming search."""
        texts = store_texts(store, [{"event_type": "t", "source": "s", "data": {"text": "%_" * 600}}])
        for needle in ("x" * 1001, "ab\ud800"):
            with pytest.raises(ValidationError) as refused:
                store.select_events(EventQuery(search=needle))
            assert refused.value.field == "search"
            with pytest.raises(ValidationError):
                store.count_events(EventQuery(search=needle))
        assert found(store, "%_" * 500) == expected_ids(texts, "%_" * 500) == set(texts)  # at the limit
        assert found(store, "%_" * 499 + "\\") == set()

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
