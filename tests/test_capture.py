"""Capture sources and `celflow run` end to end: real files, real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from celflow.capture.filesystem import FileSystemCapture, resolve_watch_paths
from celflow.capture.processes import ProcessCapture

CELFLOW = str(Path(sys.executable).with_name("celflow"))


class Collector:
    """Collects emitted events from any thread."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(event)

    def wait_for(self, predicate: Any, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [e for e in self.events if predicate(e)]
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError(f"no matching event in {self.events!r}")


def test_file_events(tmp_path: Path) -> None:
    """Created, modified, moved and deleted files become file_op events with their paths."""
    watched = tmp_path / "watched"
    watched.mkdir()
    collect = Collector()
    capture = FileSystemCapture(collect, [str(watched)])
    assert capture.start() == [str(watched.resolve())]
    try:
        target = watched / "notes.txt"
        target.write_text("hello")
        collect.wait_for(lambda e: e["action"] == "created" and e["data"]["path"] == str(target))
        target.rename(watched / "renamed.txt")
        moved = collect.wait_for(lambda e: e["action"] == "moved")[0]
        assert moved["data"]["dest_path"] == str(watched / "renamed.txt")
        (watched / "renamed.txt").unlink()
        collect.wait_for(lambda e: e["action"] == "deleted")
    finally:
        capture.stop()
    assert all(e["event_type"] == "file_op" and e["source"] == "filesystem" for e in collect.events)


def test_never_watches_its_own_data_folder(tmp_path: Path) -> None:
    """Events inside the data folder are ignored even when a watched folder contains it."""
    data = tmp_path / "data"
    data.mkdir()
    collect = Collector()
    capture = FileSystemCapture(collect, [str(tmp_path)], exclude=[str(data)])
    capture.start()
    try:
        (data / "events.db-wal").write_text("x")
        (tmp_path / "visible.txt").write_text("x")
        collect.wait_for(lambda e: e["data"]["path"].endswith("visible.txt"))
        time.sleep(0.2)
    finally:
        capture.stop()
    assert not [e for e in collect.events if str(data) in e["data"]["path"]]
    assert resolve_watch_paths([str(data)], [str(data)]) != [(str(data.resolve()), True)]


def test_hidden_files_ignored(tmp_path: Path) -> None:
    """Files in hidden folders (editor swap, .git) are ignored by default."""
    (tmp_path / ".git").mkdir()
    collect = Collector()
    capture = FileSystemCapture(collect, [str(tmp_path)])
    capture.start()
    try:
        (tmp_path / ".git" / "index").write_text("x")
        (tmp_path / ".swap").write_text("x")
        (tmp_path / "seen.txt").write_text("x")
        collect.wait_for(lambda e: e["data"]["path"].endswith("seen.txt"))
        time.sleep(0.2)
    finally:
        capture.stop()
    assert not [e for e in collect.events if "/." in e["data"]["path"]]


def test_missing_and_bad_folders_are_skipped(tmp_path: Path) -> None:
    """Missing folders and files are skipped; with none left the home folder is watched, not recursively."""
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    chosen = resolve_watch_paths([str(tmp_path / "missing"), str(a_file)], [])
    assert chosen == [(os.path.realpath(Path.home()), False)]


def test_process_events() -> None:
    """A process that starts and exits between polls gives start and exit events; no command line by default."""
    collect = Collector()
    capture = ProcessCapture(collect, interval=60)
    capture.start()
    try:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)  # celflow-test-marker"])
        capture.poll()
        started = [e for e in collect.events if e["action"] == "start" and e["data"]["pid"] == child.pid]
        assert started and started[0]["data"]["name"].startswith("python")
        assert "cmdline" not in started[0]["data"]
        child.kill()
        child.wait()
        capture.poll()
        assert [e for e in collect.events if e["action"] == "exit" and e["data"]["pid"] == child.pid]
    finally:
        capture.stop()


def test_process_cmdline_opt_in() -> None:
    """With process_cmdline on, the command line is recorded."""
    collect = Collector()
    capture = ProcessCapture(collect, interval=60, cmdline=True)
    capture.start()
    try:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "marker-arg"])
        capture.poll()
        child.kill()
        child.wait()
    finally:
        capture.stop()
    (event,) = [e for e in collect.events if e["action"] == "start" and e["data"]["pid"] == child.pid]
    assert "marker-arg" in event["data"]["cmdline"]


def test_celflow_run_end_to_end(tmp_path: Path) -> None:
    """`celflow run` captures real file and process events, stops on SIGTERM with exit 0, and keeps them."""
    watched = tmp_path / "watched"
    watched.mkdir()
    db = tmp_path / "data" / "events.db"
    env = {**os.environ, "CELFLOW_CAPTURE_PROCESS_INTERVAL": "0.2", "CELFLOW_BATCH_TIMEOUT": "0.2"}
    service = subprocess.Popen(
        [CELFLOW, "run", "--db", str(db), "--watch", str(watched), "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while not db.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the watchers start after the database opens
        (watched / "captured.txt").write_text("hello")
        subprocess.run(["sleep", "0.7"], check=True)  # polling sees processes that live longer than a poll
        time.sleep(0.5)
    finally:
        service.send_signal(signal.SIGTERM)
        output, _ = service.communicate(timeout=30)
    assert service.returncode == 0, output
    assert "stopped cleanly" in output
    listed = subprocess.run(
        [CELFLOW, "events", "list", "--db", str(db), "--limit", "500", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    events = json.loads(listed.stdout)
    assert any(e["event_type"] == "file_op" and e["data"]["path"].endswith("captured.txt") for e in events), output
    assert any(e["event_type"] == "process" and e["data"].get("name") == "sleep" for e in events), output
    log = db.parent / "celflow.log"
    assert log.exists() and log.stat().st_mode & 0o777 == 0o600


def test_unreadable_folders_are_skipped() -> None:
    """As an unprivileged user, a folder it may not read is skipped and the others are still watched."""
    import shutil
    import tempfile

    import pytest

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the check as the unprivileged user 'nobody'")
    base = Path(tempfile.mkdtemp(prefix="celflow-perm-", dir="/tmp"))  # pytest's tmp is closed to others
    try:
        base.chmod(0o755)
        (base / "ok").mkdir(mode=0o777)
        (base / "ok").chmod(0o777)
        (base / "secret").mkdir(mode=0o000)
        (base / "secret").chmod(0o000)
        code = (
            "import json, time\n"
            "from celflow.capture.filesystem import FileSystemCapture\n"
            "seen = []\n"
            f"c = FileSystemCapture(seen.append, [{str(base / 'ok')!r}, {str(base / 'secret')!r}])\n"
            "watched = c.start()\n"
            f"open({str(base / 'ok' / 'x.txt')!r}, 'w').write('x')\n"
            "time.sleep(0.5)\n"
            "c.stop()\n"
            "print(json.dumps({'watched': watched, 'paths': [e['data']['path'] for e in seen]}))\n"
        )
        result = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        (base / "secret").chmod(0o700)
        shutil.rmtree(base)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["watched"] == [str(base / "ok")]
    assert str(base / "ok" / "x.txt") in out["paths"]
    assert "permission denied" in result.stderr
