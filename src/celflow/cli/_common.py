"""What every subcommand shares: the config state, the database location, ``--db``, time formatting."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from .._config import Config, load_config
from .._location import Location, parse_location

__all__ = ["State", "data_folder", "database_location", "db_option", "when"]


class State:
    """What the group passes to its subcommands: the config file to read, loaded lazily."""

    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path

    def load(self, overrides: dict[str, Any] | None = None) -> tuple[Config, dict[str, str]]:
        """The effective configuration (defaults < file < env < flags)."""
        return load_config(self.config_path, overrides={k: v for k, v in (overrides or {}).items() if v is not None})


def database_location(state: State, db: str | None) -> Location:
    """``--db``, else ``persistence.database_url``, else ``persistence.database_path``, parsed once."""
    if db is not None:
        return parse_location(db)
    return state.load()[0].persistence.location


def data_folder(state: State, location: Location) -> Path:
    """The data folder (token, log, service.json): the database file's, or database_path's for a URL."""
    if location.is_sqlite:
        return Path(location.path).parent
    return Path(state.load()[0].persistence.data_dir)


def when(ts: float | None) -> str:
    """A timestamp as local time for a table, ``-`` for none."""
    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


#: ``--db`` of every command that opens the database: a plain string, so a URL stays as written.
db_option = click.option(
    "--db",
    metavar="PATH_OR_URL",
    help="Database file or postgresql:// URL (default: persistence.database_url, else persistence.database_path).",
)
