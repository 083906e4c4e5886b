"""Query latency on the big database, through the public API of a read-only ``EventDatabase``.

"Now" is the newest stored event's timestamp. Each query runs with fresh random arguments (a seeded RNG) until it
has ``samples`` timings or ``budget`` seconds are spent (at least :data:`MIN_SAMPLES`); only the
call is timed, not the preparation of its arguments (e.g. fetching a cursor).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from _util import percentile
from celflow import EventDatabase
from workload import EVENT_TYPES, RARE_WORD, SOURCES, SPAN_DAYS

MIN_SAMPLES = 5
WARMUP = 2
DAY = 86400.0

#: key -> label
QUERIES = {
    "q_newest": "query: newest 100 of the last hour",
    "q_type": "query: 100 of one type in a 1-day range",
    "q_source": "query: 100 of one source in a 1-day range",
    "q_cursor": "query: next 100 from a cursor deep in history",
    "count_by": 'count_by("event_type", last 24 h)',
    "histogram": "histogram(60 s, last hour)",
    "search_common": 'get_events(search="chrome", limit=10)',
    "search_rare": f'get_events(search="{RARE_WORD}", limit=10)',
}


def _cases(db: EventDatabase, now: float, rng: random.Random) -> dict[str, Callable[[], Callable[[], Any]]]:
    """key -> a preparation that returns the call to time."""
    span = SPAN_DAYS * DAY

    def day_range() -> tuple[float, float]:
        start = now - span + rng.random() * (span - DAY)
        return start, start + DAY

    def by_type() -> Callable[[], Any]:
        start, end = day_range()
        kind = rng.choice(list(EVENT_TYPES))
        return lambda: db.query(start_time=start, end_time=end, event_type=kind, limit=100)

    def by_source() -> Callable[[], Any]:
        start, end = day_range()
        source = rng.choice(SOURCES)
        return lambda: db.query(start_time=start, end_time=end, source=source, limit=100)

    def deep_cursor() -> Callable[[], Any]:
        # a page that ends in the oldest 20% of the history, as paging back from now would reach
        cursor = db.query(end_time=now - span * rng.uniform(0.8, 0.98), limit=100).next_cursor
        return lambda: db.query(limit=100, cursor=cursor)

    return {
        "q_newest": lambda: lambda: db.query(start_time=now - 3600, limit=100),
        "q_type": by_type,
        "q_source": by_source,
        "q_cursor": deep_cursor,
        "count_by": lambda: lambda: db.count_by("event_type", start_time=now - DAY),
        "histogram": lambda: lambda: db.histogram(60, start_time=now - 3600),
        "search_common": lambda: lambda: db.get_events(search="chrome", limit=10),
        "search_rare": lambda: lambda: db.get_events(search=RARE_WORD, limit=10),
    }


def measure_queries(path: str, *, samples: int, budget: float, seed: int) -> dict[str, dict[str, float]]:
    """key -> {p50_ms, p99_ms, max_ms, n, rows} for every query of :data:`QUERIES`."""
    rng = random.Random(seed)
    results = {}
    with EventDatabase(path, readonly=True) as db:
        now = db.query(limit=1).events[0].timestamp
        for key, prepare in _cases(db, now, rng).items():
            for _ in range(WARMUP):
                warm = time.perf_counter()
                prepare()()
                if time.perf_counter() - warm > 1.0:  # a slow query: its cache is as warm as it gets
                    break
            timings: list[float] = []
            result: Any = None
            deadline = time.perf_counter() + budget
            while len(timings) < samples and (len(timings) < MIN_SAMPLES or time.perf_counter() < deadline):
                call = prepare()
                started = time.perf_counter()
                result = call()
                timings.append(time.perf_counter() - started)
            ms = [t * 1000 for t in timings]
            results[key] = {
                "p50_ms": statistics.median(ms),
                "p99_ms": percentile(ms, 99),
                "max_ms": max(ms),
                "n": len(ms),
                "rows": len(getattr(result, "events", result)),  # of the last call: a sanity check
            }
    return results
