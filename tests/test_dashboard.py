"""The dashboard: its figures on a known dataset, driven headless with Textual's Pilot, and a
snapshot of its layout; the figures and the app on PostgreSQL too."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from celflow import EventDatabase
from celflow.dashboard import DashboardApp, DashboardSource, Filters
from pg_server import pg_url

__all__ = ["pg_url"]  # the fixture, re-exported for pytest

NOW = 1_767_225_600.0 + 13.5 * 3600  # 2026-01-01 13:30 UTC: a fixed clock
TYPES = ["file_op", "app_focus", "process"]


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """Times are shown in local time: pin it so the figures and the snapshot are the same anywhere."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def store_known_dataset(location: str | Path) -> None:
    """60 events in the last hour (20 per type), 30 more earlier today, 40 last week; patterns, stats."""
    events = []
    for i in range(60):
        events.append(
            {
                "event_type": TYPES[i % 3],
                "source": "filesystem" if i % 4 else "window",
                "action": "created",
                "timestamp": NOW - 60 * i - 1,
                "data": {"i": i, "path": f"/home/user/notes-{i}.txt"},
            }
        )
    for i in range(30):
        events.append(
            {"event_type": "process", "source": "processes", "timestamp": NOW - 3 * 3600 - i, "data": {"i": i}}
        )
    for i in range(40):
        events.append(
            {"event_type": "network", "source": "browser", "timestamp": NOW - 3 * 86400 - i, "data": {"i": i}}
        )
    with EventDatabase(location) as db:
        db.store_events_batch(events)
        for kind, confidence in (("routine", 0.8), ("routine", 0.6), ("anomaly", 0.9)):
            db.store_pattern(kind, confidence, {"kind": kind})
        for k in range(5):
            db.record_system_stats(
                timestamp=NOW - 600 * (5 - k), total_events=100 * k, active_embryos=2 + k, avg_fitness=0.5 + k / 10
            )


def known_dataset(path: Path) -> None:
    """The known dataset in a SQLite file, its storage times pinned."""
    store_known_dataset(path)
    # storage times are "now" when written: pin them too, for the snapshot
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE events SET created_at = '2026-01-01 13:30:00'")
        conn.execute("UPDATE patterns SET created_at = '2026-01-01 13:30:00'")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "events.db"
    known_dataset(path)
    return path


