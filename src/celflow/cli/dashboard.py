"""``celflow dashboard``: the seed's real-time dashboard (a later release)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

__all__ = ["dashboard"]


@click.command()
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="Database file to watch.")
def dashboard(db: Path | None) -> None:
    """Real-time terminal dashboard (comes in a later release)."""
    del db
    Console(stderr=True, highlight=False).print(
        "The real-time dashboard comes in a later CelFlow release. Meanwhile: "
        "`celflow events stats` and `celflow events list --hours 1`."
    )
