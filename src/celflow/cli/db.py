"""``celflow db``: check, vacuum, backup, recover and doctor a database (a SQLite file or PostgreSQL)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.markup import escape

from .._care import (
    CheckReport,
    PostgresCheckReport,
    backup_database,
    check_database,
    check_postgres,
    doctor,
    doctor_postgres,
    recover_database,
    vacuum_database,
    vacuum_postgres,
)
from .._storage import is_postgres_url, sqlite_path
from . import State, database_location, db_option, when

__all__ = ["db"]

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def _location(state: State, db: str | None) -> str:
    """The database to look after; a ``sqlite:///`` location is its file."""
    location = database_location(state, db)
    return location if is_postgres_url(location) else sqlite_path(location)


def _json(value: object) -> None:
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")


@click.group()
def db() -> None:
    """Look after the database: check, vacuum, backup, recover, doctor (SQLite file or PostgreSQL)."""


def _show_sqlite(report: CheckReport) -> None:
    verdict = "[green]ok[/green]" if report.ok else "[red]DAMAGED[/red]"
    console.print(f"{escape(report.path)}: {verdict} ({report.mode} check, {report.seconds:.2f} s)")
    console.print(
        f"  schema version {report.schema_version}, {report.size_mb:,.1f} MB + WAL {report.wal_size_mb:,.1f} MB, "
        f"{report.page_count:,} pages of {report.page_size:,} B, {report.fragmentation:.1%} free"
    )
    for problem in report.problems[:20]:
        console.print(f"  [red]problem:[/red] {escape(problem)}")


def _show_postgres(report: PostgresCheckReport) -> None:
    if report.schema_version is None:  # not even opened: one line, on stderr, as every other error
        err_console.print(f"[bold red]error:[/] {escape(report.problems[0])}", soft_wrap=True)
        return
    verdict = "[green]ok[/green]" if report.ok else "[red]PROBLEM[/red]"
    console.print(f"{escape(report.path)}: {verdict} ({report.mode} check, {report.seconds:.2f} s)", soft_wrap=True)
    rows = f", {report.rows_counted:,} rows counted" if report.rows_counted is not None else ""
    console.print(
        f"  PostgreSQL, schema version {report.schema_version}, {report.size_mb:,.1f} MB in {report.partitions:,} "
        f"day partitions; {report.total_events or 0:,} events{rows}, last id {report.last_event_id or 0:,}"
    )
    console.print(f"  oldest {when(report.oldest_event)}, newest {when(report.newest_event)}")
    for note in report.notes:
        console.print(f"  note: {escape(note)}")
    for problem in report.problems[:20]:
        console.print(f"  [red]problem:[/red] {escape(problem)}", soft_wrap=True)


@db.command()
@db_option
@click.option(
    "--full",
    is_flag=True,
    help="SQLite: the full integrity_check (slower) instead of quick_check. PostgreSQL: also count the rows "
    "against the per-minute counters.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def check(state: State, db: str | None, full: bool, as_json: bool) -> None:
    """Check integrity, schema version and sizes (read-only); exit 1 if damaged or unreachable."""
    location = _location(state, db)
    report = check_postgres(location, full=full) if is_postgres_url(location) else check_database(location, full=full)
    if as_json:
        _json(report.to_dict())
    elif isinstance(report, PostgresCheckReport):
        _show_postgres(report)
    else:
        _show_sqlite(report)
    if not report.ok:
        sys.exit(1)


@db.command()
@db_option
@click.pass_obj
def vacuum(state: State, db: str | None) -> None:
    """Rebuild the file without its free pages (stop `celflow run` first); on PostgreSQL,
    VACUUM (ANALYZE) every CelFlow table while writers go on."""
    location = _location(state, db)
    if is_postgres_url(location):
        before, after = vacuum_postgres(location)
        console.print(
            f"vacuumed (VACUUM ANALYZE): {before:,.1f} MB -> {after:,.1f} MB "
            "(PostgreSQL reuses the space of deleted rows for new ones)"
        )
        return
    before, after = vacuum_database(location)
    console.print(f"vacuumed: {before:,.1f} MB -> {after:,.1f} MB")


@db.command()
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
@db_option
@click.option("--force", is_flag=True, help="Overwrite DESTINATION if it exists.")
@click.pass_obj
def backup(state: State, destination: Path, db: str | None, force: bool) -> None:
    """Write a consistent copy to DESTINATION (0600), online: `celflow run` may keep writing.

    SQLite only: for PostgreSQL it says what to use (pg_dump, or `celflow migrate` into SQLite).
    """
    size = backup_database(_location(state, db), destination, force=force)
    console.print(f"backed up to {escape(str(destination))} ({size / 1_048_576:,.1f} MB, checked)")


@db.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def recover(state: State, db: str | None, as_json: bool) -> None:
    """Save what can be read from a damaged database into a new one at the same path.

    The damaged file is kept aside as <name>.damaged-<time>. Stop `celflow run` first.
    SQLite only: PostgreSQL recovers from its own WAL after a crash.
    """
    report = recover_database(_location(state, db))
    if as_json:
        _json(report.to_dict())
        return
    console.print(
        f"saved {report.events_saved:,} events, {report.patterns_saved:,} patterns and "
        f"{report.system_stats_saved:,} system stats into a new {escape(report.path)}"
    )
    if report.events_lost:
        console.print(f"  {report.events_lost:,} events were unreadable")
    if report.events_damaged:
        console.print(f"  {report.events_damaged:,} events were saved with unreadable bytes replaced by U+FFFD")
    if report.wal_frames_repaired:
        console.print(f"  read past a damaged WAL frame ({report.wal_frames_repaired:,} frames re-chained)")
    for problem in report.problems[:10]:
        console.print(f"  damaged: {escape(problem)}")
    console.print(f"  the damaged file is kept as {escape(report.damaged_copy)}")


@db.command("doctor")
@db_option
@click.pass_obj
def doctor_command(state: State, db: str | None) -> None:
    """Run every check and say in plain words what to do."""
    location = _location(state, db)
    report, advice = doctor_postgres(location) if is_postgres_url(location) else doctor(location)
    if isinstance(report, PostgresCheckReport):
        verdict = "[green]healthy[/green]" if report.ok else f"[red]{report.status.replace('_', ' ')}[/red]"
    else:
        verdict = "[green]healthy[/green]" if report.ok else "[red]damaged[/red]"
    console.print(f"{escape(report.path)}: {verdict}", soft_wrap=True)
    for problem in report.problems[:10]:
        console.print(f"  [red]problem:[/red] {escape(problem)}", soft_wrap=True)
    for line in advice:
        console.print(f"- {escape(line)}", soft_wrap=True)  # whole lines: the commands in them can be copied
