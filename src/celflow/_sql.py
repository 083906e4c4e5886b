"""The reads both SQL backends share, written once: filters, pages, counts from the per-minute
counters, patterns and system stats.

A backend subclasses :class:`SQLReads` and states only where its dialect differs (the parameter
marker, column lists, the time-bucket expression, the page cursor's clause, search) and how it
runs a read (``_read``). No user text is ever put into SQL: values go in as parameters, names
(columns, groups) come from fixed lists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec

from ._exceptions import ValidationError
from ._types import EventQuery, Pattern, StoredEvent, SystemStats

__all__ = [
    "COUNTED_COLUMNS",
    "GROUP_COLUMNS",
    "SQLReads",
    "check_int64",
    "counter_for",
    "decode_cursor",
    "encode_cursor",
    "like_pattern",
]

#: The columns the per-minute counters (``event_counts``) count by, in every backend.
COUNTED_COLUMNS = ("event_type", "source")
#: The columns counts may be grouped by.
GROUP_COLUMNS = ("event_type", "source", "action")
_INT64 = 2**63


def counter_for(query: EventQuery, group: str | None) -> tuple[str, str | None] | None:
    """``(kind, name)`` when the per-minute counters can answer ``query`` (grouped by ``group``); else None."""
    if query.search is not None or query.action is not None:
        return None
    if query.event_type is not None and query.source is not None:
        return None
    if query.event_type is not None:
        kind, name = "event_type", query.event_type
    elif query.source is not None:
        kind, name = "source", query.source
    else:
        kind, name = (group or "event_type"), None
    if kind not in COUNTED_COLUMNS or (group is not None and group != kind):
        return None
    return kind, name


def encode_cursor(timestamp: float, event_id: int) -> str:
    """An opaque page cursor: the last row's (timestamp, id)."""
    return f"{timestamp!r}:{event_id}"


def decode_cursor(cursor: str) -> tuple[float, int]:
    """Parse a cursor made by :func:`encode_cursor` (:class:`ValidationError` naming ``cursor`` otherwise)."""
    try:
        ts_text, id_text = cursor.rsplit(":", 1)
        ts, event_id = float(ts_text), int(id_text)
    except (ValueError, AttributeError):
        raise ValidationError(
            f"cursor {str(cursor)[:40]!r} is not a cursor returned by a previous page", field="cursor"
        ) from None
    if not math.isfinite(ts) or not 0 <= event_id < _INT64:
        raise ValidationError(f"cursor {cursor[:40]!r} is not a cursor returned by a previous page", field="cursor")
    return ts, event_id


