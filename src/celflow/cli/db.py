"""``celflow db``: check, vacuum, backup, recover and doctor a database (a SQLite file or PostgreSQL)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from .._care import backup_database, check_database, doctor, recover_database, vacuum_database
from .._storage import HealthReport
from ._common import State, console, database_location, db_option, escape

__all__ = ["db"]


def _json(value: object) -> None:
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")


@click.group()
def db() -> None:
    """Look after the database: check, vacuum, backup, recover, doctor (SQLite file or PostgreSQL)."""


def _show(report: HealthReport) -> None:
    if not report.opened:  # not even reached: one line, on stderr, as every other error
        console(stderr=True).print(f"[bold red]error:[/] {escape(report.problems[0])}", soft_wrap=True)
        return
    verdict = "[green]ok[/green]" if report.ok else f"[red]{report.condition.upper()}[/red]"
    console().print(f"{escape(report.path)}: {verdict} ({report.mode} check, {report.seconds:.2f} s)", soft_wrap=True)
    for line in report.details():
        console().print(f"  {escape(line)}", soft_wrap=True)
    for problem in report.problems[:20]:
        console().print(f"  [red]problem:[/red] {escape(problem)}", soft_wrap=True)


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
    report = check_database(database_location(state, db), full=full)
    if as_json:
        _json(report.to_dict())
    else:
        _show(report)
    if not report.ok:
        sys.exit(1)


@db.command()
@db_option
@click.pass_obj
def vacuum(state: State, db: str | None) -> None:
    """Rebuild the file without its free pages (writers wait while it runs); on PostgreSQL,
    VACUUM (ANALYZE) every CelFlow table while writers go on."""
    before, after = vacuum_database(database_location(state, db))
    console().print(f"vacuumed: {before:,.1f} MB -> {after:,.1f} MB")


@db.command()
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
@db_option
@click.option("--force", is_flag=True, help="Overwrite DESTINATION if it exists.")
@click.pass_obj
def backup(state: State, destination: Path, db: str | None, force: bool) -> None:
    """Write a consistent copy to DESTINATION (0600), online: `celflow run` may keep writing.

    SQLite only: for PostgreSQL it says what to use (pg_dump, or `celflow migrate` into SQLite).
    """
    size = backup_database(database_location(state, db), destination, force=force)
    console().print(f"backed up to {escape(str(destination))} ({size / 1_048_576:,.1f} MB, checked)")


@db.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def recover(state: State, db: str | None, as_json: bool) -> None:
    """Save what can be read from a damaged database into a new one at the same path.

    The damaged file is kept aside as <name>.damaged-<time>. Stop `celflow run` first.
    SQLite only: PostgreSQL recovers from its own WAL after a crash.
    """
    report = recover_database(database_location(state, db))
    if as_json:
        _json(report.to_dict())
        return
    console().print(
        f"saved {report.events_saved:,} events, {report.patterns_saved:,} patterns and "
        f"{report.system_stats_saved:,} system stats into a new {escape(report.path)}"
    )
    if report.events_lost:
        console().print(f"  {report.events_lost:,} events were unreadable")
    if report.events_damaged:
        console().print(f"  {report.events_damaged:,} events were saved with unreadable bytes replaced by U+FFFD")
    if report.wal_frames_repaired:
        console().print(f"  read past a damaged WAL frame ({report.wal_frames_repaired:,} frames re-chained)")
    for problem in report.problems[:10]:
        console().print(f"  damaged: {escape(problem)}")
    console().print(f"  the damaged file is kept as {escape(report.damaged_copy)}")


@db.command("doctor")
@db_option
@click.pass_obj
def doctor_command(state: State, db: str | None) -> None:
    """Run every check and say in plain words what to do."""
    report, advice = doctor(database_location(state, db))
    verdict = "[green]healthy[/green]" if report.ok else f"[red]{report.condition}[/red]"
    console().print(f"{escape(report.path)}: {verdict}", soft_wrap=True)
    for problem in report.problems[:10]:
        console().print(f"  [red]problem:[/red] {escape(problem)}", soft_wrap=True)
    for line in advice:
        console().print(f"- {escape(line)}", soft_wrap=True)  # whole lines: the commands in them can be copied
