"""``celflow run``: the headless service (the seed's ``python celflow.py``)."""

from __future__ import annotations

from pathlib import Path

import click

from .._exceptions import ConfigError
from .._service import run_service
from . import State

__all__ = ["run"]


@click.command()
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="Database file (default: data/events.db).")
@click.option("--fs/--no-fs", "filesystem", default=None, help="Capture file events (default: on).")
@click.option("--processes/--no-processes", default=None, help="Capture process start/exit (default: on).")
@click.option("--watch", "paths", multiple=True, type=click.Path(path_type=Path), help="Folder to watch (repeatable).")
@click.pass_obj
def run(
    state: State, db: Path | None, filesystem: bool | None, processes: bool | None, paths: tuple[Path, ...]
) -> None:
    """Capture events from this machine and store them until SIGINT/SIGTERM, then flush and exit."""
    settings, _ = state.load(
        {
            "persistence.database_path": str(db) if db is not None else None,
            "capture.filesystem": filesystem,
            "capture.processes": processes,
            "capture.paths": [str(p) for p in paths] if paths else None,
        }
    )
    if not settings.enable_persistence:
        raise ConfigError("persistence is switched off (enable_persistence = false): there is nothing to run")
    run_service(settings)
