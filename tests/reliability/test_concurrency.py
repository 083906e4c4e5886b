"""7. Concurrency: one writer process with 8 producer threads, retention and vacuum running, while
other processes run the CLI and the dashboard's reads, for minutes (~20 s in CI): no caller ever
sees "database is locked" (or any error), the WAL stays bounded, the file is sound at the end,
every acknowledged event is stored, and second writer processes (a manager, `celflow run`) write beside
the first without an error."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from _reliability import HELPERS, Record, load_helper, trials

CELFLOW = str(Path(sys.executable).parent / "celflow")
MiB = 1024 * 1024


soak = load_helper("load_soak")
HOLD_EVENTS = load_helper("durability_worker").HOLD_EVENTS

SECONDS = trials(20, 300)
RATE = 400  # events per second per producer thread: 3,200/s in all, a steady load, not an overload
# SQLite checkpoints the WAL once it holds 1,000 pages (4 MiB) and writes it again from its start
# when no reader still needs its frames; without a size limit the file keeps its high-water mark.
# Its size therefore stays near 4 MiB plus the largest transaction (a backlog batch of up to 5,000
# events, a retention chunk of 5,000 deletions, a vacuum step), which is a few MiB each. A WAL that
# is never reset (readers that pin it, or checkpoints that never complete) grows with everything
# written: ~2 MB/s here, past this bound within the CI run.
WAL_BOUND = 32 * MiB

CLI_COMMANDS = [
    ["events", "list", "--json", "--limit", "20"],
    ["events", "search", "file-3-", "--json", "--limit", "5"],
    ["events", "stats", "--json"],
    ["events", "list", "--json", "--hours", "1", "--type", "soak", "--source", "p2", "--limit", "50"],
]


def child_env() -> dict[str, str]:
    """The environment of children, without CelFlow settings that could redirect them."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CELFLOW_")}


class CliLoop(threading.Thread):
    """Runs the CLI's reading commands one after another, as separate processes, until stopped."""

    def __init__(self, db_path: Path, cwd: Path) -> None:
        super().__init__(name="cli-loop", daemon=True)
        self.db_path, self.cwd = db_path, cwd
        self.runs = 0
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            args = CLI_COMMANDS[self.runs % len(CLI_COMMANDS)]
            done = subprocess.run(
                [CELFLOW, *args, "--db", str(self.db_path)],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=self.cwd,
                env=child_env(),
            )
            self.runs += 1
            try:
                json.loads(done.stdout)
            except ValueError:
                self.failures.append(f"{' '.join(args)}: exit {done.returncode}, not JSON: {done.stdout[:200]!r}")
            if done.returncode != 0 or done.stderr:
                self.failures.append(f"{' '.join(args)}: exit {done.returncode}: {done.stderr[:500]}")


class WalSampler(threading.Thread):
    """Samples the size of the database's -wal file every 20 ms; keeps the largest."""

    def __init__(self, db_path: Path) -> None:
        super().__init__(name="wal-sampler", daemon=True)
        self.wal = Path(f"{db_path}-wal")
        self.largest = 0
        self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(FileNotFoundError):  # not there before the first write
                self.largest = max(self.largest, self.wal.stat().st_size)
            self.samples += 1
            self.stop.wait(0.02)


def acknowledged(ack_log: Path) -> dict[str, int]:
    """Per source, how many of its first events a flush acknowledged (complete lines only)."""
    upto: dict[str, int] = {}
    for line in ack_log.read_text().splitlines(keepends=True):
        if line.endswith("\n"):
            k, n = map(int, line.split())
            upto[f"p{k}"] = max(upto.get(f"p{k}", 0), n)
    return upto


