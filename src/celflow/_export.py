"""Writing events out: streamed, to a private temporary file renamed into place at the end."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from ._database import EventDatabase
from ._exceptions import ExportError

__all__ = ["export_json", "private_output"]


@contextlib.contextmanager
def private_output(output: str | os.PathLike[str], *, force: bool = False) -> Iterator[BinaryIO]:
    """A binary file that appears at ``output`` (mode 0600) only once the block ends without error.

    ``-`` means standard output. An existing file is replaced only with ``force``.
    """
    if os.fspath(output) == "-":
        yield sys.stdout.buffer
        sys.stdout.flush()
        return
    target = Path(output)
    if target.exists() and not force:
        raise ExportError(f"{target} already exists; pass --force to overwrite it")
    if target.is_dir():
        raise ExportError(f"{target} is a folder; give a file name")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise ExportError(f"folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)  # created 0600
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def export_json(database: EventDatabase, output: str | os.PathLike[str], *, force: bool = False, **filters: Any) -> int:
    """Write matching events, oldest first, as a JSON array (the seed's export); return the count."""
    count = 0
    with private_output(output, force=force) as f:
        f.write(b"[")
        for event in database.iter_events(order="asc", **filters):
            f.write(b"\n" if count == 0 else b",\n")
            f.write(orjson.dumps(event.to_dict()))
            count += 1
        f.write(b"\n]\n" if count else b"]\n")
    return count
