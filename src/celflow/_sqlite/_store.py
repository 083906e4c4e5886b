"""The SQLite store: WAL, thread-local connections, any number of writer processes (SQLite's lock between them)."""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .._encoding import MAX_SEARCH_LENGTH, Row, _check_text, data_text, decode_data, encode_data
from .._exceptions import (
    CorruptDatabaseError,
    DatabaseClosedError,
    DatabaseNotFoundError,
    NotACelflowDatabaseError,
    OperationalError,
    PersistenceError,
    QueryTimeoutError,
    SchemaVersionError,
    ValidationError,
)
from .._files import ensure_private_dir
from .._sql import SQLReads, like_pattern
from .._storage import Durability
from .._types import EventQuery, InsertResult, StoredEvent
from ._lock import DatabaseLock
from ._schema import APPLICATION_ID, COUNT_NEW_EVENTS, SCHEMA_VERSION, migrate, rebuild_counts

__all__ = ["SQLiteStore", "translate"]

log = logging.getLogger("celflow.storage")


MMAP_SIZE = 256 * 1024 * 1024  # the seed's 256 MB memory map
#: How long a write waits for another connection's transaction (another process's batch, a retention step, a
#: `celflow db vacuum`) before it fails with OperationalError (the batching writer then retries).
BUSY_TIMEOUT_MS = 60_000
_SQLITE_HEADER = b"SQLite format 3\x00"

