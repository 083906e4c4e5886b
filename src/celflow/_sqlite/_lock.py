"""Who may take a SQLite file alone: an advisory ``flock`` on ``<database>.lock``.

Any number of processes write one file at once: SQLite's own lock, with a busy timeout,
serialises their transactions. This lock is for the few steps that need the file to themselves
while nobody writes: the start-up check (which reads the WAL as it lies on disk) and a recovery
(which moves the file aside). Every writer holds it *shared* for as long as it is open; such a
step takes it *exclusive*, only for that step, and only if no writer holds it. Readers never
take it.

Inside one process the lock is one file descriptor, shared and reference-counted, so several
stores on the same file work together (flock locks belong to an open file description: two
descriptors of one process would exclude each other).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .._exceptions import WriterBusyError

__all__ = ["DatabaseLock"]

#: How long a writer waits for an exclusive step of another process (a start check, a recovery).
SHARE_TIMEOUT = 60.0
_POLL = 0.05


@dataclass
class _Held:
    fd: int
    shared: int = 0  # writers of this process holding it shared
    exclusive: bool = False  # a step of this process holds it alone


_registry: dict[str, _Held] = {}  # lock file path -> this process's hold on it
_registry_lock = threading.Lock()


class DatabaseLock:
    """A handle on one database file's lock (``<real path>.lock``, so a symlink finds the same one)."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self.lock_path = os.path.realpath(db_path) + ".lock"
        self._sharing = False

    def _open(self) -> int:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        return fd

    def share(self, timeout: float = SHARE_TIMEOUT) -> None:
        """Hold the lock shared (a writer), waiting up to ``timeout`` seconds for another process's
        exclusive step; :class:`WriterBusyError` if it is still running then."""
        if self._sharing:
            return
        with _registry_lock:
            held = _registry.get(self.lock_path)
            if held is not None:
                held.shared += 1
                self._sharing = True
                return
            fd = self._open()
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                        os.close(fd)
                        raise WriterBusyError(
                            f"{self.db_path} is held alone by {holder} (a start-up check or `celflow db recover`) "
                            f"for more than {timeout:g} s; try again once it is done"
                        ) from None
                    time.sleep(_POLL)
            _registry[self.lock_path] = _Held(fd, shared=1)
            self._sharing = True

    def release(self) -> None:
        """Stop holding it shared (the file lock goes when the last holder of the process lets go)."""
        if not self._sharing:
            return
        with _registry_lock:
            held = _registry[self.lock_path]
            held.shared -= 1
            self._sharing = False
            if held.shared == 0 and not held.exclusive:
                del _registry[self.lock_path]
                os.close(held.fd)

    @contextlib.contextmanager
    def alone(self) -> Iterator[bool]:
        """Try to hold the lock exclusively for the block; yields whether it was taken.

        ``False``: writers hold it (here or in another process), or another step has it. Writers
        that start in this process during the block (a store opened after a start check) keep
        holding it shared after it.
        """
        with _registry_lock:
            if self.lock_path in _registry:  # a writer of this process holds it: never alone
                taken = False
            else:
                fd = self._open()
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    taken = False
                else:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"pid {os.getpid()}, {os.path.basename(sys.argv[0] or 'python')}".encode(), 0)
                    _registry[self.lock_path] = _Held(fd, exclusive=True)
                    taken = True
        try:
            yield taken
        finally:
            if taken:
                with _registry_lock:
                    held = _registry[self.lock_path]
                    held.exclusive = False
                    if held.shared:
                        fcntl.flock(held.fd, fcntl.LOCK_SH)  # not atomic: another step may run first (briefly)
                    else:
                        del _registry[self.lock_path]
                        os.close(held.fd)
