"""``celflow events``: the seed's ``tools/celflow_events.py`` (stats, list, search, export) and tail."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from .._database import EventDatabase
from .._exceptions import ServiceError
from .._export import EXPORT_FORMATS, IMPORT_FORMATS, export_events, import_events
from .._location import Location
from .._types import StoredEvent
from ._common import State, console, data_folder, database_location, db_option, progress_bar, when

if TYPE_CHECKING:
    from rich.table import Table

    from ..client import Client

__all__ = ["events"]


def _open(state: State, db: str | None) -> EventDatabase:
    return EventDatabase(database_location(state, db), readonly=True)


def _since(hours: float | None) -> float | None:
    return None if hours is None else time.time() - hours * 3600


def _print_json(value: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def _event_table(rows: list[StoredEvent], title: str, width: int) -> Table:
    cells = [
        (str(e.id), when(e.timestamp), e.event_type, e.action or "", e.source, orjson.dumps(e.data).decode())
        for e in rows
    ]
    # Fixed columns keep their width; the data column gets what is left of the terminal.
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    room = max(20, width - sum(max(w, 6) for w in widths) - 3 * 6 - 1)
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("id", justify="right", style="dim", no_wrap=True)
    table.add_column("time", no_wrap=True)
    table.add_column("type", style="cyan", no_wrap=True)
    table.add_column("action", style="magenta", no_wrap=True)
    table.add_column("source", style="green", no_wrap=True)
    table.add_column("data", no_wrap=True, overflow="ellipsis", max_width=room)
    for cell in cells:
        table.add_row(*cell[:5], cell[5] if len(cell[5]) <= room else cell[5][: room - 1] + "…")
    return table


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of tables.")


def filter_options(func: Any) -> Any:
    """The filters every reading command shares."""
    for option in reversed(
        [
            click.option("--hours", type=click.FloatRange(min=0), help="Only events of the last N hours."),
            click.option("--type", "event_type", help="Only this event_type."),
            click.option("--source", help="Only this source."),
            click.option("--action", help="Only this action."),
        ]
    ):
        func = option(func)
    return func


@click.group()
def events() -> None:
    """Query and analyse stored events (read-only; works while `celflow run` writes)."""


@events.command()
@db_option
@json_option
@click.pass_obj
def stats(state: State, db: str | None, as_json: bool) -> None:
    """Show database statistics: counts, time span, sizes, types and sources."""
    with _open(state, db) as database:
        info = database.get_database_stats()
    if as_json:
        _print_json(info)
        return
    from rich.table import Table

    out = console()
    summary = Table(title=f"CelFlow database {info['database_path']}", title_justify="left", show_header=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_row("events", f"{info['total_events']:,}")
    summary.add_row("oldest", when(info["oldest_event"]))
    summary.add_row("newest", when(info["newest_event"]))
    summary.add_row("patterns", f"{info['total_patterns']:,}")
    summary.add_row("system stats rows", f"{info['total_system_stats']:,}")
    summary.add_row("database size", f"{info['database_size_mb']:.2f} MB (WAL {info['wal_size_mb']:.2f} MB)")
    summary.add_row("schema version", str(info["schema_version"]))
    out.print(summary)
    for key, label in (("events_by_type", "type"), ("events_by_source", "source")):
        counts: dict[str, int] = info[key]
        if not counts:
            continue
        total = sum(counts.values())
        table = Table(title=f"events by {label}", title_justify="left")
        table.add_column(label)
        table.add_column("events", justify="right")
        table.add_column("share", justify="right")
        for name, n in list(counts.items())[:20]:
            table.add_row(name, f"{n:,}", f"{100 * n / total:.1f}%")
        if len(counts) > 20:
            table.add_row(f"... {len(counts) - 20} more", "", "")
        out.print(table)


@events.command("list")
@db_option
@filter_options
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True, help="At most N events.")
@click.option("--oldest-first", is_flag=True, help="Oldest first (default: newest first).")
@json_option
@click.pass_obj
def list_events(
    state: State,
    db: str | None,
    hours: float | None,
    event_type: str | None,
    source: str | None,
    action: str | None,
    limit: int,
    oldest_first: bool,
    as_json: bool,
) -> None:
    """List recent events, newest first (e.g. `list --hours 2 --limit 50`)."""
    with _open(state, db) as database:
        page = database.query(
            _since(hours),
            None,
            event_type,
            limit,
            source=source,
            action=action,
            order="asc" if oldest_first else "desc",
        )
    _show(page.events, as_json, "events" + (f" of the last {hours:g} h" if hours is not None else ""))


@events.command()
@click.argument("text")
@db_option
@filter_options
@click.option("--limit", type=click.IntRange(min=0), default=10, show_default=True, help="At most N events.")
@json_option
@click.pass_obj
def search(
    state: State,
    text: str,
    db: str | None,
    hours: float | None,
    event_type: str | None,
    source: str | None,
    action: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Find events whose type, source, action or data contain TEXT (case-insensitive)."""
    with _open(state, db) as database:
        page = database.query(_since(hours), None, event_type, limit, source=source, action=action, search=text)
    _show(page.events, as_json, f"events matching {text!r}")


