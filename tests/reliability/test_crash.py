"""1. Crash: a writer process SIGKILLed at random moments, reopened each time: the file passes
integrity_check, every acknowledged event is there, none twice."""

from __future__ import annotations

import collections
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _reliability import Record, trials
from test_durability import Procs
from test_durability import _acked as acked
from test_durability import _inspect_raw as inspect_raw
from test_durability import _wait_for_acks as wait_for_acks


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Writer processes of this test; none outlives it."""
    started = Procs(tmp_path)
    yield started
    started.cleanup()


def test_random_sigkills_lose_no_acknowledged_event(tmp_path: Path, procs: Procs, record: Record) -> None:
    rounds = trials(6, 1000)
    rng = random.Random(int(os.environ.get("CELFLOW_TORTURE_SEED", "7")))
    ever_acked: set[int] = set()
    failures = 0
    for round_no in range(rounds):
        # A fresh file every 25 kills: each check reads the whole file, so one ever-growing file
        # would make the full count quadratic.
        db_path = tmp_path / f"events-{round_no // 25}.db"
        if round_no % 25 == 0:
            ever_acked = set()
        ack_log = tmp_path / f"acks-{round_no}.log"
        proc = procs.spawn("ingest", db_path, ack_log, (round_no + 1) * 1_000_000)
        wait_for_acks(procs, proc, ack_log)
        time.sleep(rng.uniform(0.0, 0.5))  # anywhere in ingest: mid-batch, mid-commit, mid-checkpoint
        assert proc.poll() is None, procs.stderr(proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        ever_acked |= acked(ack_log)
        integrity, numbers = inspect_raw(db_path)
        counts = collections.Counter(numbers)
        missing = ever_acked - counts.keys()
        duplicated = [n for n, c in counts.items() if c > 1]
        if integrity != "ok" or missing or duplicated:
            failures += 1
        assert integrity == "ok", f"round {round_no}: {integrity}"
        assert not missing, f"round {round_no}: {len(missing)} acknowledged events lost"
        assert not duplicated, f"round {round_no}: {len(duplicated)} events stored twice"
    record(trials=rounds, failures=failures, worst_loss="0 acknowledged")
