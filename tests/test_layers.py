"""Issue 14's bugs, one test each: a database location is parsed once (``sqlite:///`` is the file it
names, an unknown scheme is refused creating nothing), several processes write one file at once
(the service, a script, `events import`, `db vacuum`), a stopped manager still reads the file,
`import celflow` or `celflow events --help` load no server, bus, PostgreSQL or capture library,
and the service's status paths answer while the database is busy.

Real `celflow` processes on real files in ``tmp_path``; nothing is mocked.
"""

from __future__ import annotations

import asyncio
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from psycopg import sql

import celflow._manager
from celflow import CelflowError, EventDatabase, EventPersistenceManager, create_event_persistence, decode_data
from celflow.client import Client
from conftest import make_event
from live_service import Service
from pg_server import pg_url, server_url
from test_care import build, damage_pages, sha
from test_durability import Procs

__all__ = ["pg_url"]  # the fixture, re-exported for pytest

CELFLOW = str(Path(sys.executable).parent / "celflow")
HELPERS = Path(__file__).parent / "helpers"
UNKNOWN = "mysql://x"
#: What `import celflow` must not load: servers, the bus, PostgreSQL, capture, HTTP, Parquet.
NOT_FOR_IMPORT = (
    "httpx",
    "nats",
    "psutil",
    "psycopg",
    "psycopg_pool",
    "pyarrow",
    "starlette",
    "textual",
    "uvicorn",
    "watchdog",
    "websockets",
)
#: What `celflow events --help` must not load.
NOT_FOR_HELP = ("nats", "psutil", "psycopg", "psycopg_pool", "starlette", "textual", "uvicorn", "watchdog")


def child_env(**settings: str) -> dict[str, str]:
    """The environment of children, without CelFlow settings that could redirect them, plus ``settings``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("CELFLOW_")}, **settings}


def created(folder: Path) -> list[str]:
    """Everything under ``folder``, relative to it, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def stored_data(db: Path) -> list[Any]:
    """The data of every stored event, read with plain sqlite3 (read-only)."""
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return [decode_data(text, blob) for text, blob in conn.execute("SELECT data_json, data_compressed FROM events")]
    finally:
        conn.close()


class Services:
    """`celflow run` processes started in a given folder; none outlives the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[tuple[subprocess.Popen[str], Path, Path]] = []

    def start(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """``celflow ARGS`` in ``cwd`` (its stderr goes to a file outside ``cwd``)."""
        stderr_path = self.tmp_path / f"celflow-{len(self.started)}.stderr"
        with open(stderr_path, "w") as err:
            proc = subprocess.Popen(
                [CELFLOW, *args], cwd=cwd, env=env or child_env(), text=True, stdout=subprocess.DEVNULL, stderr=err
            )
        self.started.append((proc, cwd, stderr_path))
        return proc

    def run(self, cwd: Path, location: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """`celflow run --db LOCATION` capturing nothing, on a free port."""
        return self.start(cwd, "run", "--db", location, "--no-fs", "--no-processes", "--port", "0", env=env)

    def stderr(self, proc: subprocess.Popen[str]) -> str:
        return next(path for p, _, path in self.started if p is proc).read_text()

    def wait_until_up(self, proc: subprocess.Popen[str], timeout: float = 60) -> Path | None:
        """The service.json the service wrote (anywhere under its cwd), or None if it exited first."""
        cwd = next(folder for p, folder, _ in self.started if p is proc)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            found = next(cwd.rglob("service.json"), None)
            if found is not None:
                return found
            assert time.monotonic() < deadline, f"celflow run neither served nor exited:\n{self.stderr(proc)}"
            time.sleep(0.05)
        return None

    def stop(self, proc: subprocess.Popen[str]) -> int:
        """SIGTERM, then the exit status."""
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=60)

    def cleanup(self) -> None:
        for proc, _, _ in self.started:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """`celflow` processes of this test; none outlives it."""
    started = Services(tmp_path)
    yield started
    started.cleanup()


class Writers(Procs):
    """Writer processes of tests/helpers/many_writers.py."""

    script = HELPERS / "many_writers.py"


@pytest.fixture
def writers(tmp_path: Path) -> Iterator[Writers]:
    """Writer processes of this test; none outlives it."""
    started = Writers(tmp_path)
    yield started
    started.cleanup()


# -- 1. a sqlite:/// location is the file it names ----------------------------------------------


@pytest.mark.parametrize("form", ["relative", "absolute"])
def test_run_with_a_sqlite_url_keeps_everything_in_the_data_folder(
    tmp_path: Path, services: Services, form: str
) -> None:
    """`celflow run --db sqlite:///...` stores in that file, logs beside it, and creates nothing named `sqlite:`."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    data = cwd / "data"
    location = "sqlite:///data/events.db" if form == "relative" else f"sqlite:///{data / 'events.db'}"
    service = services.run(cwd, location)
    found = services.wait_until_up(service)
    assert found is not None, f"celflow run exited {service.returncode}:\n{services.stderr(service)}"
    with Client(data_dir=str(found.parent)) as client:
        client.send_batch([make_event(source="url", data={"n": n}) for n in range(10)])
        client.flush()
    assert services.stop(service) == 0, services.stderr(service)
    misplaced = [name for name in created(cwd) if "sqlite:" in name]
    assert not misplaced, f"celflow run --db {location} created {misplaced}"
    assert found == data / "service.json"
    assert (data / "celflow.log").is_file(), created(cwd)
    with EventDatabase(data / "events.db", readonly=True) as reader:
        assert reader.count_events(source="url") == 10


