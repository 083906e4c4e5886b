"""12. Privacy rules: secrets sent through a real `celflow run`, the library and `celflow events import` are
found nowhere: not in the database files, their WAL (copied while the writers run), the log, the answers,
or the exports (JSON, JSON Lines, CSV, Parquet), searched raw and inside every zstd frame."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import random
import re
import signal
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
import zstandard

from _reliability import Record, trials
from celflow import EventDatabase, EventPersistenceManager, ValidationError, load_config
from test_shutdown_and_access import CELFLOW, start_service

CONFIG = """
[persistence]
compression_threshold = 256
max_event_bytes = 65536
batch_timeout = 0.05

[logging]
level = "DEBUG"

[privacy]
redact_fields = ["password", "api_key", "authorization"]
redact_patterns = ['sk-[0-9a-f]{32}']

[[privacy.drop]]
event_type = "clipboard"

[[privacy.drop]]
field = "data.url"
pattern = '^https://bank\\.example/'
"""

#: Every secret and every marker is 32 hex digits that no other hex digit touches.
TOKEN = re.compile(rb"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
WORDS = ["file", "open", "save", "window", "focus", "editor", "terminal", "chrome", "process", "network", "tab"]
KEPT_KINDS = ("field", "text", "large_field", "large_text")
DROPPED_KINDS = ("drop_type", "drop_field")
KINDS = (*KEPT_KINDS, *DROPPED_KINDS, "invalid")


class Seeds:
    """The secrets seeded (hex -> where it went) and the markers of the events that must be stored."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.secrets: dict[str, str] = {}
        self.counts: dict[tuple[str, str], int] = {}
        self.markers: dict[str, tuple[str, str]] = {}  # hex -> (path, kind), for the events that must be stored

    def hex(self) -> str:
        return uuid.UUID(int=self.rng.getrandbits(128)).hex

    def big_text(self) -> str:
        """~3 KB of text that zstd compresses well and whose literals it Huffman-codes."""
        return " ".join(self.rng.choice(WORDS) for _ in range(500))

    def event(self, kind: str, path: str, *, stored: bool = True) -> dict[str, Any]:
        """One event carrying one fresh secret, placed as ``kind`` says (``stored``: in a batch that is not refused).

        Each path's events of one kind take its variants in turn.
        """
        i = self.counts[path, kind] = self.counts.get((path, kind), -1) + 1
        s = self.hex()
        self.secrets[s] = f"{path}/{kind}"
        secret = f"S{s}Z"
        e: dict[str, Any] = {"event_type": "note", "source": path, "data": {}}
        if kind in KEPT_KINDS:
            marker = self.hex()
            if stored:
                self.markers[marker] = (path, kind)
            e["data"]["marker"] = f"M{marker}Z"
        if kind == "field":
            e["data"] |= [
                {"user": "ann", "password": secret},
                {"form": {"fields": [{"name": "login", "PASSWORD": secret}]}},
                {"headers": {"Authorization": f"Bearer {secret}"}},
                {"api_key": {"value": [secret]}},
            ][i % 4]
        elif kind == "text":
            if i % 3 == 0:
                e["data"]["text"] = f"curl -H 'key: sk-{s}' https://api.invalid"
            elif i % 3 == 1:
                e["data"]["env"] = {f"sk-{s}": "the key is the name"}
            else:
                e["action"] = f"paste sk-{s}"
        elif kind == "large_field":
            e["data"] |= {"log": self.big_text(), "credentials": {"password": secret}}
        elif kind == "large_text":
            e["data"]["log"] = f"{self.big_text()} token sk-{s} {self.big_text()}"
        elif kind == "drop_type":
            e["event_type"] = "clipboard"
            e["data"]["text"] = secret if i % 2 else f"{self.big_text()} {secret}"
        elif kind == "drop_field":
            e["event_type"] = "browser_tab"
            e["data"] = {"url": f"https://bank.example/login?session={secret}", "title": "bank"}
        elif kind == "invalid":
            variant = i % 4
            if variant == 0:
                e["timestamp"] = secret
            elif variant == 1:
                e["note"] = secret  # an unknown top-level field
            elif variant == 2:
                e["event_type"] = "t" * 250 + secret  # too long a name
            else:
                e["data"] = {"password": secret, "text": secret, "blob": "x" * 70_000}  # over max_event_bytes
        elif kind == "invalid_native":  # what only Python can send: not JSON values
            e["data"] = {(secret,): 1} if i % 2 else {"tags": {secret}}
        return e

    def batch(self, path: str, n: int, kinds: tuple[str, ...] = KINDS[:-1]) -> list[dict[str, Any]]:
        events = [self.event(kind, path) for _ in range(n) for kind in kinds]
        self.rng.shuffle(events)
        return events


