"""The PostgreSQL backend of the storage contract: day partitions, jsonb data, COPY ingest.

- ``events`` is partitioned by range of ``timestamp`` into one table per UTC day
  (``events_d<day number>``), created on demand; retention drops whole days and deletes rows
  only in the day the cutoff falls in.
- Data is ``jsonb``. jsonb rewrites some numbers (``1e300`` comes back as a 301-digit integer,
  ``-0.0`` as ``0.0``) and refuses NUL characters, so data holding a float in exponent form,
  ``-0.0`` or ``\\u0000`` is kept exactly as zstd-compressed JSON in ``data_compressed`` instead
  (search does not look inside those rows).
- A batch is COPYed into a temporary table, then moved with ``INSERT ... ON CONFLICT DO NOTHING``
  on the unique ``(timestamp, hash)`` index, so dedup holds across any number of writers. The
  move takes a transaction-level advisory lock: ids are then given in commit order, which is what
  a live stream reading "ids after the last one seen" relies on (the COPYs still run in parallel).
- Per-minute counters as in SQLite (``event_counts``), kept in each batch's transaction and by a
  delete trigger; a dropped day subtracts its minutes.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import msgspec

from ._encoding import Row, _zstd_compressor, data_text, decode_data, encode_data
from ._exceptions import (
    DatabaseClosedError,
    OperationalError,
    PersistenceError,
    QueryTimeoutError,
    SchemaVersionError,
    ValidationError,
)
from ._sqlite import _like_pattern, decode_cursor, encode_cursor
from ._storage import COUNTED_COLUMNS, counter_for, is_postgres_url
from ._types import EventQuery, InsertResult, Pattern, StoredEvent, SystemStats

try:
    import psycopg
    import psycopg.errors
    from psycopg import sql
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError:  # pragma: no cover - the extra is not installed
    psycopg = None  # type: ignore[assignment]

__all__ = ["PostgresStore", "is_postgres_url"]

SCHEMA_VERSION = 1
DAY = 86_400
_GROUP_COLUMNS = ("event_type", "source", "action")
_INT64 = 2**63
#: jsonb would not give these back as written: a float with an exponent (1e16 -> 10000000000000000,
#: an int), -0.0, or a NUL character (refused). Matching inside a string only costs jsonb for that row.
_NOT_JSONB = re.compile(r"[0-9][eE][+-]?[0-9]|-0\.0(?![0-9])|\\u0000")

_EVENT_COLUMNS = (
    "id, timestamp, event_type, action, source, data_json::text, data_compressed, hash, processed, "
    "to_char(created_at, 'YYYY-MM-DD HH24:MI:SS')"
)

_SCHEMA = [
    "CREATE TABLE celflow_meta (key text PRIMARY KEY, value text NOT NULL)",
    "CREATE SEQUENCE events_id_seq AS bigint",
    """CREATE TABLE events (
        id bigint NOT NULL DEFAULT nextval('events_id_seq'),
        timestamp double precision NOT NULL,
        event_type text NOT NULL,
        action text,
        source text NOT NULL,
        data_json jsonb,
        data_compressed bytea,
        hash text,
        processed boolean DEFAULT false,
        created_at timestamp(0) DEFAULT (now() AT TIME ZONE 'utc')
    ) PARTITION BY RANGE (timestamp)""",
    "CREATE UNIQUE INDEX idx_events_time_hash ON events (timestamp, hash)",
    "CREATE INDEX idx_events_id ON events (id)",
    "CREATE INDEX idx_events_type_time ON events (event_type, timestamp)",
    "CREATE INDEX idx_events_source_time ON events (source, timestamp)",
    """CREATE TABLE patterns (
        id bigserial PRIMARY KEY,
        event_id bigint,
        pattern_type text NOT NULL,
        confidence double precision NOT NULL,
        pattern_data text NOT NULL,
        embryo_id text,
        created_at timestamp(0) DEFAULT (now() AT TIME ZONE 'utc')
    )""",
    "CREATE INDEX idx_patterns_type_confidence ON patterns (pattern_type, confidence)",
    "CREATE INDEX idx_patterns_event ON patterns (event_id)",
    """CREATE TABLE system_stats (
        id bigserial PRIMARY KEY,
        timestamp double precision NOT NULL,
        total_events bigint,
        events_per_second double precision,
        active_embryos integer,
        avg_fitness double precision,
        storage_mb double precision,
        created_at timestamp(0) DEFAULT (now() AT TIME ZONE 'utc')
    )""",
    "CREATE INDEX idx_system_stats_time ON system_stats (timestamp)",
    """CREATE TABLE event_counts (
        kind text NOT NULL,
        minute bigint NOT NULL,
        name text NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (kind, minute, name)
    )""",
    """CREATE FUNCTION celflow_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE event_counts SET n = n - 1 WHERE kind = 'event_type'
            AND minute = floor(OLD.timestamp / 60)::bigint AND name = OLD.event_type;
        UPDATE event_counts SET n = n - 1 WHERE kind = 'source'
            AND minute = floor(OLD.timestamp / 60)::bigint AND name = OLD.source;
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER events_counts_delete AFTER DELETE ON events FOR EACH ROW EXECUTE FUNCTION celflow_count_deleted()",
]

