"""8. Corrupt files: byte flips and truncation in the database and its WAL are detected at start
with a message naming the recovery command, the damaged files are left byte for byte as they
were, a second start refuses the same way (no crash loop), and recovery saves what is readable."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from _reliability import Record, trials
from celflow import CorruptDatabaseError, NotACelflowDatabaseError, create_event_persistence, decode_data
from celflow._sqlite._wal import WalReport, inspect_wal
from test_durability import Procs
from test_durability import _acked as acked
from test_durability import _wait_for_acks as wait_for_acks

CELFLOW = str(Path(sys.executable).parent / "celflow")
ONE_PAGE = 64  # more events than one 4 KiB page of this data holds
KINDS = ("db-flip", "db-truncate", "wal-flip", "wal-truncate")


@dataclass
class Pristine:
    """A database left by a SIGKILLed writer: a main file and a WAL holding committed frames."""

    db: bytes
    wal: bytes
    acked: set[int]
    stored: set[int]  # every event number in the file (acknowledged or not yet)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    """A real writer process ingests, then is SIGKILLed while its WAL holds committed transactions."""
    folder = tmp_path_factory.mktemp("pristine")
    procs = Procs(folder)
    db, ack_log = folder / "events.db", folder / "acks.log"
    try:
        proc = procs.spawn("ingest", db, ack_log, 0)
        wait_for_acks(procs, proc, ack_log)
        deadline = time.monotonic() + 30
        while len(acked(ack_log)) < 20_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        procs.cleanup()
    wal = (folder / "events.db-wal").read_bytes()
    assert inspect_wal(folder / "events.db-wal").valid_frames > 10, "the writer left no committed WAL frames"
    copy = folder / "copy"
    copy.mkdir()
    shutil.copyfile(db, copy / "events.db")
    shutil.copyfile(folder / "events.db-wal", copy / "events.db-wal")
    return Pristine(db.read_bytes(), wal, acked(ack_log), set(_stored_numbers(copy / "events.db")))


def _digest(folder: Path) -> dict[str, str]:
    """Content hashes of the database file and its WAL."""
    return {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in ("events.db", "events.db-wal")
        if (folder / name).exists()
    }


def _damage(folder: Path, pristine: Pristine, kind: str, rng: random.Random) -> str:
    """Write a copy of the pristine files into ``folder`` with one kind of damage; say what was done."""
    db, wal = bytearray(pristine.db), bytearray(pristine.wal)
    target = db if kind.startswith("db") else wal
    if kind.endswith("flip"):
        flips = rng.choice((1, 1, 1, 4, 32))
        offsets = sorted(rng.randrange(len(target)) for _ in range(flips))
        for at in offsets:
            target[at] ^= 1 << rng.randrange(8)
        what = f"{kind} x{flips} at {offsets}"
    else:
        cut = rng.randrange(len(target))
        del target[cut:]
        what = f"{kind} to {cut} of {len(db if kind.startswith('db') else pristine.wal)} bytes"
    (folder / "events.db").write_bytes(db)
    (folder / "events.db-wal").write_bytes(wal)
    return what


def _hits_last_transaction(wal: bytes, offsets: list[int]) -> bool:
    """Whether a damaged offset lies in the frames of the WAL's last committed transaction."""
    frame = 24 + int.from_bytes(wal[8:12], "big")
    commits = [
        i
        for i in range((len(wal) - 32) // frame)
        if int.from_bytes(wal[32 + i * frame + 4 : 32 + i * frame + 8], "big")
    ]
    valid = inspect_wal_bytes_report(wal).valid_frames
    commits = [c for c in commits if c < valid]
    first = commits[-2] + 1 if len(commits) > 1 else 0
    return any(32 + first * frame <= at < 32 + valid * frame for at in offsets)


def offsets_of(what: str) -> list[int]:
    """The offsets a damage description lists."""
    return [int(x) for x in what.split("at [", 1)[1].rstrip("]").split(", ")] if "at [" in what else []


async def _start_stop(db: Path, durability: str = "full") -> None:
    manager = create_event_persistence({"database_path": str(db), "stats_interval": 0, "durability": durability})
    await manager.start()
    await manager.stop()


def _stored_numbers(db: Path) -> collections.Counter[int]:
    """How often each worker event number is stored (compressed rows decoded too); -1 counts rows
    whose data no longer decodes (damage inside a row that no structural check sees)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.text_factory = bytes  # damaged text may not be UTF-8
    try:
        rows = conn.execute("SELECT data_json, data_compressed FROM events").fetchall()
    finally:
        conn.close()
    counts: collections.Counter[int] = collections.Counter()
    for text, blob in rows:
        try:
            counts[int(decode_data(text, blob)["n"])] += 1
        except (CorruptDatabaseError, KeyError, TypeError, ValueError):
            counts[-1] += 1
    return counts


def _integrity(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check(5)").fetchall())
    finally:
        conn.close()


def test_damaged_files_are_refused_at_start_and_left_alone(tmp_path: Path, pristine: Pristine, record: Record) -> None:
    """Every kind of damage either starts cleanly or is refused naming `celflow db recover`, untouched."""
    rounds = trials(16, 400)
    rng = random.Random(int(os.environ.get("CELFLOW_TORTURE_SEED", "8")))
    outcomes: collections.Counter[str] = collections.Counter()
    failures = 0
    for round_no in range(rounds):
        kind = KINDS[round_no % len(KINDS)]
        folder = tmp_path / f"round-{round_no}"
        folder.mkdir()
        what = _damage(folder, pristine, kind, rng)
        db = folder / "events.db"
        before = _digest(folder)
        try:
            asyncio.run(_start_stop(db))
        except CorruptDatabaseError as exc:
            outcomes[f"{kind}: refused"] += 1
            problems = []
            if f"celflow db recover --db {db}" not in str(exc):
                problems.append(f"the message does not name the recovery command: {exc}")
            if _digest(folder) != before:
                problems.append("the damaged files were changed")
            with pytest.raises(CorruptDatabaseError):  # a second start: the same refusal, still untouched
                asyncio.run(_start_stop(db))
            if _digest(folder) != before:
                problems.append("the damaged files were changed by a second start")
            if problems:
                failures += 1
            assert not problems, f"round {round_no} ({what}): {problems}"
            shutil.rmtree(folder)
            continue
        except NotACelflowDatabaseError as exc:  # the header itself was hit: refused, named, untouched
            outcomes[f"{kind}: not a database"] += 1
            assert str(db) in str(exc) and _digest(folder) == before, f"round {round_no} ({what})"
            shutil.rmtree(folder)
            continue
        integrity = _integrity(db)
        counts = _stored_numbers(db)
        # damage inside a row's data, which no structural check sees: counted, reads raise CorruptDatabaseError
        unseen = kind == "db-flip" and (
            counts[-1] or counts.keys() - pristine.stored - {-1} or any(c > 1 for c in counts.values())
        )
        outcomes[f"{kind}: started" + (" (row data hit)" if unseen else "")] += 1
        duplicated = [n for n, c in counts.items() if c > 1]
        problems = []
        if integrity != "[('ok',)]":
            problems.append(f"started on a damaged file: {integrity}")
        if duplicated and not unseen:
            problems.append(f"{len(duplicated)} events twice")
        if kind == "wal-flip":  # every committed WAL frame is checksummed: nothing may go missing silently
            missing = pristine.acked - counts.keys()
            if missing and _hits_last_transaction(pristine.wal, offsets_of(what)):
                # a flip in the last transaction looks like a torn write of it, which a crash leaves too
                outcomes["wal-flip: last transaction hit, lost as after a crash"] += 1
            elif missing:
                problems.append(f"{len(missing)} acknowledged events silently gone")
        if problems:
            failures += 1
        assert not problems, f"round {round_no} ({what}): {problems}"
        shutil.rmtree(folder)
    record(trials=rounds, failures=failures, worst_loss=", ".join(f"{k} {n}" for k, n in sorted(outcomes.items())))
    assert outcomes["wal-flip: refused"] > 0, outcomes  # the WAL check did fire on this data


def test_a_flipped_byte_in_the_wal_is_recovered_with_the_transactions_after_it(
    tmp_path: Path, pristine: Pristine, record: Record
) -> None:
    """`celflow db recover` reads past a damaged WAL frame: only the events on the damaged page can be lost.

    SQLite alone would drop every transaction committed after the frame (thousands of events here).
    """
    rounds = trials(3, 50)
    rng = random.Random(int(os.environ.get("CELFLOW_TORTURE_SEED", "8")))
    committed = inspect_wal_bytes(tmp_path, pristine.wal)
    frame = 24 + int.from_bytes(pristine.wal[8:12], "big")  # frame header + page size
    worst = 0
    failures = 0
    for round_no in range(rounds):
        folder = tmp_path / f"round-{round_no}"
        folder.mkdir()
        (folder / "events.db").write_bytes(pristine.db)
        wal = bytearray(pristine.wal)
        at = 32 + rng.randrange(max(1, committed // 2)) * frame + 24 + rng.randrange(frame - 24)
        wal[at] ^= 0x10
        (folder / "events.db-wal").write_bytes(wal)
        db = folder / "events.db"
        with pytest.raises(CorruptDatabaseError):
            asyncio.run(_start_stop(db))
        run = subprocess.run(
            [CELFLOW, "db", "recover", "--db", str(db)], capture_output=True, text=True, timeout=120, env=_env()
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert _integrity(db) == "[('ok',)]"
        counts = _stored_numbers(db)
        missing = pristine.acked - counts.keys()
        worst = max(worst, len(missing))
        failures += len(missing) > ONE_PAGE
        assert len(missing) <= ONE_PAGE, f"round {round_no}: flip at {at}: {len(missing)} acknowledged events lost"
        asyncio.run(_start_stop(db))  # the recovered file is accepted
        assert list(folder.glob("events.db.damaged-*")), "the damaged file was not kept aside"
    record(trials=rounds, failures=failures, worst_loss=f"{worst} acknowledged (on the damaged page)")


def inspect_wal_bytes_report(wal: bytes) -> WalReport:
    """The WAL report of the bytes ``wal``."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "probe-wal"
        path.write_bytes(wal)
        return inspect_wal(path)


def inspect_wal_bytes(tmp_path: Path, wal: bytes) -> int:
    """How many committed frames the pristine WAL holds."""
    path = tmp_path / "probe-wal"
    path.write_bytes(wal)
    return inspect_wal(path).valid_frames


def test_celflow_run_refuses_a_damaged_wal_with_the_recovery_command(tmp_path: Path, pristine: Pristine) -> None:
    """`celflow run` exits 1 with one line naming `celflow db recover`, twice, and changes nothing."""
    (tmp_path / "events.db").write_bytes(pristine.db)
    wal = bytearray(pristine.wal)
    wal[32 + 24 + 100] ^= 0x01  # the first frame's page data
    (tmp_path / "events.db-wal").write_bytes(wal)
    before = _digest(tmp_path)
    for _ in range(2):
        run = subprocess.run(
            [CELFLOW, "run", "--db", str(tmp_path / "events.db"), "--no-fs", "--no-processes", "--no-http"],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(CELFLOW_DURABILITY="full"),
        )
        assert run.returncode == 1, run.stdout + run.stderr
        assert "celflow db recover" in run.stderr and "Traceback" not in run.stderr, run.stderr
        assert _digest(tmp_path) == before
    check = subprocess.run(
        [CELFLOW, "db", "check", "--db", str(tmp_path / "events.db")], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 1 and "WAL frame 1 is damaged" in check.stdout + check.stderr


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELFLOW_")}
    return {**env, **settings}


def test_with_normal_durability_a_hole_in_the_wal_is_kept_aside_not_refused(tmp_path: Path, pristine: Pristine) -> None:
    """Under "normal" a power cut can leave a hole before later commits: the start goes on, the WAL is kept aside."""
    (tmp_path / "events.db").write_bytes(pristine.db)
    wal = bytearray(pristine.wal)
    wal[32 + 24 + 100] ^= 0x01
    (tmp_path / "events.db-wal").write_bytes(wal)
    asyncio.run(_start_stop(tmp_path / "events.db", durability="normal"))
    (aside,) = tmp_path.glob("events.db-wal.damaged-*")
    assert aside.read_bytes() == bytes(wal) and stat.S_IMODE(aside.stat().st_mode) == 0o600
    assert _integrity(tmp_path / "events.db") == "[('ok',)]"
