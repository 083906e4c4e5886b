"""Reading SQLite's write-ahead log without SQLite: find damage that SQLite would hide.

SQLite stops reading a WAL at the first frame whose checksum or salt is wrong and treats the
rest as never written. That is right for a torn tail after a crash, but a flipped byte in the
middle silently drops every transaction committed after it. :func:`inspect_wal` tells the two
apart: a damaged frame carries this generation's salts but a wrong checksum, and later frames
of the same generation still chain to their predecessors (so they were written after it). A
frame of another generation or of zeros (a torn tail, or a hole a power cut left in an unsynced
WAL) ends the log as SQLite says. :func:`rechain_wal` rewrites the
checksums of a copy so that SQLite reads past such a frame (``celflow db recover`` uses it).

The format: https://www.sqlite.org/fileformat2.html#the_write_ahead_log
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

__all__ = ["WalReport", "inspect_wal", "rechain_wal"]

_MAGIC_LE, _MAGIC_BE = 0x377F0682, 0x377F0683
_HEADER, _FRAME_HEADER = 32, 24
_MASK = 0xFFFFFFFF
#: Larger WALs are inspected up to this many bytes (a WAL past the size of its autocheckpoint is
#: rare: a reader held a snapshot open); the check then covers the frames a crash leaves behind.
MAX_INSPECTED_BYTES = 32 * 1024 * 1024


@dataclass
class WalReport:
    """What :func:`inspect_wal` found in one WAL file."""

    frames: int = 0  # frames in the file that belong to the current generation (salts match)
    valid_frames: int = 0  # frames SQLite will read: up to the last commit of the valid prefix
    damaged_frame: int | None = None  # 1-based number of the first damaged frame, if any
    commits_after_damage: int = 0  # commit frames after it that SQLite would ignore
    header_damaged: bool = False
    chain_end: int = 0  # frames from the start that belong to the checksum chain, damaged ones included

    @property
    def damaged(self) -> bool:
        """Whether committed transactions would be lost if SQLite read this WAL as it is."""
        return self.header_damaged or self.commits_after_damage > 0

    def describe(self) -> str:
        """A one-line account for messages."""
        if self.header_damaged:
            return f"the WAL's header is damaged: SQLite would ignore all {self.frames} frames after it"
        if self.damaged:
            return (
                f"WAL frame {self.damaged_frame} is damaged: SQLite would ignore it and the "
                f"{self.commits_after_damage} committed transaction(s) after it"
            )
        return f"WAL ok ({self.valid_frames} of {self.frames} frames committed)"


def _checksum(data: bytes, big_endian: bool, s0: int, s1: int) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & _MASK
        s1 = (s1 + words[i + 1] + s0) & _MASK
    return s0, s1


class _Wal:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        magic, _version, self.page_size, _seq, self.salt1, self.salt2, c0, c1 = struct.unpack(">8I", blob[:_HEADER])
        self.ok = (
            magic in (_MAGIC_LE, _MAGIC_BE) and self.page_size >= 512 and not self.page_size & (self.page_size - 1)
        )
        self.big_endian = magic == _MAGIC_BE
        self.header_sum = (c0, c1)
        self.frame_size = _FRAME_HEADER + self.page_size if self.ok else 0

    def header_valid(self) -> bool:
        return _checksum(self.blob[:24], self.big_endian, 0, 0) == self.header_sum

    def count(self) -> int:
        return (len(self.blob) - _HEADER) // self.frame_size if self.ok else 0

    def frame(self, i: int) -> tuple[int, int, int, int, tuple[int, int], bytes]:
        """Frame ``i`` (0-based): page number, commit size, salts, stored checksum, checksummed bytes."""
        at = _HEADER + i * self.frame_size
        page, commit, salt1, salt2, c0, c1 = struct.unpack(">6I", self.blob[at : at + _FRAME_HEADER])
        body = self.blob[at : at + 8] + self.blob[at + _FRAME_HEADER : at + self.frame_size]
        return page, commit, salt1, salt2, (c0, c1), body

    def ours(self, i: int) -> bool:
        _, _, salt1, salt2, _, _ = self.frame(i)
        return (salt1, salt2) == (self.salt1, self.salt2)

    def near_ours(self, i: int) -> bool:
        """Whether frame ``i`` carries our salts, give or take two flipped bits."""
        _, _, salt1, salt2, _, _ = self.frame(i)
        flipped: int = (salt1 ^ self.salt1).bit_count() + (salt2 ^ self.salt2).bit_count()
        return flipped <= 2

    def chains(self, i: int, seed: tuple[int, int]) -> bool:
        """Whether frame ``i`` carries our salts and its checksum continues from ``seed``."""
        page, _, salt1, salt2, stored, body = self.frame(i)
        if page == 0 or (salt1, salt2) != (self.salt1, self.salt2):
            return False
        return _checksum(body, self.big_endian, *seed) == stored


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(MAX_INSPECTED_BYTES)
    except FileNotFoundError:
        return b""


def inspect_wal(path: str | os.PathLike[str]) -> WalReport:
    """Check the WAL at ``path`` (a missing or empty file is fine); never modifies it."""
    blob = _read(path)
    report = WalReport()
    if len(blob) < _HEADER:
        return report
    wal = _Wal(blob)
    if not wal.ok:
        return report  # not a WAL SQLite would read: nothing of it is committed
    n = wal.count()
    report.frames = sum(1 for i in range(n) if wal.ours(i))
    if not wal.header_valid():
        # SQLite ignores the whole file; it held data only if its frames chain from the stored sum.
        report.header_damaged = n > 0 and wal.chains(0, wal.header_sum)
        if report.header_damaged:
            report.chain_end = _chain_end(wal, 0, wal.header_sum)
        return report
    running = wal.header_sum
    for i in range(n):
        if wal.chains(i, running):
            running = wal.frame(i)[4]
            report.chain_end = i + 1
            if wal.frame(i)[1]:
                report.valid_frames = i + 1
            continue
        # Frame i breaks the chain. A torn tail or a hole left by a power cut holds zeros or an
        # older generation's frame (other salts): the end. A frame of ours with a wrong sum, with
        # frames of ours after it that still chain to their predecessors, is damage.
        if not wal.near_ours(i):
            break
        broken = i
        while broken < n and wal.near_ours(broken):  # every later run of ours that chains counts
            later = next((j for j in range(broken + 1, n) if wal.chains(j, wal.frame(j - 1)[4])), None)
            if later is None:
                break
            if report.damaged_frame is None:
                report.damaged_frame = i + 1
            running = wal.frame(later - 1)[4]
            broken = n
            for j in range(later, n):
                if not wal.chains(j, running):
                    broken = j
                    break
                running = wal.frame(j)[4]
                report.chain_end = j + 1
                report.commits_after_damage += 1 if wal.frame(j)[1] else 0
        break
    return report


def _chain_end(wal: _Wal, start: int, seed: tuple[int, int]) -> int:
    """The end (exclusive) of the run of frames from ``start`` whose checksums chain from ``seed``."""
    end = start
    while end < wal.count() and wal.chains(end, seed):
        seed = wal.frame(end)[4]
        end += 1
    return end


def rechain_wal(path: str | os.PathLike[str]) -> int:
    """Rewrite the checksums of the WAL at ``path`` (a copy!) so SQLite reads past damaged frames.

    The frames of the checksum chain get the header's salts and the checksums SQLite expects (never
    the frames after it: a torn tail stays unread); a damaged page is then applied as it
    is, and the salvage that follows hops over pages SQLite cannot read. Returns the frames whose
    checksum was rewritten (0: nothing to repair).
    """
    blob = _read(path)
    if len(blob) < _HEADER:
        return 0
    wal = _Wal(blob)
    if not wal.ok:
        return 0
    report = inspect_wal(path)
    if not report.damaged:
        return 0
    fixed = bytearray(blob)
    if report.header_damaged:
        struct.pack_into(">2I", fixed, 24, *_checksum(bytes(fixed[:24]), wal.big_endian, 0, 0))
    wal = _Wal(bytes(fixed))
    running = wal.header_sum
    rewritten = 0
    for i in range(report.chain_end):  # not past it: frames of a torn tail stay unread
        _, _, salt1, salt2, stored, body = wal.frame(i)
        running = _checksum(body, wal.big_endian, *running)
        at = _HEADER + i * wal.frame_size
        if running != stored or (salt1, salt2) != (wal.salt1, wal.salt2):
            struct.pack_into(">4I", fixed, at + 8, wal.salt1, wal.salt2, *running)
            rewritten += 1
    with open(path, "r+b") as f:
        f.write(fixed)
    return rewritten