_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS celflow_staging (ord integer, timestamp double precision, event_type text, "
    "action text, source text, data_json text, data_compressed bytea, hash text) ON COMMIT DELETE ROWS"
)
_MOVE = (
    "INSERT INTO events (timestamp, event_type, action, source, data_json, data_compressed, hash) "
    "SELECT timestamp, event_type, action, source, data_json::jsonb, data_compressed, hash "
    "FROM celflow_staging ORDER BY ord ON CONFLICT (timestamp, hash) DO NOTHING RETURNING id, timestamp, hash, "
    "event_type, source"
)
_INSERT_LOCK = 0x43454C46  # pg_advisory_xact_lock key of the move step ("CELF")


def _split_schema(url: str) -> tuple[str, str | None]:
    """The URL without CelFlow's own ``schema=`` query parameter, and that schema."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    # quote, not urlencode's default quote_plus: libpq reads "+" as a plus sign, not a space
    rest = urlencode([(k, v) for k, v in query if k != "schema"], quote_via=quote)
    return urlunsplit(parts._replace(query=rest)), schema


def _shown(url: str) -> str:
    """The URL with any password masked, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _check_int64(value: int | None, field: str) -> None:
    if value is not None and not -_INT64 <= value < _INT64:
        raise ValidationError(f"{field} {value} is too large: ids are 64-bit integers", field=field)


def _row_to_event(row: Sequence[Any]) -> StoredEvent:
    blob = bytes(row[6]) if row[6] is not None else None
    return StoredEvent(row[0], row[1], row[2], row[3], row[4], decode_data(row[5], blob), row[7], bool(row[8]), row[9])


