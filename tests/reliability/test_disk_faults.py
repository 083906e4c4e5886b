"""3. Full disk: a writer on a tiny tmpfs until it fills: a clear error, degraded health at the first
failed batch, the overflow policy applied, nothing acknowledged lost, recovery once space is freed.
4. I/O errors: writes and fsyncs failed by libfiu in a real writer process: errors named with their
type, the writer survives, the file is never corrupt, nothing acknowledged lost, and a connection
whose fsync failed is replaced, never trusted."""

from __future__ import annotations

import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from _faults import Fiu, Workers, acked, fiu_tools, inspect, mount_tmpfs, ranges, read_json, wait_for, worker
from _reliability import Record, trials

CELFLOW = str(Path(sys.executable).parent / "celflow")
EIO = 5  # libfiu's failinfo: the errno a failed call sets
FULL_MESSAGE = "free some disk space"


@pytest.fixture(scope="session")
def fiu() -> Fiu:
    """libfiu's fiu-run and fiu-ctrl (installed with apt-get when missing, else every test using it skips)."""
    return fiu_tools()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """Worker processes of this test; none outlives it (so a tmpfs can be unmounted after it)."""
    started = Workers(tmp_path)
    yield started
    started.cleanup()


def read_line(proc: subprocess.Popen[str], workers: Workers, timeout: float = 120.0) -> str:
    """The next line the worker prints (fail if it prints none in time)."""
    assert proc.stdout is not None
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not line or not line[0]:
        pytest.fail(f"the worker printed nothing within {timeout} s:\n{workers.stderr(proc)[-3000:]}")
    return line[0]


# -- 3. full disk ------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["block", "drop", "raise"])
def test_full_disk_applies_the_overflow_policy_and_recovers(
    tmp_path: Path, workers: Workers, record: Record, policy: str
) -> None:
    """On a full disk the writer is unhealthy from the first failed batch with a 'free some disk space'
    error, the overflow policy turns events away (counted), nothing accepted is lost, and the writer
    writes everything queued by itself once space is freed."""
    rounds = trials(1, 30)
    rng = random.Random(int(os.environ.get("CELFLOW_TORTURE_SEED", "7")))
    failures = 0
    for round_no in range(rounds):
        out = tmp_path / f"round-{round_no}"
        out.mkdir()
        with mount_tmpfs(tmp_path / f"disk-{round_no}", "12m") as disk:
            # freeing less than the WAL holds (~4 MiB) may not be enough for SQLite to write again
            disk.add_ballast(rng.randrange(5, 7) * 1024 * 1024)
            db_path = disk.path / "events.db"
            proc = workers.spawn("fill", db_path, out, policy, interactive=True)
            line = read_line(proc, workers)
            assert line.startswith("full "), line + workers.stderr(proc)[-3000:]
            assert disk.available() < 64 * 1024  # it really is full
            disk.free()
            assert proc.stdin is not None
            proc.stdin.write("freed\n")
            proc.stdin.flush()
            assert proc.wait(timeout=180) == 0, workers.stderr(proc)[-3000:]
            report = json.loads((out / "final.json").read_text())
            integrity, numbers, _ = inspect(db_path)
        outcome = ranges(out / "events.log")
        stored = collections.Counter(numbers)
        first, full, recovered, final = report["first_error"], report["full"], report["recovered"], report["final"]
        problems = []
        if first is None or first["healthy"] or FULL_MESSAGE not in first["last_error"]:
            problems.append(f"health at the first failed batch: {first}")
        if full["healthy"] or not full["last_error"].startswith("OperationalError: ") or full["lost"]:
            problems.append(f"stats while full: {full}")
        turned_away = outcome["dropped"] if policy == "drop" else outcome["refused"]
        if not turned_away or (outcome["refused"] if policy == "drop" else outcome["dropped"]):
            problems.append(f"policy {policy}: {len(outcome['dropped'])} dropped, {len(outcome['refused'])} refused")
        if full["dropped"] != len(outcome["dropped"]):
            problems.append(f"stats count {full['dropped']} dropped, producers saw {len(outcome['dropped'])}")
        if policy == "block" and min(report["blocked"]) < 0.2:
            problems.append(f"a blocked producer gave up before queue_timeout: {report['blocked']}")
        if not recovered["healthy"] or recovered["queue_size"] or final["lost"]:
            problems.append(f"no recovery: {recovered}")
        missing = outcome["acked"] - stored.keys()
        unwritten = outcome["accepted"] - stored.keys()
        intruders = stored.keys() - outcome["accepted"]
        duplicated = [n for n, c in stored.items() if c > 1]
        if integrity != "ok" or missing or unwritten or intruders or duplicated:
            problems.append(
                f"file: {integrity}; {len(missing)} acknowledged and {len(unwritten)} accepted events lost, "
                f"{len(intruders)} turned-away events stored, {len(duplicated)} stored twice"
            )
        if problems:
            failures += 1
        assert not problems, f"round {round_no}: " + "\n".join(problems)
    record(trials=rounds, failures=failures, worst_loss="0 accepted")