def test_run_with_a_sqlite_url_refuses_a_damaged_file(tmp_path: Path, services: Services) -> None:
    """A damaged file given as `sqlite:///path` is refused at start naming `celflow db recover`, as a plain path is."""
    db = tmp_path / "data" / "events.db"
    db.parent.mkdir()
    build(db, 5_000)
    damage_pages(db, 0.9, pages=8)  # the newest events and the index's right edge
    before = sha(db)
    for location in (str(db), f"sqlite:///{db}"):  # the plain path first: the refusal to match
        service = services.run(tmp_path, location)
        up = services.wait_until_up(service)
        if up is not None:
            services.stop(service)
        assert up is None, f"celflow run --db {location} started on a damaged file"
        assert service.returncode != 0
        assert "celflow db recover" in services.stderr(service), services.stderr(service)
        assert sha(db) == before, f"celflow run --db {location} changed the damaged file"


def test_run_with_a_file_stores_there_when_the_config_names_another_database(
    tmp_path: Path, services: Services
) -> None:
    """`celflow run --db FILE` stores in FILE although the configuration's database_url names another database."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "celflow.toml").write_text('[persistence]\ndatabase_url = "sqlite:///configured/events.db"\n')
    service = services.run(cwd, "given/events.db")
    found = services.wait_until_up(service)
    assert found is not None, f"celflow run exited {service.returncode}:\n{services.stderr(service)}"
    with Client(data_dir=str(found.parent)) as client:
        client.send_batch([make_event(source="given", data={"n": n}) for n in range(5)])
        client.flush()
    assert services.stop(service) == 0, services.stderr(service)
    assert found == cwd / "given" / "service.json"
    assert not (cwd / "configured").exists(), created(cwd)
    with EventDatabase(cwd / "given" / "events.db", readonly=True) as reader:
        assert reader.count_events(source="given") == 5


# -- 2. an unknown scheme is refused, creating nothing --------------------------------------------


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("run", "--no-fs", "--no-processes", "--port", "0"), {"CELFLOW_DATABASE_URL": UNKNOWN}),
        (("events", "stats", "--db", UNKNOWN), {}),
        (("db", "check", "--db", UNKNOWN), {}),
    ],
    ids=["run", "events-stats", "db-check"],
)
def test_an_unknown_database_scheme_is_refused_in_one_line_creating_nothing(
    tmp_path: Path, services: Services, args: tuple[str, ...], env: dict[str, str]
) -> None:
    """`mysql://x` as the database: exit 1 (or 2) at once, one line naming the accepted forms, nothing created."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = services.start(cwd, *args, env=child_env(**env))
    deadline = time.monotonic() + 60
    while proc.poll() is None and not created(cwd) and time.monotonic() < deadline:
        time.sleep(0.05)
    running = proc.poll() is None
    if running:
        services.stop(proc)
    assert not created(cwd), f"celflow {' '.join(args)} created {created(cwd)}"
    assert not running, f"celflow {' '.join(args)} did not exit"
    assert proc.returncode in (1, 2), services.stderr(proc)
    lines = services.stderr(proc).strip().splitlines()
    assert len(lines) == 1, lines
    assert "mysql" in lines[0] and "sqlite:///" in lines[0] and "postgresql://" in lines[0], lines[0]


def test_event_database_refuses_an_unknown_scheme_creating_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`EventDatabase("mysql://x")` raises a CelflowError naming the accepted forms and creates nothing."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CelflowError) as refused:
        EventDatabase(UNKNOWN).close()
    assert "sqlite:///" in str(refused.value) and "postgresql://" in str(refused.value), refused.value
    assert not created(tmp_path)


