"""Fixtures of the fault tests: a tiny tmpfs that really fills up, libfiu to fail real I/O calls, and
writer processes (tests/helpers/faults_worker.py) that run on them."""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from celflow import decode_data
from debian import apt_install
from test_durability import Procs

WORKER = Path(__file__).parents[1] / "helpers" / "faults_worker.py"
POSIX_PRELOAD = "/usr/lib/fiu/fiu_posix_preload.so"


def _load_worker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("faults_worker", WORKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()  # the helper's payload(n): one definition for both processes


def loud_skip(what: str, why: str) -> None:
    """Skip, saying in capitals what went untested (the reason shows in pytest's summary)."""
    pytest.skip(f"NOT TESTED: {what}: {why}")


class Disk:
    """A tmpfs of a few MiB mounted for one test, with a ballast file to delete when it is full."""

    def __init__(self, mount_point: Path) -> None:
        self.path = mount_point
        self.ballast = mount_point / "ballast"

    def add_ballast(self, size: int) -> None:
        """Take ``size`` bytes of the disk with a file that :meth:`free` deletes."""
        with open(self.ballast, "wb") as f:
            f.write(os.urandom(size))

    def free(self) -> None:
        """Give the ballast's space back, as a person cleaning up a full disk would."""
        self.ballast.unlink()

    def available(self) -> int:
        """Bytes still free on the disk."""
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize


@contextlib.contextmanager
def mount_tmpfs(mount_point: Path, size: str) -> Iterator[Disk]:
    """Mount a tmpfs of ``size`` (e.g. ``8m``) at ``mount_point`` for the test; always unmounted after it."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        loud_skip("the full-disk tests", "mounting a small tmpfs needs root and mount(8)")
    mount_point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        loud_skip("the full-disk tests", f"mount -t tmpfs failed: {done.stderr.strip()}")
    try:
        yield Disk(mount_point)
    finally:
        unmounted = subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=30)
        if unmounted.returncode != 0:  # still busy (a process outlived the test): detach it now
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)


class Fiu:
    """libfiu's tools: ``fiu-run -x`` starts a process whose POSIX I/O calls can be made to fail,
    ``fiu-ctrl`` enables and disables failure points (``posix/io/sync/fdatasync``...) while it runs."""

    def __init__(self, run: str, ctrl: str) -> None:
        self.run = run
        self.ctrl = ctrl

    def command(self, fifo_prefix: Path) -> list[str]:
        """The prefix of a command line that runs a program under libfiu, remote-controlled by fifos."""
        return [self.run, "-x", "-f", str(fifo_prefix)]

    def control(self, pid: int, fifo_prefix: Path, *commands: str) -> None:
        """Send ``commands`` (``enable name=...``, ``disable name=...``) to the running process ``pid``."""
        args = [self.ctrl, "-f", str(fifo_prefix)]
        for command in commands:
            args += ["-c", command]
        done = subprocess.run([*args, str(pid)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and not done.stderr.strip(), f"fiu-ctrl {commands}: {done.stderr}"


def fiu_tools() -> Fiu:
    """libfiu's fiu-run and fiu-ctrl, installed if missing; a loud skip where that cannot be done."""
    if not (shutil.which("fiu-run") and shutil.which("fiu-ctrl") and os.path.exists(POSIX_PRELOAD)):
        why = apt_install("fiu-utils")
        if why is not None:
            loud_skip("the I/O error tests", why)
    run, ctrl = shutil.which("fiu-run"), shutil.which("fiu-ctrl")
    if run is None or ctrl is None or not os.path.exists(POSIX_PRELOAD):
        loud_skip("the I/O error tests", "fiu-utils was installed but fiu-run, fiu-ctrl or libfiu's preload is missing")
    assert run is not None and ctrl is not None
    return Fiu(run, ctrl)


class Workers(Procs):
    """Starts faults_worker.py processes (optionally under libfiu) and kills any still running at teardown."""

    script = WORKER


def wait_for(check: Any, what: str, proc: subprocess.Popen[str], workers: Workers, timeout: float = 60.0) -> Any:
    """Poll ``check()`` until it returns something true; fail if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"worker exited with {proc.returncode} waiting for {what}:\n{workers.stderr(proc)[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout} s:\n{workers.stderr(proc)[-3000:]}")
        time.sleep(0.01)


def read_json(path: Path) -> Any:
    """A JSON file the worker replaces atomically, or None while it is not there."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def acked(ack_log: Path) -> set[int]:
    """Event numbers the ingest worker acknowledged (complete lines only: a kill may cut the last one)."""
    numbers: set[int] = set()
    if ack_log.exists():
        for line in ack_log.read_text().splitlines(keepends=True):
            if line.endswith("\n"):
                first, last = map(int, line.split())
                numbers.update(range(first, last + 1))
    return numbers


def ranges(events_log: Path) -> dict[str, set[int]]:
    """The fill worker's log: event numbers per outcome (accepted, dropped, refused, acked)."""
    found: dict[str, set[int]] = collections.defaultdict(set)
    for line in events_log.read_text().splitlines():
        what, first, last = line.split()
        found[what].update(range(int(first), int(last) + 1))
    return found


def inspect(db_path: Path) -> tuple[str, list[int], list[dict[str, Any]]]:
    """``PRAGMA integrity_check``, the event numbers stored and their data, read with plain sqlite3.

    ``mode=ro`` leaves a killed writer's WAL as it is: the next writer has to recover it itself.
    """
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        integrity = "\n".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
        data = [decode_data(j, c) for j, c in conn.execute("SELECT data_json, data_compressed FROM events ORDER BY id")]
    finally:
        conn.close()
    return integrity, [d["n"] for d in data], data
