"""5. Overload: producers offered 10x the sustainable rate (calibrated in the same run) for a minute
(a few seconds in CI), for each overflow policy and through the HTTP ingest: every produced event
is stored, dropped or refused, exactly, and memory stays under a bound derived from max_queue_bytes.

Each overload runs in a process of its own, so its RssAnon (anonymous resident memory; the 256 MiB
memory map of the database is file-backed and not in it) is the queue's and the writer's alone.
Producers aim at 10x; they share the writer's process (and GIL), so on a small machine they reach
what the CPU allows, which `make torture`'s table reports. No check depends on that ratio, only on
the queue having been full.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from _reliability import HELPERS, Record, load_helper, trials

CELFLOW = str(Path(sys.executable).parent / "celflow")
MiB = 1024 * 1024


overload = load_helper("load_overload")

SECONDS = trials(4, 60)
CALIBRATION = trials(2, 5)
EVENT_BYTES = 16_000  # with max_queue_size's 20,000 events, a count bound alone would let ~320 MB wait
MAX_QUEUE_BYTES = 16 * MiB
# What may be resident besides the baseline: the queue (max_queue_bytes), the batch the writer took
# from it (at most a full queue) and SQLite's copy of the rows of the statement it binds (at most
# that batch), plus slack for the allocator and the producers' events in hand.
MEMORY_BOUND = 3 * MAX_QUEUE_BYTES + 16 * MiB


def child_env(**settings: Any) -> dict[str, str]:
    """The environment of a child: no CelFlow settings from outside, these ones as CELFLOW_<KEY>."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELFLOW_")}
    env.update({f"CELFLOW_{key.upper()}": str(value) for key, value in settings.items()})
    return env


def rss_anon_kib(pid: int) -> int:
    """RssAnon of process ``pid`` in KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def stored_by_source(db_path: Path) -> dict[str, int]:
    """Rows per source, read from the file itself with plain sqlite3 (read-only), after the writer stopped."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT source, count(*) FROM events GROUP BY source").fetchall())
    finally:
        conn.close()


def remove_database(db_path: Path) -> None:
    """A full-count overload writes gigabytes: drop the file once it is counted."""
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)


