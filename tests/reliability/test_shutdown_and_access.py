"""6. Shutdown: SIGTERM under HTTP load commits every accepted event and exits 0.
11. Files and access: everything CelFlow writes is 0600 in a 0700 folder, even under umask 000."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from _reliability import Record, trials

CELFLOW = str(Path(sys.executable).parent / "celflow")


def start_service(data: Path, *extra: str, umask: int | None = None) -> tuple[subprocess.Popen[str], str, str]:
    """`celflow run` on a free port; its URL and token once it serves."""
    service = subprocess.Popen(
        [CELFLOW, "run", "--db", str(data / "events.db"), "--no-fs", "--no-processes", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )
    deadline = time.monotonic() + 30
    while not (data / "service.json").exists():
        assert service.poll() is None and time.monotonic() < deadline, "the service did not start"
        time.sleep(0.05)
    url = json.loads((data / "service.json").read_text())["url"]
    return service, url, (data / "token").read_text().strip()


def test_sigterm_under_http_load_commits_every_accepted_event(tmp_path: Path, record: Record) -> None:
    rounds = trials(2, 20)
    failures = 0
    for round_no in range(rounds):
        data = tmp_path / f"round-{round_no}"
        service, url, token = start_service(data)
        accepted = [0] * 4
        stop = threading.Event()

        def produce(
            k: int, url: str = url, token: str = token, stop: threading.Event = stop, accepted: list[int] = accepted
        ) -> None:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
                n = 0
                while not stop.is_set():
                    batch = [
                        {"event_type": "load", "source": f"p{k}", "data": {"k": k, "n": n + i}} for i in range(100)
                    ]
                    try:
                        r = c.post("/api/v1/events", json=batch)
                    except httpx.TransportError:
                        return  # the service stopped accepting
                    if r.status_code == 202:
                        accepted[k] += 100
                        n += 100
                    elif r.status_code != 503:
                        return

        producers = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
        for p in producers:
            p.start()
        time.sleep(0.5 + 0.1 * (round_no % 5))
        service.send_signal(signal.SIGTERM)
        output, _ = service.communicate(timeout=60)
        stop.set()
        for p in producers:
            p.join()
        with subprocess.Popen(
            [CELFLOW, "events", "stats", "--db", str(data / "events.db"), "--json"], stdout=subprocess.PIPE, text=True
        ) as stats:
            stored = json.loads(stats.communicate()[0])["events_by_source"]
        lost = sum(accepted) - sum(stored.values())
        if service.returncode != 0 or lost:
            failures += 1
        assert service.returncode == 0, output
        assert all(stored.get(f"p{k}", 0) == accepted[k] for k in range(4)), (accepted, stored)
    record(trials=rounds, failures=failures, worst_loss="0 accepted")


def test_files_are_private_under_a_permissive_umask(tmp_path: Path, record: Record) -> None:
    data = tmp_path / "data"
    service, url, token = start_service(data, umask=0)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.post("/api/v1/events?wait=true", json={"event_type": "t", "source": "s"}).status_code == 201
    service.send_signal(signal.SIGTERM)
    service.communicate(timeout=60)
    export = subprocess.run(
        [CELFLOW, "events", "export", str(data / "out.csv"), "--db", str(data / "events.db")],
        preexec_fn=lambda: os.umask(0),
        capture_output=True,
        timeout=60,
    )
    assert export.returncode == 0
    backup = subprocess.run(
        [CELFLOW, "db", "backup", str(data / "copy.db"), "--db", str(data / "events.db")],
        preexec_fn=lambda: os.umask(0),
        capture_output=True,
        timeout=60,
    )
    assert backup.returncode == 0
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = sorted(p for p in data.iterdir() if p.is_file())
    names = {p.name for p in files}
    assert {"events.db", "token", "celflow.log", "out.csv", "copy.db"} <= names, names
    loose = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files if stat.S_IMODE(p.stat().st_mode) != 0o600}
    record(trials=len(files), failures=len(loose))
    assert not loose, loose
