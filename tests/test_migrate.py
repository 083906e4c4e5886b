"""`celflow migrate`: a history copied between real databases (SQLite files, a real PostgreSQL), resumed after a
SIGKILL, and through the command line."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from celflow import CelflowError, EventDatabase, EventQuery, EventStore, ValidationError, open_store
from celflow._migrate import MigrationReport, _copy_system_stats, migrate_history
from celflow._postgres import PostgresStore
from pg_server import pg_url

__all__ = ["pg_url"]  # the fixture, re-exported for pytest

CELFLOW = str(Path(sys.executable).with_name("celflow"))
T0 = 1_700_000_000.0
N_EVENTS = 3000


def _data(i: int, rng: random.Random) -> Any:
    """Varied data: unicode, nesting, floats jsonb would rewrite, big integers, large text, non-dict values."""
    kind = i % 12
    if kind == 0:
        return {"text": "日本語 ✓ émoji 🎉 עברית e\u0301", "i": i}
    if kind == 1:
        return {"nested": {"a": [1, {"b": [None, True, False, {"c": "deep"}]}], "z": {}}, "i": i}
    if kind == 2:  # above the compression threshold: stored zstd-compressed
        return {"log": " ".join(rng.choices(["GET", "/api/v1", "200", "404", "ms=12", "\n"], k=600)), "i": i}
    if kind == 3:
        return {"floats": [0.1, 1e300, -0.0, 2.5e-300, 1e16, -1.5, 3.0], "i": i}
    if kind == 4:
        return {"big": 2**70, "neg": -(2**65), "i": i}
    if kind == 5:
        return [i, "a list", 1.25]
    if kind == 6:
        return f"just a string {i}"
    if kind == 7:
        return None
    if kind == 8:
        return {"nul": "a\x00b", "i": i}
    if kind == 9:  # large and unicode: compressed too
        return {"page": "ünïcödé 漢字 " * 300, "i": i}
    return {"path": f"/home/u/file-{i}.txt", "size": rng.randint(0, 10**9), "ratio": rng.random()}


def _events(n: int, *, start: float = T0, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        event: dict[str, Any] = {
            "event_type": ["file_op", "app_focus", "process", "clipboard", "ünïcode_type"][i % 5],
            "source": ["filesystem", "window", "processes", "браузер"][i % 4],
            "action": ["created", None, "focus_gained"][i % 3],
            "timestamp": start + i * 97.3 + rng.random(),  # ~3.4 days: several PostgreSQL day partitions
            "data": _data(i, rng),
        }
        if i % 50 == 0:
            event["idempotency_key"] = f"key-{i}"
        events.append(event)
    return events


def _fill(path: Path, n: int = N_EVENTS) -> None:
    """A source database of ``n`` varied events, patterns (linked, unlinked, two equal ones) and system stats."""
    with EventDatabase(path) as db:
        ids = db.store_events_batch(_events(n))
        for k, event_id in enumerate(ids[:: max(1, n // 10)]):
            db.store_pattern(
                "sequence", 0.5 + k / 100, {"steps": [k, k + 1], "名": "パターン"}, event_id=event_id, embryo_id=f"e{k}"
            )
        db.store_pattern("orphan", 0.25, {"why": None}, event_id=None)
        db.store_pattern("twin", 0.9, [1, 2, 3])
        db.store_pattern("twin", 0.9, [1, 2, 3])
        db.store_pattern("wide", 0.75, {"big": 2**70, "f": -0.0, "u": "ü"})
        for k in range(5):
            db.record_system_stats(
                timestamp=T0 + k * 60, total_events=k * 100, events_per_second=k / 3, active_embryos=k, storage_mb=1.5
            )
        db.record_system_stats(timestamp=T0 + 240, total_events=400, events_per_second=4 / 3, active_embryos=4)


def _snapshot(store: EventStore) -> dict[str, list[str]]:
    """Everything stored, without ids or storage times, as canonical JSON (so 1 != 1.0 and -0.0 != 0.0)."""
    events = store.select_after(0, EventQuery(limit=None))
    key_of = {e.id: (e.timestamp, e.hash) for e in events}

    def dump(values: dict[str, Any]) -> str:
        return json.dumps(values, sort_keys=True)  # the standard library: it writes integers of any size

    return {
        "events": sorted(dump({k: v for k, v in e.to_dict().items() if k not in ("id", "created_at")}) for e in events),
        "patterns": sorted(
            dump({**p.to_dict(), "id": None, "created_at": None, "event_id": key_of.get(p.event_id or 0)})
            for p in store.select_patterns(limit=10**9)
        ),
        "system_stats": sorted(
            dump({**s.to_dict(), "id": None, "created_at": None}) for s in store.select_system_stats(limit=10**9)
        ),
    }


def _opened(location: str) -> EventStore:
    return open_store(location, readonly=True)


def _snapshot_of(location: str) -> dict[str, list[str]]:
    store = _opened(location)
    try:
        return _snapshot(store)
    finally:
        store.close()


def _count(location: str) -> int:
    store = _opened(location)
    try:
        return store.count_events(EventQuery())
    finally:
        store.close()


@pytest.fixture(scope="module")
def source_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A filled SQLite source, shared by the tests that only read it."""
    path = tmp_path_factory.mktemp("source") / "events.db"
    _fill(path)
    return path


