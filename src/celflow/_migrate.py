"""Copy a history from one database to another (SQLite and PostgreSQL, either way) through the storage contract.

Events keep their timestamp, type, source, action, data and hash, so the target's dedup makes a
migration idempotent: running it again, or after an interruption, copies only what is missing.
Events are read in id (commit) order, a batch at a time (memory stays flat), and each batch is one
transaction of the target. Patterns and system stats are copied when the target does not already
hold an equal row (compared as multisets, so a target that had other data before keeps it: merging
is allowed). Ids are the target's own; a pattern's ``event_id`` is mapped to the target's id of
the same event. ``created_at`` becomes the time of the copy (the contract's insert sets it).
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ._backends import open_store
from ._encoding import Row, _zstd_compressor, encode_data, prepare_event
from ._exceptions import PersistenceError, ValidationError
from ._location import Location, parse_location
from ._storage import EventStore
from ._types import EventQuery, Pattern, StoredEvent, SystemStats

__all__ = ["MigrationReport", "migrate_history"]

#: (events read so far, events in the source when the migration started)
Progress = Callable[[int, int], None]

DEFAULT_BATCH = 5000
MAX_BATCH = 100_000
COMPRESSION_THRESHOLD = 1024  # bytes of JSON above which data is stored zstd-compressed, as the writer does
MAX_REJECTS_LISTED = 1000
_ALL = 2**62  # "no limit" for the contract's selects (PostgreSQL refuses LIMIT -1)
_STATS_PAGE = 10_000  # system stats compared a window of this many rows at a time


@dataclass
class MigrationReport:
    """What a migration did: counts per kind of row, copied and already in the target."""

    source: str
    target: str
    events_read: int = 0
    events_copied: int = 0
    events_already_there: int = 0
    events_rejected: int = 0
    patterns_copied: int = 0
    patterns_already_there: int = 0
    patterns_unlinked: int = 0
    system_stats_copied: int = 0
    system_stats_already_there: int = 0
    target_events_before: int = 0
    target_events_after: int = 0
    seconds: float = 0.0
    #: (source id, why the target refused it), the first :data:`MAX_REJECTS_LISTED` of them
    rejects: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """As a plain dict (``rejects`` as ``{"id", "message"}`` objects)."""
        out = {k: v for k, v in self.__dict__.items() if k != "rejects"}
        out["seconds"] = round(self.seconds, 3)
        out["rejects"] = [{"id": i, "message": m} for i, m in self.rejects]
        return out


def migrate_history(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    batch: int = DEFAULT_BATCH,
    progress: Progress | None = None,
) -> MigrationReport:
    """Copy every event, pattern and system stats row of ``source`` into ``target``; return the counts.

    Locations are paths, ``sqlite:///path`` or ``postgresql://...`` URLs. The source is opened
    read-only (``celflow run`` may keep writing it: a later run copies what came meanwhile); the
    target is created if needed and may already hold data.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise ValidationError(f"batch must be a whole number from 1 to {MAX_BATCH:,}, got {batch!r}", field="batch")
    src_location, dst_location = parse_location(source), parse_location(target)
    if _same_database(src_location, dst_location):
        raise ValidationError(
            f"the source and the target are the same database ({dst_location.shown}); give another target",
            field="target",
        )
    started = time.perf_counter()
    src = open_store(src_location, readonly=True)
    try:
        dst = open_store(dst_location, readonly=False)
        try:
            report = MigrationReport(source=src.path, target=dst.path)
            report.target_events_before = dst.count_events(EventQuery())
            _copy_events(src, dst, report, batch, progress)
            _copy_patterns(src, dst, report)
            _copy_system_stats(src, dst, report)
            report.target_events_after = dst.count_events(EventQuery())
        finally:
            dst.close()
    finally:
        src.close()
    report.seconds = time.perf_counter() - started
    return report


def _same_database(a: Location, b: Location) -> bool:
    """Whether two locations name the same database (a best effort: the same file, or server, port, database
    and schema)."""
    if a.backend != b.backend:
        return False
    if a.is_sqlite:
        pa, pb = a.path, b.path
        if os.path.exists(pa) and os.path.exists(pb):
            return os.path.samefile(pa, pb)
        return os.path.realpath(pa) == os.path.realpath(pb)
    return _pg_identity(a) == _pg_identity(b)


def _pg_identity(location: Location) -> tuple[str, int, str, str]:
    schema = location.schema
    parts = urlsplit(location.target)
    host = (parts.hostname or "localhost").lower()
    try:
        port = parts.port or 5432
    except ValueError:  # a port that is not a number: opening the store reports it
        port = -1
    return host, port, parts.path.lstrip("/"), schema or "public"


# -- events ------------------------------------------------------------------------------------


def _row(event: StoredEvent) -> Row:
    """The row that stores ``event`` again: its data re-encoded canonically, its stored hash kept."""
    encoded = encode_data(event.data)
    digest = event.hash if event.hash is not None else _content_hash(event)
    if len(encoded) > COMPRESSION_THRESHOLD:
        packed = _zstd_compressor(3).compress(encoded)
        if len(packed) < len(encoded):
            return Row(float(event.timestamp), event.event_type, event.action, event.source, None, packed, digest)
    return Row(float(event.timestamp), event.event_type, event.action, event.source, encoded.decode(), None, digest)


def _content_hash(event: StoredEvent) -> str:
    """The hash CelFlow gives this content (for a row stored without one, e.g. inserted by hand)."""
    fields = {"event_type": event.event_type, "source": event.source, "action": event.action}
    row = prepare_event({**fields, "timestamp": float(event.timestamp), "data": event.data})
    assert row is not None  # no privacy rules here: nothing is dropped
    return row.hash


