"""``celflow run``: the headless service (the seed's ``python celflow.py``)."""

from __future__ import annotations

from pathlib import Path

import click

from .._exceptions import ConfigError
from .._location import parse_location
from ._common import State

__all__ = ["run"]


@click.command()
@click.option("--db", help="Database file or postgresql:// URL (default: data/events.db).")
@click.option("--fs/--no-fs", "filesystem", default=None, help="Capture file events (default: on).")
@click.option("--processes/--no-processes", default=None, help="Capture process start/exit (default: on).")
@click.option("--watch", "paths", multiple=True, type=click.Path(path_type=Path), help="Folder to watch (repeatable).")
@click.option("--http/--no-http", "http", default=None, help="Serve the HTTP/WebSocket API (default: on).")
@click.option("--host", default=None, help="Address the API listens on (default: 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="API port (default: 8537; 0: any free).")
@click.option(
    "--publish/--no-publish",
    default=None,
    help="Publish events to the NATS JetStream bus instead of storing them here (default: bus.publish, off).",
)
@click.option("--bus", "bus_url", default=None, help="The NATS server to publish to (default: bus.url).")
@click.pass_obj
def run(
    state: State,
    db: str | None,
    filesystem: bool | None,
    processes: bool | None,
    paths: tuple[Path, ...],
    http: bool | None,
    host: str | None,
    port: int | None,
    publish: bool | None,
    bus_url: str | None,
) -> None:
    """Capture events from this machine and store them until SIGINT/SIGTERM, then flush and exit.

    The API listens on http://127.0.0.1:8537 unless configured otherwise; every endpoint but
    /health needs the token in the data folder's 'token' file.

    With --publish, events go to the NATS JetStream bus (`celflow ingest-worker` stores them),
    buffered in memory while the broker is away; reads then come from persistence.database_url
    if it is set.
    """
    where = parse_location(db) if db is not None else None
    settings, _ = state.load(
        {
            # a file given here replaces a configured database_url too
            "persistence.database_path": where.path if where is not None and where.is_sqlite else None,
            "persistence.database_url": None if where is None else "" if where.is_sqlite else where.url,
            "capture.filesystem": filesystem,
            "capture.processes": processes,
            "capture.paths": [str(p) for p in paths] if paths else None,
            "http.enabled": http,
            "http.host": host,
            "http.port": port,
            "bus.publish": publish,
            "bus.url": bus_url,
        }
    )
    if not settings.enable_persistence:
        raise ConfigError("persistence is switched off (enable_persistence = false): there is nothing to run")
    from .._service import run_service  # the server and capture libraries load only for this command

    run_service(settings)
