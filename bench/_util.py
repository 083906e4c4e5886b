"""Small helpers of the benchmarks: anonymous memory, database inspection, the results table."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

__all__ = [
    "DistinctCounter",
    "MemorySampler",
    "database_bytes",
    "inspect_database",
    "percentile",
    "remove_database",
    "rss_anon_mib",
    "table",
]


def rss_anon_mib() -> float:
    """This process's anonymous resident memory (``RssAnon``), in MiB.

    Not ``VmRSS``: CelFlow maps the database file (256 MiB ``mmap_size``), and mapped pages count
    in RSS although they are only page cache.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status (this benchmark needs Linux)")


class MemorySampler:
    """Samples :func:`rss_anon_mib` every ``interval`` seconds in a thread: before, peak, after."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.before = self.peak = self.after = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_anon_mib())

    def rebase(self) -> None:
        """Make now the idle baseline (e.g. once the manager runs and the first chunk is built)."""
        self.before = self.peak = rss_anon_mib()

    def __enter__(self) -> MemorySampler:
        self.before = self.peak = rss_anon_mib()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.after = rss_anon_mib()
        self.peak = max(self.peak, self.after)


def inspect_database(path: str) -> tuple[int, int]:
    """Checkpoint the WAL into the file (TRUNCATE) and return (events stored, file bytes)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()
    return stored, database_bytes(path)


def database_bytes(path: str) -> int:
    """The database file and its WAL, in bytes, as they are now (no checkpoint)."""
    wal = path + "-wal"
    return os.path.getsize(path) + (os.path.getsize(wal) if os.path.exists(wal) else 0)


class DistinctCounter:
    """Distinct events by content (a digest of canonical JSON, independent of CelFlow's hashing).

    Also sums the size of the distinct events as JSON Lines (``json.dumps`` and a newline). The
    workload repeats only recent events, so remembering the last ``window`` digests is enough.
    """

    def __init__(self, window: int = 10_000) -> None:
        self.window = window
        self.distinct = self.duplicates = self.jsonl_bytes = 0
        self._seen: set[bytes] = set()
        self._order: collections.deque[bytes] = collections.deque()

    def add(self, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            digest = hashlib.blake2b(orjson.dumps(event, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()
            if digest in self._seen:
                self.duplicates += 1
                continue
            self._seen.add(digest)
            self._order.append(digest)
            if len(self._order) > self.window:
                self._seen.discard(self._order.popleft())
            self.distinct += 1
            self.jsonl_bytes += len(json.dumps(event).encode()) + 1


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def remove_database(path: str) -> None:
    """Delete a database and its companions (WAL, shared memory, writer lock)."""
    for suffix in ("", "-wal", "-shm", ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join([first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))])

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])
