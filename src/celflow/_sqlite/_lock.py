"""One writer process per database: an advisory ``flock`` on ``<database>.lock``.

Readers never take it. Inside one process the lock is shared and reference-counted, so several
:class:`~celflow.EventDatabase` objects and a manager on the same file work together.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading

from .._exceptions import WriterBusyError

__all__ = ["WriterLock"]

_registry: dict[str, tuple[int, int]] = {}  # real path -> (fd, holders)
_registry_lock = threading.Lock()


class WriterLock:
    """A handle on the process's writer lock for one database file."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        # Beside the real file, so a symlink to the database cannot open a second writer.
        self.lock_path = os.path.realpath(db_path) + ".lock"
        self._key = self.lock_path
        self._held = False

    @property
    def held(self) -> bool:
        """Whether this handle holds the lock."""
        return self._held

    def acquire(self) -> None:
        """Take the lock or raise :class:`WriterBusyError` naming the process that holds it."""
        if self._held:
            return
        with _registry_lock:
            entry = _registry.get(self._key)
            if entry is not None:
                _registry[self._key] = (entry[0], entry[1] + 1)
                self._held = True
                return
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise WriterBusyError(
                    f"{self.db_path} is already being written by another process ({holder}). "
                    "Only one writer may run per database: stop that process (e.g. its "
                    "`celflow run`) or use another database path. Reading needs no lock."
                ) from None
            os.fchmod(fd, 0o600)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}, {os.path.basename(sys.argv[0] or 'python')}".encode(), 0)
            _registry[self._key] = (fd, 1)
            self._held = True

    def release(self) -> None:
        """Give the lock back (the file lock goes when the last holder in the process releases)."""
        if not self._held:
            return
        with _registry_lock:
            fd, holders = _registry[self._key]
            if holders > 1:
                _registry[self._key] = (fd, holders - 1)
            else:
                del _registry[self._key]
                os.close(fd)
            self._held = False