def text_of(app: DashboardApp, selector: str) -> str:
    """A panel's content as plain text."""
    console = Console(width=120, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(app.query_one(selector, Static).content)
    return console.export_text()


async def until(pilot: Pilot[None], check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the dashboard did not get there in time"
        await pilot.pause(0.05)


# -- the figures -------------------------------------------------------------------------------


def test_snapshot_figures_on_a_known_dataset(dataset: Path) -> None:
    """Every panel's figures on the known dataset in a SQLite file."""
    check_known_figures(DashboardSource(dataset, clock=lambda: NOW))


def test_snapshot_figures_on_postgresql(pg_url: str) -> None:
    """The same figures from the same events stored in PostgreSQL; the title shows the URL as written."""
    store_known_dataset(pg_url)
    source = DashboardSource(pg_url, clock=lambda: NOW)
    assert source.path == pg_url and not source.is_file and source.data_dir is None
    snap = source.snapshot("hour")
    assert snap.sizes["database_size_mb"] > 0 and snap.sizes["wal_size_mb"] == 0
    check_known_figures(source)


def check_known_figures(source: DashboardSource) -> None:
    """The known dataset's figures, in every window and with a filter; closes ``source``."""
    try:
        snap = source.snapshot("hour", wait_total=True)
        assert snap.total == 130
        assert snap.last_hour == 60 and snap.in_window == 60
        assert snap.today == 90  # the fixed clock is at 13:30; the earlier 30 are at 10:30
        assert snap.by_type == {"file_op": 20, "app_focus": 20, "process": 20}
        assert snap.by_source == {"filesystem": 45, "window": 15}
        # one event a minute: 13:01 to 13:29 in the 30 minutes shown (13:01-13:30; none yet in 13:30)
        assert len(snap.per_minute) == 30 and sum(snap.per_minute) == 29 and snap.per_minute[-1] == 0
        assert set(snap.per_minute_by_type) == set(TYPES)
        assert snap.patterns[0][:2] == ("routine", 2) and snap.patterns[0][2] == pytest.approx(0.7)
        assert [s.active_embryos for s in snap.system_stats] == [6, 5, 4, 3, 2]
        assert [e.data["i"] for e in snap.recent[:3]] == [0, 1, 2]
        week = source.snapshot("week")
        assert week.in_window == 130 and week.by_type["network"] == 40
        found = source.snapshot("day", Filters.parse("type:process notes-5"))
        assert [e.data["i"] for e in found.recent] == [5, 50, 53, 56, 59]  # newest first
        assert "last day" in found.recent_note
    finally:
        source.close()


def test_filter_box_syntax() -> None:
    assert Filters.parse("type:file_op source:window hello world") == Filters("file_op", "window", "hello world")
    assert Filters.parse("") == Filters()
    assert Filters.parse("type: odd:thing") == Filters(None, None, "type: odd:thing")


# -- the app, headless -------------------------------------------------------------------------


def test_panels_show_the_figures(dataset: Path) -> None:
    async def scenario() -> None:
        source = DashboardSource(dataset, clock=lambda: NOW)
        source.total(wait=True)
        app = DashboardApp(source, interval=0.2)
        async with app.run_test(size=(180, 50)) as pilot:
            await until(pilot, lambda: app.refreshes >= 1)
            capture = text_of(app, "#capture")
            assert "130" in capture and "today" in capture and "90" in capture
            types = text_of(app, "#types")
            assert "file_op" in types and "33.3%" in types
            learning = text_of(app, "#learning")
            assert "routine" in learning and "0.70" in learning and "embryos 6" in learning
            assert "not running" in text_of(app, "#performance")
            assert app.query_one("#recent", DataTable).row_count == 50
        source.close()

    asyncio.run(scenario())


def test_the_app_on_postgresql(pg_url: str) -> None:
    """The app, headless, on a PostgreSQL URL: every panel fills, the window key and the filter work."""
    store_known_dataset(pg_url)

    async def scenario() -> None:
        source = DashboardSource(pg_url, clock=lambda: NOW)
        source.total(wait=True)
        app = DashboardApp(source, interval=0.2)
        async with app.run_test(size=(180, 50)) as pilot:
            await until(pilot, lambda: app.refreshes >= 1)
            assert pg_url in app.sub_title
            capture = text_of(app, "#capture")
            assert "130" in capture and "90" in capture and "database (PostgreSQL)" in capture
            assert "WAL" not in capture
            assert "file_op" in text_of(app, "#types") and "filesystem" in text_of(app, "#sources")
            learning = text_of(app, "#learning")
            assert "routine" in learning and "0.70" in learning and "embryos 6" in learning
            assert "reading the database" in text_of(app, "#performance")
            assert app.query_one("#recent", DataTable).row_count == 50
            await pilot.press("w", "w")
            await until(pilot, lambda: app.snapshot is not None and app.snapshot.window == "week")
            assert "network" in text_of(app, "#types")
            await pilot.press("slash", *"type:process notes-5", "enter")
            await until(
                pilot,
                lambda: app.snapshot is not None and [e.data["i"] for e in app.snapshot.recent] == [5, 50, 53, 56, 59],
            )
            await pilot.press("q")
        assert app.return_code == 0
        source.close()

    asyncio.run(scenario())


def test_live_updates_while_another_thread_writes(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    EventDatabase(path).close()

    async def scenario() -> None:
        source = DashboardSource(path)
        app = DashboardApp(source, interval=0.1)
        stop = threading.Event()

        def writer() -> None:
            with EventDatabase(path) as db:
                while not stop.is_set():
                    db.store_events_batch([{"event_type": "live", "source": "test"} for _ in range(10)])
                    time.sleep(0.05)

        async with app.run_test(size=(180, 50)) as pilot:
            await until(pilot, lambda: app.refreshes >= 1)
            thread = threading.Thread(target=writer)
            thread.start()
            try:
                first = await wait_for_count(pilot, app, 1)
                later = await wait_for_count(pilot, app, first + 50)
                assert later > first
                assert "live" in text_of(app, "#types")
            finally:
                stop.set()
                thread.join()
        source.close()

    asyncio.run(scenario())


async def wait_for_count(pilot: Pilot[None], app: DashboardApp, at_least: int) -> int:
    await until(pilot, lambda: app.snapshot is not None and app.snapshot.last_hour >= at_least)
    assert app.snapshot is not None
    return app.snapshot.last_hour


def test_keys_window_pause_filter_and_detail(dataset: Path) -> None:
    async def scenario() -> None:
        source = DashboardSource(dataset, clock=lambda: NOW)
        app = DashboardApp(source, interval=0.1)
        async with app.run_test(size=(180, 50)) as pilot:
            await until(pilot, lambda: app.refreshes >= 1)
            await pilot.press("w")
            await until(pilot, lambda: app.snapshot is not None and app.snapshot.window == "day")
            await pilot.press("w")
            await until(pilot, lambda: app.snapshot is not None and app.snapshot.window == "week")
            assert "network" in text_of(app, "#types")
            await pilot.press("p")
            paused_at = app.refreshes
            await pilot.pause(0.5)
            assert app.refreshes <= paused_at + 1  # at most the one already running
            await pilot.press("p")
            await until(pilot, lambda: app.refreshes > paused_at + 1)
            await pilot.press("slash")
            await pilot.press(*"type:app_focus", "enter")
            await until(
                pilot, lambda: app.snapshot is not None and {e.event_type for e in app.snapshot.recent} == {"app_focus"}
            )
            await pilot.press("down")
            await until(pilot, lambda: app.selected is not None)
            assert app.selected is not None
            assert f'"id": {app.selected.id}' in text_of(app, "#detail")
            await pilot.press("question_mark")
            await pilot.press("q")
        assert app.return_code == 0
        source.close()

    asyncio.run(scenario())


def test_an_empty_database_shows_a_friendly_dashboard(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    EventDatabase(path).close()

    async def scenario() -> None:
        source = DashboardSource(path)
        app = DashboardApp(source, interval=0.2)
        async with app.run_test(size=(180, 50)) as pilot:
            await until(pilot, lambda: app.refreshes >= 1)
            assert "no events in this window" in text_of(app, "#types")
            assert "no patterns yet" in text_of(app, "#learning")
            assert app.query_one("#recent", DataTable).row_count == 0
        source.close()

    asyncio.run(scenario())


def test_a_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    celflow = str(Path(sys.executable).parent / "celflow")
    result = subprocess.run(
        [celflow, "dashboard", "--db", str(tmp_path / "nope.db")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "no CelFlow database" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "nope.db").exists()


def test_layout_snapshot(dataset: Path, snap_compare: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(dataset.parent)  # the title shows the path as given
    source = DashboardSource(Path("events.db"), clock=lambda: NOW)
    source.total(wait=True)
    app = DashboardApp(source, interval=3600, show_timings=False)

    async def loaded(pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.refreshes >= 1)

    try:
        assert snap_compare(app, terminal_size=(160, 48), run_before=loaded)
    finally:
        source.close()
