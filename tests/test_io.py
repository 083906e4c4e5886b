"""Export and import: every format's round trip, idempotence, ActivityWatch, malformed inputs,
interrupted exports."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from celflow import EventDatabase, ExportError, ValidationError
from celflow._export import export_events, import_events

CELFLOW = str(Path(sys.executable).parent / "celflow")
FORMATS = ["json", "jsonl", "csv", "parquet"]


def realistic_mix() -> list[dict[str, Any]]:
    """Unicode, nesting, big integers and floats, empty actions, and large (compressed) events."""
    events: list[dict[str, Any]] = []
    for i in range(300):
        data: dict[str, Any] = {
            "i": i,
            "path": f"/home/zoë/Документы/文件-{i}.txt",
            "emoji": "🚀" * (i % 3),
            "nested": {"list": [1, 2.5, None, True, {"deep": "x"}], "big": 2**62 + i},
            "quote": 'a "quoted", comma\nnew line',
        }
        if i % 10 == 0:
            data["log"] = "line of a big log that repeats\n" * 200  # > 1 KiB: stored zstd-compressed
        events.append(
            {
                "event_type": ["file_op", "app_focus", "clipboard"][i % 3],
                "source": "filesystem" if i % 2 else "window",
                "action": None if i % 4 == 0 else "created",
                "timestamp": 1_767_225_600.0 + i * 1.25,
                "data": data,
            }
        )
    return events


def comparable(events: list[Any]) -> list[tuple[Any, ...]]:
    return [(e.timestamp, e.event_type, e.action, e.source, e.data, e.hash) for e in events]


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    path = tmp_path / "source.db"
    with EventDatabase(path) as db:
        db.store_events_batch(realistic_mix())
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_of_every_format(filled: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"events.{fmt}"
    with EventDatabase(filled, readonly=True) as source:
        assert export_events(source, out) == 300
        original = source.query(limit=None, order="asc").events
    assert out.stat().st_mode & 0o777 == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    with EventDatabase(tmp_path / "copy.db") as copy:
        report = import_events(copy, out)
        assert (report.imported, report.duplicates, report.rejected) == (300, 0, 0)
        restored = copy.query(limit=None, order="asc").events
        assert comparable(restored) == comparable(original)  # same hashes: the same events
        again = import_events(copy, out)  # idempotent
        assert (again.imported, again.duplicates) == (0, 300)
        assert copy.count_events() == 300


def test_export_filters_and_refuses_to_overwrite(filled: Path, tmp_path: Path) -> None:
    out = tmp_path / "clip.jsonl"
    with EventDatabase(filled, readonly=True) as db:
        assert export_events(db, out, event_type="clipboard", limit=7) == 7
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert {e["event_type"] for e in lines} == {"clipboard"}
        assert [e["timestamp"] for e in lines] == sorted(e["timestamp"] for e in lines)
        with pytest.raises(ExportError, match="--force"):
            export_events(db, out)
        assert export_events(db, out, force=True) == 300
        with pytest.raises(ValidationError, match="format"):
            export_events(db, tmp_path / "x.xml", "xml")


def test_export_never_overwrites_a_live_database(filled: Path) -> None:
    with EventDatabase(filled, readonly=True) as db, pytest.raises(ExportError, match="database"):
        export_events(db, filled, "jsonl", force=True)
    assert EventDatabase(filled, readonly=True).count_events() == 300


def test_csv_is_readable_by_csv_tools(filled: Path, tmp_path: Path) -> None:
    out = tmp_path / "events.csv"
    with EventDatabase(filled, readonly=True) as db:
        export_events(db, out)
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 300
    assert json.loads(rows[1]["data"])["quote"] == 'a "quoted", comma\nnew line'
    assert rows[0]["action"] == ""


def test_an_interrupted_export_leaves_no_file(filled: Path, tmp_path: Path) -> None:
    """SIGKILL mid-export: no file under the final name (only a hidden .part may remain)."""
    with EventDatabase(filled) as db:
        db.store_events_batch(
            [
                {"event_type": "bulk", "source": "s", "timestamp": 1_700_000_000 + i, "data": {"i": i}}
                for i in range(60_000)
            ]
        )
    out = tmp_path / "big.jsonl"
    slow = subprocess.Popen([CELFLOW, "events", "export", str(out), "--db", str(filled)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not [p for p in tmp_path.iterdir() if p.name.endswith(".part")] and slow.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    slow.send_signal(signal.SIGKILL)
    slow.wait()
    assert not out.exists()


def test_import_reports_each_rejected_record(tmp_path: Path) -> None:
    source = tmp_path / "mixed.jsonl"
    good = {"event_type": "t", "source": "s", "timestamp": 1_700_000_000.0, "data": {}}
    source.write_text(
        "\n".join(
            [
                json.dumps(good),
                "{not json",
                json.dumps({"source": "s"}),
                "",
                json.dumps({**good, "timestamp": 1_700_000_001.0}),
                json.dumps({**good, "timestamp": "yesterday"}),
            ]
        )
    )
    with EventDatabase(tmp_path / "events.db") as db:
        report = import_events(db, source)
    assert (report.imported, report.rejected) == (2, 3)
    assert [where for where, _ in report.rejects] == ["line 2", "line 3", "line 6"]
    assert "event_type" in report.rejects[1][1] and "timestamp" in report.rejects[2][1]


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("broken.json", b'[{"event_type": "t", "source": "s"}, {"event_', "not valid JSON"),
        ("object.json", b'{"event_type": "t"}', "JSON array"),
        ("noheader.csv", b"a,b\n1,2\n", "header"),
        ("bad.parquet", b"PAR1 this is not parquet", "Parquet"),
        ("aw.json", b'{"no": "buckets"}', "buckets"),
    ],
)
def test_malformed_files_import_nothing(tmp_path: Path, name: str, content: bytes, words: str) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    fmt = "activitywatch" if name == "aw.json" else None
    with EventDatabase(tmp_path / "events.db") as db:
        with pytest.raises(ValidationError, match=words):
            import_events(db, source, fmt)
        assert db.count_events() == 0


def test_csv_rows_with_bad_fields_are_rejected_by_line(tmp_path: Path) -> None:
    source = tmp_path / "rows.csv"
    source.write_text(
        "timestamp,event_type,action,source,data\n"
        '1700000000.5,t,,s,"{""k"": 1}"\n'
        "1700000001,t,,s,{broken\n"
        "1700000002,t,,s\n"
        '1700000003,t,made,s,"[1, 2]"\n'
    )
    with EventDatabase(tmp_path / "events.db") as db:
        report = import_events(db, source)
        assert (report.imported, report.rejected) == (2, 2)
        assert [where for where, _ in report.rejects] == ["line 3", "line 4"]
        assert [e.data for e in db.query(limit=None, order="asc").events] == [{"k": 1}, [1, 2]]


def activitywatch_export() -> dict[str, Any]:
    """aw-server's documented export shape: buckets keyed by id, each with its events."""
    host = "alice-laptop"
    return {
        "buckets": {
            f"aw-watcher-window_{host}": {
                "id": f"aw-watcher-window_{host}",
                "created": "2026-01-01T08:00:00.000000+00:00",
                "name": None,
                "type": "currentwindow",
                "client": "aw-watcher-window",
                "hostname": host,
                "events": [
                    {
                        "id": 100 + i,
                        "timestamp": f"2026-01-01T09:{i:02d}:00.123000+00:00",
                        "duration": 59.5,
                        "data": {"app": ["Code", "Firefox"][i % 2], "title": f"notes-{i}.md — Visual Studio Code"},
                    }
                    for i in range(40)
                ],
            },
            f"aw-watcher-afk_{host}": {
                "id": f"aw-watcher-afk_{host}",
                "created": "2026-01-01T08:00:00.000000+00:00",
                "type": "afkstatus",
                "client": "aw-watcher-afk",
                "hostname": host,
                "events": [
                    {"timestamp": "2026-01-01T09:00:00+00:00", "duration": 1800.0, "data": {"status": "not-afk"}},
                    {"timestamp": "2026-01-01T09:30:00+00:00", "duration": 600.0, "data": {"status": "afk"}},
                    {"timestamp": "not a time", "duration": 1.0, "data": {"status": "afk"}},
                ],
            },
        }
    }