def start_service(data: Path, **settings: str) -> tuple[subprocess.Popen[str], str, str]:
    """`celflow run` storing in ``data`` (settings as CELFLOW_* variables); its URL and token once it serves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELFLOW_")}
    env.update({f"CELFLOW_{k.upper()}": v for k, v in settings.items()})
    service = subprocess.Popen(
        [CELFLOW, "run", "--db", str(data / "events.db"), "--no-fs", "--no-processes", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 30
    while not (data / "service.json").exists():
        assert service.poll() is None and time.monotonic() < deadline, "the service did not start"
        time.sleep(0.05)
    url = json.loads((data / "service.json").read_text())["url"]
    return service, url, (data / "token").read_text().strip()


def http_events(first: int, count: int) -> list[dict[str, Any]]:
    return [
        {"event_type": "faults", "source": "http", "data": {"n": n, "pad": os.urandom(200).hex()}}
        for n in range(first, first + count)
    ]


def test_full_disk_under_http_ingest_degrades_and_recovers(tmp_path: Path, record: Record) -> None:
    """`celflow run` on a disk that fills: /health says 'degraded' (503) with the disk-full error, the
    queue refuses with 503 once full, every accepted event is stored after space is freed, and
    /health is 'ok' again without a restart."""
    with mount_tmpfs(tmp_path / "disk", "12m") as disk:
        disk.add_ballast(5 * 1024 * 1024)
        settings = {"batch_timeout": "0.05", "max_queue_size": "1000", "stats_interval": "0"}
        service, url, token = start_service(disk.path, **settings)
        try:
            accepted: set[int] = set()
            acknowledged: set[int] = set()
            refused: set[int] = set()
            n = 0
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
                while True:  # acknowledged batches until one is not committed in time and the disk is full
                    try:
                        r = c.post("/api/v1/events?wait=true", json=http_events(n, 200), timeout=3)
                    except httpx.ReadTimeout:
                        accepted.update(range(n, n + 200))  # queued: it will be written after the disk is freed
                        n += 200
                        if c.get("/health").status_code == 503:
                            break
                        continue  # only slow
                    assert r.status_code == 201, r.text
                    acknowledged.update(range(n, n + 200))
                    accepted.update(range(n, n + 200))
                    n += 200
                    assert n < 100_000, "the disk never filled"
                health = c.get("/health")
                assert health.status_code == 503, health.text
                body = health.json()
                assert body["status"] == "degraded" and body["state"] == "running", body
                assert body["last_error"].startswith("OperationalError: ") and FULL_MESSAGE in body["last_error"]
                while True:  # no room on disk: the queue fills, then the service refuses (nothing dropped silently)
                    r = c.post("/api/v1/events", json=http_events(n, 200))
                    if r.status_code == 503:
                        assert "queue is full" in r.json()["error"]["message"] and r.headers["Retry-After"]
                        refused.update(range(n, n + 200))
                        n += 200
                        break
                    assert r.status_code == 202, r.text
                    accepted.update(range(n, n + 200))
                    n += 200
                    assert n < 200_000, "the queue never filled"
                stats = c.get("/api/v1/stats").json()
                assert not stats["healthy"] and stats["lost"] == 0 and stats["queue_size"] > 0, stats
                disk.free()
                deadline = time.monotonic() + 60
                while (health := c.get("/health")).status_code != 200:
                    assert time.monotonic() < deadline, f"no recovery after space was freed: {health.text}"
                    time.sleep(0.05)
                assert health.json()["status"] == "ok"
                assert c.post("/api/v1/flush").status_code == 200
                stats = c.get("/api/v1/stats").json()
                assert stats["healthy"] and stats["lost"] == 0 and stats["queue_size"] == 0 and stats["errors"], stats
        finally:
            service.send_signal(signal.SIGTERM)
            output, _ = service.communicate(timeout=120)
        assert service.returncode == 0, output[-3000:]
        assert FULL_MESSAGE in output  # the log says what to do
        integrity, numbers, _ = inspect(disk.path / "events.db")
    stored = collections.Counter(numbers)
    assert integrity == "ok"
    assert not acknowledged - stored.keys(), "acknowledged events lost"
    assert stored.keys() == accepted, (len(accepted - stored.keys()), len(stored.keys() & refused))
    assert all(c == 1 for c in stored.values())
    record(trials=1, failures=0, worst_loss="0 accepted")


def test_a_stop_on_a_full_disk_logs_every_event_it_loses(tmp_path: Path, record: Record) -> None:
    """SIGTERM while the disk stays full: the service gives up what it cannot write, and its log says
    how many accepted events were lost: exactly the accepted events that are not stored."""
    with mount_tmpfs(tmp_path / "disk", "12m") as disk:
        disk.add_ballast(5 * 1024 * 1024)
        settings = {"batch_timeout": "0.05", "max_queue_size": "12000", "stats_interval": "0"}
        service, url, token = start_service(disk.path, **settings)
        accepted: set[int] = set()
        n = 0
        try:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
                while True:  # until the queue refuses: the disk is full and 12,000 events wait in memory
                    r = c.post("/api/v1/events", json=http_events(n, 200))
                    if r.status_code == 503:
                        break
                    assert r.status_code == 202, r.text
                    accepted.update(range(n, n + 200))
                    n += 200
                    assert n < 200_000, "the disk never filled"
                assert c.get("/health").json()["status"] == "degraded"
        finally:
            service.send_signal(signal.SIGTERM)
            output, _ = service.communicate(timeout=300)
        integrity, numbers, _ = inspect(disk.path / "events.db")
    reported = sum(int(m) for m in re.findall(r"stopping while writes fail: (\d+) accepted events are lost", output))
    assert integrity == "ok"
    assert set(numbers) <= accepted and len(numbers) == len(set(numbers))
    assert reported and reported == len(accepted) - len(numbers), (reported, len(accepted), len(numbers))
    record(trials=1, failures=0, worst_loss=f"{reported} accepted, all logged")


# -- 4. I/O errors -----------------------------------------------------------------------------

SCENARIOS = {
    # name: (durability, failure point, probability of each call failing); with "full" every commit syncs
    "fsync": ("full", "posix/io/sync/fdatasync", 0.5),
    "write": ("normal", "posix/io/rw/pwrite", 0.05),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_io_errors_lose_no_acknowledged_event(
    tmp_path: Path, fiu: Fiu, workers: Workers, record: Record, scenario: str
) -> None:
    """Failed writes or fsyncs at random moments: the writer names the error, survives it (or is killed
    in the middle of it), the file passes integrity_check and holds every acknowledged event once."""
    durability, point, probability = SCENARIOS[scenario]
    rounds = trials(4, 200)
    rng = random.Random(int(os.environ.get("CELFLOW_TORTURE_SEED", "7")))
    ever_acked: set[int] = set()
    failures = 0
    for round_no in range(rounds):
        db_path = tmp_path / f"events-{round_no // 25}.db"  # a fresh file every 25 rounds keeps checks linear
        if round_no % 25 == 0:
            ever_acked = set()
        out = tmp_path / f"round-{round_no}"
        out.mkdir()
        fifo = out / "fiu"
        proc = workers.spawn("ingest", db_path, out, durability, (round_no + 1) * 1_000_000, prefix=fiu.command(fifo))
        wait_for(lambda out=out: acked(out / "acks.log"), "a first acknowledgement", proc, workers)
        fiu.control(proc.pid, fifo, f"enable_random name={point},probability={probability},failinfo={EIO}")
        wait_for(lambda out=out: (read_json(out / "stats.json") or {}).get("errors"), "a failed write", proc, workers)
        time.sleep(rng.uniform(0.0, 0.3))
        killed = round_no % 2 == 1
        if killed:  # in the middle of the failures: mid-retry, mid-rollback, mid-reconnect
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        else:
            fiu.control(proc.pid, fifo, f"disable name={point}")
            before = len(acked(out / "acks.log"))
            wait_for(
                lambda out=out, before=before: len(acked(out / "acks.log")) > before + 1000,
                "writes after the failures",
                proc,
                workers,
            )
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, workers.stderr(proc)[-3000:]
        ever_acked |= acked(out / "acks.log")
        integrity, numbers, data = inspect(db_path)
        stored = collections.Counter(numbers)
        missing = ever_acked - stored.keys()
        duplicated = [n for n, c in stored.items() if c > 1]
        log = workers.stderr(proc)
        named = "OperationalError: disk I/O error [SQLITE_IOERR" in log and "its connection was closed" in log
        final = None if killed else read_json(out / "final.json")
        survived = killed or (final is not None and final["healthy"] and final["lost"] == 0 and final["errors"])
        if integrity != "ok" or missing or duplicated or not named or not survived:
            failures += 1
        assert integrity == "ok", f"round {round_no}: {integrity}"
        assert not missing, f"round {round_no}: {len(missing)} acknowledged events lost"
        assert not duplicated, f"round {round_no}: {len(duplicated)} events stored twice"
        assert named, f"round {round_no}: the log does not name the error:\n{log[-3000:]}"
        assert survived, f"round {round_no}: the writer did not recover: {final}"
        assert all(d == worker.payload(d["n"]) for d in data[-1000:])  # what is stored is what was sent
    record(trials=rounds, failures=failures, worst_loss="0 acknowledged")


def test_nothing_is_acknowledged_while_every_fsync_fails(
    tmp_path: Path, fiu: Fiu, workers: Workers, record: Record
) -> None:
    """With durability 'full', while every fsync fails nothing is acknowledged; each failure is logged
    with its type and the write connection is replaced; when fsyncs work again, ingest goes on."""
    out = tmp_path / "out"
    out.mkdir()
    fifo = out / "fiu"
    db_path = tmp_path / "events.db"
    proc = workers.spawn("ingest", db_path, out, "full", 0, prefix=fiu.command(fifo))
    wait_for(lambda: acked(out / "acks.log"), "a first acknowledgement", proc, workers)
    fiu.control(proc.pid, fifo, f"enable name=posix/io/sync/fdatasync,failinfo={EIO}")
    at_enable = len(acked(out / "acks.log"))
    wait_for(lambda: (read_json(out / "stats.json") or {}).get("errors", 0) >= 3, "three failed commits", proc, workers)
    during = acked(out / "acks.log")
    stats = read_json(out / "stats.json")
    fiu.control(proc.pid, fifo, "disable name=posix/io/sync/fdatasync")
    wait_for(lambda: len(acked(out / "acks.log")) > len(during) + 1000, "writes after", proc, workers)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, workers.stderr(proc)[-3000:]
    log = workers.stderr(proc)
    final = read_json(out / "final.json")
    # a commit whose fsync had passed before the failure point was on may still be acknowledged
    assert len(during) <= at_enable + 300, (at_enable, len(during))
    assert not stats["healthy"]
    assert stats["last_error"].startswith("OperationalError: disk I/O error [SQLITE_IOERR_FSYNC]")
    assert log.count("SQLITE_IOERR_FSYNC during a write to") >= 3, log[-3000:]
    assert final["healthy"] and final["lost"] == 0
    assert stats["writer_connections"] == 1 and final["writer_connections"] >= 2  # committed on a new connection
    integrity, numbers, _ = inspect(db_path)
    assert integrity == "ok"
    assert not acked(out / "acks.log") - set(numbers) and len(numbers) == len(set(numbers))
    record(trials=1, failures=0, worst_loss="0 acknowledged")
