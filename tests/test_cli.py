"""The command line through its real entry points: the `celflow` script and the seed's shims."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from celflow import EventDatabase
from celflow.cli import cli, main

ROOT = Path(__file__).resolve().parents[1]
CELFLOW = str(Path(sys.executable).with_name("celflow"))


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command and capture its output."""
    return subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    """A database with a few known events."""
    path = tmp_path / "data" / "events.db"
    now = time.time()
    with EventDatabase(path) as db:
        db.store_events_batch(
            [
                {
                    "event_type": "app_focus",
                    "source": "window",
                    "action": "focus",
                    "timestamp": now - 30,
                    "data": {"app": "Google Chrome", "title": "Inbox"},
                },
                {
                    "event_type": "file_op",
                    "source": "filesystem",
                    "action": "created",
                    "timestamp": now - 60,
                    "data": {"path": "/home/u/report.txt"},
                },
                {
                    "event_type": "file_op",
                    "source": "filesystem",
                    "action": "deleted",
                    "timestamp": now - 5 * 3600,
                    "data": {"path": "/home/u/old.txt"},
                },
            ]
        )
    return path


def test_stats_json(filled: Path) -> None:
    """`celflow events stats --json` prints the database statistics."""
    result = run_cli(CELFLOW, "events", "stats", "--db", str(filled), "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["total_events"] == 3 and stats["events_by_type"] == {"file_op": 2, "app_focus": 1}


def test_stats_table(filled: Path) -> None:
    """The table form shows the counts."""
    result = run_cli(CELFLOW, "events", "stats", "--db", str(filled))
    assert result.returncode == 0 and "events by type" in result.stdout and "file_op" in result.stdout


def test_list_hours_limit(filled: Path) -> None:
    """`list --hours 2 --limit 50` shows the recent events, newest first."""
    result = run_cli(CELFLOW, "events", "list", "--hours", "2", "--limit", "50", "--db", str(filled), "--json")
    assert result.returncode == 0, result.stderr
    events = json.loads(result.stdout)
    assert [e["event_type"] for e in events] == ["app_focus", "file_op"]
    table = run_cli(CELFLOW, "events", "list", "--hours", "2", "--db", str(filled))
    assert "report.txt" in table.stdout and "old.txt" not in table.stdout


def test_search(filled: Path) -> None:
    """`search "chrome" --limit 10` finds the event mentioning Chrome."""
    result = run_cli(CELFLOW, "events", "search", "chrome", "--limit", "10", "--db", str(filled), "--json")
    assert result.returncode == 0, result.stderr
    assert [e["data"]["app"] for e in json.loads(result.stdout)] == ["Google Chrome"]


def test_export(filled: Path, tmp_path: Path) -> None:
    """`export FILE --hours 24` writes a private JSON array and refuses to overwrite without --force."""
    out = tmp_path / "events_backup.json"
    result = run_cli(CELFLOW, "events", "export", str(out), "--hours", "24", "--db", str(filled))
    assert result.returncode == 0, result.stderr
    exported = json.loads(out.read_text())
    assert len(exported) == 3 and exported[0]["timestamp"] < exported[-1]["timestamp"]
    assert out.stat().st_mode & 0o777 == 0o600
    again = run_cli(CELFLOW, "events", "export", str(out), "--db", str(filled))
    assert again.returncode == 1 and "--force" in again.stderr
    forced = run_cli(CELFLOW, "events", "export", str(out), "--hours", "1", "--force", "--db", str(filled))
    assert forced.returncode == 0 and len(json.loads(out.read_text())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "events_backup.json"]  # no temp files left


def test_seed_tool_shims(filled: Path) -> None:
    """`python tools/celflow_events.py ...` and `python tools/celflow_dashboard.py` work as in the seed."""
    result = run_cli(sys.executable, str(ROOT / "tools" / "celflow_events.py"), "stats", "--db", str(filled), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total_events"] == 3
    dash = run_cli(sys.executable, str(ROOT / "tools" / "celflow_dashboard.py"), "--help")
    assert dash.returncode == 0 and "--db" in dash.stdout and "dashboard" in dash.stdout
    missing = run_cli(sys.executable, str(ROOT / "tools" / "celflow_dashboard.py"), "--db", str(filled) + ".missing")
    assert missing.returncode == 1 and "no CelFlow database" in missing.stderr


def test_celflow_py_shim_help() -> None:
    """`python celflow.py --help` is `celflow run --help`, even though it sits beside the package name."""
    result = run_cli(sys.executable, str(ROOT / "celflow.py"), "--help", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "Capture events from this machine" in result.stdout


def test_shim_does_not_shadow_the_package() -> None:
    """Importing `celflow` with the project folder first on sys.path still gives the package."""
    code = "import celflow, sys; print(celflow.EventDatabase.__module__)"
    result = run_cli(sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); {code}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "celflow._database"


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    """A missing database exits 1 with a message naming the path, and creates nothing."""
    missing = tmp_path / "none" / "events.db"
    result = run_cli(CELFLOW, "events", "list", "--db", str(missing))
    assert result.returncode == 1
    assert "no CelFlow database" in result.stderr and str(missing) in result.stderr
    assert not missing.parent.exists()


def test_bad_flags_exit_2(filled: Path) -> None:
    """Bad flags are usage errors (exit 2) with click's message."""
    result = run_cli(CELFLOW, "events", "list", "--limit", "-3", "--db", str(filled))
    assert result.returncode == 2 and "--limit" in result.stderr
    assert run_cli(CELFLOW, "events", "frobnicate").returncode == 2


def test_not_a_database(tmp_path: Path) -> None:
    """A file that is not a database is refused with exit 1."""
    bogus = tmp_path / "bogus.db"
    bogus.write_text("hello")
    result = run_cli(CELFLOW, "events", "stats", "--db", str(bogus))
    assert result.returncode == 1 and "not an SQLite database" in result.stderr


def test_config_show(tmp_path: Path) -> None:
    """`celflow config show --json` reports values and their origins."""
    toml = tmp_path / "c.toml"
    toml.write_text("[persistence]\nbatch_size = 250\n")
    result = run_cli(CELFLOW, "--config", str(toml), "config", "show", "--json", env={"CELFLOW_RETENTION_DAYS": "7"})
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["persistence.batch_size"] == {"value": 250, "origin": f"file {toml}"}
    assert shown["persistence.retention_days"] == {"value": 7.0, "origin": "env CELFLOW_RETENTION_DAYS"}
    assert shown["persistence.batch_timeout"]["origin"] == "default"
    table = run_cli(CELFLOW, "--config", str(toml), "config", "show")
    assert "batch_size" in table.stdout and "250" in table.stdout


def test_config_error_exit(tmp_path: Path) -> None:
    """A bad config value is reported with exit 1."""
    result = run_cli(CELFLOW, "config", "show", env={"CELFLOW_BATCH_SIZE": "0"})
    assert result.returncode == 1 and "CELFLOW_BATCH_SIZE" in result.stderr


def _commands(group: object, prefix: str = "") -> list[str]:
    import click

    assert isinstance(group, click.Group)
    names = []
    for name, command in group.commands.items():
        names.append(f"{prefix}{name}")
        if isinstance(command, click.Group):
            names.extend(_commands(command, f"{prefix}{name} "))
    return names


def test_every_command_has_help_and_is_in_the_cli_docs() -> None:
    """Every command answers --help with text, and docs/cli.md mentions it."""
    cli_docs = (ROOT / "docs" / "cli.md").read_text()
    for name in _commands(cli):
        assert main([*name.split(), "--help"]) == 0, name
        assert f"celflow {name}" in cli_docs, f"docs/cli.md does not mention `celflow {name}`"


def test_readme_is_short_and_its_docs_links_resolve() -> None:
    """README.md has at most 200 lines, and every docs/*.md page it links to exists."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    links = re.findall(r"\]\((docs/[^)#\s]+\.md)(?:#[^)\s]*)?\)", readme)
    assert links, "README links no page of docs/"
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, f"README links pages that do not exist: {missing}"


def test_seed_python_snippet_runs_as_written(tmp_path: Path) -> None:
    """The seed's troubleshooting snippet (`from app.system.event_persistence import EventDatabase`) works."""
    snippet = (
        "from app.system.event_persistence import EventDatabase\n"
        "db = EventDatabase('data/events.db')\n"
        "db.cleanup_old_events(7)  # Keep only 7 days\n"
    )
    with EventDatabase(tmp_path / "data" / "events.db") as db:
        db.store_events_batch(
            [{"event_type": "t", "source": "s", "timestamp": 1000.0}, {"event_type": "t", "source": "s"}]
        )
    result = run_cli(sys.executable, "-c", snippet, cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    with EventDatabase(tmp_path / "data" / "events.db") as db:
        assert db.count_events() == 1