def _check_first_run(report: MigrationReport) -> None:
    assert (report.events_read, report.events_copied, report.events_already_there) == (N_EVENTS, N_EVENTS, 0)
    assert (report.patterns_copied, report.patterns_already_there, report.patterns_unlinked) == (14, 0, 0)
    assert (report.system_stats_copied, report.system_stats_already_there) == (6, 0)
    assert report.target_events_before == 0 and report.target_events_after == N_EVENTS
    assert report.events_rejected == 0


def _check_second_run(report: MigrationReport) -> None:
    assert (report.events_copied, report.events_already_there) == (0, N_EVENTS)
    assert (report.patterns_copied, report.patterns_already_there) == (0, 14)
    assert (report.system_stats_copied, report.system_stats_already_there) == (0, 6)


def test_sqlite_to_postgres_keeps_every_event_pattern_and_stat(source_file: Path, pg_url: str) -> None:
    """SQLite -> PostgreSQL: every event, pattern and stat identical, counts equal, and a second run copies 0."""
    source = f"sqlite:///{source_file}"  # sqlite:/// + an absolute path
    seen: list[tuple[int, int]] = []
    report = migrate_history(source, pg_url, batch=250, progress=lambda done, total: seen.append((done, total)))
    _check_first_run(report)
    assert seen[-1] == (N_EVENTS, N_EVENTS) and len(seen) == math.ceil(N_EVENTS / 250)
    expected = _snapshot_of(str(source_file))
    assert _snapshot_of(pg_url) == expected
    src, dst = open_store(source_file, readonly=True), PostgresStore(pg_url, readonly=True)
    try:  # the target's counters agree with its events and with the source
        for query in (EventQuery(), EventQuery(start_time=T0 + 86400, end_time=T0 + 2 * 86400 + 30)):
            assert dst.count_events(query) == src.count_events(query)
            assert dst.count_by("event_type", query) == src.count_by("event_type", query)
            assert dst.histogram(3600, query) == src.histogram(3600, query)
        assert dst.select_events(EventQuery(search="パターン"))[0] == []  # patterns are not events
        assert len(dst.select_events(EventQuery(search="日本語", limit=None))[0]) == N_EVENTS // 12
    finally:
        src.close()
        dst.close()
    _check_second_run(migrate_history(source, pg_url, batch=999))
    assert _snapshot_of(pg_url) == expected


