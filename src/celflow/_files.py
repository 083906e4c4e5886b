"""Private files: a user's activity is readable by that user only (0600 files, 0700 folders)."""

from __future__ import annotations

import os
from pathlib import Path

from ._exceptions import ExportError

__all__ = ["ensure_private_dir", "writable_target"]


def ensure_private_dir(path: str) -> None:
    """Create ``path`` (and missing parents) as 0700, whatever the umask; leave existing folders be."""
    if os.path.isdir(path):
        return
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def writable_target(target: Path, *, force: bool, source: str | os.PathLike[str] | None = None) -> Path:
    """The folder ``target`` goes in, once it is clear that writing it is allowed.

    Never a live database: not the ``source`` being read, nor any file with a WAL beside it.
    """
    if target.exists() and source is not None and os.path.exists(source) and os.path.samefile(target, source):
        raise ExportError(f"{target} is the database being read; give another file name")
    if Path(f"{target}-wal").exists():
        raise ExportError(f"{target} is a database in use (it has a WAL); give another file name")
    if target.exists() and not force:
        raise ExportError(f"{target} already exists; pass --force to overwrite it")
    if target.is_dir():
        raise ExportError(f"{target} is a folder; give a file name")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise ExportError(f"folder {folder} does not exist")
    return folder
