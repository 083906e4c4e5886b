"""``celflow ingest-worker``: store the events of a NATS JetStream stream into a database."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click
import orjson

from .._location import Location
from ._common import State, console, database_location

__all__ = ["ingest_worker"]


def _setup_logging(level: str) -> None:
    root = logging.getLogger("celflow")
    root.setLevel(level)
    if not root.handlers:
        handler = logging.StreamHandler()  # stderr: stdout is for the status lines
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)


def _print_status(as_json: bool, database: Location) -> Any:

    def show(status: dict[str, Any]) -> None:
        if as_json:
            sys.stdout.buffer.write(orjson.dumps(status) + b"\n")
            sys.stdout.flush()
            return
        event = status["event"]
        if event == "standby":
            console().print(f"standby: {status['reason']}", soft_wrap=True)
        elif event == "ready":
            console().print(
                f"consuming {status['stream']}/{status['durable']} from {status['bus']} into {database.shown} "
                "(Ctrl-C or SIGTERM stops)",
                soft_wrap=True,
            )
        elif event == "stopped":
            console().print(
                f"stopped after {status['seconds']:.1f} s: {status['messages']:,} message(s), {status['events']:,} "
                f"event(s) ({status['stored']:,} new, {status['duplicates']:,} already stored), "
                f"{status['invalid']:,} invalid message(s) terminated, {status['redelivered']:,} redelivered",
                soft_wrap=True,
            )

    return show


@click.command("ingest-worker")
@click.option("--bus", "bus_url", help="The NATS server (default: bus.url, nats://127.0.0.1:4222).")
@click.option(
    "--db",
    help="Database: a file path or a postgresql:// URL (default: persistence.database_url, else database_path).",
)
@click.option("--stream", help="JetStream stream, created if missing (default: bus.stream, CELFLOW).")
@click.option("--subject", help="Subject the producers publish on (default: bus.subject, celflow.events).")
@click.option("--durable", help="Durable consumer name; workers sharing it split the work (default: bus.durable).")
@click.option(
    "--batch",
    type=click.IntRange(1, 10_000),
    default=64,
    show_default=True,
    help="Messages fetched and stored at once.",
)
@click.option(
    "--ack-wait",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds before an unacknowledged message goes to another worker.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines for scripts (ready, standby, stopped).")
@click.pass_obj
def ingest_worker(
    state: State,
    bus_url: str | None,
    db: str | None,
    stream: str | None,
    subject: str | None,
    durable: str | None,
    batch: int,
    ack_wait: float,
    as_json: bool,
) -> None:
    """Store the events published on a NATS JetStream stream, until SIGINT/SIGTERM.

    Each message is acknowledged only after its events are committed, so a worker that dies
    loses nothing: its messages go to another worker after --ack-wait, and dedup keeps every
    event once. Several workers may run on any machines, and store into the same database
    (a SQLite file too).
    """
    from .._worker import run_ingest_worker

    settings, _ = state.load()
    bus = settings.bus
    database = database_location(state, db)
    _setup_logging(settings.logging.level)
    run_ingest_worker(
        bus_url or bus.url,
        database,
        config=settings,
        stream=stream or bus.stream,
        subject=subject or bus.subject,
        durable=durable or bus.durable,
        batch=batch,
        ack_wait=ack_wait,
        on_status=_print_status(as_json, database),
    )
