"""`celflow db`, `celflow events` and `celflow dashboard` on PostgreSQL, through the real `celflow`
script against the real server: by `--db URL` and by `persistence.database_url` in a config file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from celflow import EventDatabase, open_store
from celflow._postgres import SCHEMA_VERSION
from pg_server import pg_url

__all__ = ["pg_url"]  # the fixture, re-exported for pytest

CELFLOW = str(Path(sys.executable).with_name("celflow"))
DAY = 86_400
DAY_START = (int(time.time()) // DAY - 2) * DAY  # a UTC midnight two days ago
#: 30 events one day, 20 the day before (two day partitions), newest first; and two patterns.
TIMES = [DAY_START + 7200 - 60 * i for i in range(30)] + [DAY_START - DAY + 7200 - 60 * i for i in range(20)]
#: Nothing listens on port 1: the connection is refused at once. The password must never be shown.
UNREACHABLE = "postgresql://postgres:hunter2@127.0.0.1:1/test"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `celflow ARGS` without the caller's CELFLOW_* settings; capture its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELFLOW_")}
    return subprocess.run(
        [CELFLOW, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env={**env, "COLUMNS": "200"}
    )


@pytest.fixture
def filled(pg_url: str) -> str:
    """A CelFlow schema holding TIMES' events and two patterns."""
    with EventDatabase(pg_url) as db:
        db.store_events_batch(
            [
                {
                    "event_type": "file_op" if i % 2 else "app_focus",
                    "source": "cli-test",
                    "timestamp": t,
                    "data": {"i": i},
                }
                for i, t in enumerate(TIMES)
            ]
        )
        db.store_pattern("routine", 0.8, {"n": 1})
        db.store_pattern("routine", 0.6, {"n": 2})
    return pg_url


def schema_of(url: str) -> str:
    return url.rsplit("schema=", 1)[1]


def schema_exists(url: str) -> bool:
    with psycopg.connect(url.split("?")[0]) as conn:
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema_of(url),)).fetchone()
    return row is not None


def config_file(tmp_path: Path, url: str) -> Path:
    """A config whose database_url is ``url``; database_path (the data folder's file) is never created."""
    path = tmp_path / "celflow.toml"
    path.write_text(f'[persistence]\ndatabase_url = "{url}"\ndatabase_path = "{tmp_path / "data" / "events.db"}"\n')
    return path


# -- celflow db check ---------------------------------------------------------------------------


def test_check_reports_a_healthy_schema(filled: str) -> None:
    """`db check --db URL` opens the schema read-only and shows its version, partitions and events."""
    result = run_cli("db", "check", "--db", filled)
    assert result.returncode == 0, result.stderr
    assert f"{filled}: ok (quick check" in result.stdout
    assert f"PostgreSQL, schema version {SCHEMA_VERSION}," in result.stdout
    assert "in 2 day partitions; 50 events, last id 50" in result.stdout


def test_check_json_full_counts_the_rows_against_the_counters(filled: str) -> None:
    """`--json --full` gives every figure, the rows counted one by one equal to the counters' total."""
    result = run_cli("db", "check", "--full", "--json", "--db", filled)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["status"] == "ok" and report["backend"] == "postgresql"
    assert report["mode"] == "full" and report["problems"] == []
    assert report["schema_version"] == SCHEMA_VERSION and report["partitions"] == 2
    assert report["total_events"] == report["rows_counted"] == 50 and report["last_event_id"] == 50
    assert report["oldest_event"] == pytest.approx(min(TIMES)) and report["newest_event"] == pytest.approx(max(TIMES))
    assert report["size_mb"] > 0


def test_full_check_finds_counters_that_disagree_with_the_rows(filled: str) -> None:
    """Counters changed behind CelFlow's back: `--full` exits 1 saying so, doctor says how to rebuild them."""
    with psycopg.connect(filled.split("?")[0], autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema_of(filled))))
        conn.execute("UPDATE event_counts SET n = n + 1 WHERE kind = 'event_type'")
    quick = run_cli("db", "check", "--db", filled)
    assert quick.returncode == 0, quick.stderr  # the quick check does not count rows
    full = run_cli("db", "check", "--full", "--json", "--db", filled)
    assert full.returncode == 1
    report = json.loads(full.stdout)
    assert report["status"] == "counters" and report["rows_counted"] == 50 and report["total_events"] > 50
    doctor = run_cli("db", "doctor", "--db", filled)
    assert "counters disagree" in doctor.stdout and "rebuild_counts()" in doctor.stdout, doctor.stdout
    store = open_store(filled)
    try:
        store.rebuild_counts()  # what the doctor says to run
    finally:
        store.close()
    assert run_cli("db", "check", "--full", "--db", filled).returncode == 0


def test_check_on_an_unreachable_server_is_one_readable_line() -> None:
    """No server: exit 1, one line on stderr naming the URL without its password, no traceback."""
    result = run_cli("db", "check", "--db", UNREACHABLE)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot connect to postgresql://postgres:***@127.0.0.1:1/test")
    assert "hunter2" not in result.stderr
    as_json = run_cli("db", "check", "--json", "--db", UNREACHABLE)
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["ok"] is False and report["status"] == "unreachable" and "hunter2" not in as_json.stdout