def zstd_frames(blob: bytes) -> Iterator[bytes]:
    """The decompressed content of every zstd frame found anywhere in ``blob``."""
    at = blob.find(ZSTD_MAGIC)
    while at >= 0:
        with contextlib.suppress(zstandard.ZstdError):  # magic bytes by chance, or a frame cut by a page end
            yield zstandard.ZstdDecompressor().decompressobj().decompress(blob[at : at + (1 << 20)])
        at = blob.find(ZSTD_MAGIC, at + 1)


def tokens(blob: bytes) -> tuple[set[str], set[str]]:
    """The tokens of ``blob`` read raw, and those found only inside its zstd frames."""
    raw = {m.decode() for m in TOKEN.findall(blob)}
    framed = {m.decode() for frame in zstd_frames(blob) for m in TOKEN.findall(frame)}
    return raw, framed - raw


def database_tokens(path: Path) -> set[str]:
    """The tokens of every value of every table of a database, read through SQLite (blobs decompressed)."""
    found: set[str] = set()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in con.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    blob = value if isinstance(value, bytes) else str(value).encode()
                    raw, framed = tokens(blob)
                    found |= raw | framed
    con.close()
    return found


def parquet_tokens(path: Path) -> set[str]:
    """The tokens of every cell of a Parquet file (its pages are compressed, so read it)."""
    table = pq.read_table(path)
    return {m.decode() for column in table.columns for v in column.to_pylist() for m in TOKEN.findall(str(v).encode())}


def copy_live(path: Path) -> dict[str, bytes]:
    """The bytes of a database and its -wal and -shm, read while their writer runs."""
    return {
        f"{path.name}{suffix} (live)": Path(f"{path}{suffix}").read_bytes()
        for suffix in ("", "-wal", "-shm")
        if Path(f"{path}{suffix}").exists()
    }


