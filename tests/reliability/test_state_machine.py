"""9. A stateful property test: random sequences of queue, store, flush, crash (SIGKILL), restart,
stop, retention, query and export never lose an acknowledged event, never store an event that
was not sent (or store it changed, or twice), and retention never deletes anything newer than its
cutoff.

The manager runs in a child process (tests/helpers/statemachine_worker.py) driven over a line
protocol, so a crash is a real SIGKILL; queries and exports read the file from this process with
a read-only EventDatabase, as `celflow events` does while `celflow run` writes.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from _reliability import Record, trials
from celflow import EventDatabase
from celflow._export import export_events

HELPER = Path(__file__).parents[1] / "helpers" / "statemachine_worker.py"
DAY = 86400.0
NOW = time.time()  # event times are set around the test's start; the clock only moves on from it
REPLY_SECONDS = 60.0  # generous: a shared 2-core machine

TYPES = ["file_op", "app_focus", "process", "Ünïcode", "nul\x00type"]
SOURCES = ["filesystem", "window", "procmon"]
ACTIONS = ["created", "deleted", "ä"]

# Integers stay within 64 bits: `export_events` fails on larger ones (orjson), see
# test_export_keeps_integers_beyond_64_bits below; the store itself round-trips them (test_roundtrip).
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
# Over compression_threshold (1 KiB): stored zstd-compressed.
big_text = st.builds(lambda unit, n: unit * n, st.sampled_from(["ab", "ü€ ", '"\\/', "\x00"]), st.integers(400, 700))
json_data = st.recursive(
    scalars | big_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)
# Mostly within a few days of now (where the retention cutoffs fall), a few identical times (equal
# times with different content are different events), and a few anywhere from 1970 to 2191.
timestamps = (
    st.floats(min_value=-1.0, max_value=10.0).map(lambda age: NOW - age * DAY)
    | st.sampled_from([NOW - 0.5 * DAY, NOW - 3.25 * DAY])
    | st.floats(min_value=0.0, max_value=7e9)
)
events = st.fixed_dictionaries(
    {
        "event_type": st.sampled_from(TYPES) | st.text(min_size=1, max_size=6),
        "source": st.sampled_from(SOURCES),
        "timestamp": timestamps,
        "data": json_data,
    },
    optional={"action": st.none() | st.sampled_from(ACTIONS)},
)
batches = st.lists(events, min_size=1, max_size=6)
ages = st.floats(min_value=1e-3, max_value=11.0)  # of a retention cutoff, in days
kill_delays = st.floats(min_value=0.0, max_value=0.03)  # seconds from a request to its SIGKILL
# A new manager's batching: commits only when asked (1000 events, an hour) or in the background.
starts = st.tuples(st.sampled_from([1, 7, 1000]), st.sampled_from([0.02, 3600.0]))
then_restart = st.none() | starts  # after a stop or a crash: at once, or later (reads of a file nobody writes)
resends = st.lists(st.integers(min_value=0, max_value=10**6), max_size=3)  # indexes into what was sent


def key_of(event: dict[str, Any]) -> str:
    """An event's content, exactly: type, source, action, timestamp and data (JSON tells 1 from 1.0 and True)."""
    return json.dumps(
        [event["event_type"], event["source"], event.get("action"), float(event["timestamp"]), event.get("data", {})],
        sort_keys=True,
    )


def _recorded(method: Callable[..., None]) -> Callable[..., None]:
    """Keep the steps of the run and its first failure: a replay kills at other moments, so hypothesis's
    own report of the failure can be a different (or a flaky) run."""

    @functools.wraps(method)
    def step(self: EventStoreMachine, **kwargs: Any) -> None:
        self.steps.append(f"{method.__name__}({', '.join(f'{k}={v!r:.160}' for k, v in kwargs.items())})")
        try:
            method(self, **kwargs)
        except BaseException:
            if EventStoreMachine.first_failure is None:
                EventStoreMachine.first_failure = "\n".join(self.steps) + "\n" + traceback.format_exc()
            raise

    return step


