"""``celflow run --publish``: a laptop's service sends what it receives to NATS JetStream, stores nothing.

Real processes throughout: a nats-server of the test's own (stopped and started again for the
outage), ``celflow run --publish`` driven by :class:`celflow.client.Client` over HTTP,
``celflow ingest-worker`` storing into SQLite or PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from celflow import EventDatabase
from celflow.client import Client
from nats_server import NatsServer, Proc, free_port, nats, own_nats, procs, stream_events, wait_until
from pg_server import pg_url

__all__ = ["own_nats", "pg_url", "procs"]  # the fixtures, re-exported for pytest

CLI = "import sys; from celflow.cli import main; sys.exit(main())"
SECRET = "sk-" + "Q" * 24


def _config(tmp_path: Path, bus: NatsServer, *, read_url: str = "", processes: bool = False, extra: str = "") -> Path:
    path = tmp_path / "celflow.toml"
    read = f'database_url = "{read_url}"\n' if read_url else ""
    path.write_text(
        f"""
[persistence]
database_path = "{tmp_path / "laptop" / "events.db"}"
{read}stats_interval = 0

[capture]
filesystem = false
processes = {str(processes).lower()}
process_interval = 0.2

[http]
port = {free_port()}

[bus]
url = "{bus.url}"
stream = "LAPTOP"
subject = "laptop.events"
publish = true
ack_timeout = 1.0