@pytest.mark.timeout(SECONDS * 3 + 120)
@pytest.mark.parametrize("policy", ["drop", "block", "raise"])
def test_overload_stores_or_counts_every_event_within_the_memory_bound(
    tmp_path: Path, policy: str, record: Record
) -> None:
    """At 10x the sustainable rate every accepted event is stored, every other counted; RssAnon stays bounded."""
    db_path = tmp_path / "events.db"
    args = [db_path, policy, SECONDS, CALIBRATION, EVENT_BYTES, MAX_QUEUE_BYTES]
    done = subprocess.run(
        [sys.executable, overload.__file__, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=child_env(),
        timeout=SECONDS * 3 + 60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    stored = stored_by_source(db_path)
    remove_database(db_path)
    producers = result["producers"]
    offered = sum(p["offered"] for p in producers)
    accepted = sum(p["accepted"] for p in producers)
    dropped = sum(p["dropped"] for p in producers)
    refused = sum(p["refused"] for p in producers)
    grown = (result["peak_kib"] - result["baseline_kib"]) * 1024
    problems = [f"{p['source']}: {p['error']}" for p in producers if p["error"]]
    problems += [
        f"{p['source']}: {p['accepted']} accepted, {stored.get(p['source'], 0)} stored"
        for p in producers
        if stored.get(p["source"], 0) != p["accepted"]
    ]
    if stored.get("calibration", 0) != result["calibration_events"]:
        problems.append(f"calibration: {result['calibration_events']} acknowledged, {stored.get('calibration')} stored")
    if result["stats"]["dropped"] != dropped:
        problems.append(f"get_stats() counts {result['stats']['dropped']} dropped, the producers saw {dropped}")
    if grown > MEMORY_BOUND:
        problems.append(f"RssAnon grew by {grown / MiB:.1f} MiB, over the bound of {MEMORY_BOUND / MiB:.0f} MiB")
    ratio = result["offered_rate"] / result["sustainable_rate"]
    lost = sum(max(0, p["accepted"] - stored.get(p["source"], 0)) for p in producers)
    record(
        trials=1,
        failures=len(problems),
        worst_loss=(
            f"{lost} of {accepted:,} accepted lost; offered {ratio:.1f}x of {result['sustainable_rate']:,.0f}/s; "
            f"RssAnon +{grown / MiB:.0f} MiB (bound {MEMORY_BOUND / MiB:.0f})"
        ),
    )
    assert not problems, problems
    assert offered == sum(stored.get(p["source"], 0) for p in producers) + dropped + refused
    assert result["stats"]["lost"] == 0 and result["stats"]["errors"] == 0 and result["stats"]["duplicates"] == 0
    assert result["stats"]["total_stored"] == result["calibration_events"] + accepted
    # the overload was real: the byte bound, not the 20,000-event count bound, held the queue
    assert result["peak_queue_events"] < result["max_queue_size"]
    assert 0.9 * MAX_QUEUE_BYTES <= result["peak_queue_bytes"] <= MAX_QUEUE_BYTES
    if policy == "drop":
        assert dropped > 0 and refused == 0
    elif policy == "raise":
        assert refused > 0 and dropped == 0
    else:  # block: producers wait for room; a refusal comes only once queue_timeout has passed
        assert dropped == 0
        assert sum(p["refused_early"] for p in producers) == 0
        assert max(p["longest_call"] for p in producers) >= overload.QUEUE_TIMEOUT


HTTP_CLIENTS = 4
HTTP_BATCH = 20  # events per POST: ~320 KB bodies
HTTP_QUEUE_BYTES = MiB  # the smallest queue: a few bodies fill it, so the service must refuse some


def start_service(data: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str, str]:
    """`celflow run` on a free port with these settings; its URL and token once it serves."""
    data.mkdir()
    with open(data.parent / "service.out", "w") as log:  # the child writes to its own copy of the descriptor
        service = subprocess.Popen(
            [CELFLOW, "run", "--db", str(data / "events.db"), "--no-fs", "--no-processes", "--port", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=data.parent,
        )
    deadline = time.monotonic() + 30
    while not (data / "service.json").exists():
        assert service.poll() is None and time.monotonic() < deadline, (data.parent / "service.out").read_text()
        time.sleep(0.05)
    url = json.loads((data / "service.json").read_text())["url"]
    return service, url, (data / "token").read_text().strip()


class Client(threading.Thread):
    """Posts batches of events at ``rate`` events per second until ``until``; counts 202s and 503s."""

    def __init__(self, url: str, token: str, source: str, rate: float, until: float) -> None:
        super().__init__(name=source, daemon=True)
        self.url, self.token, self.source, self.rate, self.until = url, token, source, rate, until
        self.offered = self.accepted = self.refused = 0
        self.unexpected: list[str] = []

    def run(self) -> None:
        pad = "x" * EVENT_BYTES
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        started = time.monotonic()
        n = 0
        with httpx.Client(base_url=self.url, headers=headers, timeout=60) as c:
            while time.monotonic() < self.until:
                wait = started + n / self.rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                batch = [
                    {"event_type": "http", "source": self.source, "data": {"n": n + i, "pad": pad}}
                    for i in range(HTTP_BATCH)
                ]
                n += HTTP_BATCH
                self.offered += HTTP_BATCH
                try:
                    r = c.post("/api/v1/events", content=orjson.dumps(batch))
                except httpx.HTTPError as exc:
                    self.unexpected.append(f"{type(exc).__name__}: {exc}")
                    return
                if r.status_code == 202 and r.json() == {"accepted": HTTP_BATCH}:
                    self.accepted += HTTP_BATCH
                elif r.status_code == 503 and r.headers.get("Retry-After") and "max_queue_bytes" in r.text:
                    self.refused += HTTP_BATCH
                else:
                    self.unexpected.append(f"{r.status_code} {r.headers.get('Retry-After')!r} {r.text[:200]}")


def run_clients(url: str, token: str, prefix: str, rate: float, seconds: float) -> list[Client]:
    """HTTP_CLIENTS clients posting ``rate`` events per second in all for ``seconds``, then done."""
    until = time.monotonic() + seconds
    clients = [Client(url, token, f"{prefix}-{k}", rate / HTTP_CLIENTS, until) for k in range(HTTP_CLIENTS)]
    for c in clients:
        c.start()
    return clients


@pytest.mark.timeout(SECONDS * 3 + 120)
def test_http_ingest_under_overload_answers_503_and_stores_every_202(tmp_path: Path, record: Record) -> None:
    """`celflow run` at 10x its sustainable rate answers 202 (all stored) or 503 with Retry-After, in bounded memory."""
    data = tmp_path / "data"
    env = child_env(
        max_queue_bytes=HTTP_QUEUE_BYTES,
        compression_threshold=16 * MiB,
        batch_timeout=0.05,
        stats_interval=0,
        logging_file="",
    )
    service, url, token = start_service(data, env)
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as control:
            # Calibration: as fast as the clients can, then a flush; what was stored per second is sustainable.
            started = time.monotonic()
            calibration = run_clients(url, token, "calibration", 1e9, CALIBRATION)
            for c in calibration:
                c.join()
            assert control.post("/api/v1/flush").status_code == 200
            sustainable = sum(c.accepted for c in calibration) / (time.monotonic() - started)
            baseline_kib = peak_kib = rss_anon_kib(service.pid)
            started = time.monotonic()
            clients = run_clients(url, token, "client", 10 * sustainable, SECONDS)
            while any(c.is_alive() for c in clients):
                peak_kib = max(peak_kib, rss_anon_kib(service.pid))
                time.sleep(0.01)
            elapsed = time.monotonic() - started
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=120)
        except subprocess.TimeoutExpired:
            service.kill()  # nothing outlives the test
            service.wait(timeout=30)
            raise
    output = (tmp_path / "service.out").read_text()
    stored = stored_by_source(data / "events.db")
    remove_database(data / "events.db")
    offered = sum(c.offered for c in clients)
    accepted = sum(c.accepted for c in clients)
    refused = sum(c.refused for c in clients)
    grown = (peak_kib - baseline_kib) * 1024
    # The queue and the batch taken from it, as above; the bodies in flight, each held as bytes, as
    # parsed events and as rows; and slack for the allocator arenas of the parsing threads.
    bound = 3 * HTTP_QUEUE_BYTES + 3 * HTTP_CLIENTS * HTTP_BATCH * EVENT_BYTES + 32 * MiB
    everyone = [*calibration, *clients]
    problems = [f"{c.source}: {u}" for c in everyone for u in c.unexpected[:3]]
    problems += [
        f"{c.source}: {c.accepted} accepted, {stored.get(c.source, 0)} stored"
        for c in everyone
        if stored.get(c.source, 0) != c.accepted
    ]
    if grown > bound:
        problems.append(f"the service's RssAnon grew by {grown / MiB:.1f} MiB, over its bound of {bound / MiB:.0f} MiB")
    ratio = offered / elapsed / sustainable
    lost = sum(max(0, c.accepted - stored.get(c.source, 0)) for c in everyone)
    record(
        trials=1,
        failures=len(problems) + (refused == 0),
        worst_loss=(
            f"{lost} of {accepted:,} accepted (202) lost, {refused:,} refused (503); offered {ratio:.1f}x of "
            f"{sustainable:,.0f}/s; RssAnon +{grown / MiB:.0f} MiB (bound {bound / MiB:.0f})"
        ),
    )
    assert service.returncode == 0, output
    assert not problems, problems
    assert offered == sum(stored.get(c.source, 0) for c in clients) + refused
    assert refused > 0, "the queue never filled: the service was not overloaded"


QUEUE_MEMORY_BYTES = 8 * MiB


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "kind",
    [
        "compressed",
        "text",
    ],
)
def test_a_full_queue_holds_about_max_queue_bytes_of_memory(tmp_path: Path, kind: str, record: Record) -> None:
    """A queue full to max_queue_bytes grows RssAnon by at most twice that plus 8 MiB; all of it is stored at stop."""
    helper = HELPERS / "load_queue_memory.py"
    done = subprocess.run(
        [sys.executable, str(helper), str(tmp_path / "events.db"), str(QUEUE_MEMORY_BYTES), kind],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=child_env(),
        timeout=100,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    grown = (result["full_kib"] - result["baseline_kib"]) * 1024
    bound = 2 * QUEUE_MEMORY_BYTES + 8 * MiB
    record(
        trials=1,
        failures=int(grown > bound),
        worst_loss=f"{result['queued_events']:,} queued: RssAnon +{grown / MiB:.0f} MiB (bound {bound / MiB:.0f})",
    )
    # the byte bound, not the 20,000-event count bound, filled the queue
    assert result["queued_events"] < 20_000
    assert QUEUE_MEMORY_BYTES - 64 * 1024 <= result["queued_bytes"] <= QUEUE_MEMORY_BYTES
    assert result["stored"] == result["queued_events"]
    assert grown <= bound, f"{result['queued_events']:,} queued events hold {grown / MiB:.0f} MiB"