@pytest.mark.parametrize("location", ["postgres:/x", "mysql:/x", "file:x.db", "sqlite://x.db", "sqlite:///"])
def test_a_malformed_url_is_refused_creating_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, location: str
) -> None:
    """A URL that is not one of the accepted forms (one slash, an unknown scheme) is refused, not taken as a path."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CelflowError, match=r"sqlite:///|postgres"):
        EventDatabase(location).close()
    assert not created(tmp_path)


@pytest.mark.parametrize("name", ["a?b.db", "x#y.db", "p%41.db", "events db.db"])
def test_a_file_name_with_url_characters_is_that_file(tmp_path: Path, name: str) -> None:
    """'?', '#', '%' and spaces in a file's name are part of the name: the events go into that very file."""
    path = tmp_path / name
    with EventDatabase(path) as database:
        database.store_events_batch([make_event() for _ in range(3)])
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm", ".lock"))) == [name]
    assert len(stored_data(path)) == 3


# -- 3. the seed's recipes while `celflow run` writes ------------------------------------------


def marked(tag: str, n: int, **fields: Any) -> dict[str, Any]:
    """An event whose data holds the marker ``(tag, n)``."""
    return {"event_type": "recipe", "source": tag, "data": {"tag": tag, "n": n}, **fields}


@pytest.mark.timeout(180)
def test_the_seed_recipes_work_while_celflow_run_writes(tmp_path: Path, services: Services) -> None:
    """While `celflow run` writes, a script's cleanup and store, `events import`, `db vacuum` work; nothing twice."""
    data = tmp_path / "data"
    db = data / "events.db"
    service = services.run(tmp_path, str(db))
    assert services.wait_until_up(service) == data / "service.json", services.stderr(service)
    now = time.time()
    source = tmp_path / "import.jsonl"
    source.write_bytes(b"".join(orjson.dumps(marked("import", n, timestamp=now - n)) + b"\n" for n in range(100)))
    with Client(data_dir=str(data)) as client:
        client.send_batch([marked("http", n) for n in range(50)])
        client.send_batch([marked("old", n, timestamp=now - 10 * 86400) for n in range(5)])
        client.flush()

        with EventDatabase(db) as database:  # the seed's `EventDatabase('data/events.db').cleanup_old_events(7)`
            assert database.cleanup_old_events(7) == 5
        with EventDatabase(db) as database:
            assert len(set(database.store_events_batch([marked("script", n) for n in range(20)]))) == 20
        for args in (("events", "import", str(source)), ("db", "vacuum")):
            done = subprocess.run(
                [CELFLOW, *args, "--db", str(db)], capture_output=True, text=True, timeout=120, env=child_env()
            )
            assert done.returncode == 0, f"celflow {' '.join(args)}: {done.stderr}"

        client.send_batch([marked("http", n) for n in range(50, 100)])  # the service still takes events
        client.flush()
    assert services.stop(service) == 0, services.stderr(service)
    counts = collections.Counter((d["tag"], d["n"]) for d in stored_data(db))
    expected = {("http", n) for n in range(100)} | {("script", n) for n in range(20)}
    expected |= {("import", n) for n in range(100)}
    assert set(counts) == expected, (expected - set(counts), set(counts) - expected)
    assert all(c == 1 for c in counts.values()), [m for m, c in counts.items() if c > 1]


# -- 4. a stopped manager reads the file --------------------------------------------------------


async def stored_and_stopped(db: Path, events: int) -> tuple[EventPersistenceManager, list[int]]:
    """A manager that stored ``events`` events and was stopped, and their ids."""
    manager = create_event_persistence({"database_path": str(db), "stats_interval": 0})
    await manager.start()
    ids = await manager.store_events([make_event(data={"n": n, "pad": "x" * 200}) for n in range(events)])
    await manager.stop()
    return manager, ids


def test_a_stopped_manager_still_returns_the_stored_events(db_path: Path) -> None:
    """After `await manager.stop()`, `get_events(limit=10)` returns the ten newest stored events."""
    manager, ids = asyncio.run(stored_and_stopped(db_path, 200))
    assert [e["id"] for e in manager.get_events(limit=10)] == sorted(ids, reverse=True)[:10]


