"""The ``celflow`` command: every subcommand builds library objects and calls one method.

Library errors become a one-line message on stderr and exit status 1; bad flags exit 2 (click).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from .. import __version__
from .._config import Config, load_config
from .._exceptions import CelflowError
from .._location import Location, parse_location

__all__ = ["State", "cli", "data_folder", "database_location", "db_option", "main", "when"]

err_console = Console(stderr=True, highlight=False)


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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="celflow")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CELFLOW_CONFIG",
    help="TOML config file (default: ./celflow.toml, then ~/.config/celflow/config.toml).",
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """CelFlow: the durable, fast local event store of an AI operating system."""
    ctx.obj = State(config_path)


def _register() -> None:
    from .config import config
    from .dashboard import dashboard
    from .db import db
    from .events import events
    from .migrate import migrate
    from .run import run
    from .worker import ingest_worker

    for command in (run, events, db, config, dashboard, migrate, ingest_worker):
        cli.add_command(command)


_register()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="celflow", standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except CelflowError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", markup=True, soft_wrap=True)
        return 1
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`); not an error of ours
        return 0
    return 0


def entry_point() -> None:  # pragma: no cover - the console script
    """``celflow`` console script."""
    sys.exit(main())
