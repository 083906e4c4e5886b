"""``celflow config``: show the effective configuration and where each value came from."""

from __future__ import annotations

import sys

import click
import msgspec
import orjson

from .._config import config_items
from .._location import mask_url
from ._common import State, console

__all__ = ["config"]

_URLS = frozenset({"persistence.database_url", "bus.url"})


@click.group()
def config() -> None:
    """Inspect CelFlow's configuration."""


@config.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {name: {value, origin}}.")
@click.pass_obj
def show(state: State, as_json: bool) -> None:
    """Print every setting, its value and its origin (default, file, env, command line)."""
    settings, origin = state.load()
    # plain values: the privacy section's drop rules are structs
    items = [(name, msgspec.to_builtins(value), source) for name, value, source in config_items(settings, origin)]
    # a password in a URL is not shown (the file or variable holding it is named in "from")
    items = [(name, mask_url(v) if name in _URLS and v else v, source) for name, v, source in items]
    if as_json:
        payload = {name: {"value": value, "origin": source} for name, value, source in items}
        sys.stdout.buffer.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n")
        return
    from rich.table import Table

    table = Table(title="CelFlow configuration", title_justify="left")
    table.add_column("setting", style="bold")
    table.add_column("value")
    table.add_column("from", style="dim")
    for name, value, source in items:
        table.add_row(name, repr(value) if isinstance(value, str) else str(value), source)
    console().print(table)
