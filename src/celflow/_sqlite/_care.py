"""Care of a SQLite database file: the start-up check, check, vacuum, backup, recover and a doctor.

Nothing here deletes or overwrites a user's database: a backup goes to a new private file, a
recovery writes a new database and moves the damaged one aside under a dated name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._encoding import decode_data
from .._exceptions import CorruptDatabaseError, DatabaseNotFoundError, WriterBusyError
from .._files import writable_target
from ._lock import DatabaseLock
from ._schema import APPLICATION_ID, SCHEMA_VERSION, rebuild_counts
from ._store import BUSY_TIMEOUT_MS, SQLiteStore, file_uri, translate
from ._wal import inspect_wal, rechain_wal

log = logging.getLogger("celflow.care")

__all__ = [
    "CheckReport",
    "RecoverReport",
    "backup_database",
    "check_database",
    "doctor",
    "preflight",
    "recover_database",
    "vacuum_database",
]


def _existing(path: str | os.PathLike[str]) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatabaseNotFoundError(f"no CelFlow database at {path}")
    return path


def _size_mb(path: str) -> float:
    return round(os.path.getsize(path) / 1_048_576, 3) if os.path.exists(path) else 0.0


@dataclass
class CheckReport:
    """What ``check_database`` found."""

    path: str
    ok: bool
    mode: str  # "quick" or "full"
    problems: list[str] = field(default_factory=list)
    schema_version: int | None = None
    application_id: int | None = None
    size_mb: float = 0.0
    wal_size_mb: float = 0.0
    page_size: int = 0
    page_count: int = 0
    free_pages: int = 0
    fragmentation: float = 0.0  # free pages / all pages
    last_event_id: int | None = None
    seconds: float = 0.0

    @property
    def opened(self) -> bool:
        """A file is always read (a missing one raises :class:`DatabaseNotFoundError` instead)."""
        return True

    @property
    def condition(self) -> str:
        """``healthy`` or ``damaged``."""
        return "healthy" if self.ok else "damaged"

    def details(self) -> list[str]:
        """Schema version, sizes and pages, for a person."""
        return [
            f"schema version {self.schema_version}, {self.size_mb:,.1f} MB + WAL {self.wal_size_mb:,.1f} MB, "
            f"{self.page_count:,} pages of {self.page_size:,} B, {self.fragmentation:.1%} free"
        ]

    def to_dict(self) -> dict[str, Any]:
        """As a plain dict (``--json``)."""
        return asdict(self)


def check_database(path: str | os.PathLike[str], *, full: bool = False) -> CheckReport:
    """Check a database without changing it: ``quick_check`` (or the full ``integrity_check``)."""
    path = _existing(path)
    started = time.perf_counter()
    report = CheckReport(path, ok=True, mode="full" if full else "quick")
    report.size_mb, report.wal_size_mb = _size_mb(path), _size_mb(path + "-wal")
    wal = inspect_wal(path + "-wal")
    if wal.damaged:
        report.problems.append(wal.describe())
    try:
        conn = sqlite3.connect(file_uri(path, "ro"), uri=True)
    except sqlite3.Error as exc:
        report.ok = False
        report.problems.append(f"cannot open: {exc}")
        return report
    try:
        report.application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        report.schema_version = conn.execute("PRAGMA user_version").fetchone()[0]
        report.page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        report.page_count = conn.execute("PRAGMA page_count").fetchone()[0]
        report.free_pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
        if report.page_count:
            report.fragmentation = round(report.free_pages / report.page_count, 4)
        if report.application_id != APPLICATION_ID:
            report.problems.append(f"not a CelFlow database (application_id {report.application_id:#x})")
        elif (report.schema_version or 0) > SCHEMA_VERSION:
            report.problems.append(
                f"schema version {report.schema_version} is newer than this CelFlow ({SCHEMA_VERSION})"
            )
        with contextlib.suppress(sqlite3.Error):
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            report.last_event_id = int(row[0]) if row else 0
        pragma = "integrity_check(100)" if full else "quick_check(100)"
        results = [r[0] for r in conn.execute(f"PRAGMA {pragma}")]
        if results != ["ok"]:
            report.problems.extend(results)
    except sqlite3.DatabaseError as exc:
        report.problems.append(str(exc))
    finally:
        conn.close()
    report.ok = not report.problems
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def vacuum_database(path: str | os.PathLike[str]) -> tuple[float, float]:
    """Rebuild the file without free pages; writers may go on (they wait for SQLite's write lock
    while it runs, and it waits for theirs).

    Returns the size in MB before and after.
    """
    path = _existing(path)
    before = _size_mb(path) + _size_mb(path + "-wal")
    lock = DatabaseLock(path)
    lock.share()  # a writer: no start check or recovery of another process meanwhile
    try:
        conn = sqlite3.connect(file_uri(path, "rw"), uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            conn.execute("VACUUM")
            # Give the WAL's space back too; with readers or writers at work it cannot always be
            # emptied (it then shrinks at a later checkpoint).
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise translate(exc, path) from None
    finally:
        lock.release()
    return before, _size_mb(path) + _size_mb(path + "-wal")


def backup_database(path: str | os.PathLike[str], destination: str | os.PathLike[str], *, force: bool = False) -> int:
    """A consistent copy of the database, taken online (``celflow run`` may keep writing).

    ``VACUUM INTO`` reads one snapshot in a single read transaction, which in WAL mode never
    blocks the writer. The copy is written private (0600) under a temporary name, checked, and
    renamed into place. Returns its size in bytes.
    """
    path = _existing(path)
    target = Path(destination)
    folder = writable_target(target, force=force, source=path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)  # an empty 0600 file
    os.close(fd)
    try:
        try:
            conn = sqlite3.connect(file_uri(path, "ro"), uri=True)
            try:
                conn.execute("VACUUM INTO ?", (tmp,))
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise translate(exc, path) from None
        copy = sqlite3.connect(tmp)
        try:
            result = copy.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            copy.close()
        if result != "ok":
            raise CorruptDatabaseError(f"the backup of {path} failed its check ({result}); the source may be damaged")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target.stat().st_size


@dataclass
class RecoverReport:
    """What ``recover_database`` saved."""

    path: str
    damaged_copy: str
    last_id: int = 0  # the damaged file's highest id: new events are numbered after it
    events_saved: int = 0
    events_lost: int = 0  # rows read whose data could not be decoded
    events_damaged: int = 0  # rows saved with bytes that were not UTF-8 replaced by U+FFFD
    wal_frames_repaired: int = 0  # WAL frames past a damaged one whose checksums were rewritten to be read
    ids_skipped: int = 0  # ids hopped over on damaged pages: at most this many more events lost
    patterns_saved: int = 0
    system_stats_saved: int = 0
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_KEEP_COLUMNS = "id, timestamp, event_type, action, source, data_json, data_compressed, hash, processed, created_at"


#: After a page of events fails to read, this many ids are looked up one by one: a lookup goes
#: down the tree from its root, so only the rows on the damaged page itself are lost.
_POINT_LOOKUPS = 2_000


def _salvage_events(conn: sqlite3.Connection, report: RecoverReport) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    after, step = 0, 1
    try:
        last = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        last_id = int(last[0]) if last else None
        report.last_id = last_id or 0
    except sqlite3.Error:
        last_id = None

    def keep(row: tuple[Any, ...]) -> None:
        try:
            decode_data(row[5], row[6])
            float(row[1])
        except Exception:  # noqa: BLE001 - a damaged row of any kind is lost, the rest saved
            report.events_lost += 1
            return
        rows.append(row)
        if any(isinstance(v, str) and "\ufffd" in v for v in row):
            report.events_damaged += 1

    while True:
        try:
            page = conn.execute(
                f"SELECT {_KEEP_COLUMNS} FROM events WHERE id > ? ORDER BY id LIMIT 500", (after,)
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            if len(report.problems) < 20:
                report.problems.append(f"events after id {after}: {exc}")
            if last_id is not None and after >= last_id:
                break
            end = after + _POINT_LOOKUPS if last_id is None else min(after + _POINT_LOOKUPS, last_id)
            readable = False
            for event_id in range(after + 1, end + 1):
                try:
                    row = conn.execute(f"SELECT {_KEEP_COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
                except sqlite3.DatabaseError:
                    report.ids_skipped += 1
                    continue
                readable = True
                if row is not None:
                    keep(row)
            after = end
            if not readable:  # a long damaged stretch: hop on, faster the longer it goes on
                after += step
                report.ids_skipped += step
                step = min(step * 2, 100_000)
            if last_id is None and after > 10**12:
                break
            continue
        step = 1
        if not page:
            break
        for row in page:
            keep(row)
        after = page[-1][0]
    return rows


def recover_database(path: str | os.PathLike[str]) -> RecoverReport:
    """Save what can be read from a damaged database into a new one at the same path.

    The damaged file (and its WAL) is moved aside as ``<name>.damaged-<time>``, never deleted.
    Needs the file alone: stop ``celflow run`` and every other writer first (:class:`WriterBusyError`).
    """
    path = _existing(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = f"{path}.damaged-{stamp}"
    n = 1
    while os.path.exists(aside):  # never replace an earlier damaged copy
        n += 1
        aside = f"{path}.damaged-{stamp}-{n}"
    report = RecoverReport(path, damaged_copy=aside)
    with DatabaseLock(path).alone() as alone:
        if not alone:
            raise WriterBusyError(
                f"{path} is open for writing in another process (or this one): stop `celflow run` and every "
                "other writer of it first; a recovery moves the file aside"
            )
        _recover(path, report)
    return report


def _recover(path: str, report: RecoverReport) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, work = tempfile.mkstemp(prefix=".damaged-copy.", suffix=".db", dir=folder)  # read a copy: never the file
    os.close(fd)
    try:
        shutil.copyfile(path, work)
        if os.path.exists(path + "-wal"):  # committed events not yet checkpointed live there
            shutil.copyfile(path + "-wal", work + "-wal")
            # SQLite stops at a damaged frame; re-chained, the transactions after it are read too
            report.wal_frames_repaired = rechain_wal(work + "-wal")
        source = _open_damaged(work, path)
        try:
            events = _salvage_events(source, report)
            patterns = _salvage_all(source, "patterns", report)
            stats = _salvage_all(source, "system_stats", report)
        finally:
            source.close()
        fd, fresh = tempfile.mkstemp(prefix=".recovered.", suffix=".db", dir=folder)
        os.close(fd)
        os.unlink(fresh)  # SQLiteStore creates it (0600) with the schema
        try:
            _write_recovered(fresh, events, patterns, stats, report)
        except BaseException:
            for leftover in (fresh, fresh + "-wal", fresh + "-shm", fresh + ".lock"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
            raise
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.rename(path + suffix, report.damaged_copy + suffix)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(fresh + suffix):
                os.rename(fresh + suffix, path + suffix)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fresh + ".lock")
    finally:
        for leftover in (work, work + "-wal", work + "-shm", work + "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


def _write_recovered(
    fresh: str,
    events: list[tuple[Any, ...]],
    patterns: list[tuple[Any, ...]],
    stats: list[tuple[Any, ...]],
    report: RecoverReport,
) -> None:
    """The new database: every saved row with its original id."""
    store = SQLiteStore(fresh)
    try:
        with store.transaction() as conn:  # the same ids: streams, patterns and cursors still fit
            conn.executemany(
                f"INSERT OR IGNORE INTO events ({_KEEP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", events
            )
            report.events_saved = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            highest = max([report.last_id, *(row[0] for row in events[-1:])])
            conn.execute("DELETE FROM sqlite_sequence WHERE name = 'events'")
            conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (highest,))
            rebuild_counts(conn)
        with store.transaction() as conn:
            conn.executemany(
                "INSERT INTO patterns (id, event_id, pattern_type, confidence, pattern_data, embryo_id, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                patterns,
            )
            conn.executemany(
                "INSERT INTO system_stats (id, timestamp, total_events, events_per_second, active_embryos, "
                "avg_fitness, storage_mb, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                stats,
            )
        report.patterns_saved, report.system_stats_saved = len(patterns), len(stats)
    finally:
        store.close()


def _open_damaged(work: str, original: str) -> sqlite3.Connection:
    """Open the working copy; a truncated file gets its header's page count cleared (SQLite then
    takes the size from the file) so the pages that are there can be read."""
    for attempt in range(3):
        try:
            conn = sqlite3.connect(work)
            # A damaged row's text may not be UTF-8: saved with U+FFFD for the bad bytes (and
            # counted), instead of failing the whole page it sits on.
            conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                conn.close()
            if attempt == 0 and os.path.exists(work + "-wal"):
                os.unlink(work + "-wal")  # a damaged WAL: read the main file alone
                continue
            if attempt == 2:
                raise CorruptDatabaseError(
                    f"{original} cannot be read at all ({exc}): nothing can be saved from it; it was left as it is"
                ) from None
            with open(work, "r+b") as f:
                f.seek(28)  # "in-header database size": 0 = use the file's size
                f.write(b"\x00\x00\x00\x00")
    raise AssertionError("unreachable")


def _salvage_all(conn: sqlite3.Connection, table: str, report: RecoverReport) -> list[tuple[Any, ...]]:
    columns = {
        "patterns": "id, event_id, pattern_type, confidence, pattern_data, embryo_id, created_at",
        "system_stats": (
            "id, timestamp, total_events, events_per_second, active_embryos, avg_fitness, storage_mb, created_at"
        ),
    }[table]  # fixed names: safe in SQL
    try:
        return conn.execute(f"SELECT {columns} FROM {table} ORDER BY id").fetchall()
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"{table}: {exc} (not saved)")
        return []


#: Bytes up to which the start check is SQLite's full integrity_check (~2 s at 256 MiB: it also
#: compares every index with its table), then its quick_check (seconds), then the file's edges.
INTEGRITY_CHECK_UP_TO = 256 * 1024**2
QUICK_CHECK_UP_TO = 2 * 1024**3


def preflight(path: str | os.PathLike[str], *, durability: str = "full") -> None:
    """Refuse a damaged database before anything writes to it: :class:`CorruptDatabaseError` names
    ``celflow db recover``. Reads only, through a read-only connection (which never checkpoints,
    so a damaged file and its WAL are left exactly as they were).

    The WAL's checksum chain is checked first, then SQLite's ``integrity_check`` for files up to
    256 MiB, its ``quick_check`` up to 2 GiB, or a read of the edges above (schema, first and last
    events, both ends of the time index). With ``durability="normal"`` the WAL is synced only at
    checkpoints, so a power cut can leave a hole before later commits; such a WAL is not refused:
    it is copied aside as ``<name>-wal.damaged-<time>`` and the commits after the hole are not
    applied (the loss that ``normal`` allows), with a warning.
    """
    path = os.fspath(path)
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return
    if os.path.exists(path + "-journal"):
        return  # a hot rollback journal: only a read-write open can roll it back (the store does)
    hint = (
        "; CelFlow will not write to it. Stop here and run "
        f"`celflow db recover --db {path}` (it saves what can be read and keeps the damaged file aside)"
    )
    wal = inspect_wal(path + "-wal")
    if wal.damaged and durability == "full":
        raise CorruptDatabaseError(f"{path} is damaged ({wal.describe()}){hint}")
    if wal.damaged:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside, n = f"{path}-wal.damaged-{stamp}", 1
        while os.path.exists(aside):  # never replace an earlier copy
            n += 1
            aside = f"{path}-wal.damaged-{stamp}-{n}"
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(path + "-wal", "rb") as source, os.fdopen(fd, "wb") as copy:
            shutil.copyfileobj(source, copy)  # plain reads and writes (copyfile's sendfile escapes write tracing)
            copy.flush()
            os.fsync(copy.fileno())
        log.warning(
            "%s: %s. With durability 'normal' a power cut can leave this; those commits are not applied. "
            "The WAL as it was is kept as %s",
            path,
            wal.describe(),
            aside,
        )
    try:
        conn = sqlite3.connect(file_uri(path, "ro"), uri=True)
    except sqlite3.Error:
        return  # not openable at all: the store's own open says why
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            return  # not CelFlow's file: the store refuses it with its own message
        size = os.path.getsize(path)
        if size <= QUICK_CHECK_UP_TO:
            pragma = "integrity_check(20)" if size <= INTEGRITY_CHECK_UP_TO else "quick_check(20)"
            problems = [str(r[0]) for r in conn.execute(f"PRAGMA {pragma}")]
            if problems != ["ok"]:
                raise CorruptDatabaseError(f"{path} is damaged ({problems[0]}){hint}")
            return
        last = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        last_id = int(last[0]) if last else 0
        conn.execute("SELECT id FROM events WHERE id > 0 ORDER BY id LIMIT 1").fetchall()
        conn.execute("SELECT id FROM events WHERE id >= ? ORDER BY id LIMIT 1", (max(0, last_id - 1),)).fetchall()
        conn.execute("SELECT id FROM events ORDER BY timestamp LIMIT 1").fetchall()
        conn.execute("SELECT id FROM events ORDER BY timestamp DESC LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc) or "readonly" in str(exc):
            return  # not SQLite, or needs a write to recover: the store's read-write open deals with it
        raise CorruptDatabaseError(f"{path} is damaged ({exc}){hint}") from None
    finally:
        conn.close()


def doctor(path: str | os.PathLike[str]) -> tuple[CheckReport, list[str]]:
    """A full check, and what to do about what it found, in plain words."""
    report = check_database(path, full=True)
    advice: list[str] = []
    shown = os.fspath(path)
    if any("not a CelFlow database" in p for p in report.problems):
        advice.append("This file is not a CelFlow database: point --db at the right file.")
    elif any("newer than this CelFlow" in p for p in report.problems):
        advice.append("A newer CelFlow wrote this file: upgrade CelFlow (pip install -U celflow).")
    elif not report.ok:
        advice.append(
            f"The file is damaged. Stop `celflow run`, then run `celflow db recover --db {shown}`: it saves "
            "what can be read into a new database and keeps the damaged file aside."
        )
    if report.ok and report.fragmentation > 0.2:
        advice.append(
            f"{report.fragmentation:.0%} of the file is free pages: `celflow db vacuum --db {shown}` "
            "gives the space back (writers wait while it runs: best at a quiet time)."
        )
    if report.ok and report.wal_size_mb > 256:
        advice.append(
            f"The WAL is {report.wal_size_mb:,.0f} MB: a reader may be holding an old snapshot open; close "
            "long-running readers, or stop and start `celflow run` to checkpoint it."
        )
    if report.ok and not advice:
        advice.append("The database is healthy. Nothing to do.")
    advice.append(f"Keep a copy: `celflow db backup --db {shown} BACKUP.db` works while `celflow run` writes.")
    return report, advice
