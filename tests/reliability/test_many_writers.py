"""12. Many writers, one file (issue 14's acceptance test): two processes store 50,000 events each
(5,000 in CI) into one SQLite file, one through a manager and one through EventDatabase, while a
third runs the seed's retention recipe and `celflow db vacuum` over and over. Every recent event is
stored exactly once, retention removes every old one exactly once, the per-minute counters equal a
full count, and no caller ever sees an error ("database is locked" or any other)."""

from __future__ import annotations

import collections
import contextlib
import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from _reliability import FULL, HELPERS, Record, load_helper, trials
from celflow import EventDatabase, decode_data
from test_durability import Procs

many = load_helper("many_writers")

COUNT = trials(5_000, 50_000)  # events per writer
BATCH = 500
# In CI the writers pause between batches, so their writes overlap several retention runs and
# vacuums (a `celflow db vacuum` process takes a few tenths of a second to start).
PAUSE = 0.02 if FULL else 0.2
RETENTION_DAYS = 30  # the old events are many.OLD_DAYS (40) days old
MIN_VACUUMS = 3


class Writers(Procs):
    """Processes of tests/helpers/many_writers.py."""

    script = HELPERS / "many_writers.py"


def read_line(proc: subprocess.Popen[str]) -> Any:
    """The next JSON line a helper printed (None if it exited without one)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return json.loads(line) if line.strip() else None


def send(proc: subprocess.Popen[str], line: str | None) -> None:
    """Write a line to the helper's stdin, or close it (None); a helper that died is reported later."""
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        if line is None:
            proc.stdin.close()
        else:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()


def full_counts(db: Path) -> tuple[str, collections.Counter[tuple[int, int]], int, dict[str, int], dict[str, int]]:
    """With plain sqlite3: integrity_check, how often each marker is stored, count(*), counts per type, per source."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        integrity = "\n".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
        markers: collections.Counter[tuple[int, int]] = collections.Counter()
        for text, blob in conn.execute("SELECT data_json, data_compressed FROM events"):
            data = decode_data(text, blob)
            markers[(data["w"], data["n"])] += 1
        (total,) = conn.execute("SELECT count(*) FROM events").fetchone()
        by_type = dict(conn.execute("SELECT event_type, count(*) FROM events GROUP BY event_type").fetchall())
        by_source = dict(conn.execute("SELECT source, count(*) FROM events GROUP BY source").fetchall())
    finally:
        conn.close()
    return integrity, markers, total, by_type, by_source


@pytest.mark.slow
@pytest.mark.timeout(trials(300, 3600))
def test_two_writers_with_retention_and_vacuum_share_one_file(tmp_path: Path, record: Record) -> None:
    """Two writer processes, retention and vacuum on one file: every event once, counters exact, no caller error."""
    db = tmp_path / "events.db"
    stop_file = tmp_path / "stop"
    EventDatabase(db).close()  # an existing database, as after a first run
    procs = Writers(tmp_path)
    try:
        writers = {
            kind: procs.spawn(kind, db, k, COUNT, BATCH, PAUSE, interactive=True)
            for k, kind in enumerate(("manager", "database"))
        }
        maintainer = procs.spawn("maintain", db, stop_file, RETENTION_DAYS, MIN_VACUUMS, interactive=True)
        for proc in (*writers.values(), maintainer):
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", procs.stderr(proc)
        for proc in writers.values():
            send(proc, "go")
        reports = {kind: read_line(proc) for kind, proc in writers.items()}
        stop_file.touch()
        for proc in writers.values():
            send(proc, None)  # both writers were open until here; now they close
        maintenance = read_line(maintainer) or {"cleanups": 0, "vacuums": 0, "removed": 0, "errors": ["no report"]}
        for proc in (*writers.values(), maintainer):
            proc.wait(timeout=300)
    finally:
        procs.cleanup()

    failures: list[str] = []
    for name, proc in (*writers.items(), ("maintainer", maintainer)):
        err = procs.stderr(proc)
        if proc.returncode != 0 or "Traceback" in err or "database is locked" in err:
            failures.append(f"{name} exited {proc.returncode}: {err.strip()[-2000:]}")
    for kind, report in reports.items():
        if report is None or report.get("stored") != COUNT or report.get("duplicates", 0):
            failures.append(f"the {kind} writer reported {report} for {COUNT:,} events")
    failures += maintenance["errors"]
    with EventDatabase(db) as database:  # what retention left: it ran before the writers' last batches
        final_removed = database.cleanup_old_events(RETENTION_DAYS)
    integrity, markers, total, by_type, by_source = full_counts(db)
    with EventDatabase(db, readonly=True) as reader:  # answered from the per-minute counters
        counters = (reader.count_events(), reader.count_by("event_type"), reader.count_by("source"))

    recent = {(k, n) for k in (0, 1) for n in range(COUNT) if not many.is_old(n)}
    old = 2 * COUNT - len(recent)
    missing = recent - markers.keys()
    unexpected = markers.keys() - recent  # old events retention left, or anything foreign
    twice = [m for m, c in markers.items() if c > 1]
    removed = maintenance["removed"] + final_removed
    if missing:
        failures.append(f"{len(missing):,} of {len(recent):,} recent events missing, e.g. {sorted(missing)[:5]}")
    if unexpected:
        failures.append(f"{len(unexpected):,} events that should be gone are stored, e.g. {sorted(unexpected)[:5]}")
    if twice:
        failures.append(f"{len(twice):,} events stored more than once, e.g. {sorted(twice)[:5]}")
    if removed != old:
        failures.append(f"retention removed {removed:,} events; {old:,} were old")
    if not maintenance["removed"]:
        failures.append("retention removed nothing while the writers wrote")
    if maintenance["vacuums"] < MIN_VACUUMS:
        failures.append(f"only {maintenance['vacuums']} vacuums ran")
    if counters != (total, by_type, by_source):
        failures.append(f"the counters say {counters}; a full count says {(total, by_type, by_source)}")
    if integrity != "ok":
        failures.append(f"integrity_check: {integrity}")
    record(
        trials=2 * COUNT,
        failures=len(failures),
        worst_loss=(
            f"{len(missing)} of {len(recent):,} lost, {len(twice)} twice; retention removed "
            f"{maintenance['removed']:,} in {maintenance['cleanups']} runs beside {maintenance['vacuums']} vacuums"
        ),
    )
    assert not failures, "\n".join(failures)
