"""``celflow dashboard``: the seed's real-time dashboard (``tools/celflow_dashboard.py``)."""

from __future__ import annotations

from pathlib import Path

import click

from . import State

__all__ = ["dashboard"]


@click.command()
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="Database file to watch.")
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True, help="Seconds between refreshes."
)
@click.pass_obj
def dashboard(state: State, db: Path | None, interval: float) -> None:
    """Live terminal dashboard: capture counts, event rates, types and sources, AI learning,
    performance and recent events (read-only; works over SSH while `celflow run` writes)."""
    from ..dashboard import run_dashboard  # Textual loads only for this command

    path = db if db is not None else Path(state.load()[0].persistence.database_path)
    run_dashboard(path, interval=interval)
