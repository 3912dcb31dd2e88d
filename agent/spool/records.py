"""What the disk spool's parts share: a segment, a chunk waiting to be written, the running totals, and
writing and reading records in the files."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from agent.ops.files import write_all

from . import format as fmt

log = logging.getLogger("slsfwd.spool")


@dataclass(slots=True)
class _Segment:
    first_seq: int
    path: Path
    size: int = fmt.SEGMENT_HEADER_SIZE
    last_seq: int = -1  # -1: no record yet
    first_received_at: int = 0  # of its first record: bounds the age of anything unread in it


@dataclass(slots=True)
class _Pending:
    """A chunk that could not be written yet (disk full or another write error)."""

    seq: int
    received_at: int
    peer: str
    payload: bytes
    lines: int


@dataclass(slots=True)
class _Totals:
    bytes: int = 0
    lines: int = 0
    chunks: int = 0

    def add(self, nbytes: int, lines: int) -> None:
        self.bytes += nbytes
        self.lines += lines
        self.chunks += 1

    def remove(self, nbytes: int, lines: int) -> None:
        self.bytes -= nbytes
        self.lines -= lines
        self.chunks -= 1



def _write_both(fd: int, head: bytes, payload: bytes) -> None:
    written = os.writev(fd, (head, payload))
    if written < len(head) + len(payload):  # a short write (a nearly full disk): finish it
        write_all(fd, (head + payload)[written:])


def _pread(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)