def inspect(db_path: Path) -> tuple[str, dict[str, list[int]], int]:
    """integrity_check, the numbers of the recent events per source, and how many old ones are left."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        integrity = "\n".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
        numbers: dict[str, list[int]] = collections.defaultdict(list)
        for source, data_json in conn.execute("SELECT source, data_json FROM events WHERE event_type = 'soak'"):
            numbers[source].append(json.loads(data_json)["n"])
        old = conn.execute("SELECT count(*) FROM events WHERE event_type = 'old'").fetchone()[0]
    finally:
        conn.close()
    return integrity, numbers, old


def second_writers(db_path: Path, cwd: Path) -> list[tuple[str, int | None, str]]:
    """Write the same database from two more processes meanwhile, a manager (it stores its events and
    stops) and `celflow run` (stopped with SIGTERM after a few seconds): ``(name, exit status or None
    if it was still running after 60 s, stderr)`` of each."""
    attempts = [
        ("manager", [sys.executable, str(HELPERS / "durability_worker.py"), "hold-manager", str(db_path)]),
        ("celflow run", [CELFLOW, "run", "--db", str(db_path), "--no-fs", "--no-processes", "--no-http"]),
    ]
    outcomes: list[tuple[str, int | None, str]] = []
    for name, argv in attempts:
        # stdin at EOF: the manager stops once its events are stored
        with subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=child_env(),
        ) as proc:
            if name == "celflow run":
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=3)  # it runs (it must): then a clean stop
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=60)
                outcomes.append((name, proc.returncode, err))
            except subprocess.TimeoutExpired:
                proc.kill()
                outcomes.append((name, None, proc.communicate()[1]))
    return outcomes


@pytest.mark.timeout(SECONDS + 300)
def test_soak_writer_readers_and_maintenance_never_see_a_locked_database(tmp_path: Path, record: Record) -> None:
    """Writer, CLI, dashboard, retention and vacuum at once: no caller errors, a bounded WAL, nothing lost."""
    db_path = tmp_path / "events.db"
    ack_log = tmp_path / "acks.log"
    stderr_path = tmp_path / "writer.stderr"
    with open(stderr_path, "w") as err:
        writer = subprocess.Popen(
            [sys.executable, soak.__file__, "writer", str(db_path), str(ack_log), str(RATE)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=tmp_path,
            env=child_env(),
        )
    dashboard: subprocess.Popen[str] | None = None
    cli, wal = CliLoop(db_path, tmp_path), WalSampler(db_path)
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready", stderr_path.read_text()
        wal.start()
        cli.start()
        dashboard = subprocess.Popen(
            [sys.executable, soak.__file__, "dashboard", str(db_path), str(SECONDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=child_env(),
        )
        time.sleep(SECONDS / 2)
        others = second_writers(db_path, tmp_path)
        dash_out, dash_err = dashboard.communicate(timeout=SECONDS + 120)
        cli.stop.set()
        cli.join(timeout=150)
        assert writer.poll() is None, stderr_path.read_text()
        writer.send_signal(signal.SIGTERM)
        out, _ = writer.communicate(timeout=120)
    finally:
        cli.stop.set()
        wal.stop.set()
        for proc in (writer, dashboard):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    wal.join()
    assert writer.returncode == 0, stderr_path.read_text()
    summary: dict[str, Any] = json.loads(out.splitlines()[-1])
    assert dashboard is not None
    dash: dict[str, Any] = json.loads(dash_out) if dashboard.returncode == 0 else {"snapshots": 0, "errors": [dash_err]}
    integrity, numbers, old_left = inspect(db_path)
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        held = conn.execute("SELECT count(*) FROM events WHERE event_type = 'durability'").fetchone()[0]
    finally:
        conn.close()
    acked = acknowledged(ack_log)
    # recent events only: the old ones are acknowledged too, and then removed by retention
    missing = {
        source: len({n for n in range(upto) if n % soak.OLD_EVERY != soak.OLD_EVERY - 1} - set(numbers.get(source, [])))
        for source, upto in acked.items()
    }
    twice = {source: len(ns) - len(set(ns)) for source, ns in numbers.items() if len(ns) != len(set(ns))}
    failures = (
        summary["producer_errors"]
        + summary["errors"]
        + cli.failures
        + dash["errors"]
        + [f"{s}: {m} acknowledged events missing" for s, m in missing.items() if m]
        + [f"{s}: {t} events stored twice" for s, t in twice.items()]
        + [f"the second writer {name} failed: exit {code}" for name, code, _ in others if code != 0]
        + ([f"WAL reached {wal.largest / MiB:.1f} MiB"] if wal.largest > WAL_BOUND else [])
        + ([integrity] if integrity != "ok" else [])
    )
    lost, kept = sum(missing.values()), sum(len(set(ns)) for ns in numbers.values())
    record(
        trials=cli.runs + dash["snapshots"],
        failures=len(failures),
        worst_loss=(
            f"{lost} of {lost + kept:,} acknowledged lost; WAL max {wal.largest / MiB:.1f} MiB; "
            f"{summary['maintenance_runs']} maintenance runs removed {summary['removed']:,}"
        ),
    )
    assert not summary["producer_errors"], summary["producer_errors"][:5]
    assert not summary["errors"], summary["errors"][:5]
    assert not cli.failures, cli.failures[:5]
    assert not dash["errors"], dash["errors"][:5]
    assert integrity == "ok", integrity
    assert not any(missing.values()), missing
    assert not twice, twice
    assert old_left == 0, f"{old_left} events older than the retention period are still stored"
    assert wal.largest <= WAL_BOUND, f"the WAL reached {wal.largest / MiB:.1f} MiB (bound {WAL_BOUND / MiB:.0f} MiB)"
    for name, code, err in others:
        assert code == 0, f"a second writer ({name}) failed beside the first: exit {code}\n{err[-2000:]}"
        assert "Traceback" not in err and "locked" not in err, (name, err[-2000:])
    assert held == HOLD_EVENTS, f"the second writer's manager stored {held} of its {HOLD_EVENTS} events"
    # the soak did what it says: readers ran throughout, retention and vacuum had work
    assert cli.runs >= len(CLI_COMMANDS) and dash["snapshots"] >= 10 and wal.samples > 100
    assert summary["maintenance_runs"] >= 5 and summary["removed"] > 0
    assert summary["stats"]["lost"] == 0 and summary["stats"]["errors"] == 0, summary["stats"]