def test_check_and_vacuum_refuse_a_database_without_celflow_schema(pg_url: str) -> None:
    """A schema CelFlow never wrote is reported, and neither check nor vacuum creates it."""
    check = run_cli("db", "check", "--db", pg_url)
    assert check.returncode == 1 and "has no CelFlow schema" in check.stderr, check.stderr
    vacuum = run_cli("db", "vacuum", "--db", pg_url)
    assert vacuum.returncode == 1 and "has no CelFlow schema" in vacuum.stderr, vacuum.stderr
    assert "Traceback" not in check.stderr + vacuum.stderr
    assert not schema_exists(pg_url)


# -- doctor and vacuum --------------------------------------------------------------------------


def test_doctor_on_a_healthy_schema(filled: str) -> None:
    """`db doctor` says healthy and how to keep a copy: pg_dump of the schema, or migrate into SQLite."""
    result = run_cli("db", "doctor", "--db", filled)
    assert result.returncode == 0, result.stderr
    assert f"{filled}: healthy" in result.stdout and "Nothing to do" in result.stdout
    assert f"pg_dump -n {schema_of(filled)} -Fc" in result.stdout
    assert f"celflow migrate --from '{filled}' --to sqlite:///copy.db" in result.stdout


def test_doctor_on_an_unreachable_server_says_how_to_check_it() -> None:
    """No server: the doctor names pg_isready with the URL's host and port, and no copy to keep."""
    result = run_cli("db", "doctor", "--db", UNREACHABLE)
    assert "unreachable" in result.stdout and "pg_isready -h 127.0.0.1 -p 1" in result.stdout, result.stdout
    assert "Keep a copy" not in result.stdout and "hunter2" not in result.stdout


def test_vacuum_runs_while_the_events_stay(filled: str) -> None:
    """`db vacuum` VACUUM ANALYZEs the tables (after a delete leaves dead rows) and keeps every event."""
    with EventDatabase(filled) as db:
        assert db.store.delete_before(TIMES[10]) == 39  # the newest 11 stay; the older day is dropped
    result = run_cli("db", "vacuum", "--db", filled)
    assert result.returncode == 0, result.stderr
    assert "vacuumed:" in result.stdout and "MB ->" in result.stdout
    report = json.loads(run_cli("db", "check", "--full", "--json", "--db", filled).stdout)
    assert report["ok"] and report["total_events"] == report["rows_counted"] == 11


# -- backup and recover: refused, saying what to use ---------------------------------------------


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (("backup", "copy.db"), "pg_dump -n"),
        (("recover",), "recovers by itself from its WAL"),
    ],
)
def test_backup_and_recover_refuse_with_what_to_use(
    pg_url: str, tmp_path: Path, args: tuple[str, ...], hint: str
) -> None:
    """Exit 1, one line: what to use instead; the password masked; no file written, no schema made."""
    with_password = pg_url.replace("postgres@", "postgres:hunter2@")
    result = run_cli("db", *args, "--db", with_password, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: celflow db "), result.stderr
    assert hint in lines[0] and "postgres:***@" in lines[0] and "hunter2" not in result.stderr
    if args[0] == "backup":
        assert "celflow migrate --from" in lines[0] and "--to sqlite:///copy.db" in lines[0]
    assert list(tmp_path.iterdir()) == []
    assert not schema_exists(pg_url)


# -- events and dashboard -----------------------------------------------------------------------


def test_events_commands_take_a_url(filled: str) -> None:
    """`events stats/list --db URL` read the schema."""
    stats = run_cli("events", "stats", "--json", "--db", filled)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["total_events"] == 50
    listed = run_cli("events", "list", "--json", "--limit", "3", "--db", filled)
    assert [e["data"]["i"] for e in json.loads(listed.stdout)] == [0, 1, 2]


def test_dashboard_keeps_the_url_as_written(pg_url: str) -> None:
    """`dashboard --db URL` opens the URL itself (not a path made of it): no schema, a clear error naming it."""
    result = run_cli("dashboard", "--db", pg_url)
    assert result.returncode == 1
    assert f"error: {pg_url} has no CelFlow schema" in result.stderr and "Traceback" not in result.stderr


# -- persistence.database_url in a config file, no --db ----------------------------------------


def test_config_database_url_is_used_without_db(filled: str, tmp_path: Path) -> None:
    """With database_url in the config, db check/doctor/vacuum/backup and events read PostgreSQL;
    no SQLite file appears at database_path."""
    config = str(config_file(tmp_path, filled))
    check = run_cli("--config", config, "db", "check", "--json", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    report = json.loads(check.stdout)
    assert report["backend"] == "postgresql" and report["path"] == filled and report["total_events"] == 50
    doctor = run_cli("--config", config, "db", "doctor", cwd=tmp_path)
    assert f"{filled}: healthy" in doctor.stdout, doctor.stdout
    vacuum = run_cli("--config", config, "db", "vacuum", cwd=tmp_path)
    assert vacuum.returncode == 0 and "vacuumed:" in vacuum.stdout, vacuum.stderr
    backup = run_cli("--config", config, "db", "backup", "copy.db", cwd=tmp_path)
    assert backup.returncode == 1 and "pg_dump" in backup.stderr
    stats = run_cli("--config", config, "events", "stats", "--json", cwd=tmp_path)
    assert json.loads(stats.stdout)["total_events"] == 50
    assert not (tmp_path / "data").exists() and not (tmp_path / "copy.db").exists()


def test_config_database_url_dashboard(pg_url: str, tmp_path: Path) -> None:
    """`celflow --config F dashboard` opens the config's URL (here a schema with no CelFlow tables)."""
    result = run_cli("--config", str(config_file(tmp_path, pg_url)), "dashboard", cwd=tmp_path)
    assert result.returncode == 1 and f"{pg_url} has no CelFlow schema" in result.stderr, result.stderr
