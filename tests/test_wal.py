"""The WAL reader: damage in the middle of the log is told apart from a torn tail, and a re-chained
copy lets SQLite read the transactions after a damaged frame."""

from __future__ import annotations

import shutil
import sqlite3
import struct
from pathlib import Path

import pytest

from celflow._sqlite._wal import inspect_wal, rechain_wal

PAGE = 4096
FRAME = 24 + PAGE


@pytest.fixture
def wal_copy(tmp_path: Path) -> Path:
    """A database and its WAL with 10 committed transactions, copied while the WAL still holds them."""
    live = tmp_path / "live.db"
    conn = sqlite3.connect(live, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE t (n INTEGER, pad TEXT)")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the schema in the main file, the rows in the WAL
    for i in range(10):
        conn.execute("INSERT INTO t VALUES (?, ?)", (i, "x" * 3000))
    copy = tmp_path / "copy.db"
    shutil.copyfile(live, copy)
    shutil.copyfile(str(live) + "-wal", str(copy) + "-wal")
    conn.close()
    return copy


def _rows(db: Path) -> int:
    """Rows SQLite reads from the database and its WAL (on a scratch copy: a close checkpoints)."""
    scratch = db.with_name("scratch.db")
    shutil.copyfile(db, scratch)
    shutil.copyfile(str(db) + "-wal", str(scratch) + "-wal")
    conn = sqlite3.connect(scratch)
    try:
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
    finally:
        conn.close()
        for leftover in (scratch, Path(str(scratch) + "-wal"), Path(str(scratch) + "-shm")):
            leftover.unlink(missing_ok=True)


def _flip(path: Path, at: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[at] ^= 0x04
    path.write_bytes(blob)


def test_an_intact_wal_is_reported_ok(wal_copy: Path) -> None:
    """Every frame of a clean WAL is committed and nothing is damaged."""
    report = inspect_wal(str(wal_copy) + "-wal")
    assert report.frames == report.valid_frames >= 10
    assert not report.damaged and report.damaged_frame is None


@pytest.mark.parametrize("where", [24 + 100, 8, 16])  # page data, a salt, the stored checksum
def test_a_flip_inside_a_frame_is_damage_and_rechaining_reads_past_it(wal_copy: Path, where: int) -> None:
    """SQLite alone stops at the damaged frame; the report names it, and a re-chained copy reads on."""
    wal = Path(str(wal_copy) + "-wal")
    frames = inspect_wal(wal).frames
    _flip(wal, 32 + 2 * FRAME + where)  # the third frame
    report = inspect_wal(wal)
    assert report.damaged and report.damaged_frame == 3, report
    assert report.commits_after_damage >= 5
    assert _rows(wal_copy) < 10  # what SQLite shows without help: later transactions gone
    shutil.copyfile(wal, str(wal) + ".orig")
    assert rechain_wal(wal) > 0
    assert not inspect_wal(wal).damaged and inspect_wal(wal).valid_frames == frames
    assert _rows(wal_copy) == 10 if where != 24 + 100 else _rows(wal_copy) >= 9


def test_a_torn_tail_is_not_damage(wal_copy: Path) -> None:
    """A WAL cut inside its last frame (a crash mid-write) loses only that transaction, and says so."""
    wal = Path(str(wal_copy) + "-wal")
    blob = wal.read_bytes()
    wal.write_bytes(blob[: len(blob) - FRAME // 2])
    report = inspect_wal(wal)
    assert not report.damaged and report.valid_frames < report.frames
    assert rechain_wal(wal) == 0
    assert _rows(wal_copy) == 9


def test_a_damaged_header_is_damage(wal_copy: Path) -> None:
    """A flip in the WAL header's checksummed bytes would make SQLite ignore the whole log."""
    wal = Path(str(wal_copy) + "-wal")
    _flip(wal, 12)  # the checkpoint sequence number
    assert inspect_wal(wal).header_damaged
    assert _rows(wal_copy) == 0
    rechain_wal(wal)
    assert _rows(wal_copy) == 10


def test_a_missing_or_foreign_file_is_no_damage(tmp_path: Path) -> None:
    """No WAL, an empty one, or bytes that are no WAL at all: nothing committed, nothing damaged."""
    assert not inspect_wal(tmp_path / "none-wal").damaged
    (tmp_path / "junk-wal").write_bytes(struct.pack(">8I", 1, 2, 3, 4, 5, 6, 7, 8) + b"\x00" * 5000)
    assert inspect_wal(tmp_path / "junk-wal").frames == 0