class PostgresStore:
    """Events, patterns and system stats in a PostgreSQL database (see the module docstring)."""

    def __init__(self, url: str, *, readonly: bool = False, pool_size: int = 4) -> None:
        if psycopg is None:
            raise PersistenceError(
                "the PostgreSQL backend needs psycopg: pip install 'celflow[postgres]' (psycopg and psycopg-pool)"
            )
        self.url, self.schema = _split_schema(url)
        self.path = _shown(url)
        self.readonly = readonly
        self._closed = False
        self._local = threading.local()
        self._known_days: set[int] = set()  # day partitions known to exist (added after each commit)
        # One direct connection first: the pool would retry for its whole timeout and then report only
        # "pool initialization incomplete", not the server's reason (refused, unknown database, auth).
        try:
            psycopg.connect(self.url, connect_timeout=10).close()
        except psycopg.Error as exc:
            reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())  # one line
            password = urlsplit(url).password
            if password:
                reason = reason.replace(password, "***")
            raise OperationalError(f"cannot connect to {self.path}: {reason}") from None
        self._pool = ConnectionPool(
            self.url,
            min_size=1,
            max_size=pool_size,
            configure=self._configure,
            open=False,
            name="celflow",
        )
        try:
            self._pool.open(wait=True, timeout=10)
        except (psycopg.Error, PoolTimeout) as exc:
            self._pool.close()
            raise OperationalError(f"cannot connect to {self.path}: {exc}") from None
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    # -- connections ----------------------------------------------------------------------------

    def _configure(self, conn: Any) -> None:
        conn.autocommit = True
        if self.schema:  # from the URL: passed as a quoted identifier, never pasted into SQL
            schema = sql.Identifier(self.schema)
            if not self.readonly:  # a reader never creates anything: a missing schema is "no CelFlow schema"
                # two processes creating it at once: the loser gets a unique violation, not "already exists"
                with contextlib.suppress(psycopg.errors.UniqueViolation):
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            conn.execute(sql.SQL("SET search_path TO {}").format(schema))
        if self.readonly:
            conn.execute("SET default_transaction_read_only = on")  # which refuses even a temporary table
        else:
            conn.execute(_STAGING)
        conn.autocommit = False

    @contextlib.contextmanager
    def _conn(self) -> Iterator[Any]:
        """A pooled connection in a transaction, committed at the end; errors translated."""
        if self._closed:
            raise DatabaseClosedError(f"the database {self.path} is closed")
        seconds = getattr(self._local, "seconds", None)
        try:
            with self._pool.connection() as conn:
                if seconds is not None:
                    if seconds <= 0:
                        raise QueryTimeoutError(f"the query ran longer than its {seconds:g} s limit and was stopped")
                    timeout_ms = str(max(1, int(seconds * 1000)))
                    conn.execute("SELECT set_config('statement_timeout', %s, true)", (timeout_ms,))
                yield conn
        except psycopg.errors.QueryCanceled:
            raise QueryTimeoutError(f"the query ran longer than its {seconds or 0:g} s limit and was stopped") from None
        except psycopg.errors.ReadOnlySqlTransaction:
            raise PersistenceError(f"{self.path} was opened read-only") from None
        except psycopg.OperationalError as exc:
            raise OperationalError(f"{exc} (database {self.path})") from exc
        except psycopg.Error as exc:
            raise PersistenceError(f"{exc} (database {self.path})") from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._conn() as conn:
            return list(conn.execute(sql, params).fetchall())

    def _migrate(self) -> None:
        with self._conn() as conn:
            exists = conn.execute("SELECT to_regclass('celflow_meta') IS NOT NULL").fetchone()[0]
            if exists:
                version = int(conn.execute("SELECT value FROM celflow_meta WHERE key = 'schema_version'").fetchone()[0])
                if version > SCHEMA_VERSION:
                    raise SchemaVersionError(
                        f"{self.path} was written by a newer CelFlow (schema version {version}; this version "
                        f"understands up to {SCHEMA_VERSION}). Upgrade CelFlow to use it."
                    )
                return
            if self.readonly:
                raise SchemaVersionError(f"{self.path} has no CelFlow schema yet; open it once for writing")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INSERT_LOCK + 1,))
            # pg_class, not to_regclass: the name lookup's cache still says "no such table" when another
            # process created it while this one waited for the lock ("relation celflow_meta already exists")
            created = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = 'celflow_meta' "
                "AND relnamespace = current_schema()::regnamespace)"
            ).fetchone()[0]
            if created:
                return  # another process created it meanwhile
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("INSERT INTO celflow_meta (key, value) VALUES ('schema_version', %s)", (str(SCHEMA_VERSION),))

    # -- the storage contract ------------------------------------------------------------------

    def acquire_writer(self) -> None:
        """Any number of writers may share a PostgreSQL database: nothing to take."""

    @contextlib.contextmanager
    def time_limit(self, seconds: float | None) -> Iterator[None]:
        """Within it, this thread's reads stop with :class:`QueryTimeoutError` after ``seconds``."""
        previous = getattr(self._local, "seconds", None)
        self._local.seconds = seconds
        try:
            yield
        finally:
            self._local.seconds = previous

    def _ensure_days(self, days: set[int]) -> None:
        """Create the day partitions ``days`` that do not exist yet, in a transaction of their own.

        Creating a partition locks all of ``events`` until the commit. Inside a batch's transaction
        that lock was held while waiting for the move's advisory lock, whose holder waited for
        ``events``: concurrent writers deadlocked.
        """
        missing = days - self._known_days
        if not missing:
            return
        with self._conn() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INSERT_LOCK + 2,))
            for day in sorted(missing):
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS events_d{int(day)} PARTITION OF events "
                    f"FOR VALUES FROM ({int(day) * DAY}) TO ({(int(day) + 1) * DAY})"
                )
        self._known_days |= missing

    def insert_events(self, rows: Sequence[Row], *, want_ids: bool = True) -> InsertResult:
        """COPY the batch in, then move it into ``events`` skipping duplicates, in one transaction."""
        if self.readonly:
            raise PersistenceError(f"{self.path} was opened read-only")
        if not rows:
            return InsertResult([] if want_ids else None, 0, 0)
        days = {int(row.timestamp // DAY) for row in rows}
        self._ensure_days(days)
        with self._conn() as conn:
            with conn.cursor().copy(
                "COPY celflow_staging (ord, timestamp, event_type, action, source, data_json, data_compressed, hash) "
                "FROM STDIN"
            ) as copy:
                for i, row in enumerate(rows):
                    data_json, data_compressed = row.data_json, row.data_compressed
                    if data_compressed is not None:  # large data: jsonb (TOAST compresses it) when it can be
                        text = data_text(None, data_compressed)
                        if not _NOT_JSONB.search(text):
                            data_json, data_compressed = text, None
                    elif data_json is not None and _NOT_JSONB.search(data_json):
                        data_compressed = _zstd_compressor(3).compress(data_json.encode())
                        data_json = None
                    copy.write_row(
                        (i, row.timestamp, row.event_type, row.action, row.source, data_json, data_compressed, row.hash)
                    )
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INSERT_LOCK,))
            new = conn.execute(_MOVE).fetchall()
            if new:
                self._count(conn, new)
            ids = self._resolve_ids(conn, rows, new) if want_ids else None
        self._known_days |= days
        return InsertResult(ids, len(new), len(rows) - len(new))

    @staticmethod
    def _count(conn: Any, new: list[Any]) -> None:
        counts: Counter[tuple[str, int, str]] = Counter()
        for _, ts, _, event_type, source in new:
            minute = math.floor(ts / 60)
            counts["event_type", minute, event_type] += 1
            counts["source", minute, source] += 1
        conn.cursor().executemany(
            "INSERT INTO event_counts (kind, minute, name, n) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (kind, minute, name) DO UPDATE SET n = event_counts.n + excluded.n",
            [(k, m, name, n) for (k, m, name), n in sorted(counts.items())],
        )

    @staticmethod
    def _resolve_ids(conn: Any, rows: Sequence[Row], new: list[Any]) -> list[int]:
        by_key = {(ts, digest): event_id for event_id, ts, digest, _, _ in new}
        missing = [(row.timestamp, row.hash) for row in rows if (row.timestamp, row.hash) not in by_key]
        if missing:
            found = conn.execute(
                "SELECT id, e.timestamp, e.hash FROM events e JOIN unnest(%s::float8[], %s::text[]) AS k(ts, h) "
                "ON e.timestamp = k.ts AND e.hash = k.h",
                ([ts for ts, _ in missing], [h for _, h in missing]),
            ).fetchall()
            by_key.update({(ts, digest): event_id for event_id, ts, digest in found})
        return [by_key[row.timestamp, row.hash] for row in rows]

    def _where(self, query: EventQuery) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if query.start_time is not None:
            clauses.append("timestamp >= %s")
            params.append(query.start_time)
        if query.end_time is not None:
            clauses.append("timestamp < %s")
            params.append(query.end_time)
        for column in ("event_type", "source", "action"):
            value = getattr(query, column)
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        if query.search:
            like = _like_pattern(query.search)
            clauses.append("(event_type ILIKE %s OR source ILIKE %s OR action ILIKE %s OR data_json::text ILIKE %s)")
            params.extend([like] * 4)
        if query.cursor is not None:
            ts, event_id = decode_cursor(query.cursor)
            op = "<" if query.order == "desc" else ">"
            clauses.append(f"(timestamp, id) {op} (%s, %s)")
            params.extend([ts, event_id])
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def select_events(self, query: EventQuery) -> tuple[list[StoredEvent], str | None]:
        """Events matching ``query`` in time order, and the cursor of the next page (or None)."""
        where, params = self._where(query)
        direction = "DESC" if query.order == "desc" else "ASC"
        sql = f"SELECT {_EVENT_COLUMNS} FROM events{where} ORDER BY timestamp {direction}, id {direction}"
        if query.limit is not None:
            sql += " LIMIT %s"
            params.append(query.limit)
        events = [_row_to_event(r) for r in self._read(sql, params)]
        cursor = None
        if query.limit is not None and events and len(events) == query.limit:
            cursor = encode_cursor(events[-1].timestamp, events[-1].id)
        return events, cursor

    def select_after(self, after_id: int, query: EventQuery, *, until_id: int | None = None) -> list[StoredEvent]:
        """Events with ``after_id < id <= until_id`` matching ``query``, in id (commit) order."""
        _check_int64(after_id, "after")
        _check_int64(until_id, "until")
        where, params = self._where(msgspec.structs.replace(query, cursor=None))
        where = (where + " AND" if where else " WHERE") + " id > %s"
        params.append(after_id)
        if until_id is not None:
            where += " AND id <= %s"
            params.append(until_id)
        sql = f"SELECT {_EVENT_COLUMNS} FROM events{where} ORDER BY id"
        if query.limit is not None:
            sql += " LIMIT %s"
            params.append(query.limit)
        return [_row_to_event(r) for r in self._read(sql, params)]

    def quick_check(self) -> list[str]:
        """Problems found: the schema version must be readable and the tables reachable."""
        try:
            self._read("SELECT value FROM celflow_meta WHERE key = 'schema_version'")
            self._read("SELECT 1 FROM events LIMIT 1")
        except PersistenceError as exc:
            return [str(exc)]
        return []

    def last_id(self) -> int:
        """The highest id ever given to an event (the sequence; deleted ids count too)."""
        value, called = self._read("SELECT last_value, is_called FROM events_id_seq")[0]
        return int(value) if called else 0

    def count_events(self, query: EventQuery) -> int:
        """How many events match ``query``."""
        counter = counter_for(query, None)
        if counter is not None:
            return sum(self._counted(query, *counter, group="all").values())
        where, params = self._where(msgspec.structs.replace(query, cursor=None))
        return int(self._read(f"SELECT count(*) FROM events{where}", params)[0][0])

    def count_by(self, field: str, query: EventQuery) -> dict[str, int]:
        """Counts of matching events per ``event_type``, ``source`` or ``action``, largest first."""
        if field not in _GROUP_COLUMNS:
            raise ValidationError(f"cannot group by {field!r}; use one of {', '.join(_GROUP_COLUMNS)}")
        column = field  # one of the fixed names above
        counter = counter_for(query, column)
        if counter is not None:
            counts = self._counted(query, *counter, group="name")
            return dict(sorted(((k, n) for k, n in counts.items() if n > 0), key=lambda kv: -kv[1]))
        where, params = self._where(msgspec.structs.replace(query, cursor=None))
        rows = self._read(f"SELECT {column}, count(*) AS n FROM events{where} GROUP BY 1 ORDER BY n DESC", params)
        return {(key if key is not None else ""): int(n) for key, n in rows}

    def histogram(self, bucket: float, query: EventQuery) -> list[tuple[float, int]]:
        """Counts per time bucket of ``bucket`` seconds, oldest first."""
        counter = counter_for(query, None) if bucket % 60 == 0 else None
        if counter is not None:
            counts = self._counted(query, *counter, group="bucket", bucket=bucket)
            return [(b * bucket, n) for b, n in sorted(counts.items()) if n > 0]
        where, params = self._where(msgspec.structs.replace(query, cursor=None))
        rows = self._read(
            f"SELECT floor(timestamp / %s)::bigint AS b, count(*) FROM events{where} GROUP BY 1 ORDER BY 1",
            [bucket, *params],
        )
        return [(b * bucket, int(n)) for b, n in rows]

    def _counted(
        self, query: EventQuery, kind: str, name: str | None, *, group: str, bucket: float = 60.0
    ) -> dict[Any, int]:
        """Whole minutes from the counters, the partial minutes at each end from the events."""
        start, end = query.start_time, query.end_time
        m_lo = None if start is None else math.ceil(start / 60)
        m_hi = None if end is None else math.floor(end / 60)
        totals: dict[Any, int] = {}
        edges: list[tuple[float | None, float | None]] = []
        if m_lo is not None and m_hi is not None and m_lo > m_hi:
            edges.append((start, end))
        else:
            clauses: list[str] = ["kind = %s"]
            params: list[Any] = [kind]
            for clause, value in (("name = %s", name), ("minute >= %s", m_lo), ("minute < %s", m_hi)):
                if value is not None:
                    clauses.append(clause)
                    params.append(value)
            key = {"name": "name", "bucket": "floor(minute * 60 / %s)::bigint", "all": "0"}[group]
            key_params: list[Any] = [bucket] if group == "bucket" else []
            statement = f"SELECT {key}, sum(n) FROM event_counts WHERE {' AND '.join(clauses)} GROUP BY 1"
            for k, n in self._read(statement, key_params + params):
                totals[k] = totals.get(k, 0) + int(n)
            if m_lo is not None and start is not None and m_lo * 60 > start:
                edges.append((start, m_lo * 60))
            if m_hi is not None and end is not None and m_hi * 60 < end:
                edges.append((m_hi * 60, end))
        key = {"name": kind, "bucket": "floor(timestamp / %s)::bigint", "all": "0"}[group]
        key_params = [bucket] if group == "bucket" else []
        for lo, hi in edges:
            clauses, params = [], []
            edge: tuple[tuple[str, Any], ...] = (
                ("timestamp >= %s", lo),
                ("timestamp < %s", hi),
                (f"{kind} = %s", name),
            )
            for clause, bound in edge:
                if bound is not None:
                    clauses.append(clause)
                    params.append(bound)
            where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
            for k, n in self._read(f"SELECT {key}, count(*) FROM events{where} GROUP BY 1", key_params + params):
                totals[k] = totals.get(k, 0) + int(n)
        return totals

    def rebuild_counts(self) -> None:
        """Recount the per-minute counters from the events."""
        with self._conn() as conn:
            conn.execute("DELETE FROM event_counts")
            for kind in COUNTED_COLUMNS:
                conn.execute(
                    f"INSERT INTO event_counts (kind, minute, name, n) SELECT %s, floor(timestamp / 60)::bigint, "
                    f"{kind}, count(*) FROM events GROUP BY 2, 3",
                    (kind,),
                )

    def _days(self, conn: Any) -> list[int]:
        """The day numbers of the existing partitions, oldest first."""
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'events'::regclass"
        ).fetchall()
        return sorted(int(name[len("events_d") :]) for (name,) in rows if name.startswith("events_d"))

    def delete_before(self, cutoff: float, *, limit: int | None = None) -> int:
        """Drop the days wholly before ``cutoff``, then delete older rows of the day it falls in
        (at most ``limit`` of them; whole days go whatever the limit). Return how many went."""
        removed = 0
        with self._conn() as conn:
            for day in self._days(conn):
                if (day + 1) * DAY > cutoff:
                    break
                table = f"events_d{int(day)}"
                n = int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                conn.execute(f"DROP TABLE {table}")
                conn.execute(
                    "DELETE FROM event_counts WHERE minute >= %s AND minute < %s",
                    (day * DAY // 60, (day + 1) * DAY // 60),
                )
                self._known_days.discard(day)
                removed += n
            if limit is None:
                cur = conn.execute("DELETE FROM events WHERE timestamp < %s", (cutoff,))
            else:
                cur = conn.execute(
                    "DELETE FROM events WHERE (timestamp, id) IN (SELECT timestamp, id FROM events "
                    "WHERE timestamp < %s ORDER BY timestamp LIMIT %s)",
                    (cutoff, limit),
                )
            removed += int(cur.rowcount)
        return removed

    def maintain(self, *, vacuum_pages: int = 500) -> int:
        """PostgreSQL's autovacuum reclaims space; dropped days free theirs at once. Returns 0."""
        return 0

    def vacuum(self) -> None:
        """``VACUUM (ANALYZE)`` every CelFlow table (each day partition too): the ``celflow db vacuum`` of PostgreSQL.

        Unlike SQLite's VACUUM it gives the space of dead rows to the tables' later rows, not to the
        file system, and writers may go on meanwhile.
        """
        if self.readonly:
            raise PersistenceError(f"{self.path} was opened read-only")
        with self._conn() as conn:
            days = [
                r[0]
                for r in conn.execute(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'events'::regclass ORDER BY c.relname"
                )
            ]
            conn.execute("DELETE FROM event_counts WHERE n <= 0")
        tables = [*days, "patterns", "system_stats", "event_counts"]
        with self._conn() as conn:
            conn.commit()  # VACUUM runs outside a transaction
            conn.autocommit = True
            try:
                for table in tables:
                    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
            finally:
                conn.autocommit = False

    def optimize(self) -> None:
        """Drop emptied counters and refresh the planner's statistics."""
        with self._conn() as conn:
            conn.execute("DELETE FROM event_counts WHERE n <= 0")
            conn.execute("ANALYZE events")

    def stats(self) -> dict[str, Any]:
        """Counts, the time span and sizes."""
        oldest, newest = self._read("SELECT min(timestamp), max(timestamp) FROM events")[0]
        by_type = self.count_by("event_type", EventQuery())
        return {
            "database_path": self.path,
            "schema_version": SCHEMA_VERSION,
            "total_events": sum(by_type.values()),
            "oldest_event": oldest,
            "newest_event": newest,
            "events_by_type": by_type,
            "events_by_source": self.count_by("source", EventQuery()),
            "total_patterns": self._read("SELECT count(*) FROM patterns")[0][0],
            "total_system_stats": self._read("SELECT count(*) FROM system_stats")[0][0],
            **self.sizes(),
            "partitions": len(self._read("SELECT 1 FROM pg_inherits WHERE inhparent = 'events'::regclass")),
        }

    def sizes(self) -> dict[str, float]:
        """The tables' size on disk in MB (``wal_size_mb`` is 0: the server's WAL is its own)."""
        total = self._read(
            "SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) + pg_total_relation_size('patterns') "
            "+ pg_total_relation_size('system_stats') + pg_total_relation_size('event_counts') "
            "FROM pg_inherits i WHERE i.inhparent = 'events'::regclass"
        )[0][0]
        mb = round(int(total) / 1_048_576, 3)
        return {"database_size_mb": mb, "file_size_mb": mb, "wal_size_mb": 0.0}

    # -- patterns and system stats -------------------------------------------------------------

    def insert_pattern(
        self, pattern_type: str, confidence: float, pattern_data: Any, *, event_id: int | None, embryo_id: str | None
    ) -> int:
        """Store a pattern; return its id."""
        _check_int64(event_id, "event_id")
        text = encode_data(pattern_data).decode()  # integers past 64 bits too
        with self._conn() as conn:
            row = conn.execute(
                "INSERT INTO patterns (event_id, pattern_type, confidence, pattern_data, embryo_id) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (event_id, pattern_type, confidence, text, embryo_id),
            ).fetchone()
        return int(row[0])

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
        _check_int64(event_id, "event_id")
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("pattern_type", pattern_type), ("event_id", event_id), ("embryo_id", embryo_id)):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        if min_confidence is not None:
            clauses.append("confidence >= %s")
            params.append(min_confidence)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._read(
            "SELECT id, event_id, pattern_type, confidence, pattern_data, embryo_id, "
            f"to_char(created_at, 'YYYY-MM-DD HH24:MI:SS') FROM patterns{where} ORDER BY id DESC LIMIT %s",
            [*params, limit],
        )
        return [Pattern(r[0], r[1], r[2], r[3], msgspec.json.decode(r[4]), r[5], r[6]) for r in rows]

    def pattern_summary(self) -> list[tuple[str, int, float]]:
        """``(pattern_type, count, average confidence)`` per type, most frequent first."""
        rows = self._read(
            "SELECT pattern_type, count(*), avg(confidence) FROM patterns GROUP BY pattern_type ORDER BY 2 DESC, 1"
        )
        return [(str(r[0]), int(r[1]), float(r[2])) for r in rows]

    def insert_system_stats(self, values: dict[str, Any]) -> int:
        """Record a system stats snapshot; return its id."""
        with self._conn() as conn:
            row = conn.execute(
                "INSERT INTO system_stats (timestamp, total_events, events_per_second, active_embryos, "
                "avg_fitness, storage_mb) VALUES (%(timestamp)s, %(total_events)s, %(events_per_second)s, "
                "%(active_embryos)s, %(avg_fitness)s, %(storage_mb)s) RETURNING id",
                values,
            ).fetchone()
        return int(row[0])

    def select_system_stats(
        self, *, start_time: float | None = None, end_time: float | None = None, limit: int = 100
    ) -> list[SystemStats]:
        """System stats snapshots in a time range, newest first."""
        rows = self._read(
            "SELECT id, timestamp, total_events, events_per_second, active_embryos, avg_fitness, storage_mb, "
            "to_char(created_at, 'YYYY-MM-DD HH24:MI:SS') FROM system_stats WHERE timestamp >= %s AND timestamp < %s "
            "ORDER BY timestamp DESC, id DESC LIMIT %s",
            [
                start_time if start_time is not None else -math.inf,
                end_time if end_time is not None else math.inf,
                limit,
            ],
        )
        return [SystemStats(*r) for r in rows]

    def close(self) -> None:
        """Close the pool; later use raises :class:`DatabaseClosedError`."""
        self._closed = True
        self._pool.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed
