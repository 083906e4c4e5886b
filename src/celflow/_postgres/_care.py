"""Care of a PostgreSQL database: check, vacuum and a doctor, through the store's public methods.

Backup and recovery of a server database are the server's tools' work (pg_dump, its WAL):
:func:`refuse_backup` and :func:`refuse_recover` say what to use instead.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from .._exceptions import PersistenceError, SchemaVersionError
from .._location import Location, mask_url
from .._types import EventQuery
from ._store import SCHEMA_VERSION, PostgresStore

__all__ = [
    "PostgresCheckReport",
    "check_postgres",
    "doctor_postgres",
    "refuse_backup",
    "refuse_recover",
    "vacuum_postgres",
]


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _pg_dump(location: Location) -> str:
    """The ``pg_dump`` command that saves the CelFlow schema a location names (password masked)."""
    only = f" -n {shlex.quote(location.schema)}" if location.schema else ""  # pg_dump knows no ?schema=: it is its -n
    return f"pg_dump{only} -Fc -f celflow.dump {shlex.quote(mask_url(location.target))}"


def refuse_backup(location: Location) -> PersistenceError:
    """Why ``celflow db backup`` does not copy a server database, and what to use instead."""
    return PersistenceError(
        f"celflow db backup copies a SQLite file; {location.shown} is PostgreSQL: back it up with "
        f"`{_pg_dump(location)}`, or copy it into SQLite with "
        f"`celflow migrate --from {shlex.quote(location.shown)} --to sqlite:///copy.db`"
    )


def refuse_recover(location: Location) -> PersistenceError:
    """Why ``celflow db recover`` does not repair a server database, and what to do instead."""
    return PersistenceError(
        f"celflow db recover repairs a SQLite file; {location.shown} is PostgreSQL, which recovers "
        "by itself from its WAL after a crash: check its tables with `pg_amcheck`, or restore your latest "
        "pg_dump (`pg_restore`)"
    )


@dataclass
class PostgresCheckReport:
    """What ``check_postgres`` found: the PostgreSQL sibling of :class:`CheckReport`."""

    path: str  # the URL, password masked
    ok: bool
    mode: str  # "quick" or "full" (full also counts the rows against the per-minute counters)
    #: ok, unreachable (no connection), no_schema, newer_schema, unreadable (a read failed),
    #: counters (the per-minute counters disagree with the rows)
    status: str = "ok"
    backend: str = "postgresql"
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    schema_version: int | None = None
    size_mb: float = 0.0
    partitions: int = 0  # day partitions of events
    total_events: int | None = None  # from the per-minute counters
    rows_counted: int | None = None  # full check: the events counted row by row
    last_event_id: int | None = None
    oldest_event: float | None = None
    newest_event: float | None = None
    seconds: float = 0.0

    @property
    def opened(self) -> bool:
        """Whether the CelFlow schema could be read (if not, ``problems[0]`` says why)."""
        return self.schema_version is not None

    @property
    def condition(self) -> str:
        """``healthy``, or the status in words (``unreachable``, ``no schema``...)."""
        return "healthy" if self.ok else self.status.replace("_", " ")

    def details(self) -> list[str]:
        """Schema version, size, partitions, counts and the time span, for a person."""
        rows = f", {self.rows_counted:,} rows counted" if self.rows_counted is not None else ""
        lines = [
            f"PostgreSQL, schema version {self.schema_version}, {self.size_mb:,.1f} MB in {self.partitions:,} "
            f"day partitions; {self.total_events or 0:,} events{rows}, last id {self.last_event_id or 0:,}",
            f"oldest {_when(self.oldest_event)}, newest {_when(self.newest_event)}",
        ]
        return lines + [f"note: {note}" for note in self.notes]

    def to_dict(self) -> dict[str, Any]:
        """As a plain dict (``--json``)."""
        return asdict(self)


#: Not a whole number of minutes, so the per-minute counters cannot answer a histogram of it: the
#: rows themselves are counted (one group per ~day, so the answer stays small).
_ROW_COUNT_BUCKET = 86_401.0


def _count_rows(store: PostgresStore, report: PostgresCheckReport) -> None:
    """Compare the counters' total with the rows; writers going on meanwhile are read around."""
    everything = EventQuery()
    for _ in range(3):
        counted = store.count_events(everything)
        rows = sum(n for _, n in store.histogram(_ROW_COUNT_BUCKET, everything))
        if store.count_events(everything) != counted:
            continue  # events came or went between the reads: try again
        report.rows_counted = rows
        if rows != counted:
            report.status = "counters"
            report.problems.append(
                f"the per-minute counters say {counted:,} events but {rows:,} rows are stored: "
                "counts and histograms are off until the counters are rebuilt"
            )
        return
    report.notes.append("events kept being written during the check: the rows could not be compared with the counters")


def check_postgres(location: Location, *, full: bool = False) -> PostgresCheckReport:
    """Check a PostgreSQL database read-only: the connection, the CelFlow schema, the tables,
    sizes, the last id, day partitions and the time span (``full``: the rows against the counters)."""
    started = time.perf_counter()
    report = PostgresCheckReport(location.shown, ok=True, mode="full" if full else "quick")
    try:
        store = PostgresStore(location, readonly=True)  # a reader creates nothing, not even the schema
    except SchemaVersionError as exc:
        report.status = "newer_schema" if "newer CelFlow" in str(exc) else "no_schema"
        report.problems.append(str(exc))
    except PersistenceError as exc:  # OperationalError: no connection; or psycopg is not installed
        report.status = "unreachable"
        report.problems.append(str(exc))
    else:
        try:
            found = store.quick_check()
            if found:
                report.status = "unreadable"
                report.problems.extend(found)
            else:
                info = store.stats()
                # the store refuses a newer schema at open, so the one it understands is the one stored
                report.schema_version = int(info["schema_version"])
                report.size_mb = float(info["database_size_mb"])
                report.partitions = int(info["partitions"])
                report.total_events = int(info["total_events"])
                report.oldest_event, report.newest_event = info["oldest_event"], info["newest_event"]
                report.last_event_id = store.last_id()
                if full:
                    _count_rows(store, report)
        except PersistenceError as exc:
            report.status = "unreadable"
            report.problems.append(str(exc))
        finally:
            store.close()
    report.ok = not report.problems
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def vacuum_postgres(location: Location) -> tuple[float, float]:
    """``VACUUM (ANALYZE)`` every CelFlow table; writers may go on. Returns the tables' MB before and after.

    A database without CelFlow's schema is refused, not given one.
    """
    PostgresStore(location, readonly=True).close()  # SchemaVersionError when there is no CelFlow schema
    store = PostgresStore(location)
    try:
        before = store.sizes()["database_size_mb"]
        store.vacuum()
        return before, store.sizes()["database_size_mb"]
    finally:
        store.close()


def doctor_postgres(location: Location) -> tuple[PostgresCheckReport, list[str]]:
    """A full check of a PostgreSQL database, and what to do about what it found, in plain words."""
    report = check_postgres(location, full=True)
    shown = shlex.quote(report.path)
    advice: list[str] = []
    if report.status == "unreachable":
        parts = urlsplit(location.target)
        host, port = parts.hostname or "localhost", parts.port or 5432
        advice.append(
            f"No connection: check that the server runs (`pg_isready -h {host} -p {port}`), that the URL's user, "
            "password and database name are right, and that pg_hba.conf lets this host in."
        )
    elif report.status == "no_schema":
        advice.append(
            "There is no CelFlow schema here: point --db (or persistence.database_url) at the right database and "
            "?schema=, or start `celflow run` with this URL to create it."
        )
    elif report.status == "newer_schema":
        advice.append("A newer CelFlow wrote this schema: upgrade CelFlow (pip install -U celflow).")
    elif report.status == "counters":
        target = report.path if report.path == location.url else "YOUR-URL-WITH-ITS-PASSWORD"  # shown has ***
        advice.append(
            "The per-minute counters disagree with the stored events. With the writers stopped, rebuild them "
            f"(the events are kept): python -c 'import celflow; celflow.open_store(\"{target}\").rebuild_counts()'"
        )
    elif not report.ok:
        advice.append(
            "A read failed: see the problem above and the server's log. If tables are damaged, `pg_amcheck` "
            "says which; restore them from your latest pg_dump."
        )
    elif report.schema_version is not None and report.schema_version < SCHEMA_VERSION:
        advice.append(
            f"The schema is version {report.schema_version}, older than this CelFlow's {SCHEMA_VERSION}: readers "
            "use it as it is; the next writer (`celflow run`, `celflow db vacuum`) upgrades it, once."
        )
    else:
        advice.append("The database is healthy. Nothing to do.")
    if report.schema_version is not None:  # opened: there is something to keep a copy of
        advice.append(
            f"Keep a copy: `{_pg_dump(location)}`, or a SQLite copy with "
            f"`celflow migrate --from {shown} --to sqlite:///copy.db`."
        )
    return report, advice