def _show(rows: list[StoredEvent], as_json: bool, title: str) -> None:
    if as_json:
        _print_json([e.to_dict() for e in rows])
    elif not rows:
        console().print(f"no {title}")
    else:
        out = console()
        out.print(_event_table(rows, f"{len(rows)} {title}", out.width))


@events.command()
@click.argument("output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@db_option
@filter_options
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), help="Default: from OUTPUT's extension, else json.")
@click.option("--limit", type=click.IntRange(min=0), help="At most N events (default: all).")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.pass_obj
def export(
    state: State,
    output: Path,
    db: str | None,
    hours: float | None,
    event_type: str | None,
    source: str | None,
    action: str | None,
    fmt: str | None,
    limit: int | None,
    force: bool,
) -> None:
    """Export events to OUTPUT, oldest first: JSON array (the seed's), JSON Lines, CSV or Parquet.

    The file appears (0600) only once complete; `-` writes to standard output.
    """
    filters = {"start_time": _since(hours), "event_type": event_type, "source": source, "action": action}
    with _open(state, db) as database:
        total = database.count_events(**filters)
        with progress_bar("exporting", total if limit is None else min(total, limit)) as bar:
            progress = bar.advance if bar else None
            count = export_events(database, output, fmt, force=force, progress=progress, limit=limit, **filters)
    if str(output) != "-":
        console(stderr=True).print(f"exported {count:,} events to {output}")


@events.command("import")
@click.argument("source", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@db_option
@click.option("--format", "fmt", type=click.Choice(IMPORT_FORMATS), help="Default: from SOURCE's extension.")
@json_option
@click.pass_obj
def import_(state: State, source: Path, db: str | None, fmt: str | None, as_json: bool) -> None:
    """Import events from SOURCE: a CelFlow export (json, jsonl, csv, parquet) or an ActivityWatch
    export (--format activitywatch). Importing the same file twice stores nothing new."""
    settings = state.load()[0]  # with --db too: the privacy rules apply to imported events
    path = database_location(state, db)
    limits = settings.persistence
    with (
        EventDatabase(
            path,
            compression_threshold=limits.compression_threshold,
            max_event_bytes=limits.max_event_bytes,
            privacy=settings.privacy,
        ) as database,
        progress_bar("importing") as bar,
    ):
        report = import_events(database, source, fmt, progress=bar.advance if bar else None)
        rules = database.options.privacy
    if as_json:
        _print_json({**report.to_dict(), "privacy_dropped": rules.dropped if rules is not None else 0})
        return
    err = console(stderr=True)
    dropped = f", {rules.dropped:,} dropped by privacy rules" if rules is not None else ""
    err.print(
        f"imported {report.imported:,} events from {source}; {report.duplicates:,} were already stored, "
        f"{report.rejected:,} rejected{dropped}"
    )
    for where, message in report.rejects[:20]:
        err.print(f"  {where}: {message}")
    if report.rejected > 20:
        err.print(f"  ... {report.rejected - 20:,} more (--json lists up to {len(report.rejects):,})")


@events.command()
@db_option
@filter_options
@click.option("--limit", type=click.IntRange(min=0), help="At most N events (default: all).")
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    help="1 = the original pace, 10 = ten times faster (default: as fast as possible).",
)
@click.option("--to", "url", help="Send the events to the CelFlow service at this URL instead of printing them.")
@click.option("--token", help="The target service's token (default: CELFLOW_TOKEN).")
@click.pass_obj
def replay(
    state: State,
    db: str | None,
    hours: float | None,
    event_type: str | None,
    source: str | None,
    action: str | None,
    limit: int | None,
    speed: float | None,
    url: str | None,
    token: str | None,
) -> None:
    """Replay stored events in time order: as JSON Lines on stdout, or into another service (--to)."""
    from .._replay import replay as run_replay

    filters: dict[str, Any] = {
        "start_time": _since(hours),
        "event_type": event_type,
        "source": source,
        "action": action,
    }
    with _open(state, db) as database:
        if url is None:
            out = sys.stdout.buffer

            def emit(event: StoredEvent) -> None:
                out.write(orjson.dumps(event.to_dict(), option=orjson.OPT_APPEND_NEWLINE))
                if speed is not None:
                    out.flush()

            count = run_replay(database, emit, speed=speed, limit=limit, **filters)
            out.flush()
        else:
            from ..client import Client

            with Client(url, token or os.environ.get("CELFLOW_TOKEN")) as client:
                count = run_replay(database, lambda e: client.send(_as_input(e)), speed=speed, limit=limit, **filters)
                client.flush()
    console(stderr=True).print(f"replayed {count:,} events" + (f" to {url}" if url else ""))