def test_a_stopped_manager_reports_the_true_size_and_last_id(db_path: Path) -> None:
    """After `await manager.stop()`, `get_stats()` gives the file's real size and the highest id stored."""
    manager, ids = asyncio.run(stored_and_stopped(db_path, 2_000))
    stats = manager.get_stats()["database_stats"]
    wal = Path(f"{db_path}-wal")
    on_disk = (db_path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)) / 1_048_576
    assert on_disk > 0.1
    assert stats["database_size_mb"] == pytest.approx(on_disk, rel=0.1), (stats, on_disk)
    assert stats["last_event_id"] == max(ids), stats
    assert stats["total_events"] == len(ids), stats


# -- 5. what importing loads ---------------------------------------------------------------------


def loaded_by(tmp_path: Path, code: str, names: tuple[str, ...]) -> list[str]:
    """Which of the top-level modules ``names`` a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(n for n in {names!r} if n in sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=child_env()
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


#: In another process: hold the file alone (as `celflow db recover` does), move it aside, put a new
#: CelFlow database in its place, let go.
_RECOVERY = """
import os, sys, time
from celflow import EventDatabase
from celflow._sqlite._lock import DatabaseLock
path = sys.argv[1]
with DatabaseLock(path).alone() as alone:
    assert alone
    print("alone", flush=True)
    time.sleep(float(sys.argv[2]))
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.rename(path + suffix, path + ".aside" + suffix)
    EventDatabase(path + ".new").close()
    os.rename(path + ".new", path)
"""


def recovery(path: Path, seconds: float) -> subprocess.Popen[str]:
    """A process that holds ``path`` alone for ``seconds`` and then replaces it, once it said so."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _RECOVERY, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "alone"
    return proc


def test_a_writer_opening_during_a_recovery_writes_into_the_new_file(tmp_path: Path) -> None:
    """A writer that opens the file while a recovery holds it alone waits, then stores into the file the
    recovery left in place, not into the one it moved aside."""
    path = tmp_path / "events.db"
    with EventDatabase(path) as database:
        database.store_events_batch([make_event(source="before") for _ in range(5)])
    recovering = recovery(path, 1.5)
    try:
        with EventDatabase(path) as database:
            database.store_events_batch([make_event(source="during") for _ in range(10)])
        assert recovering.wait(timeout=60) == 0
    finally:
        if recovering.poll() is None:
            recovering.kill()
    with EventDatabase(path, readonly=True) as live:
        assert live.count_by("source") == {"during": 10}
    with EventDatabase(tmp_path / "events.db.aside", readonly=True) as aside:
        assert aside.count_by("source") == {"before": 5}


def test_waiting_for_one_file_held_alone_blocks_no_other_file(tmp_path: Path) -> None:
    """While one thread waits for a file another process holds alone, other threads open and close other files."""
    held, other = tmp_path / "held.db", tmp_path / "other.db"
    EventDatabase(held).close()
    recovering = recovery(held, 3.0)
    try:
        waiting = threading.Thread(target=lambda: EventDatabase(held).close())
        waiting.start()
        time.sleep(0.2)
        started = time.monotonic()
        with EventDatabase(other) as database:
            database.store_event(make_event())
        elapsed = time.monotonic() - started
        assert waiting.is_alive(), "the open of the held file did not wait for the recovery"
        waiting.join(timeout=60)
    finally:
        recovering.wait(timeout=60)
    assert elapsed < 2.0, f"opening and closing another file took {elapsed:.1f} s while one waited"


def full_count(path: Path) -> int:
    """The events in the file, counted row by row with plain sqlite3."""
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        conn.close()


