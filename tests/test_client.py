"""celflow.client against a real service: batching, retries that never duplicate, reads, follow."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celflow import EventDatabase, ServiceError
from celflow._service import write_service_file
from celflow.client import AsyncClient, Client, discover
from celflow.server import bind
from conftest import make_event
from live_service import TOKEN, Service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path / "data" / "events.db")
    yield running
    running.close()


def test_discover_reads_the_service_file_and_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELFLOW_URL", raising=False)
    monkeypatch.delenv("CELFLOW_TOKEN", raising=False)
    with pytest.raises(ServiceError, match="celflow run"):
        discover(data_dir=str(tmp_path))
    (tmp_path / "service.json").write_text(json.dumps({"url": "http://127.0.0.1:9/", "pid": 1}))
    (tmp_path / "token").write_text("secret\n")
    assert discover(data_dir=str(tmp_path)) == ("http://127.0.0.1:9", "secret")
    monkeypatch.setenv("CELFLOW_URL", "http://localhost:1")
    assert discover(data_dir=str(tmp_path), token="given") == ("http://localhost:1", "given")


def test_send_batches_in_the_background(service: Service) -> None:
    with Client(service.http.url, TOKEN, batch_size=100, flush_interval=0.05) as client:
        for i in range(1050):
            client.send(make_event(data={"i": i}))
        client.flush(timeout=30)
        assert client.count() == 1050
        assert service.manager.get_stats()["batches"] <= 1050 // 10  # posted in batches, not one by one
        got = sorted(e["data"]["i"] for e in client.events(limit=400))
        assert got == list(range(1050))


def test_send_batch_wait_returns_ids_and_errors_are_service_errors(service: Service) -> None:
    with Client(service.http.url, TOKEN) as client:
        ids = client.send_batch([make_event(), make_event()], wait=True)
        assert len(ids) == 2
        page = client.query(limit=1)
        assert page["events"][0]["id"] == ids[1] and page["next_cursor"]
        with pytest.raises(ServiceError) as bad:
            client.send_batch([{"source": "x"}])
        assert bad.value.status == 422 and bad.value.details["errors"][0]["field"] == "event_type"
        assert client.health()["status"] == "ok" and client.stats()["total_stored"] == 2
    with Client(service.http.url, "wrong") as anonymous, pytest.raises(ServiceError) as refused:
        anonymous.stats()
    assert refused.value.status == 401


def test_retry_after_an_outage_never_duplicates(tmp_path: Path) -> None:
    """Events sent while the service is down arrive once it is up; a re-sent batch is deduplicated."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()  # nobody listens there yet
    client = Client(f"http://127.0.0.1:{port}", TOKEN, retries=30, flush_interval=0.05)
    batch = [make_event(data={"i": i}) for i in range(20)]
    for event in batch:
        event.pop("timestamp")  # the client stamps them, so a retry matches the first try
    for event in batch:
        client.send(event)
    time.sleep(0.5)  # the sender is retrying against a closed port
    db = tmp_path / "data" / "events.db"
    running = Service(db, port=port)
    try:
        client.flush(timeout=60)
        client.send_batch(batch[:5], wait=True)  # no timestamps again: new events, new stamps
        page = client.query(limit=100)
        assert len(page["events"]) == 25
        stored = {e["data"]["i"]: e for e in page["events"] if e["data"]["i"] >= 10}
        retried = [dict(batch[i], timestamp=stored[i]["timestamp"]) for i in (10, 11, 12)]
        again = client.send_batch(retried, wait=True)  # a true retry: the same stamps
        assert again == [stored[i]["id"] for i in (10, 11, 12)] and client.count() == 25
    finally:
        client.close()
        running.close()
    with EventDatabase(db, readonly=True) as database:
        assert database.count_events() == 25


def test_follow_resumes_across_a_service_restart(tmp_path: Path) -> None:
    db = tmp_path / "data" / "events.db"
    running = Service(db)
    port = int(running.http.url.rsplit(":", 1)[1])
    client = Client(running.http.url, TOKEN)
    first = client.send_batch([make_event(data={"n": i}) for i in range(3)], wait=True)
    received: list[int] = []
    done = threading.Event()

    def reader() -> None:
        for event in client.follow(after=0):
            received.append(event["id"])
            if len(received) == 6:
                done.set()
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while len(received) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert received == first
    running.close()  # the stream breaks; follow() reconnects with the last id it saw
    running = Service(db, port=port)
    try:
        later = client.send_batch([make_event(data={"n": i}) for i in range(3, 6)], wait=True)
        assert done.wait(15), received
        assert received == first + later
    finally:
        client.close()
        running.close()