def _as_input(event: StoredEvent) -> dict[str, Any]:
    """A stored event as an event to store again (same timestamp and data: the same dedup key)."""
    return {
        "event_type": event.event_type,
        "source": event.source,
        "action": event.action,
        "timestamp": event.timestamp,
        "data": event.data,
    }


def _line(event: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return orjson.dumps(event).decode()
    data = orjson.dumps(event["data"]).decode()
    action = event["action"] or "-"
    return f"{event['id']:>8} {when(event['timestamp'])} {event['event_type']} {action} {event['source']} {data}"


@events.command()
@db_option
@click.option(
    "-n", "--lines", "count", type=click.IntRange(min=0), default=10, show_default=True, help="Show the last N."
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events as they are stored (Ctrl-C stops).")
@click.option("--type", "event_type", help="Only this event_type.")
@click.option("--source", help="Only this source.")
@click.option("--action", help="Only this action.")
@click.option("--url", help="The service's URL (default: from service.json in the data folder).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def tail(
    state: State,
    db: str | None,
    count: int,
    follow: bool,
    event_type: str | None,
    source: str | None,
    action: str | None,
    url: str | None,
    as_json: bool,
) -> None:
    """Print the newest events, oldest of them first; with --follow, new ones as they come.

    Uses the running service's live stream when there is one (service.json in the data folder),
    else reads the database file.
    """
    from ..client import Client  # httpx and websockets load only for this command

    path = database_location(state, db)
    data_dir = data_folder(state, path)
    filters = {"event_type": event_type, "source": source, "action": action}
    client: Client | None = None
    if url is not None or (data_dir / "service.json").exists():
        try:
            client = Client(url, data_dir=str(data_dir))
            client.health()
        except ServiceError as exc:
            if url is not None:
                raise
            click.echo(f"the service is not reachable ({exc}); reading {path}", err=True)
            client = None
    try:
        if client is not None:
            _tail_service(client, count, follow, filters, as_json)
        else:
            _tail_database(path, count, follow, filters, as_json)
    except KeyboardInterrupt:
        pass
    finally:
        if client is not None:
            client.close()


def _tail_service(client: Client, count: int, follow: bool, filters: dict[str, Any], as_json: bool) -> None:
    # "New" is what is committed after this moment: the last id now, read before the newest
    # events (an id taken from the newest timestamps can be far lower, after an import of old ones).
    start = int(client.stats()["database_stats"]["last_event_id"])
    recent = client.query(limit=max(count, 1), **filters)["events"] if count else []
    for event in reversed(recent):
        click.echo(_line(event, as_json))
    if follow:
        after = max([start, *(e["id"] for e in recent)])
        for event in client.follow(after=after, **filters):
            click.echo(_line(event, as_json))


def _tail_database(location: Location, count: int, follow: bool, filters: dict[str, Any], as_json: bool) -> None:
    with EventDatabase(location, readonly=True) as database:
        start = database.last_id()  # before the newest events: nothing committed later is missed
        recent = database.query(limit=count, **filters).events if count else []
        for event in reversed(recent):
            click.echo(_line(event.to_dict(), as_json))
        if follow:
            for event in database.follow(after=max([start, *(e.id for e in recent)]), **filters):
                click.echo(_line(event.to_dict(), as_json))