def _env() -> dict[str, str]:
    """The child's environment, without CelFlow settings that could redirect it."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CELFLOW_")}


class Worker:
    """One statemachine_worker.py process: send a request, read its one-line answer, or SIGKILL it."""

    def __init__(self, folder: Path, db_path: Path, batch_size: int, batch_timeout: float) -> None:
        self.stderr_path = folder / "worker.stderr"
        with open(self.stderr_path, "a") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(HELPER), str(db_path), str(batch_size), str(batch_timeout)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=folder,
                env=_env(),
            )
        self.buffer = b""
        assert self.reply() == {"ready": True}

    def send(self, request: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()

    def reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + REPLY_SECONDS
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"the worker did not answer within {REPLY_SECONDS} s:\n{self.stderr_path.read_text()}")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.proc.wait(10)
                    pytest.fail(f"the worker exited with {self.proc.returncode}:\n{self.stderr_path.read_text()}")
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        self.send(request)
        return self.reply()

    def kill(self) -> list[dict[str, Any]]:
        """SIGKILL; the answers it had written completely before it died."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        assert self.proc.stdout is not None
        rest = self.buffer
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            rest += chunk
        self.close()
        return [json.loads(line) for line in rest.split(b"\n")[:-1]]

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


class EventStoreMachine(RuleBasedStateMachine):
    """The model: what was sent, what was acknowledged (so must be stored), what is still queued."""

    root: ClassVar[Path]
    examples: ClassVar[int] = 0
    kills: ClassVar[int] = 0
    unacknowledged_lost: ClassVar[int] = 0  # allowed: queued, not acknowledged, then SIGKILLed
    first_failure: ClassVar[str | None] = None

    def __init__(self) -> None:
        super().__init__()
        EventStoreMachine.examples += 1
        self.folder = self.root / f"example-{EventStoreMachine.examples}"
        self.folder.mkdir()
        self.db_path = self.folder / "events.db"
        self.worker: Worker | None = None
        self.reader: EventDatabase | None = None
        self.sent: set[str] = set()
        self.history: list[dict[str, Any]] = []
        self.acked: set[str] = set()  # acknowledged and not (possibly) removed by retention since
        self.pending: set[str] = set()  # queued on the running worker, not acknowledged yet
        self.steps: list[str] = []

    # -- helpers -------------------------------------------------------------------------------

    def _spawn(self, batch_size: int, batch_timeout: float) -> None:
        self.worker = Worker(self.folder, self.db_path, batch_size, batch_timeout)
        if self.reader is None:  # the worker created the file; one reader for the whole example,
            self.reader = EventDatabase(self.db_path, readonly=True)  # so a crash's WAL stays as it was

    def _batch(self, batch: list[dict[str, Any]], resend: list[int]) -> list[dict[str, Any]]:
        again = [self.history[i % len(self.history)] for i in resend] if self.history else []
        chosen = batch + again
        self.history.extend(batch)
        self.sent |= {key_of(e) for e in chosen}
        return chosen

    def _stored(self) -> list[dict[str, Any]]:
        assert self.reader is not None
        return self.reader.get_events(limit=None, order="asc")

    def _ids(self) -> dict[int, dict[str, Any]]:
        return {e["id"]: e for e in self._stored()}

    def _acknowledge_all(self) -> None:
        self.acked |= self.pending
        self.pending = set()

    def _retention_checks(self, before: dict[int, dict[str, Any]], lo: float, hi: float) -> None:
        """What retention with a cutoff somewhere in [lo, hi] may and must have done."""
        after = self._ids()
        wrongly_deleted = [e for i, e in before.items() if e["timestamp"] >= hi and i not in after]
        assert not wrongly_deleted, f"retention (cutoff <= {hi!r}) deleted newer events: {wrongly_deleted[:3]}"
        kept_old = [e for i, e in before.items() if e["timestamp"] < lo and i in after]
        assert not kept_old, f"retention (cutoff >= {lo!r}) kept older events: {kept_old[:3]}"
        # Older ones are no longer owed: deleted, or (queued ones) maybe committed before the delete.
        self.acked = {k for k in self.acked if json.loads(k)[3] >= hi}
        self.pending = {k for k in self.pending if json.loads(k)[3] >= hi}

    # -- rules ---------------------------------------------------------------------------------

    @initialize(start=starts)
    @_recorded
    def start(self, start: tuple[int, float]) -> None:
        self._spawn(*start)

    @precondition(lambda self: self.worker is None)
    @rule(start=starts)
    @_recorded
    def restart(self, start: tuple[int, float]) -> None:
        """A new manager on the same file (after a crash or a stop)."""
        self._spawn(*start)

    @precondition(lambda self: self.worker is not None)
    @rule(batch=batches, resend=resends)
    @_recorded
    def queue(self, batch: list[dict[str, Any]], resend: list[int]) -> None:
        """queue_events_batch: accepted, not acknowledged."""
        assert self.worker is not None
        chosen = self._batch(batch, resend)
        assert self.worker.call({"op": "queue", "events": chosen}) == {"ok": True}
        self.pending |= {key_of(e) for e in chosen}

    @precondition(lambda self: self.worker is not None)
    @rule(batch=batches, resend=resends)
    @_recorded
    def store(self, batch: list[dict[str, Any]], resend: list[int]) -> None:
        """store_events: acknowledged with ids, each the id of an event with exactly that content."""
        assert self.worker is not None
        chosen = self._batch(batch, resend)
        ids = self.worker.call({"op": "store", "events": chosen})["ids"]
        assert len(ids) == len(chosen)
        self._acknowledge_all()  # FIFO: whatever was queued before is committed too
        self.acked |= {key_of(e) for e in chosen}
        stored = self._ids()
        for event_id, event in zip(ids, chosen, strict=True):
            assert event_id in stored, f"store_events returned id {event_id}, which is not stored"
            assert key_of(stored[event_id]) == key_of(event)

    @precondition(lambda self: self.worker is not None)
    @rule()
    @_recorded
    def flush(self) -> None:
        """flush: everything queued before it is acknowledged."""
        assert self.worker is not None
        assert self.worker.call({"op": "flush"}) == {"ok": True}
        self._acknowledge_all()

    @precondition(lambda self: self.worker is not None)
    @rule(
        age=ages | st.sampled_from([0.5, 3.25]),
        near=st.sampled_from([None, -2.0, 0.0, 1e-3]),
        pick=st.integers(0, 10**6),
    )
    @_recorded
    def cleanup(self, age: float, near: float | None, pick: int) -> None:
        """run_maintenance with a retention cutoff: an age, or just before, at or just after an event sent."""
        assert self.worker is not None
        cutoff = NOW - age * DAY
        if near is not None and self.history:  # 2 s before an event: it must stay; 1 ms after: it must go
            cutoff = min(float(self.history[pick % len(self.history)]["timestamp"]) + near, NOW - 1.0)
        before = self._ids()
        answer = self.worker.call({"op": "maintain", "cutoff": cutoff})
        assert answer["lo"] <= answer["hi"]
        self._retention_checks(before, answer["lo"], answer["hi"])

    @precondition(lambda self: self.worker is not None)
    @rule(then=then_restart)
    @_recorded
    def stop(self, then: tuple[int, float] | None) -> None:
        """A graceful stop commits everything queued."""
        assert self.worker is not None
        assert self.worker.call({"op": "stop"}) == {"ok": True}
        assert self.worker.proc.wait(30) == 0
        self.worker.close()
        self.worker = None
        self._acknowledge_all()
        if then is not None:
            self._spawn(*then)

    @precondition(lambda self: self.worker is not None)
    @rule(then=then_restart)
    @_recorded
    def crash_idle(self, then: tuple[int, float] | None) -> None:
        """SIGKILL between requests (queued events may be lost, acknowledged ones not)."""
        self._crash("idle", 0.0, [], 1.0, then)

    @precondition(lambda self: self.worker is not None)
    @rule(delay=kill_delays, batch=batches, then=then_restart)
    @_recorded
    def crash_in_store(self, delay: float, batch: list[dict[str, Any]], then: tuple[int, float] | None) -> None:
        """SIGKILL while store_events commits (or just after)."""
        self._crash("store", delay, batch, 1.0, then)

    @precondition(lambda self: self.worker is not None)
    @rule(delay=kill_delays, batch=batches, then=then_restart)
    @_recorded
    def crash_in_flush(self, delay: float, batch: list[dict[str, Any]], then: tuple[int, float] | None) -> None:
        """SIGKILL while a flush commits what was queued."""
        self._crash("flush", delay, batch, 1.0, then)

    @precondition(lambda self: self.worker is not None)
    @rule(delay=kill_delays, age=ages, then=then_restart)
    @_recorded
    def crash_in_cleanup(self, delay: float, age: float, then: tuple[int, float] | None) -> None:
        """SIGKILL while retention deletes (its transaction is all or nothing)."""
        self._crash("maintain", delay, [], age, then)

    def _crash(
        self, during: str, delay: float, batch: list[dict[str, Any]], age: float, then: tuple[int, float] | None
    ) -> None:
        """SIGKILL, idle or in the middle of a store, a flush or retention; the file stays sound."""
        worker = self.worker
        assert worker is not None
        before = self._ids()
        inflight: set[str] = set()
        cutoff = NOW - age * DAY
        sent_at = time.time()
        if during == "store":
            chosen = self._batch(batch, [])
            inflight = {key_of(e) for e in chosen}
            worker.send({"op": "store", "events": chosen})
        elif during == "flush":
            chosen = self._batch(batch, [])
            assert worker.call({"op": "queue", "events": chosen}) == {"ok": True}
            self.pending |= {key_of(e) for e in chosen}
            worker.send({"op": "flush"})
        elif during == "maintain":
            worker.send({"op": "maintain", "cutoff": cutoff})
        time.sleep(delay)
        answers = worker.kill()
        killed_at = time.time()
        self.worker = None
        EventStoreMachine.kills += 1
        if answers and during in ("store", "flush"):  # it answered before it died: acknowledged
            self._acknowledge_all()
            self.acked |= inflight
        if during == "maintain":
            # no answer: its cutoff is at most `cutoff` plus the time it can have run
            lo, hi = (answers[0]["lo"], answers[0]["hi"]) if answers else (-1.0, cutoff + (killed_at - sent_at))
            self._retention_checks(before, lo, hi)
        assert self.reader is not None
        assert self.reader.store.quick_check() == [], "the file is damaged after a SIGKILL"
        stored = {key_of(e) for e in self._stored()}
        EventStoreMachine.unacknowledged_lost += len((self.pending | inflight) - stored)
        self.pending = set()
        if then is not None:
            self._spawn(*then)

    @rule(
        event_type=st.none() | st.sampled_from(TYPES),
        source=st.none() | st.sampled_from(SOURCES),
        action=st.none() | st.sampled_from(ACTIONS),
        start_age=st.none() | st.floats(min_value=-1.0, max_value=11.0),
        span=st.none() | st.floats(min_value=0.0, max_value=11.0),
        order=st.sampled_from(["asc", "desc"]),
        limit=st.none() | st.integers(min_value=1, max_value=5),
        export=st.booleans(),
    )
    @_recorded
    def read(
        self,
        event_type: str | None,
        source: str | None,
        action: str | None,
        start_age: float | None,
        span: float | None,
        order: str,
        limit: int | None,
        export: bool,
    ) -> None:
        """get_events with filters, and paging with its cursor, return exactly the matching stored events;
        export_events writes exactly the stored events."""
        assert self.reader is not None
        start = None if start_age is None else NOW - start_age * DAY
        end = None if span is None else (start if start is not None else NOW - DAY) + span * DAY
        filters: dict[str, Any] = {
            "event_type": event_type,
            "source": source,
            "action": action,
            "start_time": start,
            "end_time": end,
            "order": order,
        }

        def matches(e: dict[str, Any]) -> bool:
            return (
                all(v is None or e[k] == v for k, v in (("event_type", event_type), ("source", source)))
                and (action is None or e["action"] == action)
                and (start is None or e["timestamp"] >= start)
                and (end is None or e["timestamp"] < end)
            )

        def expected(stored: list[dict[str, Any]]) -> list[int]:
            chosen = sorted((e for e in stored if matches(e)), key=lambda e: (e["timestamp"], e["id"]))
            ids = [e["id"] for e in chosen]
            return ids if order == "asc" else ids[::-1]

        quiet = self.worker is None or not self.pending  # nothing can commit while we read
        first = self._stored()
        got = [e["id"] for e in self.reader.get_events(limit=None if not quiet else limit, **filters)]
        paged = [e.id for e in self.reader.iter_events(page_size=2, **filters)]
        if quiet:
            want = expected(first)
            assert got == (want if limit is None else want[:limit])
            assert paged == want
        else:  # background commits may add events between the reads: bounded by before and after
            last = self._stored()
            for ids in (got, paged):
                assert set(expected(first)) <= set(ids) <= set(expected(last))
                assert len(set(ids)) == len(ids)
        if export:
            self._export()

    def _export(self) -> None:
        """export_events to JSON Lines, read back: the stored events, each once, oldest first."""
        assert self.reader is not None
        path = self.folder / "export.jsonl"
        first = self._ids()
        count = export_events(self.reader, path, "jsonl", force=True)
        last = self._ids()
        # bytes split on \n only: str.splitlines() also splits at U+2028, \x85... inside strings
        exported = [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]
        assert count == len(exported)
        ids = [e["id"] for e in exported]
        assert len(set(ids)) == len(ids)
        assert set(first) <= set(ids) <= set(last)
        assert [e["timestamp"] for e in exported] == sorted(e["timestamp"] for e in exported)
        for e in exported:
            assert key_of(e) == key_of(last[e["id"]])

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    @_recorded
    def stored_is_what_was_sent_once_and_keeps_every_acknowledged_event(self) -> None:
        """Acknowledged ⊆ stored, stored ⊆ sent (by content), no event twice."""
        if self.reader is None:
            return
        stored = collections.Counter(key_of(e) for e in self._stored())
        twice = [k for k, n in stored.items() if n > 1]
        assert not twice, f"stored twice: {twice[:3]}"
        unknown = stored.keys() - self.sent
        assert not unknown, f"stored but never sent (or changed): {sorted(unknown)[:3]}"
        lost = self.acked - stored.keys()
        assert not lost, f"{len(lost)} acknowledged events are not stored: {sorted(lost)[:3]}"

    def teardown(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker = None
        if self.reader is not None:
            self.reader.close()


def test_random_histories_keep_the_invariants(tmp_path: Path, record: Record) -> None:
    """Random queue/store/flush/crash/restart/stop/cleanup/query/export sequences keep every invariant."""
    EventStoreMachine.root = tmp_path
    EventStoreMachine.examples = EventStoreMachine.kills = EventStoreMachine.unacknowledged_lost = 0
    EventStoreMachine.first_failure = None
    failures = 0
    try:
        run_state_machine_as_test(
            EventStoreMachine,
            settings=settings(
                max_examples=trials(8, 200),
                stateful_step_count=trials(25, 50),
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                # No shrinking: a replay kills at another moment, so it can end differently, and
                # shrinking replays for up to 5 minutes; the failing history is printed as it ran.
                phases=[Phase.explicit, Phase.reuse, Phase.generate],
            ),
        )
    except BaseException as exc:
        failures = 1
        if EventStoreMachine.first_failure is not None:
            raise AssertionError(f"first failure, after these steps:\n{EventStoreMachine.first_failure}") from exc
        raise
    finally:
        record(
            trials=EventStoreMachine.examples,
            failures=failures,
            worst_loss=(
                f"0 acknowledged ({EventStoreMachine.kills} SIGKILLs; "
                f"{EventStoreMachine.unacknowledged_lost} unacknowledged events lost)"
            ),
        )


def test_export_keeps_integers_beyond_64_bits(tmp_path: Path) -> None:
    """An event whose data holds an integer past 64 bits (stored exactly) exports exactly too."""
    with EventDatabase(tmp_path / "events.db") as database:
        database.store_event({"event_type": "t", "source": "s", "data": {"n": 2**70}})
        export_events(database, tmp_path / "out.jsonl", "jsonl")
    (line,) = (tmp_path / "out.jsonl").read_text().splitlines()
    assert json.loads(line)["data"] == {"n": 2**70}
