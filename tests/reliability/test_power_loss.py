"""2. Power loss: every change a writer process makes to its files is journaled by an LD_PRELOAD
shim (tests/helpers/powerloss_shim.c, built here with the C compiler); the writer is SIGKILLed at
a random moment, and the test rebuilds what the disk held at a power cut, then opens it.

The model. At a cut, each file keeps every change made before its last fsync/fdatasync returned.
Of the changes after that (still in the page cache), chosen per file: none; an in-order prefix;
a prefix and then a torn window of the next few changes; or all of them scattered. Torn and
scattered mean that every 512-byte sector holds any one of the versions it had since the sync
(writeback out of order, a write cut between sectors), and the file has any of the sizes it had
since. The cut falls at the kill, at a random record of the journal, or before the first
acknowledgement (start-up: schema creation, or recovery of the previous cut). The writer's
acknowledgements are in the same journal, in order with the changes, so what was acknowledged
before the cut is known exactly. Each trial starts from the disk the previous cut left (chains of
``CHAIN`` trials), so recovering a power-cut file is itself journaled and cut.

Limits of the model: directory entries (create, unlink, rename) count as persisted the moment
they change (SQLite fsyncs the folder of a new journal or WAL; the model trusts it); the -shm
file is dropped (it changes through a shared mmap the journal cannot see, and SQLite rebuilds it
from the WAL when the first connection opens); a sync that returned is on the medium (no lying
disk cache, no bit rot, no sector torn inside); only one process writes. A write through a
writable shared mmap of the database or the WAL would escape the journal: the test checks that
SQLite maps them for reads only, and that replaying the whole journal gives exactly the files
the killed process left, so nothing escapes it unseen.
"""

from __future__ import annotations

import collections
import importlib.util
import mmap
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from _reliability import Record, trials
from celflow import CelflowError, EventDatabase, decode_data

HELPERS = Path(__file__).parents[1] / "helpers"
SHIM_SOURCE = HELPERS / "powerloss_shim.c"
WORKER = HELPERS / "powerloss_worker.py"
DB = "events.db"
SHM = DB + "-shm"
SECTOR = 512
CHAIN = 5  # trials per chain: each starts from the disk the previous power cut left
TORN_WINDOW = 8  # changes after the in-order prefix whose sectors land in any order
KEEP_FAILED = 5  # failed trials whose files are kept (each holds a journal of tens of MB)