def _copy_events(
    src: EventStore, dst: EventStore, report: MigrationReport, batch: int, progress: Progress | None
) -> None:
    total = src.count_events(EventQuery())
    until = src.last_id()  # what is in the source now; events committed meanwhile wait for the next run
    after = 0
    while True:
        page = src.select_after(after, EventQuery(limit=batch), until_id=until)
        if not page:
            break
        _insert(dst, page, report)
        report.events_read += len(page)
        after = page[-1].id
        if progress is not None:
            progress(report.events_read, max(total, report.events_read))


def _insert(dst: EventStore, page: list[StoredEvent], report: MigrationReport) -> None:
    """One transaction for the page; if the target refuses it for a row's content, row by row."""
    rows = [_row(e) for e in page]
    try:
        result = dst.insert_events(rows, want_ids=False)
    except (ValidationError, PersistenceError) as exc:
        if type(exc) not in (ValidationError, PersistenceError):  # the engine, a lock, a closed store: stop
            raise
        refused: list[tuple[int, str]] = []
        for event, row in zip(page, rows, strict=True):
            try:
                one = dst.insert_events([row], want_ids=False)
            except (ValidationError, PersistenceError) as row_exc:
                if type(row_exc) not in (ValidationError, PersistenceError):
                    raise
                refused.append((event.id, str(row_exc)))
                continue
            report.events_copied += one.inserted
            report.events_already_there += one.duplicates
        if len(refused) == len(page) and len(page) > 1:
            raise exc  # every row refused: the target's problem, not the rows'
        report.events_rejected += len(refused)
        report.rejects.extend(refused[: max(0, MAX_REJECTS_LISTED - len(report.rejects))])
        return
    report.events_copied += result.inserted
    report.events_already_there += result.duplicates


def _target_id(src: EventStore, dst: EventStore, event_id: int) -> int | None:
    """The target's id of the source's event ``event_id`` (found by timestamp and hash), or None."""
    found = src.select_after(event_id - 1, EventQuery(limit=1), until_id=event_id)
    if not found:
        return None
    event = found[0]
    digest = event.hash if event.hash is not None else _content_hash(event)
    ts = float(event.timestamp)
    candidates, _ = dst.select_events(
        EventQuery(start_time=ts, end_time=math.nextafter(ts, math.inf), order="asc", limit=None)
    )
    return next((c.id for c in candidates if c.hash == digest), None)


# -- patterns and system stats -------------------------------------------------------------------


def _pattern_key(p: Pattern, event_id: int | None) -> Hashable:
    data = encode_data(p.pattern_data)  # canonical JSON, integers past 64 bits too
    return (p.pattern_type, p.confidence, data, p.embryo_id, event_id)


def _copy_patterns(src: EventStore, dst: EventStore, report: MigrationReport) -> None:
    """Patterns of the source the target lacks (the contract pages patterns by limit only: all are read)."""
    patterns = src.select_patterns(limit=_ALL)
    if not patterns:
        return
    ids: dict[int, int | None] = {}
    for p in patterns:
        if p.event_id is not None and p.event_id not in ids:
            ids[p.event_id] = _target_id(src, dst, p.event_id)
    have = Counter(_pattern_key(p, p.event_id) for p in dst.select_patterns(limit=_ALL))
    for p in reversed(patterns):  # oldest first: the target's ids keep their order
        event_id = ids[p.event_id] if p.event_id is not None else None
        if p.event_id is not None and event_id is None:
            report.patterns_unlinked += 1  # its event is gone (or was refused): stored without the link
        key = _pattern_key(p, event_id)
        if have[key] > 0:
            have[key] -= 1
            report.patterns_already_there += 1
            continue
        dst.insert_pattern(p.pattern_type, p.confidence, p.pattern_data, event_id=event_id, embryo_id=p.embryo_id)
        report.patterns_copied += 1


def _stats_key(s: SystemStats) -> Hashable:
    return (s.timestamp, s.total_events, s.events_per_second, s.active_embryos, s.avg_fitness, s.storage_mb)


def _copy_system_stats(src: EventStore, dst: EventStore, report: MigrationReport, *, page: int = _STATS_PAGE) -> None:
    """System stats the target lacks, compared one window of about ``page`` rows at a time, newest first
    (the contract reads them newest first, by time range)."""
    end: float | None = None
    while True:
        rows = src.select_system_stats(end_time=end, limit=page)
        if not rows:
            return
        start: float | None = None
        if len(rows) == page:  # more below: this window is (oldest, end); rows at ``oldest`` go next
            oldest = rows[-1].timestamp
            start = math.nextafter(oldest, math.inf)
            rows = [r for r in rows if r.timestamp >= start]
            if not rows:  # a whole page at one timestamp: that timestamp is the window
                start = oldest
                rows = src.select_system_stats(start_time=oldest, end_time=end, limit=_ALL)
        have = Counter(_stats_key(s) for s in dst.select_system_stats(start_time=start, end_time=end, limit=_ALL))
        for s in reversed(rows):
            key = _stats_key(s)
            if have[key] > 0:
                have[key] -= 1
                report.system_stats_already_there += 1
                continue
            dst.insert_system_stats(
                {
                    "timestamp": s.timestamp,
                    "total_events": s.total_events,
                    "events_per_second": s.events_per_second,
                    "active_embryos": s.active_embryos,
                    "avg_fitness": s.avg_fitness,
                    "storage_mb": s.storage_mb,
                }
            )
            report.system_stats_copied += 1
        if start is None:
            return
        end = start