def test_activitywatch_import(tmp_path: Path) -> None:
    source = tmp_path / "aw-buckets-export.json"
    source.write_text(json.dumps(activitywatch_export()))
    with EventDatabase(tmp_path / "events.db") as db:
        report = import_events(db, source, "activitywatch")
        assert (report.imported, report.rejected) == (42, 1)
        assert report.rejects[0][0] == "bucket aw-watcher-afk_alice-laptop event 2"
        assert db.count_by("event_type") == {"currentwindow": 40, "afkstatus": 2}
        (first,) = db.query(event_type="currentwindow", order="asc", limit=1).events
        assert first.source == "aw-watcher-window_alice-laptop"
        assert first.timestamp == pytest.approx(1_767_258_000.123)
        assert first.data == {
            "duration": 59.5,
            "app": "Code",
            "title": "notes-0.md — Visual Studio Code",
            "hostname": "alice-laptop",
        }
        assert import_events(db, source, "activitywatch").imported == 0  # idempotent
        grown = activitywatch_export()  # a later export: ActivityWatch grew its newest event's duration
        grown["buckets"]["aw-watcher-window_alice-laptop"]["events"][-1]["duration"] = 300.0
        source.write_text(json.dumps(grown))
        assert import_events(db, source, "activitywatch").imported == 0  # the same event, by AW's id