[privacy]
redact_patterns = ["sk-[A-Za-z0-9]{{20,}}"]
{extra}"""
    )
    return path


def _celflow(args: list[str], config: Path, log: Path, procs: list[Proc]) -> Proc:
    """A ``celflow`` subprocess reading ``config``, killed after the test."""
    proc = Proc([sys.executable, "-c", CLI, *args], log, config.parent, env={"CELFLOW_CONFIG": str(config)})
    procs.append(proc)
    return proc


def _service(tmp_path: Path, config: Path, procs: list[Proc]) -> tuple[Proc, Client]:
    run = _celflow(["run"], config, tmp_path / "run.log", procs)
    wait_until(
        lambda: (tmp_path / "laptop" / "service.json").exists() or run.proc.poll() is not None, 30, "the service"
    )
    assert run.proc.poll() is None, run.stderr()
    return run, Client(data_dir=str(tmp_path / "laptop"), timeout=10, retries=2)


def _events(first: int, count: int) -> list[dict[str, Any]]:
    return [
        {
            "event_type": "app_focus",
            "source": "laptop",
            "timestamp": 1_700_000_000.0 + i,
            "data": {"n": i, "note": f"token {SECRET}"},
        }
        for i in range(first, first + count)
    ]


def test_published_events_reach_the_store_once_redacted_and_survive_a_broker_outage(
    tmp_path: Path, own_nats: NatsServer, procs: list[Proc]
) -> None:
    config = _config(tmp_path, own_nats)
    run, client = _service(tmp_path, config, procs)
    with client:
        assert client.health()["status"] == "ok"
        for event in _events(0, 300):
            client.send(event)
        client.send_batch(_events(300, 100), wait=True)  # 201 once JetStream acknowledged them
        client.send_batch(_events(0, 50))  # a producer's retry: the same events again
        keyed = [{"event_type": "note", "source": "laptop", "idempotency_key": "k-1", "data": {"v": v}} for v in (1, 2)]
        client.send_batch(keyed)
        client.flush()
        wait_until(lambda: len(asyncio.run(stream_events(own_nats.url, "LAPTOP"))[0]) >= 452, 15, "452 on the bus")
        published, _ = asyncio.run(stream_events(own_nats.url, "LAPTOP"))
        assert len(published) == 452
        assert all(SECRET not in str(e) for e in published), "a secret left the machine"
        assert sum("[REDACTED]" in str(e["data"]) for e in published) == 450

        # Reads: this service stores nothing and has no shared store to read.
        answer = client._http.get("/api/v1/events")
        assert answer.status_code == 503
        assert "publishes its events" in answer.json()["error"]["message"]
        assert not (tmp_path / "laptop" / "events.db").exists()

        # The broker goes away: the service keeps accepting (bounded, in memory), /health says so.
        own_nats.stop()
        wait_until(lambda: client._http.get("/health").status_code == 503, 15, "/health degraded")
        client.send_batch(_events(1000, 200))
        assert client.stats()["queue_size"] == 200
        own_nats.start()  # same port, same JetStream store
        wait_until(lambda: client.stats()["queue_size"] == 0, 30, "the buffer resent")
        assert client.health()["status"] == "ok"
    assert run.stop() == 0, run.stderr()
    assert "stopped cleanly" in run.stderr()

    worker = _celflow(
        ["ingest-worker", "--db", str(tmp_path / "store.db"), "--durable", "store", "--json"],
        config,
        tmp_path / "worker.log",
        procs,
    )
    db_path = tmp_path / "store.db"
    # the file is being created until the worker consumes: a reader before then may see it half-made
    wait_until(lambda: "consuming" in worker.stderr() or worker.proc.poll() is not None, 30, "the worker")

    def stored() -> int:
        with EventDatabase(db_path, readonly=True) as db:
            return db.count_events()

    wait_until(lambda: stored() >= 401 + 200, 60, "the worker storing every event")
    time.sleep(1.0)  # anything more would be a duplicate
    assert worker.stop() == 0, worker.stderr()
    with EventDatabase(db_path, readonly=True) as db:
        events = list(db.iter_events())
        assert len(events) == 601  # 400 + 200 numbered, one keyed (its two posts are the same event)
        assert sorted(e.data["n"] for e in events if "n" in e.data) == [*range(400), *range(1000, 1200)]
        assert all(SECRET not in str(e.data) for e in events)


def test_a_publishing_service_reads_and_follows_the_shared_postgresql_store(
    tmp_path: Path, own_nats: NatsServer, pg_url: str, procs: list[Proc]
) -> None:
    config = _config(tmp_path, own_nats, read_url=pg_url)
    worker = _celflow(["ingest-worker", "--db", pg_url, "--durable", "pg"], config, tmp_path / "worker.log", procs)
    wait_until(lambda: "consuming" in worker.stderr() or worker.proc.poll() is not None, 30, "the worker")
    run, client = _service(tmp_path, config, procs)
    with client:
        client.send_batch(_events(0, 20), wait=True)
        wait_until(lambda: _total(client) == 20, 30, "the service reading what the worker stored")
        followed: list[dict[str, Any]] = []
        follower = Client(data_dir=str(tmp_path / "laptop"), timeout=10)

        def follow() -> None:
            for event in follower.follow(after=0):
                followed.append(event)
                if len(followed) == 25:
                    return

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        wait_until(lambda: len(followed) == 20, 30, "the stored events on the live stream")
        # the next ones come back through the bus, the worker and PostgreSQL: the stream must poll
        client.send_batch(_events(20, 5), wait=True)
        wait_until(lambda: len(followed) == 25, 30, "events another process stored, on the live stream")
        thread.join(10)
        follower.close()
        assert [e["data"]["n"] for e in followed] == list(range(25))
        assert all("[REDACTED]" in e["data"]["note"] for e in followed)
    assert run.stop() == 0, run.stderr()
    assert worker.stop() == 0, worker.stderr()


def test_captured_events_are_published_from_the_capture_threads(
    tmp_path: Path, own_nats: NatsServer, procs: list[Proc]
) -> None:
    config = _config(tmp_path, own_nats, processes=True)
    run, client = _service(tmp_path, config, procs)
    with client:
        wait_until(lambda: "watching processes" in run.stderr(), 30, "the process watcher's first scan")
        child = subprocess.Popen(["sleep", "1.5"])

        def seen() -> list[dict[str, Any]]:
            published, _ = asyncio.run(stream_events(own_nats.url, "LAPTOP"))
            return [e for e in published if e["event_type"] == "process" and e["data"].get("pid") == child.pid]

        wait_until(lambda: {e["action"] for e in seen()} >= {"start"}, 30, "the child's start")
        child.wait()  # reaped: no longer a process
        wait_until(lambda: {e["action"] for e in seen()} >= {"start", "exit"}, 30, "the child's exit")
        assert client.stats()["total_stored"] >= 2  # acknowledged by JetStream
    assert run.stop() == 0, run.stderr()
    assert not (tmp_path / "laptop" / "events.db").exists()


def test_a_full_buffer_refuses_a_refusing_stream_degrades_and_a_stop_counts_what_was_left(
    tmp_path: Path, own_nats: NatsServer, procs: list[Proc]
) -> None:
    # a stream that takes one message and refuses the rest: connected, yet nothing is acknowledged
    async def tiny_stream() -> None:
        nc = await nats.connect(own_nats.url)
        try:
            await nc.jetstream().add_stream(name="LAPTOP", subjects=["laptop.events"], max_msgs=1, discard="new")
        finally:
            await nc.close()

    asyncio.run(tiny_stream())
    config = _config(tmp_path, own_nats)
    text = config.read_text().replace("ack_timeout = 1.0", "ack_timeout = 1.0\nmax_buffer = 50\nbatch_size = 10")
    config.write_text(text.replace("[persistence]", '[persistence]\noverflow = "drop"'))
    run, client = _service(tmp_path, config, procs)
    with client:
        client.send_batch(_events(0, 10), wait=True)  # the one message the stream takes
        client.send_batch(_events(10, 30))  # buffered; JetStream refuses them
        wait_until(lambda: client._http.get("/health").status_code == 503, 30, "/health degraded")
        health = client._http.get("/health").json()
        assert health["status"] == "degraded" and "maximum messages" in health["last_error"]
        # wait=true with the buffer nearly full is refused (503), never silently dropped
        answer = client._http.post("/api/v1/events?wait=true", json=_events(100, 30))
        assert answer.status_code == 503, answer.text
        assert client._http.post("/api/v1/events", json=_events(200, 30)).status_code == 503
        metrics = client._http.get("/metrics").text
        assert "celflow_events_stored_total 10.0" in metrics and "celflow_queue_size 30.0" in metrics
    assert run.stop() == 1, run.stderr()  # 30 accepted events never acknowledged: said, and exit 1
    assert "30 accepted events were never acknowledged" in run.stderr()


def test_bad_bus_settings_are_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    env.pop("CELFLOW_CONFIG", None)
    for name, value, said in (
        ("CELFLOW_BUS_STREAM", "A.B", "bus.stream 'A.B'"),
        ("CELFLOW_BUS_DURABLE", "", "bus.durable ''"),
        ("CELFLOW_BUS_SUBJECT", "a b", "bus.subject 'a b'"),
        ("CELFLOW_BUS_URL", "http://127.0.0.1:1", "must start with nats://"),
    ):
        done = subprocess.run(
            [sys.executable, "-c", CLI, "run", "--publish", "--no-fs", "--no-processes"],
            capture_output=True,
            text=True,
            env={**env, name: value},
            cwd=tmp_path,
            timeout=60,
        )
        assert done.returncode != 0 and said in done.stderr, (name, done.stderr)
        assert "Traceback" not in done.stderr


def _total(client: Client) -> int:
    try:
        return int(client.count())
    except Exception:  # noqa: BLE001 - not readable yet
        return -1


def test_run_publish_help_and_a_bad_bus_url(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    env.pop("CELFLOW_CONFIG", None)
    shown = subprocess.run([sys.executable, "-c", CLI, "run", "--help"], capture_output=True, text=True, env=env)
    assert "--publish" in shown.stdout and "--bus" in shown.stdout
    bad = subprocess.run(
        [sys.executable, "-c", CLI, "run", "--publish", "--bus", "http://127.0.0.1:1", "--no-fs", "--no-processes"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert bad.returncode != 0
    assert "nats://" in bad.stderr and "Traceback" not in bad.stderr