def like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` literally anywhere (escape character: backslash)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def check_int64(value: int | None, field: str) -> None:
    """Refuse an id past the 64-bit integers both databases store (:class:`ValidationError`)."""
    if value is not None and not -_INT64 <= value < _INT64:
        raise ValidationError(f"{field} {value} is too large: ids are 64-bit integers", field=field)


class SQLReads:
    """The shared reads of a SQL backend; subclasses fill in the dialect."""

    #: The parameter marker: ``?`` (sqlite3) or ``%s`` (psycopg).
    P: ClassVar[str]
    #: The columns of :meth:`_row_to_event`, in its order.
    EVENT_COLUMNS: ClassVar[str]
    PATTERN_COLUMNS: ClassVar[str]
    SYSTEM_STATS_COLUMNS: ClassVar[str]

    # -- the dialect -----------------------------------------------------------------------------

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run a read and return its rows (errors translated into CelFlow's)."""
        raise NotImplementedError

    @staticmethod
    def _row_to_event(row: Sequence[Any]) -> StoredEvent:
        raise NotImplementedError

    def _search_clause(self, needle: str) -> tuple[str, list[Any]]:
        """The condition of a literal search for ``needle``, and its parameters."""
        raise NotImplementedError

    def _bucket(self, expression: str) -> str:
        """The whole number of buckets in ``expression`` (the bucket's width is one parameter)."""
        raise NotImplementedError

    def _cursor_clause(self, op: str, ts: float, event_id: int) -> tuple[str, list[Any]]:
        """Rows after ``(ts, event_id)`` in the ``op`` direction (``<``: newest first)."""
        raise NotImplementedError

    # -- events ----------------------------------------------------------------------------------

    def _where(self, query: EventQuery) -> tuple[str, list[Any]]:
        p = self.P
        clauses: list[str] = []
        params: list[Any] = []
        if query.start_time is not None:
            clauses.append(f"timestamp >= {p}")
            params.append(query.start_time)
        if query.end_time is not None:
            clauses.append(f"timestamp < {p}")
            params.append(query.end_time)
        for column in GROUP_COLUMNS:
            value = getattr(query, column)
            if value is not None:
                clauses.append(f"{column} = {p}")
                params.append(value)
        if query.search:
            clause, values = self._search_clause(query.search)
            clauses.append(clause)
            params.extend(values)
        if query.cursor is not None:
            ts, event_id = decode_cursor(query.cursor)
            clause, values = self._cursor_clause("<" if query.order == "desc" else ">", ts, event_id)
            clauses.append(clause)
            params.extend(values)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _select_sql(self, query: EventQuery) -> tuple[str, list[Any]]:
        """The statement of :meth:`select_events` and its parameters (tests EXPLAIN it)."""
        where, params = self._where(query)
        direction = "DESC" if query.order == "desc" else "ASC"
        sql = f"SELECT {self.EVENT_COLUMNS} FROM events{where} ORDER BY timestamp {direction}, id {direction}"
        if query.limit is not None:
            sql += f" LIMIT {self.P}"
            params.append(query.limit)
        return sql, params

    def select_events(self, query: EventQuery) -> tuple[list[StoredEvent], str | None]:
        """Events matching ``query`` in time order, and the cursor of the next page (or None)."""
        to_event = self._row_to_event
        events = [to_event(r) for r in self._read(*self._select_sql(query))]
        cursor = None
        if query.limit is not None and events and len(events) == query.limit:
            cursor = encode_cursor(events[-1].timestamp, events[-1].id)
        return events, cursor

    def select_after(self, after_id: int, query: EventQuery, *, until_id: int | None = None) -> list[StoredEvent]:
        """Events with ``after_id < id <= until_id`` matching ``query``, in id (commit) order.

        Ids grow with every commit, so reading on from the last id seen misses nothing and
        repeats nothing. The query's order and cursor are ignored.
        """
        check_int64(after_id, "after")
        check_int64(until_id, "until")
        p = self.P
        where, params = self._where(msgspec.structs.replace(query, cursor=None))
        where = (where + " AND" if where else " WHERE") + f" id > {p}"
        params.append(after_id)
        if until_id is not None:
            where += f" AND id <= {p}"
            params.append(until_id)
        sql = f"SELECT {self.EVENT_COLUMNS} FROM events{where} ORDER BY id"
        if query.limit is not None:
            sql += f" LIMIT {p}"
            params.append(query.limit)
        to_event = self._row_to_event
        return [to_event(r) for r in self._read(sql, params)]

    # -- counts ----------------------------------------------------------------------------------

    def count_events(self, query: EventQuery) -> int:
        """How many events match ``query`` (its order, limit and cursor are ignored)."""
        counter = counter_for(query, None)
        if counter is not None:
            return sum(self._counted(query, *counter, group="all").values())
        where, params = self._where(msgspec.structs.replace(query, cursor=None))
        return int(self._read(f"SELECT count(*) FROM events{where}", params)[0][0])

    def count_by(self, field: str, query: EventQuery) -> dict[str, int]:
        """Counts of matching events per ``event_type``, ``source`` or ``action``, largest first."""
        if field not in GROUP_COLUMNS:
            raise ValidationError(f"cannot group by {field!r}; use one of {', '.join(GROUP_COLUMNS)}", field="group_by")
        column = field  # one of the fixed names above: safe to put in the SQL
        counter = counter_for(query, column)
        if counter is not None:
            counts = self._counted(query, *counter, group="name")
            return dict(sorted(((k, n) for k, n in counts.items() if n > 0), key=lambda kv: -kv[1]))
        where, params = self._where(msgspec.structs.replace(query, cursor=None))
        rows = self._read(f"SELECT {column}, count(*) AS n FROM events{where} GROUP BY 1 ORDER BY n DESC", params)
        return {(key if key is not None else ""): int(n) for key, n in rows}

    def histogram(self, bucket: float, query: EventQuery) -> list[tuple[float, int]]:
        """Counts of matching events per time bucket of ``bucket`` seconds, oldest first (empty buckets left out)."""
        counter = counter_for(query, None) if bucket % 60 == 0 else None
        if counter is not None:
            counts = self._counted(query, *counter, group="bucket", bucket=bucket)
            return [(b * bucket, n) for b, n in sorted(counts.items()) if n > 0]
        where, params = self._where(msgspec.structs.replace(query, cursor=None))
        rows = self._read(
            f"SELECT {self._bucket('timestamp')} AS b, count(*) FROM events{where} GROUP BY 1 ORDER BY 1",
            [bucket, *params],
        )
        return [(b * bucket, int(n)) for b, n in rows]

    def _counted(
        self, query: EventQuery, kind: str, name: str | None, *, group: str, bucket: float = 60.0
    ) -> dict[Any, int]:
        """Counts from whole minutes in the counters, plus the partial minutes at each end from events."""
        p = self.P
        start, end = query.start_time, query.end_time
        m_lo = None if start is None else math.ceil(start / 60)
        m_hi = None if end is None else math.floor(end / 60)
        totals: dict[Any, int] = {}
        edges: list[tuple[float | None, float | None]] = []
        key_params: list[Any] = [bucket] if group == "bucket" else []
        if m_lo is not None and m_hi is not None and m_lo > m_hi:
            edges.append((start, end))  # inside one minute: nothing whole to read from the counters
        else:
            clauses = [f"kind = {p}"]
            params: list[Any] = [kind]
            for clause, value in ((f"name = {p}", name), (f"minute >= {p}", m_lo), (f"minute < {p}", m_hi)):
                if value is not None:
                    clauses.append(clause)
                    params.append(value)
            key = {"name": "name", "bucket": self._bucket("minute * 60"), "all": "0"}[group]
            sql = f"SELECT {key}, sum(n) FROM event_counts WHERE {' AND '.join(clauses)} GROUP BY 1"
            for k, n in self._read(sql, key_params + params):
                totals[k] = totals.get(k, 0) + int(n)
            if m_lo is not None and start is not None and m_lo * 60 > start:
                edges.append((start, m_lo * 60))
            if m_hi is not None and end is not None and m_hi * 60 < end:
                edges.append((m_hi * 60, end))
        key = {"name": kind, "bucket": self._bucket("timestamp"), "all": "0"}[group]
        for lo, hi in edges:
            clauses, params = [], []
            edge = ((f"timestamp >= {p}", lo), (f"timestamp < {p}", hi), (f"{kind} = {p}", name))
            for clause, bound in edge:
                if bound is not None:
                    clauses.append(clause)
                    params.append(bound)
            where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
            for k, n in self._read(f"SELECT {key}, count(*) FROM events{where} GROUP BY 1", key_params + params):
                totals[k] = totals.get(k, 0) + int(n)
        return totals

    # -- patterns and system stats ---------------------------------------------------------------

    def select_patterns(
        self,
        *,
        pattern_type: str | None = None,
        event_id: int | None = None,
        embryo_id: str | None = None,
        min_confidence: float | None = None,
        limit: int = 100,
    ) -> list[Pattern]:
        """Patterns matching every given filter, newest first."""
        check_int64(event_id, "event_id")
        p = self.P
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("pattern_type", pattern_type), ("event_id", event_id), ("embryo_id", embryo_id)):
            if value is not None:
                clauses.append(f"{column} = {p}")
                params.append(value)
        if min_confidence is not None:
            clauses.append(f"confidence >= {p}")
            params.append(min_confidence)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._read(
            f"SELECT {self.PATTERN_COLUMNS} FROM patterns{where} ORDER BY id DESC LIMIT {p}", [*params, limit]
        )
        return [Pattern(r[0], r[1], r[2], r[3], msgspec.json.decode(r[4]), r[5], r[6]) for r in rows]

    def pattern_summary(self) -> list[tuple[str, int, float]]:
        """``(pattern_type, count, average confidence)`` per type, most frequent first (read from the
        ``(pattern_type, confidence)`` index alone)."""
        rows = self._read(
            "SELECT pattern_type, count(*), avg(confidence) FROM patterns GROUP BY pattern_type ORDER BY 2 DESC, 1"
        )
        return [(str(r[0]), int(r[1]), float(r[2])) for r in rows]

    def select_system_stats(
        self, *, start_time: float | None = None, end_time: float | None = None, limit: int = 100
    ) -> list[SystemStats]:
        """System stats snapshots in a time range, newest first."""
        p = self.P
        rows = self._read(
            f"SELECT {self.SYSTEM_STATS_COLUMNS} FROM system_stats WHERE timestamp >= {p} AND timestamp < {p} "
            f"ORDER BY timestamp DESC, id DESC LIMIT {p}",
            [
                start_time if start_time is not None else -math.inf,
                end_time if end_time is not None else math.inf,
                limit,
            ],
        )
        return [SystemStats(*r) for r in rows]