def test_stats_equal_a_full_count_under_ingest_and_retention(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the figures read every 10 ms while batches commit and retention deletes in chunks, the total in
    stats() is never below zero and equals a full count of the file at each flush."""
    monkeypatch.setattr(celflow._manager, "FIGURES_INTERVAL", 0.01)
    monkeypatch.setattr(celflow._manager, "_RETENTION_CHUNK", 500)
    old = time.time() - 40 * 86400
    with EventDatabase(db_path) as database:
        database.store_events_batch([make_event(timestamp=old + i, source="old") for i in range(6_000)])

    async def scenario() -> list[tuple[int, int]]:
        config = {"database_path": str(db_path), "batch_size": 50, "batch_timeout": 0.01, "retention_days": 30}
        seen: list[tuple[int, int]] = []
        async with EventPersistenceManager(config) as manager:
            for _ in range(60):
                manager.queue_events_batch([make_event(source="new") for _ in range(200)])
                await asyncio.sleep(0.005)
                total = manager.stats().database.total_events
                assert total >= 0, total
                await manager.flush()
                if manager.stats().removed_by_retention == 6_000:
                    seen.append((manager.stats().database.total_events, full_count(db_path)))
        return seen

    seen = asyncio.run(scenario())
    assert seen, "retention never finished"
    wrong = [(said, counted) for said, counted in seen if said != counted]
    assert not wrong, f"stats said / the file held: {wrong[:10]}"


def test_import_celflow_loads_no_server_bus_postgres_or_capture_library(tmp_path: Path) -> None:
    """`import celflow` loads none of psycopg, nats, uvicorn, starlette, watchdog, psutil, textual, httpx, ..."""
    assert loaded_by(tmp_path, "import celflow", NOT_FOR_IMPORT) == []


def test_events_help_loads_no_server_bus_postgres_or_capture_library(tmp_path: Path) -> None:
    """`celflow events --help` loads none of psycopg, nats, uvicorn, starlette, watchdog, psutil, textual."""
    code = "from celflow.cli import main\nassert main(['events', '--help']) == 0"
    assert loaded_by(tmp_path, code, NOT_FOR_HELP) == []


# -- 6. two writer processes, one file -------------------------------------------------------------


@pytest.mark.timeout(120)
def test_two_processes_store_into_one_file_at_once(tmp_path: Path, writers: Writers) -> None:
    """Two processes each storing 2,000 events in batches of 100 at once: no error, 4,000 stored, counters exact."""
    db = tmp_path / "events.db"
    EventDatabase(db).close()  # an existing database, as after a first run
    procs = [writers.spawn("database", db, k, 2_000, 100, 0, interactive=True) for k in (0, 1)]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", writers.stderr(proc)
    for proc in procs:  # both are open; now both write
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write("go\n")
            proc.stdin.flush()
    reports = [proc.stdout.readline() if proc.stdout else "" for proc in procs]
    for proc in procs:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    for proc, report in zip(procs, reports, strict=True):
        assert proc.wait(timeout=60) == 0, writers.stderr(proc)
        assert "Traceback" not in writers.stderr(proc) and "locked" not in writers.stderr(proc), writers.stderr(proc)
        assert json.loads(report) == {"stored": 2_000}
    counts = collections.Counter((d["w"], d["n"]) for d in stored_data(db))
    assert set(counts) == {(k, n) for k in (0, 1) for n in range(2_000)}
    assert all(c == 1 for c in counts.values())
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        (full_count,) = conn.execute("SELECT count(*) FROM events").fetchone()
    finally:
        conn.close()
    with EventDatabase(db, readonly=True) as reader:  # answered from the per-minute counters
        assert reader.count_events() == full_count == 4_000


# -- 7. status paths answer while the database is busy -------------------------------------------


@pytest.mark.timeout(120)
def test_status_paths_answer_while_postgresql_tables_are_locked(tmp_path: Path, pg_url: str) -> None:
    """With every CelFlow table locked (as VACUUM FULL or ALTER TABLE do), /health, /stats and /metrics answer."""
    service = Service(tmp_path / "events.db", manager={"database_url": pg_url})
    answers: dict[str, int | str] = {}
    try:
        with service.client() as client:
            assert client.post("/api/v1/events?wait=true", json=[make_event() for _ in range(10)]).status_code == 201
        schema = pg_url.rsplit("schema=", 1)[1]
        with psycopg.connect(server_url()) as holder:  # one transaction: the locks last until its rollback
            tables = [
                name for (name,) in holder.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
            ]
            locked = sql.SQL(", ").join(sql.Identifier(schema, name) for name in tables)
            holder.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(locked))
            with service.client() as client:
                for path in ("/health", "/api/v1/stats", "/metrics"):
                    try:
                        answers[path] = client.get(path, timeout=5).status_code
                    except httpx.TimeoutException:
                        answers[path] = "no answer within 5 s"
            holder.rollback()
    finally:
        service.close()
    assert {"events", "patterns", "event_counts"} <= set(tables), tables
    assert answers["/health"] in (200, 503), answers
    assert answers["/api/v1/stats"] == 200 and answers["/metrics"] == 200, answers


def test_the_import_contracts_hold() -> None:
    """lint-imports keeps every contract of pyproject.toml: no import cycle, the layers, no backend up high."""
    root = Path(__file__).resolve().parents[1]
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint), "--no-cache", str(root / "pyproject.toml")],
        cwd=root / "src",  # not the project folder: its celflow.py (the seed's shim) would shadow the package
        env={**os.environ, "PYTHONPATH": str(root / "tools")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
