"""Reading a SQLite WAL file's frame headers, to see which commits SQLite's recovery dropped.

SQLite's recovery keeps the frames up to the last commit before the first frame whose
checksum fails, and silently ignores the rest. A commit frame of the current WAL
generation (same salts as the header) beyond the frames SQLite recovered is therefore a
committed transaction lost. Layout: https://www.sqlite.org/fileformat.html#the_write_ahead_log
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

HEADER_SIZE = 32
FRAME_HEADER_SIZE = 24
MAGICS = (0x377F0682, 0x377F0683)  # the low bit: checksums over big-endian words
VERSION = 3007000


@dataclass(frozen=True, slots=True)
class WalFrames:
    """The frames of a WAL's current generation: those carrying the header's salts."""

    header_ok: bool  # magic, version, page size and header checksum all valid
    page_size: int
    frames: int  # frame slots in the file (a torn last one included)
    commits: tuple[int, ...]  # 1-based indexes of the current generation's commit frames

    def lost_commits(self, recovered: int) -> tuple[int, ...]:
        """The commit frames beyond the `recovered` frames SQLite kept."""
        return tuple(c for c in self.commits if c > recovered)


def checksum(data: bytes, big_endian: bool, s0: int = 0, s1: int = 0) -> tuple[int, int]:
    """SQLite's WAL checksum over `data` (a multiple of 8 bytes)."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def _valid_page_size(size: int) -> bool:
    return 512 <= size <= 65536 and size & (size - 1) == 0


def scan(wal: BinaryIO, size: int) -> WalFrames | None:
    """The current generation's frames of a WAL of `size` bytes; None if it has no header."""
    wal.seek(0)
    header = wal.read(HEADER_SIZE)
    if len(header) < HEADER_SIZE:
        return None
    magic, version, page_size, _, salt1, salt2, ck1, ck2 = struct.unpack(">8I", header)
    header_ok = (
        magic in MAGICS
        and version == VERSION
        and _valid_page_size(page_size)
        and checksum(header[:24], magic & 1 == 1) == (ck1, ck2)
    )
    if not _valid_page_size(page_size):
        # Without a page size the frames cannot be found; report the WAL as unusable.
        return WalFrames(header_ok=False, page_size=0, frames=0, commits=())
    stride = FRAME_HEADER_SIZE + page_size
    frames = max(0, -(-(size - HEADER_SIZE) // stride))  # a torn last frame counts
    commits = []
    for index in range(frames):
        wal.seek(HEADER_SIZE + index * stride)
        frame = wal.read(FRAME_HEADER_SIZE)
        if len(frame) < FRAME_HEADER_SIZE:
            break
        _, commit_size, f_salt1, f_salt2 = struct.unpack(">4I", frame[:16])
        if commit_size and (f_salt1, f_salt2) == (salt1, salt2):
            commits.append(index + 1)
    return WalFrames(header_ok, page_size, frames, tuple(commits))
