"""Database care: check, backup while writing, vacuum, recover from byte flips and truncation,
doctor, and a service that refuses a damaged file."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from celflow import CorruptDatabaseError, EventDatabase
from celflow._care import backup_database, check_database, doctor, recover_database, vacuum_database

CELFLOW = str(Path(sys.executable).parent / "celflow")
N = 20_000


def build(path: Path, n: int = N) -> None:
    with EventDatabase(path) as db:
        for start in range(0, n, 5000):
            db.store_events_batch(
                [
                    {
                        "event_type": "file_op",
                        "source": "filesystem",
                        "timestamp": 1_700_000_000.0 + i,
                        "data": {"i": i, "path": f"/home/user/file-{i}.txt", "pad": "x" * 80},
                    }
                    for i in range(start, min(n, start + 5000))
                ]
            )
        db.store_pattern("routine", 0.8, {"k": 1})
        db.record_system_stats(total_events=n)
    with sqlite3.connect(path) as conn:  # everything in the main file, so damage to it is all there is
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


@pytest.fixture
def healthy(tmp_path: Path) -> Path:
    path = tmp_path / "events.db"
    build(path)
    return path


def test_check_a_healthy_database(healthy: Path) -> None:
    report = check_database(healthy)
    assert report.ok and report.problems == [] and report.schema_version == 2
    assert report.last_event_id == N and report.page_count > 0
    full = check_database(healthy, full=True)
    assert full.ok and full.mode == "full"
    result = subprocess.run([CELFLOW, "db", "check", "--db", str(healthy), "--json"], capture_output=True, text=True)
    assert result.returncode == 0 and json.loads(result.stdout)["ok"] is True


def test_backup_while_another_thread_writes(healthy: Path, tmp_path: Path) -> None:
    stop = threading.Event()

    def writer() -> None:
        with EventDatabase(healthy) as db:
            i = 0
            while not stop.is_set():
                db.store_events_batch([{"event_type": "live", "source": "w", "data": {"i": i + k}} for k in range(200)])
                i += 200

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        copies = []
        for k in range(3):
            copy = tmp_path / f"backup-{k}.db"
            backup_database(healthy, copy)
            copies.append(copy)
    finally:
        stop.set()
        thread.join()
    counts = []
    for copy in copies:
        assert integrity(copy) == "ok"
        assert copy.stat().st_mode & 0o777 == 0o600
        with EventDatabase(copy, readonly=True) as db:
            counts.append(db.count_events())
    assert counts == sorted(counts) and counts[0] >= N  # consistent snapshots, taken as writes went on
    with pytest.raises(Exception, match="--force"):
        backup_database(healthy, copies[0])


def test_vacuum_gives_space_back(healthy: Path) -> None:
    with EventDatabase(healthy) as db:
        db.cleanup_old_events(0)  # everything is old: all events go
    before, after = vacuum_database(healthy)
    assert after < before / 2
    assert integrity(healthy) == "ok"


def damage_pages(path: Path, fraction: float, pages: int = 6) -> None:
    """Overwrite ``pages`` pages from ``fraction`` into the file with random bytes."""
    data = bytearray(path.read_bytes())
    page = 4096
    rng = random.Random(1)
    first = int(len(data) * fraction) // page * page
    for k in range(pages):
        start = first + k * 3 * page
        data[start : start + page] = bytes(rng.randrange(256) for _ in range(page))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["byte flips", "truncation"])
def test_recover_saves_what_can_be_read(healthy: Path, damage: str) -> None:
    if damage == "byte flips":
        damage_pages(healthy, 0.3)
    else:
        with open(healthy, "r+b") as f:
            f.truncate(int(healthy.stat().st_size * 0.6) // 4096 * 4096)
    damaged_hash = sha(healthy)
    assert not check_database(healthy, full=True).ok
    report = recover_database(healthy)
    assert N // 3 < report.events_saved <= N
    aside = Path(report.damaged_copy)
    assert aside.exists() and sha(aside) == damaged_hash  # kept, byte for byte
    assert integrity(healthy) == "ok" and check_database(healthy, full=True).ok
    with EventDatabase(healthy, readonly=True) as db:
        assert db.count_events() == report.events_saved
        saved = db.query(limit=None, order="asc").events
        assert all(e.data["path"] == f"/home/user/file-{e.data['i']}.txt" for e in saved)  # intact rows only
        assert all(e.id == e.data["i"] + 1 for e in saved)  # the same ids: cursors and patterns still fit
        assert db.store.last_id() >= N  # new events are numbered after every old one
    assert report.events_saved + report.events_lost + report.ids_skipped >= N or damage == "truncation"


def test_recover_keeps_what_only_the_wal_holds(tmp_path: Path) -> None:
    """Events committed but not yet checkpointed are in the WAL: recovery reads them too."""
    path = tmp_path / "events.db"
    build(path, 2000)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute(
            "INSERT INTO events (timestamp, event_type, source, data_json, hash) VALUES (5, 't', 's', '{}', 'h')"
        )
        conn.commit()
        assert Path(f"{path}-wal").stat().st_size > 0
        report = recover_database(path)
    assert report.events_saved == 2001


def test_a_damaged_database_is_refused_by_the_service(healthy: Path) -> None:
    damage_pages(healthy, 0.9, pages=8)  # near the end: the newest events and the index's right edge
    before = sha(healthy)
    result = subprocess.run(
        [CELFLOW, "run", "--db", str(healthy), "--no-fs", "--no-processes", "--no-http"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "celflow db recover" in result.stderr
    assert sha(healthy) == before  # refused without writing


def test_doctor_says_what_to_do(healthy: Path) -> None:
    report, advice = doctor(healthy)
    assert report.ok and any("healthy" in line for line in advice)
    damage_pages(healthy, 0.5)
    report, advice = doctor(healthy)
    assert not report.ok and any("celflow db recover" in line for line in advice)
    result = subprocess.run([CELFLOW, "db", "doctor", "--db", str(healthy)], capture_output=True, text=True)
    assert "recover" in result.stdout


def test_an_unreadable_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    build(path, 100)
    data = bytearray(path.read_bytes())
    data[16:24] = b"\xff" * 8  # the page size and format bytes of the header
    path.write_bytes(bytes(data))
    before = sha(path)
    with pytest.raises(CorruptDatabaseError, match="cannot be read"):
        recover_database(path)
    assert sha(path) == before and not list(tmp_path.glob("*.damaged-*"))
