"""The HTTP API against a real `celflow run`: ingest throughput and live-stream delay.

    .venv/bin/python bench/http_api.py                 # 200,000 events, 1 and 4 clients
    .venv/bin/python bench/http_api.py --events 50000 --clients 1 2 8

Ingest: pre-encoded JSON bodies of 1,000 events (the workload's mix) posted with ``202``
answers, timed until the service reports every event committed; the same events through the
in-process manager (``queue_events_batch``) are the reference. Stream delay: one WebSocket
subscriber, one producer posting single events at a steady rate; the delay is from just before
the POST to the moment the subscriber has the event (same process, same clock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).parent))
from _util import DistinctCounter
from celflow import create_event_persistence
from workload import generate

CELFLOW = str(Path(sys.executable).parent / "celflow")
BATCH = 1000


class RunningService:
    """`celflow run` in a subprocess on a free port, with its own data folder."""

    def __init__(self, folder: str, **env: str) -> None:
        self.data = Path(folder) / "data"
        self.process = subprocess.Popen(
            [CELFLOW, "run", "--db", str(self.data / "events.db"), "--no-fs", "--no-processes", "--port", "0"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not (self.data / "service.json").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("celflow run did not start")
            time.sleep(0.05)
        self.url = json.loads((self.data / "service.json").read_text())["url"]
        self.headers = {"Authorization": f"Bearer {(self.data / 'token').read_text().strip()}"}

    def stored(self, client: httpx.Client) -> int:
        return int(client.get("/api/v1/stats").json()["total_stored"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def bodies(events: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(events[i : i + BATCH]) for i in range(0, len(events), BATCH)]


def http_ingest(events: list[dict[str, Any]], distinct: int, clients: int) -> float:
    """Events per second from the first POST until the service reports all of them committed."""
    payloads = bodies(events)
    with tempfile.TemporaryDirectory() as folder:
        service = RunningService(folder, CELFLOW_BATCH_SIZE="1000", CELFLOW_MAX_QUEUE_SIZE="100000")
        try:
            shares = [payloads[k::clients] for k in range(clients)]
            errors: list[str] = []

            def post_all(share: list[bytes]) -> None:
                with httpx.Client(base_url=service.url, headers=service.headers, timeout=60) as c:
                    for body in share:
                        while True:
                            r = c.post("/api/v1/events", content=body, headers={"Content-Type": "application/json"})
                            if r.status_code == 503:  # the queue is full: back off as a client should
                                time.sleep(0.01)
                                continue
                            if r.status_code != 202:
                                errors.append(r.text)
                            break

            threads = [threading.Thread(target=post_all, args=(share,)) for share in shares]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            with httpx.Client(base_url=service.url, headers=service.headers) as c:
                while service.stored(c) < distinct:
                    time.sleep(0.005)
            elapsed = time.perf_counter() - started
            if errors:
                raise SystemExit(f"CORRECTNESS FAILURE: {errors[0]}")
            return len(events) / elapsed
        finally:
            service.stop()


def in_process(events: list[dict[str, Any]]) -> float:
    async def run(path: str) -> float:
        manager = create_event_persistence({"database_path": path, "batch_size": BATCH})
        await manager.start()
        started = time.perf_counter()
        for i in range(0, len(events), BATCH):
            manager.queue_events_batch(events[i : i + BATCH])
            await asyncio.sleep(0)
        await manager.flush()
        elapsed = time.perf_counter() - started
        await manager.stop()
        return len(events) / elapsed

    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(run(os.path.join(folder, "events.db")))


def stream_delay(n: int, rate: float, batch_timeout: str) -> list[float]:
    """Seconds from POST to delivery over the WebSocket, for ``n`` single events at ``rate``/s."""
    with tempfile.TemporaryDirectory() as folder:
        service = RunningService(folder, CELFLOW_BATCH_TIMEOUT=batch_timeout)
        sent: dict[int, float] = {}
        delays: list[float] = []
        ready = threading.Event()

        def subscribe() -> None:
            url = service.url.replace("http://", "ws://") + "/api/v1/stream"
            with connect(url, additional_headers=service.headers) as ws:
                ready.set()
                while len(delays) < n:
                    message = json.loads(ws.recv(timeout=60))
                    now = time.perf_counter()
                    for event in message.get("events", []):
                        delays.append(now - sent[event["data"]["seq"]])

        reader = threading.Thread(target=subscribe)
        reader.start()
        ready.wait(30)
        try:
            with httpx.Client(base_url=service.url, headers=service.headers) as c:
                next_at = time.perf_counter()
                for seq in range(n):
                    body = orjson.dumps({"event_type": "bench", "source": "http_api", "data": {"seq": seq}})
                    sent[seq] = time.perf_counter()
                    c.post("/api/v1/events", content=body, headers={"Content-Type": "application/json"})
                    next_at += 1 / rate
                    time.sleep(max(0.0, next_at - time.perf_counter()))
            reader.join(120)
        finally:
            service.stop()
        return delays


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stream-events", type=int, default=2000)
    parser.add_argument("--stream-rate", type=float, default=200.0, help="events per second")
    args = parser.parse_args()

    events = generate(args.events, seed=42)
    counter = DistinctCounter()
    counter.add(events)
    distinct = counter.distinct
    print(f"{args.events:,} events ({distinct:,} distinct), batches of {BATCH}, median of {args.repeats}")
    rows = []
    reference = statistics.median(in_process(events) for _ in range(args.repeats))
    rows.append(("in-process queue_events_batch(1000) (reference)", reference, 1.0))
    for clients in args.clients:
        rate = statistics.median(http_ingest(events, distinct, clients) for _ in range(args.repeats))
        rows.append((f"HTTP POST /api/v1/events, {clients} client(s)", rate, rate / reference))
    print(f"{'figure':<52} {'events/s':>10} {'vs in-process':>14}")
    for name, rate, ratio in rows:
        print(f"{name:<52} {rate:>10,.0f} {ratio:>13.2f}x")
    for timeout in ("0.05", "5.0"):
        delays = stream_delay(args.stream_events, args.stream_rate, timeout)
        print(
            f"live-stream delay, POST -> WebSocket, {args.stream_rate:g} events/s, batch_timeout {timeout} s: "
            f"median {1000 * statistics.median(delays):.1f} ms, p99 {1000 * percentile(delays, 0.99):.1f} ms "
            f"(n={len(delays)})"
        )


if __name__ == "__main__":
    main()