def _load_payloads() -> ModuleType:
    spec = importlib.util.spec_from_file_location("durability_worker", HELPERS / "durability_worker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


payloads = _load_payloads()  # payload(n): the data the worker sent for event n


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The journaling shim, compiled for this run (the test is skipped, with the reason, without a compiler)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the power-loss shim interposes glibc's file calls with LD_PRELOAD: Linux only")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc or gcc) on PATH: the power-loss shim cannot be built")
    out = tmp_path_factory.mktemp("shim") / "powerloss_shim.so"
    built = subprocess.run(
        [
            compiler,
            "-shared",
            "-fPIC",
            "-O2",
            "-U_FORTIFY_SOURCE",
            "-o",
            str(out),
            str(SHIM_SOURCE),
            "-ldl",
            "-lpthread",
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, f"the shim does not compile:\n{built.stderr}"
    return out


# -- the journal ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Change:
    """One record of the shim's journal (see powerloss_shim.c for the layout)."""

    kind: str
    ns: int
    fd: int
    path: str = ""
    new_path: str = ""
    flags: int = 0
    prot: int = 0
    offset: int = 0
    size: int = 0
    data: bytes = b""


def read_journal(path: Path) -> list[Change]:
    """Every complete record of the journal, in order."""
    buf = path.read_bytes() if path.exists() else b""
    changes: list[Change] = []
    i = 0

    def text(at: int) -> tuple[str, int]:
        n = int.from_bytes(buf[at : at + 4], "little")
        return buf[at + 4 : at + 4 + n].decode(), at + 4 + n

    while i + 13 <= len(buf):
        kind, ns, fd = chr(buf[i]), int.from_bytes(buf[i + 1 : i + 9], "little"), buf[i + 9 : i + 13]
        change = Change(kind, ns, int.from_bytes(fd, "little", signed=True))
        i += 13
        if kind == "O":
            change.flags = int.from_bytes(buf[i : i + 4], "little")
            change.path, i = text(i + 4)
        elif kind == "W":
            change.offset = int.from_bytes(buf[i : i + 8], "little", signed=True)
            n = int.from_bytes(buf[i + 8 : i + 12], "little")
            change.data, i = buf[i + 12 : i + 12 + n], i + 12 + n
        elif kind in "TX":
            change.size, i = int.from_bytes(buf[i : i + 8], "little", signed=True), i + 8
        elif kind == "M":
            change.prot = int.from_bytes(buf[i : i + 4], "little", signed=True)
            change.flags = int.from_bytes(buf[i + 4 : i + 8], "little", signed=True)
            change.offset = int.from_bytes(buf[i + 8 : i + 16], "little", signed=True)
            change.size, i = int.from_bytes(buf[i + 16 : i + 24], "little", signed=True), i + 24
        elif kind in "UAE":
            n = int.from_bytes(buf[i : i + 4], "little")
            change.data, i = buf[i + 4 : i + 4 + n], i + 4 + n
            change.path = change.data.decode(errors="replace") if kind == "U" else ""
        elif kind in "RL":
            change.path, i = text(i)
            change.new_path, i = text(i)
        elif kind not in "CS":
            raise AssertionError(f"unknown journal record {kind!r} at byte {i - 13}")
        if i > len(buf):  # a record cut by the kill (the shim writes each in one write(2))
            break
        changes.append(change)
    return changes


# -- the disk ------------------------------------------------------------------------------------


class File:
    """One file (an inode): its content at the start, its changes, and how many of them the last sync covered."""

    __slots__ = ("base", "changes", "synced")

    def __init__(self, base: bytes) -> None:
        self.base = base
        self.changes: list[Change] = []
        self.synced = 0


def apply(content: bytearray, change: Change) -> None:
    """Make ``change`` to ``content`` (a hole a write leaves reads as zeros)."""
    if change.kind == "W":
        end = change.offset + len(change.data)
        if end > len(content):
            content.extend(bytes(end - len(content)))
        content[change.offset : end] = change.data
    elif change.kind == "T":
        if change.size < len(content):
            del content[change.size :]
        else:
            content.extend(bytes(change.size - len(content)))
    elif change.kind == "X" and change.size > len(content):
        content.extend(bytes(change.size - len(content)))


def scatter(content: bytearray, changes: list[Change], rng: random.Random) -> bytearray:
    """``content`` after ``changes`` reached the disk in any order and torn: every sector they touched
    holds one of the versions it had, and the file one of the sizes it had."""
    cache = bytearray(content)
    sizes = [len(cache)]
    versions: dict[int, list[bytes]] = {}
    for change in changes:
        if change.kind == "W" and change.data:
            touched = range(change.offset // SECTOR, (change.offset + len(change.data) - 1) // SECTOR + 1)
            for s in touched:
                if s not in versions:
                    versions[s] = [bytes(content[s * SECTOR : (s + 1) * SECTOR])]
                    before = bytes(cache[s * SECTOR : (s + 1) * SECTOR])
                    if before != versions[s][0]:
                        versions[s].append(before)
            apply(cache, change)
            for s in touched:
                versions[s].append(bytes(cache[s * SECTOR : (s + 1) * SECTOR]))
        else:
            apply(cache, change)
        sizes.append(len(cache))
    size = rng.choice(sizes)
    out = bytearray(content[:size])
    out.extend(bytes(size - len(out)))
    for s, choices in versions.items():
        start = s * SECTOR
        if start < size:
            end = min(start + SECTOR, size)
            out[start:end] = rng.choice(choices)[: end - start].ljust(end - start, b"\0")
    return out


WRITEBACKS = ("synced", "prefix", "torn", "scattered")


def at_power_cut(file: File, rng: random.Random, how: str | None = None) -> tuple[bytes, str]:
    """What the disk holds of ``file`` at a cut now, and which writeback (of ``WRITEBACKS``) the model chose."""
    content = bytearray(file.base)
    for change in file.changes[: file.synced]:
        apply(content, change)
    pending = file.changes[file.synced :]
    how = "synced" if not pending else how or rng.choice(WRITEBACKS)
    if how in ("prefix", "torn"):
        k = rng.randint(0, len(pending))
        for change in pending[:k]:
            apply(content, change)
        if how == "torn":
            content = scatter(content, pending[k : k + TORN_WINDOW], rng)
    elif how == "scattered":
        content = scatter(content, pending, rng)
    return bytes(content), how


@dataclass
class Disk:
    """The files of the watched folder, replayed from the journal; names are relative to the folder."""

    folder: Path
    baseline: dict[str, bytes]
    names: dict[str, File] = field(default_factory=dict)
    fds: dict[int, tuple[str, File]] = field(default_factory=dict)
    acks: list[tuple[int, int, int]] = field(default_factory=list)  # (ns, first, last) of each round
    errors: list[str] = field(default_factory=list)
    maps: list[tuple[str, int, int]] = field(default_factory=list)  # (name, prot, flags)
    writes: collections.Counter[str] = field(default_factory=collections.Counter)
    syncs: collections.Counter[str] = field(default_factory=collections.Counter)
    acks_synced: dict[str, int] = field(default_factory=dict)  # acks journaled before each file's last sync

    def __post_init__(self) -> None:
        self.names = {name: File(data) for name, data in self.baseline.items()}

    def _name(self, path: str) -> str:
        assert os.path.dirname(path) == str(self.folder), f"{path} is not directly in {self.folder}"
        return os.path.basename(path)

    def replay(self, changes: list[Change]) -> None:
        """Apply the journal's records, in order."""
        for change in changes:
            kind = change.kind
            if kind == "O":
                name = self._name(change.path)
                file = self.names.setdefault(name, File(b""))
                if change.flags & os.O_TRUNC:
                    file.changes.append(Change("T", change.ns, change.fd, size=0))
                self.fds[change.fd] = (name, file)
            elif kind == "C":
                self.fds.pop(change.fd, None)
            elif kind in "WTX":
                name, file = self.fds[change.fd]
                file.changes.append(change)
                self.writes[name] += kind == "W"
            elif kind == "S":
                name, file = self.fds[change.fd]
                file.synced = len(file.changes)
                self.syncs[name] += 1
                self.acks_synced[name] = len(self.acks)
            elif kind == "U":
                self.names.pop(self._name(change.path), None)
            elif kind == "R":
                self.names[self._name(change.new_path)] = self.names.pop(self._name(change.path))
            elif kind == "L":  # a second name for the same file (a new database is linked into place)
                self.names[self._name(change.new_path)] = self.names[self._name(change.path)]
            elif kind == "A":
                first, last = map(int, change.data.split())
                self.acks.append((change.ns, first, last))
            elif kind == "M":
                self.maps.append((self.fds[change.fd][0], change.prot, change.flags))
            elif kind == "E":
                self.errors.append(change.data.decode(errors="replace"))

    def page_cache(self) -> dict[str, bytes]:
        """Every file with all its changes: what a process that was only killed leaves behind."""
        files = {}
        for name, file in self.names.items():
            content = bytearray(file.base)
            for change in file.changes:
                apply(content, change)
            files[name] = bytes(content)
        return files

    def differences(self, files: dict[str, bytes]) -> list[str]:
        """The names whose content in ``files`` is not what the replayed journal says (-shm aside)."""
        cache = self.page_cache()
        return [name for name, data in files.items() if name != SHM and cache.get(name) != data]

    def power_cut(self, rng: random.Random, how: str | None = None) -> tuple[dict[str, bytes], dict[str, str]]:
        """The files as a power cut now leaves them (without -shm), and the writeback chosen for each
        (``how`` for all, if given)."""
        files, chosen = {}, {}
        for name, file in self.names.items():
            if name != SHM:
                files[name], chosen[name] = at_power_cut(file, rng, how)
        return files, chosen


# -- checks --------------------------------------------------------------------------------------


def inspect(db_path: Path) -> tuple[str, list[int]]:
    """``PRAGMA integrity_check`` and the event numbers stored, read with plain sqlite3; every stored
    event's data must be exactly what was sent. A file cut before its schema was committed has none."""
    if not db_path.exists():
        return "ok", []
    conn = sqlite3.connect(db_path)  # as the next start would: a hot journal is rolled back, the WAL recovered
    try:
        integrity = "\n".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
        if integrity != "ok" or not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone():
            return integrity, []
        numbers = []
        for event_type, data_json, data_compressed in conn.execute(
            "SELECT event_type, data_json, data_compressed FROM events ORDER BY id"
        ):
            data = decode_data(data_json, data_compressed)
            assert event_type == "durability" and data == payloads.payload(data["n"]), f"altered event {data!r:.200}"
            numbers.append(data["n"])
    finally:
        conn.close()
    return integrity, numbers


def open_cut(files: dict[str, bytes], check: Path, where: str) -> collections.Counter[int]:
    """Write a power-cut state to ``check``, check it and open it with CelFlow; how often each event is stored."""
    check.mkdir()
    for name, data in files.items():
        (check / name).write_bytes(data)
    integrity, numbers = inspect(check / DB)
    assert integrity == "ok", f"{where}: {integrity}"
    with EventDatabase(check / DB) as database:  # CelFlow opens it, and its counters agree with the rows
        assert database.count_events() == len(numbers), f"{where}: CelFlow's counters disagree with the rows"
    return collections.Counter(numbers)


def killed_mid_change(
    folder: Path, baseline: dict[str, bytes], changes: list[Change], left: dict[str, bytes]
) -> list[str]:
    """The files that differ from the journal when its last change, logged before it was made, was
    made only in part or not at all (a kill between pages of a write returns it short)."""
    before = Disk(folder, baseline)
    before.replay(changes[:-1])
    last = changes[-1]
    name = before.fds[last.fd][0]
    expected = before.page_cache()
    if last.kind == "W" and name in left:
        done = left[name][last.offset : last.offset + len(last.data)]
        made = next((i for i, (x, y) in enumerate(zip(done, last.data, strict=False)) if x != y), len(done))
        content = bytearray(expected.get(name, b""))
        apply(content, Change("W", last.ns, last.fd, offset=last.offset, data=last.data[:made]))
        if bytes(content) == left[name]:
            expected[name] = left[name]
    return [n for n, data in left.items() if expected.get(n) != data]


def on_disk(folder: Path) -> dict[str, bytes]:
    """The files the killed process left (its page cache, which survives a kill), without -shm."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != SHM}


@dataclass
class Loss:
    """The acknowledged events a power cut lost, their commits, and the age of the oldest at the cut."""

    events: int = 0
    commits: int = 0
    ms: float = 0.0


def loss_of(acks: list[tuple[int, int, int]], counts: collections.Counter[int], cut_ns: int) -> Loss:
    """The loss of the acknowledged rounds ``acks`` (ns, first, last) that ``counts`` does not hold."""
    lost = [ack for ack in acks if ack[1] not in counts]
    if not lost:
        return Loss()
    return Loss(sum(last - first + 1 for _, first, last in lost), len(lost), (cut_ns - lost[0][0]) / 1e6)


@dataclass
class Trial:
    """What one trial's power cuts cost: the random one, and the control (nothing written back, at the kill)."""

    cut: Loss
    control: Loss


@dataclass
class Totals:
    """Evidence that the journal saw the writer's I/O, summed over the trials."""

    rounds: int = 0
    wal_syncs: int = 0
    db_maps: int = 0
    writes: int = 0
    control_lost: int = 0  # commits the synced-only control cut had to lose
    writebacks: collections.Counter[str] = field(default_factory=collections.Counter)


@pytest.fixture
def kill_list() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Writer processes of this test; none outlives it."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def spawn(
    shim: Path,
    folder: Path,
    journal: Path,
    ack_log: Path,
    base: int,
    durability: str,
    seed: int,
    started: list[subprocess.Popen[bytes]],
) -> subprocess.Popen[bytes]:
    """Start a writer under the shim, journaling ``folder`` into ``journal``, its acks into the journal too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELFLOW_", "POWERLOSS_"))}
    env.update(
        LD_PRELOAD=str(shim), POWERLOSS_DIR=str(folder), POWERLOSS_JOURNAL=str(journal), POWERLOSS_MARK=str(ack_log)
    )
    with open(journal.with_suffix(".stderr"), "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(folder / DB), str(ack_log), str(base), durability, str(seed)],
            cwd=journal.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    started.append(proc)
    return proc


def run_trial(proc: subprocess.Popen[bytes], ack_log: Path, journal: Path, rng: random.Random) -> int:
    """Wait for the worker's first acknowledgement, let it run a random while, SIGKILL it; the kill's time (ns)."""
    deadline = time.monotonic() + 60
    stderr = journal.with_suffix(".stderr")
    while not (ack_log.exists() and ack_log.stat().st_size):
        if proc.poll() is not None:
            last = (stderr.read_text().strip().splitlines() or ["(nothing on stderr)"])[-1]
            raise AssertionError(f"the writer exited before its first acknowledgement: {last}")
        assert time.monotonic() < deadline, f"worker acknowledged nothing in 60 s:\n{stderr.read_text()}"
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.6))
    assert proc.poll() is None, journal.with_suffix(".stderr").read_text()
    os.kill(proc.pid, signal.SIGKILL)
    killed = time.time_ns()
    proc.wait(timeout=10)
    return killed


def choose_cut(changes: list[Change], rng: random.Random) -> int:
    """How many records happened before the power cut: all (the kill), any, or any before the first ack."""
    first_ack = next((i for i, c in enumerate(changes) if c.kind == "A"), len(changes))
    return rng.choice([len(changes), rng.randint(0, len(changes)), rng.randint(0, first_ack)])


@dataclass
class Chain:
    """What a trial starts from: the disk the previous cut left, and what is known to be on it."""

    files: dict[str, bytes] = field(default_factory=dict)
    kept: set[int] = field(default_factory=set)  # events stored on that disk
    acked: set[int] = field(default_factory=set)  # acknowledged before a cut, over the chain


class PowerLossRun:
    """Trials of one durability setting, each in its own files under ``tmp_path``."""

    def __init__(self, durability: str, tmp_path: Path, shim: Path, started: list[subprocess.Popen[bytes]]) -> None:
        self.durability = durability
        self.tmp_path = tmp_path
        self.shim = shim
        self.started = started
        self.rng = random.Random(int(os.environ.get("CELFLOW_TORTURE_SEED", "7")) * 31 + len(durability))
        self.totals = Totals()

    def paths(self, trial: int) -> tuple[Path, Path, Path, Path]:
        """The watched folder, the copy of its power-cut state, the journal and the ack log of ``trial``."""
        t = self.tmp_path
        return t / f"disk-{trial}", t / f"cut-{trial}", t / f"journal-{trial}", t / f"acks-{trial}.log"

    def remove(self, trial: int) -> None:
        """Delete a trial's files."""
        folder, check, journal, ack_log = self.paths(trial)
        for path in (folder, check):
            shutil.rmtree(path, ignore_errors=True)
        for path in (journal, journal.with_suffix(".stderr"), ack_log):
            path.unlink(missing_ok=True)

    def trial(self, trial: int, chain: Chain) -> tuple[Trial, Chain]:
        """Run, kill and cut one writer; assert on what the cut left; the loss and the next trial's start."""
        rng, durability = self.rng, self.durability
        folder, check, journal, ack_log = self.paths(trial)
        folder.mkdir()
        for name, data in chain.files.items():
            (folder / name).write_bytes(data)
        proc = spawn(self.shim, folder, journal, ack_log, (trial + 1) * 10_000_000, durability, trial, self.started)
        killed_ns = run_trial(proc, ack_log, journal, rng)
        changes = read_journal(journal)

        # The journal is complete: replayed whole, it gives exactly the files the process left.
        whole = Disk(folder, chain.files)
        whole.replay(changes)
        assert not whole.errors, f"the shim saw I/O it cannot model: {whole.errors}"
        left = on_disk(folder)
        assert whole.names.keys() - {SHM} == left.keys(), f"files {sorted(whole.names)} replayed, {sorted(left)} left"
        escaped = whole.differences(left)
        if escaped and changes[-1].kind in "WTX":  # the kill fell while the last change was being made
            escaped = killed_mid_change(folder, chain.files, changes, left)
        assert not escaped, f"writes to {escaped} escaped the journal"
        wal = DB + "-wal"
        assert whole.writes[wal] and whole.acks, "the journal saw no commit"
        # SQLite maps the database for reads only: its writes all go through write(2), into the journal.
        writable = [m for m in whole.maps if m[0] != SHM and m[1] & mmap.PROT_WRITE and m[2] & mmap.MAP_SHARED]
        assert not writable, f"writable shared maps {writable}"
        totals = self.totals
        totals.db_maps += sum(m[0] == DB for m in whole.maps)
        totals.writes += sum(whole.writes.values())
        totals.rounds += len(whole.acks)
        totals.wal_syncs += whole.syncs[wal]
        if durability == "full":  # a WAL sync per commit, each before its acknowledgement
            assert whole.syncs[wal] >= len(whole.acks), "fewer WAL syncs than commits"

        # A control: at the kill, with nothing written back since each file's last sync, the commits
        # acknowledged before the WAL's last sync are kept (with "full": all of them) and those after
        # the next one are lost.
        files, _ = whole.power_cut(rng, "synced")
        counts = open_cut(files, check, "the control cut")
        synced = whole.acks_synced.get(wal, 0)
        needed = whole.acks if durability == "full" else whole.acks[:synced]
        assert all(ack[1] in counts for ack in needed), "control: an acknowledged commit lost by the synced state"
        assert not [a for a in whole.acks[synced + 1 :] if a[1] in counts], "control: an unsynced commit kept"
        totals.control_lost += len(whole.acks[synced + 1 :])
        control = loss_of(whole.acks, counts, killed_ns)
        shutil.rmtree(check)

        # The power cut.
        cut = choose_cut(changes, rng)
        disk = Disk(folder, chain.files)
        disk.replay(changes[:cut])
        files, how = disk.power_cut(rng)
        totals.writebacks.update(how.values())
        where = f"cut at record {cut} of {len(changes)}, writeback {how}"
        cut_ns = changes[cut].ns if cut < len(changes) else killed_ns
        counts = open_cut(files, check, where)
        duplicated = [n for n, c in counts.items() if c > 1]
        assert not duplicated, f"{where}: {len(duplicated)} events stored twice"
        gone = chain.kept - counts.keys()
        assert not gone, f"{where}: {len(gone)} events of the disk the trial started from are gone"

        # Each round is one transaction: stored whole or not at all, and only the newest are lost.
        lost = [ack for ack in disk.acks if ack[1] not in counts]
        partial = [ack for ack in disk.acks if (ack[1] in counts) != (ack[2] in counts)]
        assert not partial, f"{where}: commits stored in part: {partial[:3]}"
        assert disk.acks[len(disk.acks) - len(lost) :] == lost, f"{where}: an older commit lost, a newer one kept"
        acked = chain.acked | {n for _, first, last in disk.acks for n in range(first, last + 1)}
        missing = acked - counts.keys()
        if durability == "full":
            assert not missing, f"{where}: {len(missing)} acknowledged events lost"
        return Trial(loss_of(disk.acks, counts, cut_ns), control), Chain(files, set(counts), acked - missing)

    def run(self, rounds: int) -> tuple[list[Trial], list[str]]:
        """Every trial's loss, and a message for each that failed (a failure starts a fresh chain)."""
        results: list[Trial] = []
        failures: list[str] = []
        chain = Chain()
        for trial in range(rounds):
            if trial % CHAIN == 0:
                chain = Chain()
            try:
                result, chain = self.trial(trial, chain)
            except (AssertionError, sqlite3.Error, CelflowError) as exc:
                first_line = (str(exc).splitlines() or [""])[0]  # not pytest's long explanation of the assert
                failures.append(f"trial {trial}: {type(exc).__name__}: {first_line}")
                if len(failures) <= KEEP_FAILED:  # its files, and the disk it started from, to look at
                    start = self.tmp_path / f"start-{trial}"
                    start.mkdir()
                    for name, data in chain.files.items():
                        (start / name).write_bytes(data)
                else:
                    self.remove(trial)
                chain = Chain()
                continue
            results.append(result)
            self.remove(trial)
        return results, failures


def test_power_cut_model_keeps_synced_writes_and_only_versions_written_since() -> None:
    """The model keeps every write up to a file's last sync, and of later ones only sector versions the file had."""
    a, b, c = b"a" * SECTOR, b"b" * SECTOR, b"c" * SECTOR
    disk = Disk(Path("/disk"), {})
    disk.replay(
        [
            Change("O", 0, 3, path="/disk/f", flags=os.O_CREAT),
            Change("W", 0, 3, offset=0, data=a + a),
            Change("S", 0, 3),
            Change("W", 0, 3, offset=0, data=b + b),
            Change("W", 0, 3, offset=SECTOR, data=c + c),
        ]
    )
    assert disk.page_cache() == {"f": b + c + c}
    rng = random.Random(1)
    seen: set[bytes] = set()
    for _ in range(500):
        files, how = disk.power_cut(rng)
        data = files["f"]
        seen.add(data)
        if how["f"] == "synced":
            assert data == a + a
        assert len(data) in (2 * SECTOR, 3 * SECTOR)
        assert data[:SECTOR] in (a, b) and data[SECTOR : 2 * SECTOR] in (a, b, c)
        assert data[2 * SECTOR :] in (b"", c, bytes(SECTOR))
    assert {a + a, b + b, b + c + c} <= seen  # nothing written back, an in-order prefix, everything
    assert a + c in seen or a + c + c in seen  # a later write on disk, an earlier one not: out of order


@pytest.mark.parametrize("durability", ["full", "normal"])
def test_power_loss(
    durability: str, tmp_path: Path, shim: Path, kill_list: list[subprocess.Popen[bytes]], record: Record
) -> None:
    """A power cut at a random moment leaves an intact file; with "full" every acknowledged event is kept."""
    rounds = trials(4, 200)
    run = PowerLossRun(durability, tmp_path, shim, kill_list)
    results, failures = run.run(rounds)
    totals = run.totals
    cuts, controls = [r.cut for r in results], [r.control for r in results]
    median = statistics.median([c.events for c in cuts] or [0])
    worst = max(cuts, key=lambda c: c.events, default=Loss())
    worst_ms = max((c.ms for c in cuts), default=0.0)
    bound = max(controls, key=lambda c: c.events, default=Loss())
    print(
        f"{durability}: {rounds} trials, {len(failures)} failed; {totals.rounds} commits, {totals.wal_syncs} WAL "
        f"syncs, {totals.writes} writes journaled, {totals.db_maps} read-only maps of the database; writeback "
        f"{dict(totals.writebacks)}. Acknowledged events lost by the random cuts: worst {worst.events} "
        f"({worst.commits} commits), median {median:g}, the oldest {worst_ms:.0f} ms before the cut; by the "
        f"controls (nothing written back since the last sync): worst {bound.events} ({bound.commits} commits, "
        f"{max((c.ms for c in controls), default=0.0):.0f} ms), {totals.control_lost} commits in all"
    )
    if durability == "full":
        loss = f"{max(worst.events, bound.events)} acknowledged"
    else:
        loss = (
            f"{worst.events} acknowledged ({worst.commits} commits, {worst_ms:.0f} ms; median {median:g}); "
            f"nothing written back: {bound.events} ({bound.commits} commits)"
        )
    record(trials=rounds, failures=len(failures), worst_loss=loss)
    assert not failures, f"{len(failures)} of {rounds} power cuts failed:\n" + "\n".join(failures[:10])
    assert totals.db_maps, "SQLite never mapped the database: the read-only map check saw nothing"
    if durability == "normal":  # the control cuts did lose commits: the model really drops unsynced writes
        assert totals.control_lost, "no control cut lost a commit: unsynced WAL writes were never dropped"