def test_async_client(service: Service) -> None:
    async def scenario() -> None:
        async with AsyncClient(service.http.url, TOKEN, batch_size=50, flush_interval=0.05) as client:
            for i in range(120):
                await client.send(make_event(data={"i": i}))
            await client.flush()
            page = await client.query(limit=200)
            assert sorted(e["data"]["i"] for e in page["events"]) == list(range(120))
            ids = await client.send_batch([make_event()], wait=True)
            stream = client.follow(after=ids[0] - 1)
            first = await asyncio.wait_for(anext(stream), 10)
            assert first["id"] == ids[0]
            more = await client.send_batch([make_event()], wait=True)
            assert (await asyncio.wait_for(anext(stream), 10))["id"] == more[0]
            await stream.aclose()

    asyncio.run(scenario())


CELFLOW_BIN = str(Path(sys.executable).parent / "celflow")


def read_lines(process: subprocess.Popen[str], count: int, timeout: float = 15) -> list[dict[str, Any]]:
    """``count`` JSON lines from the process's stdout (fails after ``timeout``)."""
    lines: queue.Queue[str] = getattr(process, "lines", None) or queue.Queue()
    if not hasattr(process, "lines"):
        process.lines = lines  # type: ignore[attr-defined]
        assert process.stdout is not None
        stdout = process.stdout
        threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    got = []
    for _ in range(count):
        try:
            got.append(json.loads(lines.get(timeout=timeout)))
        except queue.Empty:
            raise AssertionError(f"got {len(got)} of {count} lines") from None
    return got


def interruptible() -> None:
    """In the child: SIGINT as a terminal's Ctrl-C (a test run started in the background ignores it,
    and a Python started with SIGINT ignored keeps ignoring it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_tail_follow_reads_the_database_without_a_service(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    with EventDatabase(db) as database:
        database.store_events_batch([make_event(data={"i": i}) for i in range(5)])
        tail = subprocess.Popen(
            [CELFLOW_BIN, "events", "tail", "-n", "2", "-f", "--json", "--db", str(db)],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=interruptible,
        )
        try:
            assert [e["data"]["i"] for e in read_lines(tail, 2)] == [3, 4]
            database.store_events_batch([make_event(data={"i": i}, event_type="x") for i in range(5, 8)])
            assert [e["data"]["i"] for e in read_lines(tail, 3)] == [5, 6, 7]
        finally:
            tail.send_signal(signal.SIGINT)
            tail.communicate(timeout=10)
    assert tail.returncode == 0


def test_tail_follow_uses_the_running_service(service: Service) -> None:
    data = Path(service.manager.settings.database_path).parent
    write_service_file(str(data), service.http.url)
    (data / "token").write_text(TOKEN)
    with Client(service.http.url, TOKEN) as client:
        client.send_batch([make_event(data={"i": i}) for i in range(4)], wait=True)
        tail = subprocess.Popen(
            [
                CELFLOW_BIN,
                "events",
                "tail",
                "-n",
                "1",
                "-f",
                "--json",
                "--type",
                "file_op",
                "--db",
                str(data / "events.db"),
            ],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=interruptible,
        )
        try:
            assert [e["data"]["i"] for e in read_lines(tail, 1)] == [3]
            client.send_batch([make_event(data={"i": 4}, event_type="other"), make_event(data={"i": 5})], wait=True)
            assert [e["data"]["i"] for e in read_lines(tail, 1)] == [5]  # the filter holds on live events
        finally:
            tail.send_signal(signal.SIGINT)
            tail.communicate(timeout=10)


def test_a_stale_service_file_is_not_trusted(tmp_path: Path) -> None:
    """After a crash, service.json may point at a port someone else now holds: no token goes there."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "service.json").write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": dead.pid}))
    (tmp_path / "token").write_text("secret")
    with pytest.raises(ServiceError, match="stale"):
        discover(data_dir=str(tmp_path))


def test_an_event_json_cannot_hold_fails_at_send_and_the_sender_lives_on(service: Service) -> None:
    with Client(service.http.url, TOKEN, flush_interval=0.05) as client:
        with pytest.raises(TypeError):
            client.send(make_event(data={"not json": {1, 2}}))
        client.send(make_event())
        client.flush(timeout=30)
        assert client.count() == 1


def test_a_buffered_event_costs_about_its_json_size() -> None:
    """Client.send keeps each event's JSON at its own size (orjson's bytes carry a ~4 KiB buffer)."""
    client = Client(url="http://127.0.0.1:9", token="t", batch_size=100_000, flush_interval=60, retries=0)
    events = [{"event_type": "e", "source": "s", "timestamp": 1.0 + i, "data": {"n": i}} for i in range(20_000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for event in events:
        client.send(event)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    held = sum(len(b) for b in client._buffer)
    assert grown < 2 * held + 200 * len(events), f"{grown:,} B traced for {held:,} B of JSON"
    client._buffer.clear()  # nothing to send: nobody listens there
    client.close()
