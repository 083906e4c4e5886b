"""``celflow dashboard``: the seed's real-time dashboard (``tools/celflow_dashboard.py``)."""

from __future__ import annotations

import click

from ._common import State, data_folder, database_location, db_option

__all__ = ["dashboard"]


@click.command()
@db_option
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True, help="Seconds between refreshes."
)
@click.pass_obj
def dashboard(state: State, db: str | None, interval: float) -> None:
    """Live terminal dashboard: capture counts, event rates, types and sources, AI learning,
    performance and recent events (read-only; works over SSH while `celflow run` writes)."""
    from ..dashboard import run_dashboard  # Textual loads only for this command

    location = database_location(state, db)
    run_dashboard(location, data_dir=data_folder(state, location), interval=interval)
