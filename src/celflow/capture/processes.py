"""Process start and exit events, by polling psutil."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

__all__ = ["ProcessCapture", "snapshot"]

log = logging.getLogger("celflow.capture.processes")

Emit = Callable[[dict[str, Any]], object]
Key = tuple[int, float]  # (pid, create_time): a pid alone is reused


def snapshot(*, cmdline: bool = False) -> dict[Key, dict[str, Any]]:
    """The running processes: name, pid, ppid, exe, user (and command line when asked)."""
    attrs = ["pid", "ppid", "name", "exe", "username", "create_time"]
    if cmdline:
        attrs.append("cmdline")
    found: dict[Key, dict[str, Any]] = {}
    for proc in psutil.process_iter(attrs, ad_value=None):
        info = proc.info
        if info.get("create_time") is None:
            continue
        found[(info["pid"], info["create_time"])] = info
    return found


class ProcessCapture:
    """Emits ``process`` events (``start``/``exit``) for processes seen between two polls."""

    def __init__(self, emit: Emit, *, interval: float = 2.0, cmdline: bool = False) -> None:
        self.emit = emit
        self.interval = interval
        self.cmdline = cmdline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="celflow-processes", daemon=True)
        self._known: dict[Key, dict[str, Any]] = {}

    def start(self) -> None:
        """Take the first snapshot (no events for what already runs) and start polling."""
        self._known = snapshot(cmdline=self.cmdline)
        self._thread.start()
        log.info("watching processes every %g s (%d running)", self.interval, len(self._known))

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def poll(self) -> int:
        """Compare with the previous snapshot and emit the differences; return how many."""
        current = snapshot(cmdline=self.cmdline)
        now = time.time()
        emitted = 0
        for key in current.keys() - self._known.keys():
            emitted += self._send("start", current[key], current[key]["create_time"])
        for key in self._known.keys() - current.keys():
            emitted += self._send("exit", self._known[key], now)
        self._known = current
        return emitted

    def _send(self, action: str, info: dict[str, Any], timestamp: float) -> int:
        data = {k: v for k, v in info.items() if v is not None}
        try:
            self.emit(
                {"event_type": "process", "source": "processes", "action": action, "timestamp": timestamp, "data": data}
            )
        except Exception as exc:  # noqa: BLE001 - one lost event must not stop the poller
            log.warning("process event not stored: %s", exc)
            return 0
        return 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # logged; psutil can fail transiently, so polling goes on
                log.exception("polling processes failed")