#: The naive one-row insert (``executemany``); the benchmark's baseline uses it.
_INSERT = (
    "INSERT OR IGNORE INTO events (timestamp, event_type, action, source, data_json, "
    "data_compressed, hash) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_ROW_WIDTH = 7
_MAX_ROWS_PER_STATEMENT = 256


@functools.lru_cache(maxsize=_MAX_ROWS_PER_STATEMENT)
def _insert_sql(n: int) -> str:
    """An insert of ``n`` rows in one statement; the last parameter is everyone's created_at.

    One statement per up to 256 rows, not ``executemany``: SQLite then runs the whole insert in
    one step, without Python's GIL, instead of giving the GIL back and winning it again for every
    row (which, next to a producer thread, made ``executemany`` ~6x slower; see bench/).
    """
    created = _ROW_WIDTH * n + 1
    values = ",".join(
        "(" + ",".join(f"?{_ROW_WIDTH * i + k}" for k in range(1, _ROW_WIDTH + 1)) + f",?{created})" for i in range(n)
    )
    return (
        "INSERT OR IGNORE INTO events (timestamp, event_type, action, source, data_json, data_compressed, "
        f"hash, created_at) VALUES {values}"
    )


def _statement_sizes(n: int, largest: int) -> Iterator[int]:
    """Split ``n`` rows into statements of at most ``largest`` rows (each size is prepared once, then cached)."""
    while n > 0:
        yield min(n, largest)
        n -= largest


def _error_name(exc: BaseException) -> str | None:
    """SQLite's (extended) result code name, e.g. ``SQLITE_IOERR_FSYNC``, when the driver gives one."""
    name = getattr(exc, "sqlite_errorname", None)
    return name if isinstance(exc, sqlite3.Error) and isinstance(name, str) else None


def _primary_code(exc: BaseException) -> int | None:
    """SQLite's primary result code (``sqlite3.SQLITE_FULL``...) of a driver error, when it carries one."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(exc, sqlite3.Error) and isinstance(code, int) else None


#: The operating system failed SQLite: an I/O error (a read, a write, an fsync...) or a full disk.
_OS_FAILURES = (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL)


def translate(exc: sqlite3.Error, path: str) -> PersistenceError:
    """Turn a driver error into CelFlow's tree (the one place where that happens)."""
    name = _error_name(exc)
    message = f"{exc}{f' [{name}]' if name else ''} (database {path})"
    if "Could not decode to UTF-8" in str(exc):  # a damaged row's text: the driver's message, not SQLite's
        return CorruptDatabaseError(
            f"a stored row's text is not UTF-8 (database {path}): the file is damaged; stop CelFlow and run "
            f"`celflow db recover --db {path}` (it saves what can be read and keeps the damaged file aside)"
        )
    if isinstance(exc, sqlite3.OperationalError):
        if str(exc) == "interrupted" and getattr(_deadline, "at", None) is not None:
            return QueryTimeoutError(f"the query ran longer than its {_deadline.seconds:g} s limit and was stopped")
        code = _primary_code(exc)
        if "disk is full" in str(exc) or code == sqlite3.SQLITE_FULL:
            message += ": free some disk space; nothing of the failed batch was written"
        elif code == sqlite3.SQLITE_IOERR:
            message += (
                ": the disk or file system failed a read, write or sync. A failed write is rolled back "
                "(nothing of it is stored) and its connection replaced; if this persists, check the disk (dmesg)"
            )
        return OperationalError(message)
    if isinstance(exc, sqlite3.DatabaseError) and "malformed" in str(exc):
        return CorruptDatabaseError(
            f"{message}: the file is damaged; stop CelFlow and run `celflow db recover --db {path}` "
            "(it saves what can be read and keeps the damaged file aside)"
        )
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        return NotACelflowDatabaseError(message)
    return PersistenceError(message)


_deadline = threading.local()  # the time limit of the reads running on this thread, if any


def _past_deadline() -> int:
    """SQLite's progress handler: non-zero interrupts the running statement."""
    return 1 if time.monotonic() > _deadline.at else 0


def _search_udf(data_compressed: bytes, needle: bytes) -> bool:
    """Search in compressed data: bytes.lower() folds ASCII letters only, as SQLite's LIKE does."""
    try:
        text = data_text(None, data_compressed).encode()
    except Exception:  # noqa: BLE001 - a damaged blob matches nothing; reading its row reports the damage
        return False
    return needle in text.lower()


_NAMES_HOLD = "(instr(lower(event_type), ?) OR instr(lower(source), ?) OR instr(lower(action), ?))"


def _search_clause(needle: str) -> tuple[str, list[Any]]:
    """A literal substring of the type, source, action or JSON data, ignoring the case of ASCII letters.

    LIKE reads a text only up to a NUL character. JSON text never holds one raw (it is written
    ``\\u0000``), but names may: a needle with a NUL compares the names whole with instr(), and
    names holding a NUL are compared so too. SQLite's lower() folds ASCII letters only, like LIKE.
    """
    if len(needle) > MAX_SEARCH_LENGTH:  # a longer LIKE pattern can pass SQLite's limit (an SQL error)
        raise ValidationError(
            f"search is {len(needle)} characters long; the limit is {MAX_SEARCH_LENGTH}", field="search"
        )
    _check_text(needle, "search")
    folded = needle.encode().lower()
    text = folded.decode()
    if "\x00" in needle:
        return _NAMES_HOLD, [text, text, text]
    like = like_pattern(needle)
    clause = (
        "(event_type LIKE ? ESCAPE '\\' OR source LIKE ? ESCAPE '\\' OR action LIKE ? ESCAPE '\\' "
        "OR data_json LIKE ? ESCAPE '\\' OR (data_compressed IS NOT NULL AND celflow_search(data_compressed, ?)) "
        f"OR ((instr(event_type, ?) OR instr(source, ?) OR instr(action, ?)) AND {_NAMES_HOLD}))"
    )
    return clause, [like, like, like, like, folded, "\x00", "\x00", "\x00", text, text, text]


def file_uri(path: str, mode: str) -> str:
    """SQLite's URI of ``path`` (``mode``: ro, rw): quoted, so '?', '#' and '%' stay part of the name;
    absolute, so a later chdir changes nothing; ``rw`` never creates the file."""
    return Path(os.path.abspath(path)).as_uri() + f"?mode={mode}"


def _inspect_existing(path: str) -> None:
    """Refuse, without writing anything, a file that is not SQLite."""
    with open(path, "rb") as f:
        header = f.read(len(_SQLITE_HEADER))
    if header and header != _SQLITE_HEADER:
        raise NotACelflowDatabaseError(
            f"{path} is not an SQLite database (its first bytes are {header[:8]!r}); "
            "it was not modified. Pass the path of a CelFlow database, or a new path."
        )


def _create_new(path: str) -> None:
    """Create a CelFlow database at ``path`` whole, or not at all: built under a private temporary
    name, then linked into place. A reader never sees a half-made file, and of two processes
    creating it at once, one file wins and both use it."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".new", dir=folder)  # 0600
    os.close(fd)
    try:
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # before the first table
                migrate(conn, 0)
                conn.execute("PRAGMA journal_mode = WAL")  # kept in the file's header
            finally:
                conn.close()  # the last connection: the WAL is checkpointed into the file and removed
        except sqlite3.Error as exc:
            raise translate(exc, path) from None
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if the name exists: never over another process's new file
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: a copy into a name only this process made
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as out, open(tmp, "rb") as made:
                    shutil.copyfileobj(made, out)
                    out.flush()
                    os.fsync(out.fileno())
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        for leftover in (tmp, tmp + "-wal", tmp + "-shm", tmp + "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


class SQLiteStore(SQLReads):
    """Events, patterns and system stats in one SQLite file (see :mod:`celflow._sqlite._schema`)."""

    P = "?"
    EVENT_COLUMNS = "id, timestamp, event_type, action, source, data_json, data_compressed, hash, processed, created_at"
    PATTERN_COLUMNS = "id, event_id, pattern_type, confidence, pattern_data, embryo_id, created_at"
    SYSTEM_STATS_COLUMNS = (
        "id, timestamp, total_events, events_per_second, active_embryos, avg_fitness, storage_mb, created_at"
    )

    @staticmethod
    def _row_to_event(row: Sequence[Any]) -> StoredEvent:
        # Positional, in EVENT_COLUMNS order: this runs for every row a query returns.
        return StoredEvent(
            row[0], row[1], row[2], row[3], row[4], decode_data(row[5], row[6]), row[7], bool(row[8]), row[9]
        )

    def _search_clause(self, needle: str) -> tuple[str, list[Any]]:
        return _search_clause(needle)

    def _bucket(self, expression: str) -> str:
        return f"CAST({expression} / ? AS INTEGER)"

    def _cursor_clause(self, op: str, ts: float, event_id: int) -> tuple[str, list[Any]]:
        # spelled out, not a row value: SQLite then walks the (timestamp, hash) index from the cursor
        return f"timestamp {op}= ? AND (timestamp {op} ? OR id {op} ?)", [ts, ts, event_id]

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        durability: Durability = "normal",
        lock: DatabaseLock | None = None,
    ) -> None:
        self.path = os.fspath(path)
        # read-write even for a reader (query_only): a read-only open of a WAL file cannot make its -shm
        self._uri = file_uri(self.path, "rw")
        self.readonly = readonly
        self.durability = durability
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._write_lock = threading.Lock()
        #: Held shared while writable (``lock``: one already held, after a start check).
        self._lock = lock or DatabaseLock(self.path)
        self._closed = False
        self._disk_was_full = False  # the last write failed for want of space: make room before the next
        self._rows_per_statement = _MAX_ROWS_PER_STATEMENT
        self._open()

    # -- opening -------------------------------------------------------------------------------

    def _open(self) -> None:
        if os.path.isdir(self.path):
            raise NotACelflowDatabaseError(f"{self.path} is a folder; give the path of a database file")
        if self.readonly and not os.path.exists(self.path):
            raise DatabaseNotFoundError(
                f"no CelFlow database at {self.path}: start `celflow run` to create one, "
                "or pass --db with the path of an existing database"
            )
        try:
            if os.path.exists(self.path):
                _inspect_existing(self.path)  # a file that is not SQLite is refused before anything is made
            if not self.readonly:
                ensure_private_dir(os.path.dirname(os.path.abspath(self.path)))
                # Before any connection: a recovery of another process may not move the file away under it.
                self._lock.share()
                if not os.path.exists(self.path):
                    _create_new(self.path)
            self._check_and_migrate(self._connection())
        except BaseException:
            self.close()
            if not self.readonly:
                self._lock.discard()  # the lock file too, if this open made it (a refused foreign file)
            raise

    def _check_and_migrate(self, conn: sqlite3.Connection) -> None:
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise NotACelflowDatabaseError(
                f"{self.path} cannot be read as an SQLite database ({exc}); it was not modified"
            ) from None
        if app_id != APPLICATION_ID and tables:
            raise NotACelflowDatabaseError(
                f"{self.path} is an SQLite database but not a CelFlow one (application_id "
                f"{app_id:#x}); it was not modified. Use a new path for CelFlow's events."
            )
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.path} was written by a newer CelFlow (schema version {version}; this "
                f"version understands up to {SCHEMA_VERSION}). Upgrade CelFlow to open it."
            )
        if version < SCHEMA_VERSION:
            if self.readonly:
                raise SchemaVersionError(
                    f"{self.path} has schema version {version} and needs a migration to "
                    f"{SCHEMA_VERSION}; open it once for writing (e.g. `celflow run`)."
                )
            with self._translate():
                if tables == 0:  # an empty file (made by hand): CelFlow's settings before its first table
                    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                    conn.execute("PRAGMA journal_mode = WAL")
                with self._write_lock:
                    migrate(conn, version)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise DatabaseClosedError(f"the database {self.path} is closed")
        try:
            conn = sqlite3.connect(
                self._uri,
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
                cached_statements=_MAX_ROWS_PER_STATEMENT + 64,  # every insert size, and the rest
            )
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous = " + ("FULL" if self.durability == "full" else "NORMAL"))
            conn.execute(f"PRAGMA mmap_size = {MMAP_SIZE}")
            conn.execute("PRAGMA cache_size = -16384")
            conn.execute("PRAGMA temp_store = MEMORY")
            # ANALYZE (run by PRAGMA optimize) reads ~this many rows per index, not all of them:
            # a full ANALYZE of 10 M events stalled ingest for seconds.
            conn.execute("PRAGMA analysis_limit = 1000")
            if self.readonly:
                conn.execute("PRAGMA query_only = 1")
        except sqlite3.DatabaseError:
            conn.close()
            raise NotACelflowDatabaseError(
                f"{self.path} cannot be read as an SQLite database; it was not modified"
            ) from None
        conn.create_function("celflow_search", 2, _search_udf, deterministic=True)
        # An SQLite built with a low parameter limit (999 before 3.32) gets smaller statements.
        max_rows = (conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - 1) // _ROW_WIDTH
        self._rows_per_statement = min(max_rows, _MAX_ROWS_PER_STATEMENT)
        self._local.conn = conn
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc
        except OverflowError:  # a parameter past SQLite's 64-bit integers
            raise ValidationError("a number is too large: SQLite stores integers of up to 64 bits") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``) on this thread's connection."""
        if self.readonly:
            raise PersistenceError(f"{self.path} was opened read-only")
        conn = self._connection()
        with self._write_lock, self._translate(), self._distrusting(conn):
            if self._disk_was_full:
                self._make_room(conn)
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
            self._disk_was_full = False

    def _make_room(self, conn: sqlite3.Connection) -> None:
        """After a full disk, copy the WAL into the database before the next write (a passive checkpoint:
        it waits for nobody), so that write starts the WAL over instead of growing it.

        Without it, the retried transaction grows the WAL first and the checkpoint after it needs room
        in the database file too: a little freed space went to the WAL and the writer stayed stuck.
        """
        with contextlib.suppress(sqlite3.Error):  # still no room: the write says so itself
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    @contextlib.contextmanager
    def _distrusting(self, conn: sqlite3.Connection) -> Iterator[None]:
        """Roll back a failed write; drop its connection if the OS failed it (or it cannot roll back).

        After a failed write or fsync SQLite may have left frames of the failed transaction in the
        WAL, and Linux may have dropped the dirty pages the fsync was for, so that a later fsync of
        the same file "succeeds" without them. So nothing of that connection is reused (its page
        cache, its pager's error state, its view of the WAL): the next write opens a new one and
        writes its whole transaction again, pages and all (the ``(timestamp, hash)`` index ignores
        rows of a failed commit that did reach the file).
        """
        try:
            yield
        except BaseException as exc:
            code = _primary_code(exc)
            distrust = code in _OS_FAILURES
            if code == sqlite3.SQLITE_FULL:
                self._disk_was_full = True
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    distrust = True  # left in a transaction, the connection would refuse every later BEGIN
            if distrust:
                self._drop_connection(conn, exc)
            raise

    def _drop_connection(self, conn: sqlite3.Connection, exc: BaseException) -> None:
        """Close ``conn``, this thread's connection; the thread's next use opens a new one."""
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._conns_lock, contextlib.suppress(ValueError):
            self._conns.remove(conn)
        with contextlib.suppress(sqlite3.Error):
            conn.close()
        log.warning(
            "%s during a write to %s: its connection was closed, the next write opens a new one",
            _error_name(exc) or type(exc).__name__,
            self.path,
        )

    @contextlib.contextmanager
    def time_limit(self, seconds: float | None) -> Iterator[None]:
        """Interrupt this thread's reads that run longer than ``seconds`` (:class:`QueryTimeoutError`)."""
        if seconds is None:
            yield
            return
        conn = self._connection()
        _deadline.at, _deadline.seconds = time.monotonic() + seconds, seconds
        conn.set_progress_handler(_past_deadline, 10_000)  # every 10,000 VM steps: ~0.1 ms
        try:
            yield
        finally:
            conn.set_progress_handler(None, 0)
            _deadline.at = None

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        conn = self._connection()
        with self._translate():
            return conn.execute(sql, params).fetchall()

    # -- the storage contract ------------------------------------------------------------------

    def insert_events(self, rows: Sequence[Row], *, want_ids: bool = True) -> InsertResult:
        """Insert prepared rows in one transaction; duplicates are ignored and counted."""
        if not rows:
            return InsertResult([] if want_ids else None, 0, 0)
        created_at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())  # as CURRENT_TIMESTAMP writes it
        with self.transaction() as conn:
            # New ids are above the sequence, not contiguous: an ignored duplicate uses up an id too.
            seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            first_new = (seq[0] if seq else 0) + 1
            before = conn.total_changes
            start = 0
            for size in _statement_sizes(len(rows), self._rows_per_statement):
                params = list(itertools.chain.from_iterable(rows[start : start + size]))
                params.append(created_at)
                cur = conn.execute(_insert_sql(size), params)
                start += size
            inserted = conn.total_changes - before
            # the connection's last inserted rowid: this batch's highest id once it inserted any (ids only grow)
            last_id = (cur.lastrowid or 0) if inserted else 0
            if inserted:
                conn.execute(COUNT_NEW_EVENTS, (first_new - 1,))
            ids = self._resolve_ids(conn, rows, inserted, first_new) if want_ids else None
        return InsertResult(ids, inserted, len(rows) - inserted, last_id)

    @staticmethod
    def _resolve_ids(conn: sqlite3.Connection, rows: Sequence[Row], inserted: int, first_new: int) -> list[int]:
        if inserted == len(rows):  # nothing ignored: the ids are consecutive, in input order
            return list(range(first_new, first_new + inserted))
        by_key: dict[tuple[float, str], int] = {}
        if inserted:
            for event_id, ts, digest in conn.execute(
                "SELECT id, timestamp, hash FROM events WHERE id >= ?", (first_new,)
            ):
                by_key[(ts, digest)] = event_id
        ids = []
        for row in rows:
            key = (row.timestamp, row.hash)
            event_id = by_key.get(key)
            if event_id is None:
                event_id = conn.execute("SELECT id FROM events WHERE timestamp = ? AND hash = ?", key).fetchone()[0]
                by_key[key] = event_id
            ids.append(event_id)
        return ids

    def quick_check(self) -> list[str]:
        """SQLite's ``quick_check``: the problems it finds (empty: none)."""
        rows = [str(r[0]) for r in self._read("PRAGMA quick_check(20)")]
        return [] if rows == ["ok"] else rows

    def last_id(self) -> int:
        """The highest id ever given (``sqlite_sequence``: deleted ids count too)."""
        rows = self._read("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
        return int(rows[0][0]) if rows else 0

    def rebuild_counts(self) -> None:
        """Recount the per-minute counters from the events (after rows were added by hand)."""
        with self.transaction() as conn:
            rebuild_counts(conn)

    def delete_before(self, cutoff: float, *, limit: int | None = None) -> int:
        """Delete events older than ``cutoff`` (at most ``limit`` of the oldest); return how many."""
        with self.transaction() as conn:
            if limit is None:
                cur = conn.execute("DELETE FROM events WHERE timestamp < ?", (cutoff,))
            else:
                cur = conn.execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE timestamp < ? "
                    "ORDER BY timestamp LIMIT ?)",
                    (cutoff, limit),
                )
            return cur.rowcount

    def maintain(self, *, vacuum_pages: int = 500) -> int:
        """Reclaim up to ``vacuum_pages`` free pages (a short step); return the free pages left."""
        conn = self._connection()
        with self._write_lock, self._translate(), self._distrusting(conn):
            # executescript steps the pragma to the end; execute() would free a single page.
            conn.executescript(f"PRAGMA incremental_vacuum({int(vacuum_pages)});")
            return int(conn.execute("PRAGMA freelist_count").fetchone()[0])

    def optimize(self) -> None:
        """Drop emptied counters and refresh the planner's statistics (bounded by analysis_limit)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM event_counts WHERE n <= 0")
        conn = self._connection()
        with self._translate(), self._distrusting(conn):
            conn.execute("PRAGMA optimize").fetchall()

    def stats(self) -> dict[str, Any]:
        """Sizes and counts of the database (the seed's ``get_database_stats``)."""
        oldest, newest = self._read("SELECT min(timestamp), max(timestamp) FROM events")[0]
        by_type = self.count_by("event_type", EventQuery())
        page_size = self._read("PRAGMA page_size")[0][0]
        page_count = self._read("PRAGMA page_count")[0][0]
        freelist = self._read("PRAGMA freelist_count")[0][0]
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
            "page_size": page_size,
            "page_count": page_count,
            "free_pages": freelist,
        }

    def sizes(self) -> dict[str, float]:
        """The database's size on disk in MB: in all, the main file, the WAL (no query: cheap)."""
        main_bytes = os.path.getsize(self.path) if os.path.exists(self.path) else 0
        wal = self.path + "-wal"
        wal_bytes = os.path.getsize(wal) if os.path.exists(wal) else 0
        return {
            "database_size_mb": round((main_bytes + wal_bytes) / 1_048_576, 3),
            "file_size_mb": round(main_bytes / 1_048_576, 3),
            "wal_size_mb": round(wal_bytes / 1_048_576, 3),
        }

    # -- patterns and system stats -------------------------------------------------------------

    def insert_pattern(
        self, pattern_type: str, confidence: float, pattern_data: Any, *, event_id: int | None, embryo_id: str | None
    ) -> int:
        """Store a pattern found by the host AI; return its id."""
        text = encode_data(pattern_data).decode()  # integers past 64 bits too
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO patterns (event_id, pattern_type, confidence, pattern_data, embryo_id) "
                "VALUES (?, ?, ?, ?, ?)",
                (event_id, pattern_type, confidence, text, embryo_id),
            )
            return int(cur.lastrowid or 0)

    def insert_system_stats(self, values: dict[str, Any]) -> int:
        """Record a system stats snapshot; return its id."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO system_stats (timestamp, total_events, events_per_second, active_embryos, "
                "avg_fitness, storage_mb) VALUES (:timestamp, :total_events, :events_per_second, "
                ":active_embryos, :avg_fitness, :storage_mb)",
                values,
            )
            return int(cur.lastrowid or 0)

    def close(self) -> None:
        """Close every connection and let go of the lock file; later use raises."""
        with self._conns_lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()
        self._lock.release()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed
