"""Who may take a SQLite file alone: an advisory ``flock`` on ``<database>.lock``.

Any number of processes write one file at once: SQLite's own lock, with a busy timeout,
serialises their transactions. This lock is for the few steps that need the file to themselves
while nobody writes: the start-up check (which reads the WAL as it lies on disk) and a recovery
(which moves the file aside). Every writer holds it *shared* for as long as it is open, taken
before it opens a connection; such a step takes it *exclusive*, only for that step, and only if
no writer holds it. Readers never take it.

Inside one process the lock is one file descriptor, shared and reference-counted, so several
stores on the same file work together (flock locks belong to an open file description: two
descriptors of one process would exclude each other). A writer of this process waits while a
step of this process holds the file alone, as one of another process would.
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

#: How long a writer waits for an exclusive step (a start check, a recovery) to end.
SHARE_TIMEOUT = 60.0
_POLL = 0.05


@dataclass
class _Held:
    fd: int
    shared: int = 0  # writers of this process holding it shared
    exclusive: bool = False  # a step of this process holds it alone


_registry: dict[str, _Held] = {}  # lock file path -> this process's hold on it
_registry_lock = threading.Lock()  # never held while waiting


class DatabaseLock:
    """A handle on one database file's lock (``<real path>.lock``, so a symlink finds the same one)."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self.lock_path = os.path.realpath(db_path) + ".lock"
        self.sharing = False
        #: Whether this handle created the lock file (a refused foreign file gets it removed again).
        self.created = False

    def _open(self) -> int:
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            self.created = True
        except FileExistsError:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CLOEXEC)
        os.fchmod(fd, 0o600)
        return fd

    def _try_share(self) -> bool:
        """One attempt (registry lock held by the caller)."""
        held = _registry.get(self.lock_path)
        if held is not None:
            if held.exclusive:
                return False  # a step of this process has it alone: wait like anyone else
            held.shared += 1
            return True
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        _registry[self.lock_path] = _Held(fd, shared=1)
        return True

    def share(self, timeout: float = SHARE_TIMEOUT) -> None:
        """Hold the lock shared (a writer), waiting up to ``timeout`` seconds for an exclusive step to
        end; :class:`WriterBusyError` if it is still running then."""
        if self.sharing:
            return
        deadline = time.monotonic() + timeout
        while True:
            with _registry_lock:
                if self._try_share():
                    self.sharing = True
                    return
            if time.monotonic() >= deadline:
                raise WriterBusyError(
                    f"{self.db_path} is held alone by {self._holder()} (a start-up check or `celflow db recover`) "
                    f"for more than {timeout:g} s; try again once it is done"
                )
            time.sleep(_POLL)

    def _holder(self) -> str:
        with contextlib.suppress(OSError), open(self.lock_path, "rb") as f:
            return f.read(200).decode(errors="replace").strip() or "another process"
        return "another process"

    def release(self) -> None:
        """Stop holding it shared (the file lock goes when the last holder of the process lets go)."""
        if not self.sharing:
            return
        with _registry_lock:
            held = _registry[self.lock_path]
            held.shared -= 1
            self.sharing = False
            if held.shared == 0 and not held.exclusive:
                del _registry[self.lock_path]
                os.close(held.fd)

    def discard(self) -> None:
        """Release, and remove the lock file if this handle created it (a file CelFlow refused to use)."""
        self.release()
        if self.created:
            with _registry_lock:
                if self.lock_path not in _registry:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.lock_path)

    @contextlib.contextmanager
    def alone(self, *, then_share: bool = False) -> Iterator[bool]:
        """Try to hold the lock exclusively for the block; yields whether it was taken.

        ``False``: writers hold it (here or in another process), or another step has it.
        ``then_share``: this handle holds it shared after the block (a store opened after its start
        check), whether or not the block had it alone; not if the block raised.
        """
        with _registry_lock:
            if self.lock_path in _registry:  # a writer or a step of this process holds it: never alone
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
        except BaseException:  # the step failed (a refused start check): hold nothing after it
            if taken:
                with _registry_lock:
                    del _registry[self.lock_path]
                    os.close(fd)
            raise
        else:
            if taken:
                with _registry_lock:
                    held = _registry[self.lock_path]
                    held.exclusive = False
                    downgraded = False
                    if then_share:
                        # Not atomic: flock drops the exclusive lock, then takes a shared one; if a step of
                        # another process got in between, this handle waits for it below like any writer.
                        try:
                            fcntl.flock(held.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                            held.shared += 1
                            self.sharing = downgraded = True
                        except BlockingIOError:
                            pass
                    if not downgraded:
                        del _registry[self.lock_path]
                        os.close(held.fd)
        if then_share and not self.sharing:
            self.share()
