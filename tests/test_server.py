"""The HTTP API: a real uvicorn server on an ephemeral 127.0.0.1 port, driven by a real httpx client."""

from __future__ import annotations

import csv
import gzip
import io
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from celflow.server import bind, load_or_create_token
from conftest import make_event
from live_service import TOKEN, Service

CELFLOW_BIN = str(Path(sys.executable).parent / "celflow")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path / "data" / "events.db")
    yield running
    running.close()


@pytest.fixture
def client(service: Service) -> Iterator[httpx.Client]:
    with service.client() as c:
        yield c


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()["error"]
    assert body["status"] == status and body["message"]
    return body


# -- security ----------------------------------------------------------------------------------


def test_health_needs_no_token(service: Service) -> None:
    with service.client(token=None) as anonymous:
        response = anonymous.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok" and response.json()["writer_healthy"] is True


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/stats", "/metrics", "/api/v1/events/count"])
def test_everything_else_needs_the_token(service: Service, path: str) -> None:
    with service.client(token=None) as anonymous:
        body = error_of(anonymous.get(path), 401)
        assert "Bearer" in body["message"]
    with service.client(token="wrong") as wrong:
        response = wrong.get(path)
        error_of(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
    with service.client() as good:
        assert good.get(path).status_code == 200


def test_auth_off(tmp_path: Path) -> None:
    running = Service(tmp_path / "events.db", token=None)
    try:
        with running.client(token=None) as anonymous:
            assert anonymous.post("/api/v1/events?wait=true", json=make_event()).status_code == 201
            assert len(anonymous.get("/api/v1/events").json()["events"]) == 1
    finally:
        running.close()


def test_foreign_host_header_is_refused(service: Service, client: httpx.Client) -> None:
    """A DNS-rebinding page reaches the port with its own Host name: refused, even with the token."""
    body = error_of(client.get("/api/v1/stats", headers={"Host": "evil.example"}), 403)
    assert "allowed_hosts" in body["message"]
    error_of(client.get("/health", headers={"Host": "evil.example:8537"}), 403)
    for host in ("localhost", "127.0.0.1:1234", "[::1]:80"):
        assert client.get("/api/v1/stats", headers={"Host": host}).status_code == 200


def test_allowed_hosts_setting(tmp_path: Path) -> None:
    running = Service(tmp_path / "events.db", allowed_hosts=["celflow.lan"])
    try:
        with running.client() as c:
            assert c.get("/api/v1/stats", headers={"Host": "celflow.lan:8537"}).status_code == 200
            error_of(c.get("/api/v1/stats", headers={"Host": "other.lan"}), 403)
    finally:
        running.close()


def test_no_wildcard_cors(client: httpx.Client) -> None:
    response = client.get("/api/v1/stats", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


def test_token_file_is_private_and_stable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    token = load_or_create_token(str(data))
    assert len(token) >= 40
    assert (data / "token").stat().st_mode & 0o777 == 0o600
    assert data.stat().st_mode & 0o777 == 0o700
    assert load_or_create_token(str(data)) == token


# -- ingest ------------------------------------------------------------------------------------


def test_ingest_one_queued_then_committed(client: httpx.Client) -> None:
    queued = client.post("/api/v1/events", json=make_event(event_type="app_focus"))
    assert queued.status_code == 202 and queued.json() == {"accepted": 1}
    committed = client.post("/api/v1/events", params={"wait": "true"}, json=[make_event(), make_event()])
    assert committed.status_code == 201
    ids = committed.json()["ids"]
    assert len(ids) == 2 and ids[0] < ids[1]
    events = client.get("/api/v1/events", params={"order": "asc"}).json()["events"]
    assert {e["id"] for e in events} >= set(ids)  # committed ones are readable at once
    assert len(events) == 3  # the queued one was committed before the awaited batch (FIFO)


def test_ingest_ndjson_and_gzip(client: httpx.Client) -> None:
    batch = [make_event(data={"n": i, "text": "x" * 2000}) for i in range(50)]
    lines = "\n".join(json.dumps(e) for e in batch).encode() + b"\n\n"
    response = client.post(
        "/api/v1/events?wait=1",
        content=gzip.compress(lines),
        headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 201, response.text
    ids = response.json()["ids"]
    stored = client.get("/api/v1/events", params={"limit": 100, "order": "asc"}).json()["events"]
    assert [e["data"] for e in stored] == [e["data"] for e in batch]
    # a retry of the same batch is deduplicated: the same ids, nothing new
    again = client.post("/api/v1/events?wait=1", json=batch)
    assert again.json()["ids"] == ids
    assert client.get("/api/v1/events/count").json() == {"total": 50}


def test_every_invalid_event_is_reported_with_its_index(client: httpx.Client) -> None:
    batch = [make_event(), {"source": "x"}, make_event(), make_event(timestamp="yesterday"), make_event()]
    body = error_of(client.post("/api/v1/events", json=batch), 422)
    assert "2 of 5" in body["message"] and "nothing was stored" in body["message"]
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "event_type"), (3, "timestamp")]
    assert client.get("/api/v1/events/count").json() == {"total": 0}


@pytest.mark.parametrize(
    ("content", "headers", "status", "words"),
    [
        (b"{not json", {}, 400, "not valid JSON"),
        (b"[]", {}, 400, "no event"),
        (b'{"a": 1}\nnope\n', {"Content-Type": "application/x-ndjson"}, 400, "line 2"),
        (b"<xml/>", {"Content-Type": "application/xml"}, 415, "Content-Type"),
        (b"\x1f\x8b broken", {"Content-Encoding": "gzip"}, 400, "gzip"),
        (b"{}", {"Content-Encoding": "br"}, 415, "Content-Encoding"),
    ],
)
def test_malformed_bodies(
    client: httpx.Client, content: bytes, headers: dict[str, str], status: int, words: str
) -> None:
    body = error_of(client.post("/api/v1/events", content=content, headers=headers), status)
    assert words in body["message"]


def test_size_limits(tmp_path: Path) -> None:
    running = Service(tmp_path / "events.db", max_body_bytes=4096, max_batch_events=5)
    try:
        with running.client() as c:
            big = [make_event(data={"text": "y" * 5000})]
            assert "max_body_bytes" in error_of(c.post("/api/v1/events", json=big), 413)["message"]
            bomb = gzip.compress(json.dumps(big).encode())  # small on the wire, too big unzipped
            assert len(bomb) < 4096
            response = c.post("/api/v1/events", content=bomb, headers={"Content-Encoding": "gzip"})
            assert "unzipped" in error_of(response, 413)["message"]
            many = [make_event() for _ in range(6)]
            assert "max_batch_events" in error_of(c.post("/api/v1/events", json=many), 413)["message"]
            long_search = c.get("/api/v1/events", params={"search": "s" * 5000})
            assert error_of(long_search, 400)["field"] == "search"
    finally:
        running.close()


def test_a_full_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    running = Service(tmp_path / "events.db", manager={"max_queue_size": 10, "batch_size": 1000, "batch_timeout": 600})
    try:
        with running.client() as c:
            assert c.post("/api/v1/events", json=[make_event() for _ in range(10)]).status_code == 202
            response = c.post("/api/v1/events", json=make_event())
            assert "queue" in error_of(response, 503)["message"]
            assert response.headers["retry-after"] == "1"
    finally:
        running.close()


# -- reads -------------------------------------------------------------------------------------


def seed(client: httpx.Client, n: int = 30, t0: float | None = None) -> list[int]:
    t0 = time.time() - 3600 if t0 is None else t0
    batch = [
        make_event(
            timestamp=t0 + i * 60,
            event_type=["file_op", "app_focus", "process"][i % 3],
            source="filesystem" if i % 2 else "window",
            data={"i": i, "word": "needle" if i == 7 else "hay"},
        )
        for i in range(n)
    ]
    ids: list[int] = client.post("/api/v1/events?wait=true", json=batch).json()["ids"]
    return ids


def test_query_filters_and_cursor_pages(client: httpx.Client) -> None:
    t0 = time.time() - 3600
    ids = seed(client, t0=t0)
    typed = client.get("/api/v1/events", params={"event_type": "process", "source": "filesystem"}).json()
    assert {e["data"]["i"] for e in typed["events"]} == {i for i in range(30) if i % 3 == 2 and i % 2}
    found = client.get("/api/v1/events", params={"search": "NEEDLE"}).json()["events"]
    assert [e["data"]["i"] for e in found] == [7]
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 7, "order": "asc"}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/events", params=params).json()
        seen += [e["id"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    window = client.get("/api/v1/events", params={"start_time": t0 + 600.5, "limit": 1000})
    assert len(window.json()["events"]) == 19  # i = 11..29


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"start_time": "not a time"}, "start_time"),
        ({"cursor": "garbage"}, "cursor"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_query_parameters(client: httpx.Client, params: dict[str, str], field: str) -> None:
    body = error_of(client.get("/api/v1/events", params=params), 400)
    assert body.get("field") == field or field in body["message"]


def test_counts_and_histogram(client: httpx.Client) -> None:
    seed(client)
    assert client.get("/api/v1/events/count").json() == {"total": 30}
    by_type = client.get("/api/v1/events/count", params={"group_by": "event_type"}).json()
    assert by_type["counts"] == {"file_op": 10, "app_focus": 10, "process": 10}
    error_of(client.get("/api/v1/events/count", params={"group_by": "data"}), 400)
    hist = client.get("/api/v1/events/histogram", params={"bucket": 600}).json()
    assert sum(b["count"] for b in hist["buckets"]) == 30
    error_of(client.get("/api/v1/events/histogram", params={"bucket": "wide"}), 400)


def test_query_time_limit(tmp_path: Path) -> None:
    running = Service(tmp_path / "events.db", query_timeout=1e-9)
    try:
        with running.client() as c:
            seed(c, 3000)
            body = error_of(c.get("/api/v1/events", params={"search": "nothing like this", "limit": 10}), 503)
            assert "limit" in body["message"]
    finally:
        running.close()


def test_stats_and_metrics(client: httpx.Client) -> None:
    seed(client)
    client.post("/api/v1/events?wait=true", json=make_event(data={"again": 1}))
    stats = client.get("/api/v1/stats").json()
    assert stats["total_stored"] == 31 and stats["healthy"] is True
    client.get("/api/v1/events")
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    value = {s.name: s.value for f in families.values() for s in f.samples if not s.labels}
    assert value["celflow_events_stored_total"] == 31
    assert value["celflow_http_events_received_total"] == 31
    assert value["celflow_database_events"] == 31
    assert value["celflow_queue_size"] == 0
    assert value["celflow_batch_seconds_count"] >= 2
    assert value["celflow_database_size_bytes"] > 0
    queries = [s for s in families["celflow_query_seconds"].samples if s.name.endswith("_count")]
    assert any(s.labels["endpoint"] == "events" and s.value >= 1 for s in queries)


def test_unknown_routes_and_methods_answer_json(client: httpx.Client) -> None:
    error_of(client.get("/api/v1/nothing"), 404)
    error_of(client.delete("/api/v1/events"), 405)


# -- the service -------------------------------------------------------------------------------


def test_celflow_run_serves_the_api_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`celflow run --port 0`: the address in service.json, the token in the data folder, exit 0."""
    data = tmp_path / "data"
    service = subprocess.Popen(
        [CELFLOW_BIN, "run", "--db", str(data / "events.db"), "--no-fs", "--no-processes", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not (data / "service.json").exists():
            assert service.poll() is None and time.monotonic() < deadline, "the service did not start"
            time.sleep(0.05)
        info = json.loads((data / "service.json").read_text())
        assert (data / "service.json").stat().st_mode & 0o777 == 0o600
        token = (data / "token").read_text().strip()
        with httpx.Client(base_url=info["url"], headers={"Authorization": f"Bearer {token}"}) as c:
            assert c.get("/health").json()["status"] == "ok"
            assert c.post("/api/v1/events", json=[make_event() for _ in range(100)]).status_code == 202
    finally:
        service.send_signal(signal.SIGTERM)
        output, _ = service.communicate(timeout=30)
    assert service.returncode == 0, output
    assert not (data / "service.json").exists()
    listed = subprocess.run(
        [CELFLOW_BIN, "events", "stats", "--db", str(data / "events.db"), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert json.loads(listed.stdout)["total_events"] == 100, listed.stdout


def test_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    holder = bind("127.0.0.1", 0)
    try:
        port = holder.getsockname()[1]
        result = subprocess.run(
            [CELFLOW_BIN, "run", "--db", str(tmp_path / "events.db"), "--no-fs", "--no-processes", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        holder.close()
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr


# -- live streams ------------------------------------------------------------------------------


def ws_url(service: Service, **params: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return service.http.url.replace("http://", "ws://") + "/api/v1/stream" + (f"?{query}" if query else "")


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def receive_events(ws: Any, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    """Messages from ``ws`` until ``count`` events came (fails on more, or on a timeout)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        got += message["events"]
        assert message["last_id"] >= got[-1]["id"]
    assert len(got) == count
    return got


def test_stream_delivers_live_events_with_filters(service: Service, client: httpx.Client) -> None:
    seed(client, 5)  # stored before the subscription: not sent without `after`
    with ws_connect(ws_url(service, event_type="app_focus"), additional_headers=auth()) as ws:
        start = json.loads(ws.recv(timeout=10))["last_id"]
        assert start == 5
        client.post("/api/v1/events", json=[make_event(event_type=t) for t in ["file_op", "app_focus"] * 3])
        events = receive_events(ws, 3)
        assert {e["event_type"] for e in events} == {"app_focus"}
        assert [e["id"] for e in events] == sorted(e["id"] for e in events)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)  # nothing more matches


