"""Private files: a user's activity is readable by that user only (0600 files, 0700 folders)."""

from __future__ import annotations

import os

__all__ = ["ensure_private_dir"]


def ensure_private_dir(path: str) -> None:
    """Create ``path`` (and missing parents) as 0700, whatever the umask; leave existing folders be."""
    if os.path.isdir(path):
        return
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