def test_no_seeded_secret_reaches_any_file(tmp_path: Path, record: Record, monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets in redacted fields, in text matching a pattern, in dropped and in invalid events are stored nowhere."""
    n = trials(4, 600)  # events of each kind per path (4: every variant of every kind once)
    seeds = Seeds(seed=12)
    toml = tmp_path / "celflow.toml"
    toml.write_text(CONFIG)
    data = tmp_path / "service"
    artefacts: dict[str, bytes] = {}  # name -> bytes, searched raw and through zstd frames
    databases: list[Path] = []  # also read through SQLite

    # -- 1. the service: HTTP ingest, answers, live copies, HTTP exports -------------------------
    monkeypatch.setenv("CELFLOW_CONFIG", str(toml))  # `celflow run` and the other commands read it
    service, url, token = start_service(data)
    try:
        answers: list[bytes] = []
        http_batches = [seeds.batch("http", 1) for _ in range(n)]
        invalid_http = [seeds.event("invalid", "http") for _ in range(4 * n)]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            kept_sent = dropped_sent = 0
            for number, batch in enumerate(http_batches):
                kept = sum(1 for e in batch if e["event_type"] not in ("clipboard", "browser_tab"))
                if number % 3 == 0:
                    r = c.post("/api/v1/events?wait=true", json=batch)
                    assert r.status_code == 201 and len(r.json()["ids"]) == kept, r.text
                elif number % 3 == 1:
                    lines = b"".join(json.dumps(e).encode() + b"\n" for e in batch)
                    r = c.post(
                        "/api/v1/events",
                        content=gzip.compress(lines),
                        headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
                    )
                    assert r.status_code == 202, r.text
                else:
                    for e in batch:
                        r = c.post("/api/v1/events", json=e)
                        assert r.status_code == 202, r.text
                        answers.append(r.content)
                    r = c.post("/api/v1/flush")
                if number % 3 != 2:
                    assert r.json()["accepted"] == kept, r.text  # dropped events are not counted as accepted
                answers.append(r.content)
                kept_sent += kept
                dropped_sent += len(batch) - kept
            for i in range(0, len(invalid_http), 4):  # each bad batch also carries a valid event with a secret
                companion = seeds.event("field", "http", stored=False)
                r = c.post("/api/v1/events", json=[*invalid_http[i : i + 4], companion])
                assert r.status_code == 422 and len(r.json()["error"]["errors"]) == 4, r.text
                answers.append(r.content)
            assert c.post("/api/v1/flush").status_code == 200
            artefacts |= copy_live(data / "events.db")
            stats = c.get("/api/v1/stats").json()
            assert stats["privacy_dropped"] == dropped_sent and stats["total_stored"] == kept_sent, stats
            for fmt in ("jsonl", "csv"):
                r = c.get("/api/v1/export", params={"format": fmt})
                assert r.status_code == 200
                artefacts[f"GET /api/v1/export?format={fmt}"] = r.content
            r = c.get("/api/v1/events", params={"limit": 10_000})
            assert len(r.json()["events"]) == kept_sent
            answers.append(r.content)
        artefacts["HTTP answers"] = b"\n".join(answers)
        assert artefacts.get("events.db-wal (live)"), "the WAL was empty while the service ran"
        service.send_signal(signal.SIGTERM)
        output, _ = service.communicate(timeout=60)
        assert service.returncode == 0, output
    finally:
        if service.poll() is None:  # a failed check above: do not leave the service running
            service.kill()
            service.communicate()
    artefacts["service console"] = output.encode()
    databases.append(data / "events.db")

    # -- 2. the library: the manager and EventDatabase, with the same settings --------------------
    config = load_config(toml, env={}, overrides={"persistence.database_path": str(tmp_path / "manager.db")})[0]
    messages: list[str] = []

    async def through_manager() -> None:
        async with EventPersistenceManager(config) as manager:
            batch = seeds.batch("manager", n)
            for e in batch[: len(batch) // 3]:
                manager.queue_event(e)
            manager.queue_events_batch(batch[len(batch) // 3 : 2 * len(batch) // 3])
            await manager.store_events(batch[2 * len(batch) // 3 :])
            for kind in ["invalid"] * 4 * n + ["invalid_native"] * 2 * n:
                try:
                    companion = seeds.event("field", "manager", stored=False)
                    manager.queue_events_batch([companion, seeds.event(kind, "manager")])
                except ValidationError as exc:
                    messages.append(str(exc))
            await manager.flush()
            artefacts.update(copy_live(tmp_path / "manager.db"))

    asyncio.run(through_manager())
    databases.append(tmp_path / "manager.db")
    limits = config.persistence
    with EventDatabase(
        tmp_path / "database.db",
        compression_threshold=limits.compression_threshold,
        max_event_bytes=limits.max_event_bytes,
        privacy=config.privacy,
    ) as db:
        batch = seeds.batch("database", n)
        for e in batch[: len(batch) // 2]:
            db.store_event(e)
        db.store_events_batch(batch[len(batch) // 2 :])
        for kind in ["invalid"] * 4 * n + ["invalid_native"] * 2 * n:
            try:
                db.store_event(seeds.event(kind, "database"))
            except ValidationError as exc:
                messages.append(str(exc))
        artefacts.update(copy_live(tmp_path / "database.db"))
    databases.append(tmp_path / "database.db")
    assert len(messages) == 12 * n
    artefacts["library error messages"] = "\n".join(messages).encode()

    # -- 3. `celflow events import` of a file full of secrets (the file itself is not searched) ----
    source = tmp_path / "input" / "secrets.jsonl"
    source.parent.mkdir()
    lines = [*seeds.batch("import", n), *(seeds.event("invalid", "import") for _ in range(4 * n))]
    source.write_text("".join(json.dumps(e) + "\n" for e in lines))
    done = subprocess.run(
        [
            CELFLOW,
            "--config",
            str(toml),
            "events",
            "import",
            str(source),
            "--db",
            str(tmp_path / "import.db"),
            "--json",
        ],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["rejected"], report["privacy_dropped"]) == (4 * n, 2 * n), report
    artefacts["import report"] = done.stdout + done.stderr
    databases.append(tmp_path / "import.db")

    # -- 4. exports of the service's database, and the files left in the data folders -------------
    for fmt in ("json", "jsonl", "csv", "parquet"):
        out = tmp_path / "exports" / f"events.{fmt}"
        out.parent.mkdir(exist_ok=True)
        done = subprocess.run(
            [CELFLOW, "events", "export", str(out), "--db", str(data / "events.db")], capture_output=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
    for folder in (data, tmp_path / "exports", tmp_path):
        for file in folder.iterdir():
            if file.is_file() and file.name != "celflow.toml":
                artefacts[str(file.relative_to(tmp_path))] = file.read_bytes()
    assert any(name.startswith("service/celflow.log") for name in artefacts)

    # -- the search ---------------------------------------------------------------------------------
    found: dict[str, set[str]] = {}  # token -> where
    framed_only: set[str] = set()
    for name, blob in artefacts.items():
        raw, framed = tokens(blob)
        framed_only |= framed
        for token_ in raw | framed:
            found.setdefault(token_, set()).add(name)
    for database in databases:
        for token_ in database_tokens(database):
            found.setdefault(token_, set()).add(f"{database.name} (read through SQLite)")
    exported = parquet_tokens(tmp_path / "exports" / "events.parquet")
    for token_ in exported:
        found.setdefault(token_, set()).add("exports/events.parquet (read through pyarrow)")

    # The search sees what is stored: every stored event's marker is found in its database, and the
    # compressed ones are found inside zstd frames only (a plain search of the file would miss them).
    homes = {"http": "events.db", "manager": "manager.db", "database": "database.db", "import": "import.db"}
    missing = [
        (path, kind)
        for m, (path, kind) in seeds.markers.items()
        if f"{homes[path]} (read through SQLite)" not in found.get(m, ())
    ]
    assert not missing, f"{len(missing)} stored events' markers not found, e.g. {missing[:3]}: the search is blind"
    large = {m for m, (_, kind) in seeds.markers.items() if kind.startswith("large")}
    assert large & framed_only, "no large event was found compressed: the zstd search was not exercised"
    http = {m for m, (path, _) in seeds.markers.items() if path == "http"}
    for export in ("json", "jsonl", "csv", "parquet (read through pyarrow)"):
        name = f"exports/events.{export}"
        assert all(name in found[m] for m in http), f"{name} lacks stored events: the search is blind"
    leaked = {s: sorted(found[s]) for s in seeds.secrets if s in found}
    record(trials=len(seeds.secrets), failures=len(leaked), worst_loss=f"{len(leaked)} secrets found")
    assert not leaked, f"{len(leaked)} of {len(seeds.secrets)} secrets found: {dict(list(leaked.items())[:5])}"
