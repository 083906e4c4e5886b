"""``celflow migrate``: copy a history from one database to another (SQLite, PostgreSQL)."""

from __future__ import annotations

import sys

import click
import orjson

from .._migrate import DEFAULT_BATCH, MAX_BATCH, MigrationReport, migrate_history
from ._common import console, progress_bar

__all__ = ["migrate"]


def _summary(report: MigrationReport) -> str:
    return (
        f"events: {report.events_copied:,} copied, {report.events_already_there:,} already there"
        f"{f', {report.events_rejected:,} refused by the target' if report.events_rejected else ''}; "
        f"patterns: {report.patterns_copied:,} copied, {report.patterns_already_there:,} already there; "
        f"system stats: {report.system_stats_copied:,} copied, {report.system_stats_already_there:,} already there "
        f"({report.seconds:.1f} s; the target holds {report.target_events_after:,} events)"
    )


@click.command()
@click.option(
    "--from",
    "source",
    required=True,
    metavar="LOCATION",
    help="The database to copy: a path, sqlite:///relative/path, sqlite:////absolute/path or postgresql://...",
)
@click.option(
    "--to",
    "target",
    required=True,
    metavar="LOCATION",
    help="The database to copy into (created if missing; may hold other events: they are kept).",
)
@click.option(
    "--batch",
    type=click.IntRange(1, MAX_BATCH),
    default=DEFAULT_BATCH,
    show_default=True,
    help="Events per transaction of the target.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON for scripts.")
def migrate(source: str, target: str, batch: int, as_json: bool) -> None:
    """Copy every event, pattern and system stats row from one database to another.

    Events keep their timestamp, type, source, action, data and hash, so running it again, or
    after an interruption, copies only what is missing (dedup). The source is only read; `celflow run`
    may keep writing either. Exit 1 if the target refused some events.
    """
    with progress_bar("migrating") as bar:
        report = migrate_history(source, target, batch=batch, progress=bar.update if bar else None)
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    else:
        err = console(stderr=True)
        err.print(f"migrated {report.source} -> {report.target}")
        err.print(_summary(report))
        if report.patterns_unlinked:
            err.print(
                f"{report.patterns_unlinked:,} patterns point at events the target lacks: stored without event_id"
            )
        for event_id, message in report.rejects[:20]:
            err.print(f"  event {event_id} not copied: {message}")
        if report.events_rejected > 20:
            err.print(f"  ... {report.events_rejected - 20:,} more (--json lists up to {len(report.rejects):,})")
    if report.events_rejected:
        sys.exit(1)