def test_stream_resumes_after_a_killed_subscriber(service: Service, client: httpx.Client) -> None:
    """SIGKILL a subscriber mid-stream; reconnecting with `after` gets exactly what it missed."""
    ids = seed(client, 40)
    script = (
        "import json, sys\n"
        "from websockets.sync.client import connect\n"
        "with connect(sys.argv[1], additional_headers={'Authorization': sys.argv[2]}) as ws:\n"
        "    while True:\n"
        "        m = json.loads(ws.recv())\n"
        "        print(m['last_id'], len(m.get('events', [])), flush=True)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, ws_url(service, after=0), f"Bearer {TOKEN}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().split() == ["0", "0"]  # where it starts
        first = child.stdout.readline().split()  # the stored 40 come first, in one page
        assert first == [str(ids[-1]), "40"]
        more = client.post("/api/v1/events?wait=1", json=[make_event() for _ in range(3)]).json()["ids"]
        assert child.stdout.readline().split() == [str(more[-1]), "3"]
    finally:
        child.kill()
        child.wait()
    missed = client.post("/api/v1/events?wait=1", json=[make_event() for _ in range(25)]).json()["ids"]
    with ws_connect(ws_url(service, after=more[-1]), additional_headers=auth()) as ws:
        assert json.loads(ws.recv(timeout=10))["last_id"] == more[-1]
        assert [e["id"] for e in receive_events(ws, 25)] == missed
        live = client.post("/api/v1/events?wait=1", json=[make_event()]).json()["ids"]
        assert [e["id"] for e in receive_events(ws, 1)] == live


def test_stream_refuses_foreign_origins_and_missing_tokens(service: Service) -> None:
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(ws_url(service), additional_headers=auth(), origin="https://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as anonymous:
        ws_connect(ws_url(service))
    assert anonymous.value.response.status_code == 401
    with ws_connect(ws_url(service), additional_headers=auth(), origin="http://localhost:3000") as ws:  # type: ignore[arg-type]
        assert "last_id" in json.loads(ws.recv(timeout=10))


def test_stream_bad_parameters_close_with_a_reason(service: Service) -> None:
    with ws_connect(ws_url(service, after="yesterday"), additional_headers=auth()) as ws:
        error = json.loads(ws.recv(timeout=10))["error"]
        assert "after" in error["message"]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_server_stop_closes_streams(tmp_path: Path) -> None:
    """A stop ends WebSocket and SSE streams at once instead of waiting out the graceful timeout."""
    running = Service(tmp_path / "events.db")
    with (
        running.client() as c,
        c.stream("GET", "/api/v1/stream/sse") as sse,
        ws_connect(ws_url(running), additional_headers=auth()) as ws,
    ):
        lines = sse.iter_lines()
        assert next(lines).startswith(": events after id 0")
        json.loads(ws.recv(timeout=10))
        started = time.monotonic()
        running.close()
        assert time.monotonic() - started < 4  # not the 5 s graceful timeout
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert list(lines) == [""]  # the SSE response ended


def test_server_sent_events_resume_with_last_event_id(service: Service, client: httpx.Client) -> None:
    ids = seed(client, 10)
    with client.stream("GET", "/api/v1/stream/sse", params={"after": ids[3]}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        got = sse_ids(response.iter_lines(), 6)
    assert got == ids[4:]
    with client.stream("GET", "/api/v1/stream/sse", headers={"Last-Event-ID": str(ids[7])}) as response:
        got = sse_ids(response.iter_lines(), 2)
    assert got == ids[8:]


def sse_ids(lines: Iterator[str], count: int) -> list[int]:
    ids: list[int] = []
    for line in lines:
        if line.startswith("id: "):
            ids.append(int(line[4:]))
        elif line.startswith("data: "):
            assert json.loads(line[6:])["id"] == ids[-1]
        if len(ids) == count:
            break
    return ids


# -- export, patterns, system stats ------------------------------------------------------------


def test_export_streams_jsonl_and_csv_across_pages(client: httpx.Client) -> None:
    ids = seed(client, 2500)  # three pages of 1,000
    with client.stream("GET", "/api/v1/export") as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert [e["id"] for e in lines] == ids  # oldest first
    assert lines[7]["data"] == {"i": 7, "word": "needle"}
    response = client.get("/api/v1/export", params={"format": "csv", "event_type": "process"})
    assert response.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(response.text)))
    assert table[0] == ["id", "timestamp", "event_type", "action", "source", "data", "hash", "processed", "created_at"]
    assert len(table) == 1 + len([i for i in range(2500) if i % 3 == 2])
    assert {row[2] for row in table[1:]} == {"process"}
    assert json.loads(table[1][5]) == {"i": 2, "word": "hay"}
    error_of(client.get("/api/v1/export", params={"format": "xml"}), 400)


def test_patterns_read_and_write(client: httpx.Client) -> None:
    (event_id,) = client.post("/api/v1/events?wait=1", json=make_event()).json()["ids"]
    body = {"pattern_type": "routine", "confidence": 0.8, "pattern_data": {"k": [1, 2]}, "event_id": event_id}
    created = client.post("/api/v1/patterns", json=body)
    assert created.status_code == 201
    client.post("/api/v1/patterns", json={"pattern_type": "other", "confidence": 0.2, "pattern_data": "x"})
    found = client.get("/api/v1/patterns", params={"min_confidence": 0.5}).json()["patterns"]
    assert len(found) == 1 and found[0]["id"] == created.json()["id"] and found[0]["pattern_data"] == {"k": [1, 2]}
    assert error_of(client.post("/api/v1/patterns", json={"pattern_type": "x"}), 400)["field"] == "confidence"
    bad = client.post("/api/v1/patterns", json={"pattern_type": "x", "confidence": "high", "pattern_data": 1})
    assert error_of(bad, 400)["field"] == "confidence"
    error_of(client.get("/api/v1/patterns", params={"limit": "-1"}), 400)


def test_system_stats_read_and_write(client: httpx.Client) -> None:
    for n in (10, 20):
        response = client.post("/api/v1/system-stats", json={"total_events": n, "avg_fitness": 0.5})
        assert response.status_code == 201
    snapshots = client.get("/api/v1/system-stats").json()["system_stats"]
    assert [s["total_events"] for s in snapshots] == [20, 10]
    assert error_of(client.post("/api/v1/system-stats", json={"colour": 1}), 400)["field"] == "colour"
    assert error_of(client.post("/api/v1/system-stats", json={"total_events": "many"}), 400)["field"] == "total_events"
    error_of(client.post("/api/v1/system-stats", content=b"[1]"), 400)


def test_listening_socket_is_tcp_so_answers_are_not_delayed() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose proto says TCP; without it each keep-alive
    answer waited ~40 ms for a delayed ACK (headers and body go out as two writes)."""
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        client = socket.create_connection(sock.getsockname())
        accepted, _ = sock.accept()
        assert accepted.proto == socket.IPPROTO_TCP
        accepted.close()
        client.close()
    finally:
        sock.close()


# -- review findings: each of these once went wrong ------------------------------------------


def test_pages_of_foreign_origins_cannot_write_even_without_auth(tmp_path: Path) -> None:
    running = Service(tmp_path / "events.db", token=None)
    try:
        with running.client(token=None) as c:
            body = b'{"event_type": "x", "source": "evil"}'
            refused = c.post("/api/v1/events", content=body, headers={"Origin": "https://evil.example"})
            assert "origin" in error_of(refused, 403)["message"]
            fetched = c.post("/api/v1/events", content=body, headers={"Sec-Fetch-Site": "cross-site"})
            error_of(fetched, 403)
            local_page = c.post("/api/v1/events?wait=1", content=body, headers={"Origin": "http://localhost:5173"})
            assert local_page.status_code == 201
            assert c.get("/api/v1/events/count").json() == {"total": 1}
    finally:
        running.close()


def test_gzip_bodies_of_several_members_and_truncated_ones(client: httpx.Client) -> None:
    first = b"\n".join(json.dumps(make_event(data={"i": i})).encode() for i in range(3)) + b"\n"
    second = b"\n".join(json.dumps(make_event(data={"i": i})).encode() for i in range(3, 5))
    headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    response = client.post(
        "/api/v1/events?wait=1", content=gzip.compress(first) + gzip.compress(second), headers=headers
    )
    assert len(response.json()["ids"]) == 5  # `cat a.gz b.gz` is one gzip stream of two members
    truncated = gzip.compress(first)[:-12]
    assert "truncated" in error_of(client.post("/api/v1/events", content=truncated, headers=headers), 400)["message"]


@pytest.mark.parametrize("value", ["²", "1" * 5000, str(2**63)])
def test_odd_numbers_are_400_not_500(client: httpx.Client, service: Service, value: str) -> None:
    error_of(client.get("/api/v1/events", params={"limit": value}), 400)
    error_of(client.get("/api/v1/patterns", params={"event_id": value}), 400)
    error_of(client.get("/api/v1/stream/sse", params={"after": value}), 400)
    with ws_connect(ws_url(service, after=value), additional_headers=auth()) as ws:
        assert "after" in json.loads(ws.recv(timeout=10))["error"]["message"]


def test_flush_endpoint_waits_for_the_commit(tmp_path: Path) -> None:
    running = Service(tmp_path / "events.db", manager={"batch_timeout": 600, "batch_size": 10_000})
    try:
        with running.client() as c:
            c.post("/api/v1/events", json=[make_event() for _ in range(7)])
            assert c.get("/api/v1/events/count").json() == {"total": 0}  # queued, not committed
            assert c.post("/api/v1/flush").json() == {"flushed": True}
            assert c.get("/api/v1/events/count").json() == {"total": 7}
    finally:
        running.close()


def test_a_filtered_stream_moves_its_cursor_past_events_it_skips(service: Service, client: httpx.Client) -> None:
    """A filter that matches little still advances `last_id`, so a reconnect does not rescan."""
    with ws_connect(ws_url(service, event_type="rare"), additional_headers=auth()) as ws:
        json.loads(ws.recv(timeout=10))
        skipped = client.post("/api/v1/events?wait=1", json=[make_event() for _ in range(50)]).json()["ids"]
        rare = client.post("/api/v1/events?wait=1", json=[make_event(event_type="rare")]).json()["ids"]
        message = json.loads(ws.recv(timeout=10))
        assert [e["id"] for e in message["events"]] == rare
        assert message["last_id"] >= max(skipped + rare)
