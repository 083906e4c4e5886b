"""The ``celflow`` command: every subcommand builds library objects and calls one method.

Library errors become a one-line message on stderr and exit status 1; bad flags exit 2 (click).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from .._exceptions import CelflowError
from ._common import State, console
from .config import config
from .dashboard import dashboard
from .db import db
from .events import events
from .migrate import migrate
from .run import run
from .worker import ingest_worker

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(None, "--version", package_name="celflow", prog_name="celflow")
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


for _command in (run, events, db, config, dashboard, migrate, ingest_worker):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="celflow", standalone_mode=False)
    except click.exceptions.Abort:
        console(stderr=True).print("aborted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except CelflowError as exc:
        console(stderr=True).print(f"[bold red]error:[/] {exc}", markup=True, soft_wrap=True)
        return 1
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`); not an error of ours
        return 0
    return 0


def entry_point() -> None:  # pragma: no cover - the console script
    """``celflow`` console script."""
    sys.exit(main())
