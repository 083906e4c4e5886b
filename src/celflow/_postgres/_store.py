"""The PostgreSQL backend of the storage contract: day partitions, JSON data, COPY ingest, trigram search.

- ``events`` is partitioned by range of ``timestamp`` into one table per UTC day
  (``events_d<day number>``), created on demand; retention drops whole days and deletes rows
  only in the day the cutoff falls in.
- Data is ``json``: the canonical JSON text CelFlow wrote (sorted keys, compact), exactly as SQLite
  keeps it, so reads give it back as written (``1e300``, ``-0.0``, ``\\u0000`` too) and search reads
  the same text. (Schema 1 used ``jsonb``, which rewrites the text: ``{"b": 1, "aa": 2}``, spaces
  and keys by length; it kept data jsonb could not hold in ``data_compressed``. Opening a schema 1
  for writing rewrites its data in the canonical form; ``data_compressed`` is NULL from then on.)
- Search follows SQLite's rules (:func:`celflow._sqlite._search_clause`): a literal substring of the
  type, source, action or JSON text, ASCII letters folded (``lower()`` under ``COLLATE "C"``; not
  ILIKE, which folds ``É``/``é`` by the database's locale).
- Each finished day (a partition before today, UTC) gets a pg_trgm GIN index on exactly that
  folded text (``events_d<day>_search``), so a search reads only the rows holding its trigrams
  there, and all of today's rows. Finished days only: keeping a trigram index up to date while
  writing made ingest about 4 times slower (bench/postgres.py), under the move's lock. :meth:`optimize`
  builds the missing ones in the background (``CREATE INDEX CONCURRENTLY``: writers go on).
  Without pg_trgm (not installed, no privilege) search reads every row and one warning says so.
- A batch is COPYed into a temporary table, then moved with ``INSERT ... ON CONFLICT DO NOTHING``
  on the unique ``(timestamp, hash)`` index, so dedup holds across any number of writers. The
  move takes a transaction-level advisory lock: ids are then given in commit order, which is what
  a live stream reading "ids after the last one seen" relies on. Only the move and the commit run
  under it: the COPYs (and the parsing of their JSON) and the counters run in parallel.
- Per-minute counters as in SQLite (``event_counts``), kept in each batch's transaction and by a
  delete trigger; a dropped day subtracts its minutes. A batch counts all its staged rows in one
  upsert before the lock (after a batch of mostly duplicates: those not stored yet), and after the
  move counts the difference (duplicates within the batch, rows another writer stored meanwhile).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from .._encoding import MAX_SEARCH_LENGTH, Row, _check_text, data_text, decode_data, encode_data
from .._exceptions import (
    DatabaseClosedError,
    OperationalError,
    PersistenceError,
    QueryTimeoutError,
    SchemaVersionError,
    ValidationError,
)
from .._location import Location, parse_location
from .._sql import COUNTED_COLUMNS, SQLReads, check_int64, like_pattern
from .._types import EventQuery, InsertResult, StoredEvent

try:
    import psycopg
    import psycopg.errors
    from psycopg import sql
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError:  # pragma: no cover - the extra is not installed
    psycopg = None  # type: ignore[assignment]

__all__ = ["DAY", "SCHEMA_VERSION", "PostgresStore", "translate"]

log = logging.getLogger("celflow.postgres")

SCHEMA_VERSION = 2  # 2: data is json (was jsonb)
DAY = 86_400
_INT64 = 2**63
_TRGM = "pg_trgm"  # the extension of the search index (tests change it to one that is not there)

#: What search reads: the fields joined by newlines, ASCII letters lower-cased (lower() under "C"
#: folds nothing else), compared with LIKE (bytes). The search indexes are on exactly this expression:
#: the planner uses an index only for the very expression (and collation) it indexes.
#: A needle without a newline cannot match across two fields; one with a newline is also checked
#: field by field (JSON text holds no raw newline, a name may).
_SEARCH_TEXT = (
    "lower((event_type || E'\\n' || source || E'\\n' || coalesce(action, '') || E'\\n' || "
    "coalesce(data_json::text, '')) COLLATE \"C\")"
)
_SEARCH_FIELDS = " OR ".join(
    f'lower({field} COLLATE "C") LIKE %s' for field in ("event_type", "source", "action", "data_json::text")
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
        data_json json,
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

# data_json is json here already: COPY parses it, outside the move's lock
_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS celflow_staging (ord integer, timestamp double precision, event_type text, "
    "action text, source text, data_json json, hash text) ON COMMIT DELETE ROWS"
)
#: The batch's counters, as if every staged row were new, before the move's lock: upserts of many
#: minutes took as long as the move itself. Minutes newest first: a writer of the batch after
#: another's waits for that one's commit (the minute they share) only at its end. One order for
#: every writer: two never wait for each other's rows. (A writer waiting for the lock holds these
#: rows: retention deleting events of the same minutes, a duplicate of one of them in the lock
#: holder's batch, is the one cycle left, broken by PostgreSQL's deadlock detection.)
_PRECOUNT = """INSERT INTO event_counts AS c (kind, minute, name, n)
SELECT kind, minute, name, count(*) FROM (
    SELECT 'event_type' AS kind, floor(timestamp / 60)::bigint AS minute, event_type AS name FROM celflow_staging
    UNION ALL SELECT 'source', floor(timestamp / 60)::bigint, source FROM celflow_staging
) AS k GROUP BY kind, minute, name ORDER BY minute DESC, kind, name
ON CONFLICT (kind, minute, name) DO UPDATE SET n = c.n + excluded.n"""
_MOVE = (
    "INSERT INTO events (timestamp, event_type, action, source, data_json, hash) "
    "SELECT timestamp, event_type, action, source, data_json, hash FROM celflow_staging ORDER BY ord "
    "ON CONFLICT (timestamp, hash) DO NOTHING RETURNING id, timestamp, hash, event_type, source"
)
#: :data:`_PRECOUNT` of the staged rows not stored already, for a batch after one of mostly
#: duplicates (a migration run again), where counting all of them would count for nothing; returns
#: the ``ord`` of the rows it counted. LATERAL ... LIMIT 1: one index probe per row (as a join, the
#: planner hashed every partition).
_PRECOUNT_NEW = """WITH fresh AS (
    SELECT s.ord, s.timestamp, s.event_type, s.source FROM celflow_staging s LEFT JOIN LATERAL (
        SELECT true AS stored FROM events e WHERE e.timestamp = s.timestamp AND e.hash = s.hash LIMIT 1
    ) AS x ON true WHERE x.stored IS NULL
), counted AS (
    INSERT INTO event_counts AS c (kind, minute, name, n)
    SELECT kind, minute, name, count(*) FROM (
        SELECT 'event_type' AS kind, floor(timestamp / 60)::bigint AS minute, event_type AS name FROM fresh
        UNION ALL SELECT 'source', floor(timestamp / 60)::bigint, source FROM fresh
    ) AS k GROUP BY kind, minute, name ORDER BY minute DESC, kind, name
    ON CONFLICT (kind, minute, name) DO UPDATE SET n = c.n + excluded.n
)
SELECT ord FROM fresh"""
#: Counts what the move inserted minus what was counted before it: minus for a duplicate within the
#: batch or a row another writer stored meanwhile (rows this transaction counted, so holds already
#: and never waits for); plus only for a row counted as stored that retention deleted before the
#: move (all but never; it may wait for a row another writer holds, a cycle deadlock detection breaks).
_RECOUNT = """INSERT INTO event_counts AS c (kind, minute, name, n)
SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::bigint[]) ORDER BY 2 DESC, 1, 3
ON CONFLICT (kind, minute, name) DO UPDATE SET n = c.n + excluded.n"""
_INSERT_LOCK = 0x43454C46  # pg_advisory_xact_lock key of the move step ("CELF")
_BUILD_LOCK = _INSERT_LOCK + 3  # pg_advisory_lock key of the search index builder: one at a time


def _search_clause(needle: str) -> tuple[str, list[Any]]:
    """SQLite's search (:func:`celflow._sqlite._search_clause`) in PostgreSQL: the same matches.

    A literal substring of the type, source, action or JSON text, ASCII letters folded on both
    sides. No text PostgreSQL stores holds a NUL (JSON writes ``\\u0000``; names with one are
    refused, the only place SQLite's search can find one), so a needle with one matches nothing.
    """
    if len(needle) > MAX_SEARCH_LENGTH:  # the same limit as SQLite's, whose LIKE has one
        raise ValidationError(
            f"search is {len(needle)} characters long; the limit is {MAX_SEARCH_LENGTH}", field="search"
        )
    _check_text(needle, "search")
    if "\x00" in needle:
        return "false", []
    like = like_pattern(needle.encode().lower().decode())  # bytes.lower() folds ASCII letters only
    if "\n" in needle:  # it could match across the newline joining two fields: each field too
        return f"{_SEARCH_TEXT} LIKE %s AND ({_SEARCH_FIELDS})", [like] * 5
    return f"{_SEARCH_TEXT} LIKE %s", [like]


def translate(
    exc: BaseException, path: str, *, password: str | None = None, connecting: bool = False
) -> PersistenceError:
    """Turn a driver error into CelFlow's tree (the one place where that happens).

    ``password`` is masked wherever the driver repeats it; ``connecting``: the error of opening a connection.
    """
    reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())  # one line
    if password:
        reason = reason.replace(password, "***")
    if connecting:
        return OperationalError(f"cannot connect to {path}: {reason}")
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return QueryTimeoutError(f"the query ran longer than its time limit and was stopped (database {path})")
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return PersistenceError(f"{path} was opened read-only")
    if isinstance(exc, (psycopg.OperationalError, PoolTimeout)):
        return OperationalError(f"{reason} (database {path})")
    return PersistenceError(f"{reason} (database {path})")


class PostgresStore(SQLReads):
    """Events, patterns and system stats in a PostgreSQL database (see the module docstring)."""

    P = "%s"
    EVENT_COLUMNS = (
        "id, timestamp, event_type, action, source, data_json::text, data_compressed, hash, processed, "
        "to_char(created_at, 'YYYY-MM-DD HH24:MI:SS')"
    )
    PATTERN_COLUMNS = (
        "id, event_id, pattern_type, confidence, pattern_data, embryo_id, to_char(created_at, 'YYYY-MM-DD HH24:MI:SS')"
    )
    SYSTEM_STATS_COLUMNS = (
        "id, timestamp, total_events, events_per_second, active_embryos, avg_fitness, storage_mb, "
        "to_char(created_at, 'YYYY-MM-DD HH24:MI:SS')"
    )

    def __init__(self, url: str | Location, *, readonly: bool = False, pool_size: int = 4) -> None:
        if psycopg is None:
            raise PersistenceError(
                "the PostgreSQL backend needs psycopg: pip install 'celflow[postgres]' (psycopg and psycopg-pool)"
            )
        location = parse_location(url)
        if location.is_sqlite:
            raise PersistenceError(f"{location.shown} is a SQLite file, not a PostgreSQL database")
        self.url, self.schema = location.target, location.schema
        self.path = location.shown
        self._password = urlsplit(self.url).password
        self.readonly = readonly
        self.schema_version = SCHEMA_VERSION  # the schema's own, once open (a reader leaves an older one as it is)
        self._closed = False
        self._local = threading.local()
        self._known_days: set[int] = set()  # day partitions known to exist (added after each commit)
        self._mostly_duplicates = False  # whether the last batch was (then counted under the lock)
        self._opclass: Any = None  # pg_trgm's gin_trgm_ops, schema-qualified, when a writer has it
        self._build_lock = threading.Lock()
        self._builder: threading.Thread | None = None
        self._build_conn: Any = None  # the builder's connection, for close() to cancel
        # One direct connection first: the pool would retry for its whole timeout and then report only
        # "pool initialization incomplete", not the server's reason (refused, unknown database, auth).
        try:
            psycopg.connect(self.url, connect_timeout=10).close()
        except psycopg.Error as exc:
            raise translate(exc, self.path, password=self._password, connecting=True) from None
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
            raise translate(exc, self.path, password=self._password, connecting=True) from None
        try:
            self._migrate()
            if not readonly:
                with self._conn() as conn:
                    self._opclass = self._trgm_opclass(conn)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _row_to_event(row: Sequence[Any]) -> StoredEvent:
        blob = bytes(row[6]) if row[6] is not None else None
        return StoredEvent(
            row[0], row[1], row[2], row[3], row[4], decode_data(row[5], blob), row[7], bool(row[8]), row[9]
        )

    def _search_clause(self, needle: str) -> tuple[str, list[Any]]:
        return _search_clause(needle)

    def _bucket(self, expression: str) -> str:
        return f"floor({expression} / %s)::bigint"

    def _cursor_clause(self, op: str, ts: float, event_id: int) -> tuple[str, list[Any]]:
        return f"(timestamp, id) {op} (%s, %s)", [ts, event_id]

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
        except psycopg.errors.QueryCanceled:  # its message names the limit this thread set
            raise QueryTimeoutError(f"the query ran longer than its {seconds or 0:g} s limit and was stopped") from None
        except (psycopg.Error, PoolTimeout) as exc:
            raise translate(exc, self.path, password=self._password) from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        # A search is never prepared: a generic plan cannot see the pattern, so it cannot tell a rare
        # word (the trigram indexes) from a common one (the newest rows first), and scanned every day.
        prepare = False if _SEARCH_TEXT in sql else None
        with self._conn() as conn:
            return list(conn.execute(sql, params, prepare=prepare).fetchall())

    def _migrate(self) -> None:
        """Create the schema, or bring an older one up to date (writers only), under an advisory lock."""
        with self._conn() as conn:
            version = self._schema_version(conn)
            if self.readonly:
                if version is None:
                    raise SchemaVersionError(f"{self.path} has no CelFlow schema yet; open it once for writing")
                self.schema_version = version  # schema 1 reads as it was (search reads jsonb's text)
                return
            if version == SCHEMA_VERSION:
                return
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INSERT_LOCK + 1,))
            version = self._schema_version(conn)  # again: another process may have done it meanwhile
            if version is None:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO celflow_meta (key, value) VALUES ('schema_version', %s)", (str(SCHEMA_VERSION),)
                )
            elif version == 1:
                self._upgrade_1_to_2(conn)

    def _schema_version(self, conn: Any) -> int | None:
        """The schema's version (None: no CelFlow schema); a newer one than this code knows is an error."""
        # pg_class, not to_regclass: the name lookup's cache still says "no such table" when another
        # process created it while this one waited for the lock ("relation celflow_meta already exists")
        exists = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = 'celflow_meta' "
            "AND relnamespace = current_schema()::regnamespace)"
        ).fetchone()[0]
        if not exists:
            return None
        version = int(conn.execute("SELECT value FROM celflow_meta WHERE key = 'schema_version'").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.path} was written by a newer CelFlow (schema version {version}; this version "
                f"understands up to {SCHEMA_VERSION}). Upgrade CelFlow to use it."
            )
        return version

    def _upgrade_1_to_2(self, conn: Any) -> None:
        """Schema 1 -> 2: data becomes ``json`` holding the canonical text SQLite would hold.

        jsonb kept the values but not the text (spaces, keys by length) and ``data_compressed`` the
        rest; each row is read, re-encoded as :func:`encode_data` writes it (the compressed ones
        decompressed as they are) and written to a new column, which then replaces the old one.
        """
        conn.execute("ALTER TABLE events ADD COLUMN data_v2 json")
        conn.execute("CREATE TEMP TABLE celflow_upgrade (id bigint, data json) ON COMMIT DROP")
        for day in self._days(conn):
            table = sql.Identifier(f"events_d{int(day)}")
            last = -_INT64
            while True:
                page = conn.execute(
                    sql.SQL(
                        "SELECT id, data_json::text, data_compressed FROM {} WHERE id > %s ORDER BY id LIMIT 20000"
                    ).format(table),
                    (last,),
                ).fetchall()
                if not page:
                    break
                with conn.cursor().copy("COPY celflow_upgrade (id, data) FROM STDIN") as copy:
                    for event_id, text, blob in page:
                        if blob is not None:
                            copy.write_row((event_id, data_text(None, bytes(blob))))
                        elif text is not None:
                            copy.write_row((event_id, encode_data(decode_data(text, None)).decode()))
                conn.execute(
                    sql.SQL(
                        "UPDATE {} AS e SET data_v2 = u.data, data_json = NULL, data_compressed = NULL "
                        "FROM celflow_upgrade u WHERE e.id = u.id"
                    ).format(table)
                )
                conn.execute("TRUNCATE celflow_upgrade")
                last = page[-1][0]
        conn.execute("ALTER TABLE events DROP COLUMN data_json")
        conn.execute("ALTER TABLE events RENAME COLUMN data_v2 TO data_json")
        conn.execute("UPDATE celflow_meta SET value = %s WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def _trgm_opclass(self, conn: Any) -> Any:
        """pg_trgm's ``gin_trgm_ops``, the extension created if need be; None (and a warning) without it."""
        find = "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = %s"
        found = conn.execute(find, (_TRGM,)).fetchone()
        reason = ""
        # In public if it can go there: an extension lives in one schema of the database, and one
        # created in this CelFlow schema would go (with the other schemas' indexes) if it were dropped.
        for where in (sql.SQL(" SCHEMA public"), sql.SQL("")):
            if found is not None:
                break
            try:
                with conn.transaction():  # a savepoint: a failure leaves the transaction usable
                    conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(_TRGM)) + where)
            except psycopg.Error as exc:
                reason = str(exc).strip().splitlines()[0]
            found = conn.execute(find, (_TRGM,)).fetchone()
        if found is None:
            log.warning(
                "search on %s reads every event: PostgreSQL's %s extension cannot be created (%s). Install it "
                "(Debian: postgresql-contrib) or run CREATE EXTENSION %s as a superuser; the next writer then "
                "indexes the finished days.",
                self.path,
                _TRGM,
                reason,
                _TRGM,
            )
            return None
        return sql.SQL("{}.gin_trgm_ops").format(sql.Identifier(found[0]))

    def build_search_index(self) -> int:
        """Give each finished day (before today, UTC) the search index it lacks; return how many were built.

        One day at a time with ``CREATE INDEX CONCURRENTLY``: writers and readers go on meanwhile.
        One builder per database at a time (others wait their turn); an index a stopped build left
        invalid is built again. Nothing to do on a reader or without pg_trgm.
        """
        if self.readonly or self._opclass is None:
            return 0
        with self._build_lock:
            try:
                conn: Any = psycopg.connect(self.url, autocommit=True, connect_timeout=10)  # CONCURRENTLY: autocommit
            except psycopg.Error as exc:
                raise translate(exc, self.path, password=self._password, connecting=True) from None
            self._build_conn = conn
            built = 0
            try:
                if self.schema:
                    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
                # Tried, not awaited: CREATE INDEX CONCURRENTLY waits for every older transaction, a
                # builder waiting for this lock too (a deadlock). Let go when the connection closes.
                while not conn.execute("SELECT pg_try_advisory_lock(%s)", (_BUILD_LOCK,)).fetchone()[0]:
                    if self._closed:
                        return 0
                    time.sleep(0.2)
                for day, valid in self._unindexed_days(conn):
                    if self._closed:
                        break
                    index = sql.Identifier(f"events_d{int(day)}_search")
                    if valid is False:
                        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(index))
                    with contextlib.suppress(psycopg.errors.UndefinedTable):  # the day was dropped meanwhile
                        conn.execute(
                            sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} USING gin (({}) {})").format(
                                index, sql.Identifier(f"events_d{int(day)}"), sql.SQL(_SEARCH_TEXT), self._opclass
                            )
                        )
                        built += 1
            except psycopg.Error as exc:
                raise translate(exc, self.path, password=self._password) from exc
            finally:
                self._build_conn = None
                conn.close()
            return built

    @staticmethod
    def _unindexed_days(conn: Any) -> list[tuple[int, bool | None]]:
        """Finished days without a valid search index, newest first: (day, False if invalid, None if none)."""
        rows = conn.execute(
            "SELECT c.relname, i.indisvalid FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid "
            "LEFT JOIN pg_class x ON x.relnamespace = c.relnamespace AND x.relname = c.relname || '_search' "
            "LEFT JOIN pg_index i ON i.indexrelid = x.oid WHERE h.inhparent = 'events'::regclass"
        ).fetchall()
        today = int(time.time() // DAY)
        days = [(int(name[len("events_d") :]), valid) for name, valid in rows if name.startswith("events_d")]
        return sorted(((d, v) for d, v in days if d < today and v is not True), reverse=True)

    def _index_in_background(self) -> None:
        """Run :meth:`build_search_index` on a thread of its own, unless one runs already."""
        if self.readonly or self._opclass is None or (self._builder is not None and self._builder.is_alive()):
            return

        def build() -> None:
            try:
                self.build_search_index()
            except Exception as exc:  # noqa: BLE001 - the next optimize() tries again; nothing else to tell
                if not self._closed:
                    log.warning("building the search index of %s stopped: %s", self.path, exc)

        self._builder = threading.Thread(target=build, name="celflow-search-index", daemon=True)
        self._builder.start()

    # -- the storage contract ------------------------------------------------------------------

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
                "COPY celflow_staging (ord, timestamp, event_type, action, source, data_json, hash) FROM STDIN"
            ) as copy:
                for i, row in enumerate(rows):
                    data_json = row.data_json
                    if row.data_compressed is not None:  # large data: TOAST compresses it
                        data_json = data_text(None, row.data_compressed)
                    copy.write_row((i, row.timestamp, row.event_type, row.action, row.source, data_json, row.hash))
            # Counters only before the lock: counting under it could wait for rows that a writer
            # waiting for the lock holds (a deadlock).
            if self._mostly_duplicates:  # as the last batch was
                counted: Sequence[Row] = [rows[i] for (i,) in conn.execute(_PRECOUNT_NEW).fetchall()]
            else:
                conn.execute(_PRECOUNT)
                counted = rows
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INSERT_LOCK,))  # held until the commit
            new = conn.execute(_MOVE).fetchall()
            if len(new) != len(counted) or (counted is not rows and 0 < len(new) < len(rows)):
                self._recount(conn, counted, new)
            ids = self._resolve_ids(conn, rows, new) if want_ids else None
        self._known_days |= days
        self._mostly_duplicates = len(new) * 2 < len(rows)
        return InsertResult(ids, len(new), len(rows) - len(new), max((r[0] for r in new), default=0))

    @staticmethod
    def _recount(conn: Any, counted: Sequence[Row], new: list[Any]) -> None:
        """Make the counters say what the move inserted, not what was counted before it."""
        delta: Counter[tuple[str, int, str]] = Counter()
        for row in counted:
            minute = math.floor(row.timestamp / 60)  # floor(timestamp / 60) in SQL: the same double division
            delta["event_type", minute, row.event_type] -= 1
            delta["source", minute, row.source] -= 1
        for _, ts, _, event_type, source in new:
            minute = math.floor(ts / 60)
            delta["event_type", minute, event_type] += 1
            delta["source", minute, source] += 1
        changed = [(key, n) for key, n in delta.items() if n]
        if changed:
            conn.execute(_RECOUNT, [[k[i] for k, _ in changed] for i in range(3)] + [[n for _, n in changed]])

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
        """Drop emptied counters, refresh the planner's statistics, index finished days in the background."""
        with self._conn() as conn:
            conn.execute("DELETE FROM event_counts WHERE n <= 0")
            conn.execute("ANALYZE events")
        self._index_in_background()

    def stats(self) -> dict[str, Any]:
        """Counts, the time span and sizes."""
        oldest, newest = self._read("SELECT min(timestamp), max(timestamp) FROM events")[0]
        by_type = self.count_by("event_type", EventQuery())
        return {
            "database_path": self.path,
            "schema_version": self.schema_version,
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
        check_int64(event_id, "event_id")
        text = encode_data(pattern_data).decode()  # integers past 64 bits too
        with self._conn() as conn:
            row = conn.execute(
                "INSERT INTO patterns (event_id, pattern_type, confidence, pattern_data, embryo_id) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (event_id, pattern_type, confidence, text, embryo_id),
            ).fetchone()
        return int(row[0])

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

    def close(self) -> None:
        """Stop a search index build, close the pool; later use raises :class:`DatabaseClosedError`."""
        self._closed = True
        builder, conn = self._builder, self._build_conn
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.cancel_safe(timeout=5)  # the stopped build leaves an invalid index: the next one redoes it
        if builder is not None:
            builder.join(timeout=30)
        self._pool.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed
