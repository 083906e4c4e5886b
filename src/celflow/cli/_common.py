"""What every subcommand shares: the config state, the database location, ``--db``, time formatting."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .._config import Config, load_config
from .._location import Location, parse_location

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

__all__ = ["Bar", "State", "console", "data_folder", "database_location", "db_option", "escape", "progress_bar", "when"]


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


# rich loads when a command prints, not for `--help`: it is a third of the command line's start.


def console(*, stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr), without syntax highlighting."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def escape(text: str) -> str:
    """``text`` with rich's markup characters escaped, to print as it is."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


class Bar:
    """A progress bar's task: ``advance`` by a number done, or ``update`` to done of total."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def update(self, done: int, total: int) -> None:
        self._progress.update(self._task, completed=done, total=total)


@contextlib.contextmanager
def progress_bar(what: str, total: int | None = None) -> Iterator[Bar | None]:
    """A progress bar on stderr when it is a terminal; ``None`` when piped."""
    err = console(stderr=True)
    if not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        yield Bar(progress, progress.add_task(what, total=total))
