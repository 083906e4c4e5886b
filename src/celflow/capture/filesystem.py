"""File created/modified/moved/deleted events, from watchdog."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

__all__ = ["FileSystemCapture", "resolve_watch_paths"]

log = logging.getLogger("celflow.capture.filesystem")

Emit = Callable[[dict[str, Any]], object]
_ACTIONS = {"created": "created", "modified": "modified", "moved": "moved", "deleted": "deleted"}


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def resolve_watch_paths(paths: Iterable[str], exclude: Iterable[str]) -> list[tuple[str, bool]]:
    """The folders to watch as ``(path, recursive)``: existing ones, none inside ``exclude``.

    If no configured folder exists, the home folder is watched, not recursively.
    """
    excluded = [os.path.realpath(p) for p in exclude]
    chosen: list[tuple[str, bool]] = []
    for raw in paths:
        path = os.path.realpath(os.path.expanduser(raw))
        if not os.path.isdir(path):
            log.info("not watching %s: no such folder", raw)
            continue
        if any(_inside(path, ex) for ex in excluded):
            log.warning("not watching %s: it is inside CelFlow's own data folder", raw)
            continue
        if not os.access(path, os.R_OK | os.X_OK):
            log.warning("not watching %s: permission denied", raw)
            continue
        chosen.append((path, True))
    if not chosen:
        home = os.path.realpath(Path.home())
        if not any(_inside(home, ex) for ex in excluded):
            log.info("none of the configured folders exists; watching %s (not recursively)", home)
            chosen.append((home, False))
    return chosen


class _Handler(FileSystemEventHandler):
    def __init__(self, emit: Emit, root: str, excluded: list[str], ignore_hidden: bool) -> None:
        self.emit = emit
        self.root = root
        self.excluded = excluded
        self.ignore_hidden = ignore_hidden

    def _ignored(self, path: str) -> bool:
        if any(_inside(path, ex) for ex in self.excluded):
            return True
        if self.ignore_hidden:
            relative = os.path.relpath(path, self.root)
            return any(part.startswith(".") and part not in (".", "..") for part in relative.split(os.sep))
        return False

    def on_any_event(self, event: FileSystemEvent) -> None:
        action = _ACTIONS.get(event.event_type)
        if action is None or (event.is_directory and action == "modified"):
            return  # opened/closed and directory-modified events are noise
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        if self._ignored(src) and (not dest or self._ignored(dest)):
            return
        data: dict[str, Any] = {"path": src, "is_directory": event.is_directory}
        if dest:
            data["dest_path"] = dest
        try:
            self.emit(
                {
                    "event_type": "file_op",
                    "source": "filesystem",
                    "action": action,
                    "timestamp": time.time(),
                    "data": data,
                }
            )
        except Exception as exc:  # noqa: BLE001 - a failed hand-off must not kill the observer thread
            log.warning("file event not stored: %s", exc)


class FileSystemCapture:
    """Watches folders and emits ``file_op`` events; never its own data folder."""

    def __init__(
        self, emit: Emit, paths: Iterable[str], *, exclude: Iterable[str] = (), ignore_hidden: bool = True
    ) -> None:
        self.emit = emit
        self.exclude = [os.path.realpath(p) for p in exclude]
        self.paths = resolve_watch_paths(paths, self.exclude)
        self.ignore_hidden = ignore_hidden
        self._observer: Any = None
        self.watching: list[str] = []

    def start(self) -> list[str]:
        """Start watching; return the folders actually watched (unreadable ones are skipped)."""
        observer = Observer()
        for path, recursive in self.paths:
            handler = _Handler(self.emit, path, self.exclude, self.ignore_hidden)
            try:
                observer.schedule(handler, path, recursive=recursive)
            except OSError as exc:
                log.warning("cannot watch %s: %s", path, exc)
                continue
            self.watching.append(path)
        try:
            observer.start()
        except OSError as exc:
            log.warning("file capture is off: %s", exc)
            self.watching = []
            return []
        self._observer = observer
        log.info("watching %s", ", ".join(self.watching) or "nothing")
        return self.watching

    def stop(self) -> None:
        """Stop watching and wait for the observer thread."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
