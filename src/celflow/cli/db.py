"""``celflow db``: check, vacuum, backup, recover and doctor a database file."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson
from rich.console import Console

from .._care import backup_database, check_database, doctor, recover_database, vacuum_database
from . import State

__all__ = ["db"]

console = Console(highlight=False)
db_option = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Database file (default: persistence.database_path, data/events.db).",
)


def _path(state: State, db: Path | None) -> Path:
    return db if db is not None else Path(state.load()[0].persistence.database_path)


def _json(value: object) -> None:
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")


@click.group()
def db() -> None:
    """Look after the database file: check, vacuum, backup, recover, doctor."""


@db.command()
@db_option
@click.option("--full", is_flag=True, help="The full integrity_check (slower) instead of quick_check.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def check(state: State, db: Path | None, full: bool, as_json: bool) -> None:
    """Check integrity, schema version, sizes and fragmentation (read-only); exit 1 if damaged."""
    report = check_database(_path(state, db), full=full)
    if as_json:
        _json(report.to_dict())
    else:
        verdict = "[green]ok[/green]" if report.ok else "[red]DAMAGED[/red]"
        console.print(f"{report.path}: {verdict} ({report.mode} check, {report.seconds:.2f} s)")
        console.print(
            f"  schema version {report.schema_version}, {report.size_mb:,.1f} MB + WAL {report.wal_size_mb:,.1f} MB, "
            f"{report.page_count:,} pages of {report.page_size:,} B, {report.fragmentation:.1%} free"
        )
        for problem in report.problems[:20]:
            console.print(f"  [red]problem:[/red] {problem}")
    if not report.ok:
        sys.exit(1)


@db.command()
@db_option
@click.pass_obj
def vacuum(state: State, db: Path | None) -> None:
    """Rebuild the file without its free pages (stop `celflow run` first)."""
    before, after = vacuum_database(_path(state, db))
    console.print(f"vacuumed: {before:,.1f} MB -> {after:,.1f} MB")


@db.command()
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
@db_option
@click.option("--force", is_flag=True, help="Overwrite DESTINATION if it exists.")
@click.pass_obj
def backup(state: State, destination: Path, db: Path | None, force: bool) -> None:
    """Write a consistent copy to DESTINATION (0600), online: `celflow run` may keep writing."""
    size = backup_database(_path(state, db), destination, force=force)
    console.print(f"backed up to {destination} ({size / 1_048_576:,.1f} MB, checked)")


@db.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def recover(state: State, db: Path | None, as_json: bool) -> None:
    """Save what can be read from a damaged database into a new one at the same path.

    The damaged file is kept aside as <name>.damaged-<time>. Stop `celflow run` first.
    """
    report = recover_database(_path(state, db))
    if as_json:
        _json(report.to_dict())
        return
    console.print(
        f"saved {report.events_saved:,} events, {report.patterns_saved:,} patterns and "
        f"{report.system_stats_saved:,} system stats into a new {report.path}"
    )
    if report.events_lost:
        console.print(f"  {report.events_lost:,} events were unreadable")
    if report.events_damaged:
        console.print(f"  {report.events_damaged:,} events were saved with unreadable bytes replaced by U+FFFD")
    if report.wal_frames_repaired:
        console.print(f"  read past a damaged WAL frame ({report.wal_frames_repaired:,} frames re-chained)")
    for problem in report.problems[:10]:
        console.print(f"  damaged: {problem}")
    console.print(f"  the damaged file is kept as {report.damaged_copy}")


@db.command("doctor")
@db_option
@click.pass_obj
def doctor_command(state: State, db: Path | None) -> None:
    """Run every check and say in plain words what to do."""
    report, advice = doctor(_path(state, db))
    verdict = "[green]healthy[/green]" if report.ok else "[red]damaged[/red]"
    console.print(f"{report.path}: {verdict}")
    for problem in report.problems[:10]:
        console.print(f"  [red]problem:[/red] {problem}")
    for line in advice:
        console.print(f"- {line}")