def test_cli_export_import_round_trip(filled: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    exported = subprocess.run(
        [CELFLOW, "events", "export", str(out), "--db", str(filled)], capture_output=True, text=True, timeout=60
    )
    assert exported.returncode == 0, exported.stderr
    assert "exported 300 events" in exported.stderr
    target = tmp_path / "copy.db"
    imported = subprocess.run(
        [CELFLOW, "events", "import", str(out), "--db", str(target), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["imported"] == 300
    assert os.stat(target).st_mode & 0o777 == 0o600


# -- replay ------------------------------------------------------------------------------------


def test_replay_in_time_order_with_filters(filled: Path) -> None:
    from celflow._replay import replay

    seen: list[Any] = []
    with EventDatabase(filled, readonly=True) as db:
        assert replay(db, seen.append, event_type="clipboard") == 100
    assert [e.timestamp for e in seen] == sorted(e.timestamp for e in seen)
    assert {e.event_type for e in seen} == {"clipboard"}


def test_replay_speed_factor_keeps_the_gaps(tmp_path: Path) -> None:
    """Events 0, 1 and 3 s apart at speed 10 arrive 0.1 and 0.3 s apart (a fake clock records the waits)."""
    from celflow._replay import replay

    with EventDatabase(tmp_path / "events.db") as db:
        db.store_events_batch([{"event_type": "t", "source": "s", "timestamp": 1_700_000_000.0 + t} for t in (0, 1, 3)])
        now = [100.0]
        waits: list[float] = []

        def sleep(seconds: float) -> None:
            waits.append(round(seconds, 6))
            now[0] += seconds

        arrivals: list[float] = []
        replay(db, lambda e: arrivals.append(now[0]), speed=10, sleep=sleep, clock=lambda: now[0])
        assert waits == [0.1, 0.2]
        assert [round(a - 100.0, 6) for a in arrivals] == [0.0, 0.1, 0.3]
        with pytest.raises(ValidationError, match="speed"):
            replay(db, print, speed=0)
        started = time.monotonic()
        assert replay(db, lambda e: None, speed=30) == 3  # the real clock: 3 s of history in 0.1 s
        assert 0.09 <= time.monotonic() - started < 2


def test_cli_replay_to_stdout_and_into_another_service(filled: Path, tmp_path: Path) -> None:
    from live_service import TOKEN, Service

    printed = subprocess.run(
        [CELFLOW, "events", "replay", "--db", str(filled), "--type", "app_focus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert printed.returncode == 0, printed.stderr
    lines = [json.loads(line) for line in printed.stdout.splitlines()]
    assert len(lines) == 100 and {e["event_type"] for e in lines} == {"app_focus"}
    target = Service(tmp_path / "target" / "events.db")
    try:
        for _ in range(2):  # a second replay stores nothing new: same timestamps and data, dedup
            sent = subprocess.run(
                [CELFLOW, "events", "replay", "--db", str(filled), "--to", target.http.url, "--token", TOKEN],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert sent.returncode == 0, sent.stderr
            assert "replayed 300 events" in sent.stderr
        with target.client() as c:
            assert c.get("/api/v1/events/count").json() == {"total": 300}
    finally:
        target.close()
    with (
        EventDatabase(tmp_path / "target" / "events.db", readonly=True) as copy,
        EventDatabase(filled, readonly=True) as source,
    ):
        assert comparable(copy.query(limit=None, order="asc").events) == comparable(
            source.query(limit=None, order="asc").events
        )