def test_postgres_to_sqlite_comes_back_identical(source_file: Path, pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL -> SQLite (the way back) gives the source's history again, byte for byte in canonical JSON."""
    migrate_history(source_file, pg_url)
    back = tmp_path / "back.db"
    _check_first_run(migrate_history(pg_url, f"sqlite:///{back}", batch=400))
    assert _snapshot_of(str(back)) == _snapshot_of(str(source_file))
    _check_second_run(migrate_history(pg_url, back))


def test_sqlite_to_sqlite_needs_no_server(source_file: Path, tmp_path: Path) -> None:
    """Between two SQLite files: identical content, and a second run copies nothing."""
    target = tmp_path / "sub" / "copy.db"
    _check_first_run(migrate_history(source_file, target, batch=7))
    assert _snapshot_of(str(target)) == _snapshot_of(str(source_file))
    _check_second_run(migrate_history(source_file, target))
    assert _snapshot_of(str(target)) == _snapshot_of(str(source_file))


def test_a_target_with_other_data_is_merged(source_file: Path, tmp_path: Path) -> None:
    """A target holding other events, and some of the source's, keeps its own and gains only the missing ones."""
    target = tmp_path / "busy.db"
    with EventDatabase(target) as db:
        db.store_events_batch(_events(100, start=T0 - 10**6, seed=99))  # not in the source
        db.store_events_batch(_events(N_EVENTS)[:40])  # already there
        db.store_pattern("twin", 0.9, [1, 2, 3])  # one of the two equal patterns
    report = migrate_history(source_file, target)
    assert report.target_events_before == 140 and report.target_events_after == 100 + N_EVENTS
    assert (report.events_copied, report.events_already_there) == (N_EVENTS - 40, 40)
    assert (report.patterns_copied, report.patterns_already_there) == (13, 1)
    merged = _snapshot_of(str(target))
    assert set(_snapshot_of(str(source_file))["events"]) <= set(merged["events"])
    assert len(merged["events"]) == len(set(merged["events"])) == 100 + N_EVENTS
    assert set(_snapshot_of(str(source_file))["patterns"]) <= set(merged["patterns"])  # linked to the same events
    assert len(merged["patterns"]) == 14


def test_other_url_parameters_reach_the_server(tmp_path: Path, pg_url: str) -> None:
    """libpq parameters beside ``schema`` (here ``options`` with a space) pass through to the connection."""
    source = tmp_path / "few.db"
    with EventDatabase(source) as db:
        db.store_events_batch(_events(20))
    report = migrate_history(source, f"{pg_url}&options=-c%20synchronous_commit%3Doff&application_name=celflow%20test")
    assert report.events_copied == 20 and _count(pg_url) == 20


def test_same_source_and_target_is_refused(source_file: Path) -> None:
    """The same database on both sides (spelt differently) is an error naming the target; nothing is opened."""
    with pytest.raises(ValidationError, match="same database") as caught:
        migrate_history(source_file, f"sqlite:///{source_file.parent}/../{source_file.parent.name}/events.db")
    assert caught.value.field == "target"
    url = "postgresql://u:pw@127.0.0.1:5432/test?schema=a"
    with pytest.raises(ValidationError, match=r"same database \(postgresql://u:\*\*\*@") as caught:
        migrate_history("postgresql://other@127.0.0.1/test?schema=a", url)
    assert "pw" not in str(caught.value)
    with pytest.raises(ValidationError, match="batch must be"):
        migrate_history(source_file, source_file.with_name("x.db"), batch=0)


def _stats(ts: float, k: int) -> dict[str, Any]:
    return {
        "timestamp": ts,
        "total_events": k,
        "events_per_second": None,
        "active_embryos": k % 3,
        "avg_fitness": 0.5,
        "storage_mb": None,
    }


def test_system_stats_are_compared_a_window_at_a_time(tmp_path: Path) -> None:
    """Stats in windows (ties across an edge, a window of one timestamp) are copied once each, merged too."""
    src, dst = open_store(tmp_path / "a.db"), open_store(tmp_path / "b.db")
    try:
        stamps = [T0 + k for k in range(40)] + [T0 + 100.5] * 7 + [T0 + 200.0] * 25 + [T0 + 300 + k for k in range(9)]
        for k, ts in enumerate(stamps):
            src.insert_system_stats(_stats(ts, k))
        dst.insert_system_stats(_stats(T0 + 200.0, 50))  # the source's row 50: already there
        for run in range(2):
            report = MigrationReport(source="a", target="b")
            _copy_system_stats(src, dst, report, page=10)
            copied = len(stamps) - 1 if run == 0 else 0
            assert (report.system_stats_copied, report.system_stats_already_there) == (copied, len(stamps) - copied)
        assert _snapshot(dst)["system_stats"] == _snapshot(src)["system_stats"]
    finally:
        src.close()
        dst.close()


def test_an_event_the_target_cannot_hold_is_reported_and_the_rest_copied(tmp_path: Path, pg_url: str) -> None:
    """PostgreSQL refuses a NUL in a type: that event is reported with its source id, every other event is copied."""
    source = tmp_path / "nul.db"
    with EventDatabase(source) as db:
        ids = db.store_events_batch(_events(30))
        (bad,) = db.store_events_batch([{"event_type": "a\x00b", "source": "s", "timestamp": T0 + 5.5}])
        db.store_events_batch(_events(30, start=T0 + 10**5))
    report = migrate_history(source, pg_url, batch=16)
    assert report.events_rejected == 1 and report.rejects[0][0] == bad and "NUL" in report.rejects[0][1]
    assert report.events_copied == 60 and _count(pg_url) == 60 and len(ids) == 30
    again = run_cli("migrate", "--from", str(source), "--to", pg_url)
    assert again.returncode == 1 and f"event {bad} not copied" in again.stderr


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real `celflow` script."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([CELFLOW, *args], capture_output=True, text=True, timeout=120, env=env)


def test_cli_migrates_with_json_counts(source_file: Path, pg_url: str) -> None:
    """`celflow migrate --json` prints the counts; the second run copies nothing; the stores agree."""
    first = run_cli("migrate", "--from", f"sqlite:///{source_file}", "--to", pg_url, "--batch", "500", "--json")
    assert first.returncode == 0, first.stderr
    counts = json.loads(first.stdout)
    assert counts["events_copied"] == N_EVENTS and counts["events_already_there"] == 0
    assert counts["patterns_copied"] == 14 and counts["system_stats_copied"] == 6 and counts["rejects"] == []
    assert counts["target"] == pg_url
    second = run_cli("migrate", "--from", str(source_file), "--to", pg_url, "--json")
    assert second.returncode == 0, second.stderr
    assert (
        json.loads(second.stdout)["events_copied"] == 0
        and json.loads(second.stdout)["events_already_there"] == N_EVENTS
    )
    human = run_cli("migrate", "--from", str(source_file), "--to", pg_url)
    assert human.returncode == 0 and f"0 copied, {N_EVENTS:,} already there" in human.stderr
    assert _snapshot_of(pg_url) == _snapshot_of(str(source_file))


def test_cli_errors_are_one_line_and_mask_the_password(source_file: Path, tmp_path: Path) -> None:
    """An unreachable server (password masked), the same database twice, a missing source, a bad --batch."""
    started = time.monotonic()
    down = run_cli("migrate", "--from", str(source_file), "--to", "postgresql://bob:hunter2s3cret@127.0.0.1:1/db")
    assert down.returncode == 1 and "cannot connect to postgresql://bob:***@127.0.0.1:1/db" in down.stderr
    assert "hunter2s3cret" not in down.stderr + down.stdout and len(down.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 8  # the reason at once, not after the pool's 10 s of retries
    same = run_cli("migrate", "--from", str(source_file), "--to", f"sqlite:///{source_file}")
    assert same.returncode == 1 and "same database" in same.stderr and len(same.stderr.strip().splitlines()) == 1
    missing = run_cli("migrate", "--from", str(tmp_path / "none.db"), "--to", str(tmp_path / "t.db"))
    assert missing.returncode == 1 and "no CelFlow database" in missing.stderr
    assert not (tmp_path / "t.db").exists()
    bad = run_cli("migrate", "--from", str(source_file), "--to", str(tmp_path / "t.db"), "--batch", "0")
    assert bad.returncode == 2 and "--batch" in bad.stderr


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_a_migration_killed_midway_resumes_without_duplicates(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """`celflow migrate` SIGKILLed mid-stream leaves whole batches; the next run copies exactly the rest."""
    n, batch = 8000, 20
    source = tmp_path / "big.db"
    with EventDatabase(source) as db:
        events = _events(n, seed=3)
        for lo in range(0, n, 5000):
            db.store_events_batch(events[lo : lo + 5000])
        db.store_pattern("p", 0.5, {"x": 1}, event_id=db.query(limit=1).events[0].id)
        db.record_system_stats(timestamp=T0, total_events=n)
    target = request.getfixturevalue("pg_url") if backend == "postgres" else str(tmp_path / "target.db")
    proc = subprocess.Popen([CELFLOW, "migrate", "--from", str(source), "--to", target, "--batch", str(batch)])
    stored = 0
    deadline = time.monotonic() + 60
    try:
        while stored < n // 4 and time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(CelflowError):  # not created yet
                stored = _count(target)
            time.sleep(0.005)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = _count(target)
    assert n // 4 <= before < n, "the kill did not land mid-stream"
    assert before % batch == 0  # whole batches only: a killed transaction left nothing
    report = migrate_history(source, target)
    assert (report.events_copied, report.events_already_there) == (n - before, before)
    assert report.patterns_copied == 1 and report.system_stats_copied == 1
    after = _snapshot_of(target)
    assert len(after["events"]) == len(set(after["events"])) == n
    assert after == _snapshot_of(str(source))


def test_two_histories_migrated_at_once_into_one_server(tmp_path: Path, pg_url: str) -> None:
    """Two files migrated into one PostgreSQL at once, one creating a day partition per batch: all kept."""
    sources = []
    for k, gap in enumerate((3600.0, 7.0)):  # a new day every 24 events; one day (after the first batch)
        path = tmp_path / f"laptop{k}.db"
        with EventDatabase(path) as db:
            db.store_events_batch(
                [
                    {"event_type": "t", "source": f"laptop{k}", "timestamp": T0 + h * gap + k, "data": {"h": h}}
                    for h in range(3000)
                ]
            )
        sources.append(path)
    procs = [
        subprocess.Popen(
            [CELFLOW, "migrate", "--from", str(p), "--to", pg_url, "--batch", "24", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in sources
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert json.loads(out)["events_copied"] == 3000
    merged = _snapshot_of(pg_url)["events"]
    assert len(merged) == 6000 and set(_snapshot_of(str(sources[0]))["events"]) <= set(merged)
