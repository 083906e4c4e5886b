"""A real nats-server with JetStream for the tests: the machine's on 127.0.0.1:4222, or one of a
test's own (a free loopback port, a store in tmp_path). Without the binary, Debian's package is
installed when the tests run as root with apt-get; otherwise the bus tests skip, loudly."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from debian import apt_install

nats = pytest.importorskip("nats", reason="nats-py is not installed (pip install 'celflow[bus]')")

SYSTEM_URL = "nats://127.0.0.1:4222"

__all__ = [
    "SYSTEM_URL",
    "NatsServer",
    "Proc",
    "bus_url",
    "free_port",
    "names",
    "own_nats",
    "procs",
    "stream_events",
    "wait_until",
]


def _find_binary() -> str | None:
    return shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/local/bin/nats-server") if os.access(p, os.X_OK)), None
    )


def nats_binary() -> str:
    """The nats-server binary (installed from Debian's package if need be), or a loud skip."""
    found = _find_binary()
    if found is None:
        why = apt_install("nats-server")
        found = _find_binary()
        if found is None:
            why = why or "no nats-server binary after the install"
            message = f"nats-server is not installed, so the NATS bus tests are SKIPPED: {why}"
            print("\n" + "!" * 20 + " " + message)
            pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class NatsServer:
    """A nats-server with JetStream of our own, on a free loopback port, storing in ``store``."""

    def __init__(self, binary: str, store: Path) -> None:
        self.binary = binary
        self.store = store
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.store.parent / f"nats-{self.port}.log", "ab")  # noqa: SIM115 - the server keeps it
        self.proc = subprocess.Popen(
            [self.binary, "-js", "-sd", str(self.store), "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 15
        while not _listening(self.port):
            assert self.proc.poll() is None, f"nats-server exited with {self.proc.returncode}"
            assert time.monotonic() < deadline, "nats-server did not listen within 15 s"
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        """SIGTERM and wait: a graceful stop, JetStream's files written."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused server would not die before it runs again
            self.proc.kill()
            self.proc.wait(15)


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of this test's own, which it may stop, pause or kill."""
    server = NatsServer(nats_binary(), tmp_path / "jetstream")
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def bus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's nats-server on 4222, or one started for the session."""
    if _listening(4222):
        yield SYSTEM_URL
        return
    server = NatsServer(nats_binary(), tmp_path_factory.mktemp("nats") / "jetstream")
    server.start()
    yield server.url
    server.kill()


@pytest.fixture
def names(bus_url: str) -> Iterator[tuple[str, str]]:
    """A fresh stream name and subject, the stream deleted after the test."""
    token = uuid.uuid4().hex[:10]
    stream, subject = f"TEST_{token.upper()}", f"test.{token}.events"
    yield stream, subject

    async def delete() -> None:
        nc = await nats.connect(bus_url)
        try:
            await nc.jetstream().delete_stream(stream)
        except nats.js.errors.NotFoundError:
            pass
        finally:
            await nc.close()

    asyncio.run(delete())


async def stream_events(url: str, stream: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Every event held in ``stream`` (read without consuming) and each message's Nats-Msg-Id."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(stream)).state
        events: list[dict[str, Any]] = []
        ids: list[str] = []
        for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
            msg = await js.get_msg(stream, seq)
            events.extend(orjson.loads(msg.data))
            ids.append((msg.headers or {}).get("Nats-Msg-Id", ""))
        return events, ids
    finally:
        await nc.close()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait (blocking) until ``check()`` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


class Proc:
    """A subprocess whose stdout lines are collected by a thread."""

    def __init__(self, args: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> None:
        """``env``: variables set for the child on top of the test's (no config file unless given)."""
        child = {**os.environ, "CELFLOW_STATS_INTERVAL": "0", "XDG_CONFIG_HOME": str(cwd)}
        child.pop("CELFLOW_CONFIG", None)
        env = {**child, **(env or {})}
        self.log = log
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=open(log, "wb"),  # noqa: SIM115 - the child keeps it
            cwd=cwd,
            env=env,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def statuses(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in list(self.lines) if line.startswith("{")]

    def has(self, event: str) -> bool:
        return any(s["event"] == event for s in self.statuses())

    def first(self) -> str | None:
        found = self.statuses()
        return found[0]["event"] if found else None

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, and the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes started by a test, killed after it."""
    started: list[Proc] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)
