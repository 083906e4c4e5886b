"""11. Files and access: a real `celflow run` refuses every request without the token, every foreign
Host header (DNS rebinding) and every foreign WebSocket Origin; exports never write through a
symlink to somewhere else."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from _reliability import Record
from test_shutdown_and_access import start_service

CELFLOW = str(Path(sys.executable).parent / "celflow")

#: Host headers a DNS-rebinding page (or a confused proxy) may send: all refused.
FOREIGN_HOSTS = [
    "evil.example",
    "evil.example:8537",
    "127.0.0.1.evil.example",
    "localhost.evil.example",
    "127.0.0.1.nip.io",
    "localtest.me",
    "0.0.0.0",
    "0.0.0.0:8537",
    "10.0.0.1",
    "192.168.1.1:8537",
    "[::ffff:7f00:1]",
    "2130706433",
    "127.0.0.1:8537:evil.example",
    "evil.example#127.0.0.1",
    "127.0.0.1 evil.example",
    "localhost.",
    "xn--80ak6aa92e.com",
]
#: The loopback names the API answers to (with the token).
LOOPBACK_HOSTS = ["127.0.0.1", "127.0.0.1:8537", "localhost", "LOCALHOST:1", "[::1]", "[::1]:8537", "127.9.9.9"]
FOREIGN_ORIGINS = ["http://evil.example", "https://127.0.0.1.evil.example", "null", "file://", "http://0.0.0.0:8537"]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """One real `celflow run` for the module: its URL and token."""
    data = tmp_path_factory.mktemp("access")
    proc, url, token = start_service(data)
    try:
        yield url, token
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def test_every_route_but_health_needs_the_token(service: tuple[str, str], record: Record) -> None:
    """Each operation of the served OpenAPI document answers 401 without the token or with a wrong one."""
    url, token = service
    with httpx.Client(base_url=url) as c:
        spec = c.get("/api/v1/openapi.json", headers={"Authorization": f"Bearer {token}"}).json()
        assert c.get("/health").status_code == 200
        checked = 0
        for path, operations in spec["paths"].items():
            if path == "/health":
                continue
            for method in operations:
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
                    r = c.request(method.upper(), path, headers=headers, content=b"{}")
                    assert r.status_code == 401, (method, path, headers, r.status_code)
                    checked += 1
        assert c.get("/metrics").status_code == 401
    assert checked >= 30
    record(trials=checked, failures=0)


def test_foreign_host_headers_are_refused(service: tuple[str, str], record: Record) -> None:
    """DNS-rebinding Host names get 403 even with the token; loopback names are served."""
    url, token = service
    auth = {"Authorization": f"Bearer {token}"}
    wrong = []
    with httpx.Client(base_url=url) as c:
        for host in FOREIGN_HOSTS:
            for path in ("/api/v1/stats", "/health"):
                if c.get(path, headers={**auth, "Host": host}).status_code != 403:
                    wrong.append((host, path))
        for host in LOOPBACK_HOSTS:
            if c.get("/api/v1/stats", headers={**auth, "Host": host}).status_code != 200:
                wrong.append((host, "loopback refused"))
    record(trials=2 * len(FOREIGN_HOSTS) + len(LOOPBACK_HOSTS), failures=len(wrong))
    assert not wrong


def test_foreign_websocket_origins_are_refused(service: tuple[str, str], record: Record) -> None:
    """A page of another origin cannot open the live stream, even with the token."""
    url, token = service
    ws_url = url.replace("http://", "ws://") + "/api/v1/stream"
    auth = {"Authorization": f"Bearer {token}"}
    wrong = []
    for origin in FOREIGN_ORIGINS:
        try:
            with connect(ws_url, additional_headers={**auth, "Origin": origin}, open_timeout=10):
                wrong.append(origin)
        except InvalidStatus as exc:
            if exc.response.status_code != 403:
                wrong.append(f"{origin}: {exc.response.status_code}")
    with connect(ws_url, additional_headers={**auth, "Origin": url}, open_timeout=10):
        pass  # a loopback page may
    record(trials=len(FOREIGN_ORIGINS), failures=len(wrong))
    assert not wrong


def _export(db: Path, target: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CELFLOW, "events", "export", str(target), "--db", str(db), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.umask(0),
    )


def test_exports_never_write_through_a_symlink(tmp_path: Path, record: Record) -> None:
    """A symlink at the export path is refused, or replaced with --force; its target is never written."""
    from celflow import EventDatabase

    db = tmp_path / "data" / "events.db"
    with EventDatabase(db) as database:
        database.store_event({"event_type": "t", "source": "s", "data": {"secret": "x"}})
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    link = tmp_path / "out.jsonl"
    link.symlink_to(victim)
    refused = _export(db, link)
    assert refused.returncode == 1 and "already exists" in refused.stderr
    forced = _export(db, link, "--force")
    assert forced.returncode == 0, forced.stderr
    assert victim.read_text() == "keep me\n" and not link.is_symlink()
    assert stat.S_IMODE(link.stat().st_mode) == 0o600
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "elsewhere.jsonl")
    assert _export(db, dangling).returncode == 0
    assert not (tmp_path / "elsewhere.jsonl").exists() and not dangling.is_symlink()
    record(trials=3, failures=0)
