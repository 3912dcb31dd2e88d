"""What one segment file holds, and what to do with it. Pure: no files.

Recovery (:mod:`agent.spool.recovery`) and ``slsfwd spool verify``
(:mod:`agent.spool.health`) both pass every segment through :func:`scan_segment`
and :func:`fate`, so what verify reports is what the next start does.

A damaged header costs the header, not the segment: every record carries its
own framing, CRC and seq, so the records are read whatever the header says,
unless it names a newer format. The fates, in order of precedence:

* ``refuse``: the header is a newer format's, its checksum intact. Never misread.
* ``quarantine``: nothing in the file can be used: it cannot be read, its name is
  not a seq (slsfwd did not write it), or its header is damaged and not one record
  in it checks out. It is moved aside, never deleted.
* ``delete``: shorter than a header (created, never written), or every record in it
  is acknowledged (or it holds none and its header is intact or zeroed: a torn first
  write; what it held is counted as torn).
* ``keep``: it holds records still to ship.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from . import format as fmt

SEGMENT_SUFFIX = ".seg"
SEQ_DIGITS = 20

KEEP, DELETE, QUARANTINE, REFUSE = "keep", "delete", "quarantine", "refuse"
# Why a segment is quarantined: the metric's reason label.
UNREADABLE, BAD_NAME, NO_RECORDS = "unreadable", "bad_name", "no_records"


def segment_name(first_seq: int) -> str:
    return f"{first_seq:0{SEQ_DIGITS}d}{SEGMENT_SUFFIX}"


def first_seq_of(name: str) -> int | None:
    """The seq a segment's file name gives, or None if slsfwd did not name it."""
    stem = name[: -len(SEGMENT_SUFFIX)] if name.endswith(SEGMENT_SUFFIX) else ""
    return int(stem) if stem.isascii() and stem.isdigit() else None


@dataclass(slots=True)
class SegmentScan:
    name: str
    first_seq: int | None
    header: fmt.SegmentHeader
    size: int = 0  # bytes in the file
    records: list[fmt.Record] = field(default_factory=list)
    last_seq: int = -1  # the largest seq in records; -1: none
    corrupt_records: int = 0
    corrupt_bytes: int = 0
    torn_bytes: int = 0
    unreadable: str = ""  # why the file could not be read

    @property
    def valid_size(self) -> int:
        """Where the torn tail (if any) begins: the segment's readable end."""
        return self.size - self.torn_bytes

    @property
    def header_damaged(self) -> bool:
        return self.header.state in (fmt.HEADER_ZEROED, fmt.HEADER_CORRUPT)

    def backlog(self, acked: int) -> Backlog:
        """The records not acknowledged yet: what a start replays."""
        if self.last_seq < acked:
            return Backlog(0, 0, 0)
        unacked = [record for record in self.records if record.seq >= acked]
        return Backlog(len(unacked), sum(r.lines for r in unacked), sum(len(r.payload) for r in unacked))


class Backlog(NamedTuple):
    records: int
    lines: int
    bytes: int


def scan_segment(name: str, data: bytes) -> SegmentScan:
    header = fmt.read_segment_header(data)
    scan = SegmentScan(name, first_seq_of(name), header, size=len(data))
    if header.state in (fmt.HEADER_SHORT, fmt.HEADER_NEWER):
        return scan  # no records to read: none fit, or their format is unknown
    result = fmt.scan(data, copy=False)  # what is kept is counted, not shipped: the reader reads it again
    scan.records = result.records
    scan.last_seq = max((record.seq for record in result.records), default=-1)
    scan.corrupt_records = result.corrupt_records
    scan.corrupt_bytes = result.corrupt_bytes
    scan.torn_bytes = result.torn_bytes
    return scan


def unreadable_segment(name: str, error: str) -> SegmentScan:
    return SegmentScan(name, first_seq_of(name), fmt.SegmentHeader(fmt.HEADER_CORRUPT), unreadable=error)


def fate(scan: SegmentScan, acked: int) -> tuple[str, str]:
    """(what to do with the segment, why): see the module docstring."""
    if scan.unreadable:
        return QUARANTINE, UNREADABLE
    if scan.header.state == fmt.HEADER_NEWER:
        return REFUSE, ""
    if scan.first_seq is None:
        return QUARANTINE, BAD_NAME
    if scan.header.state == fmt.HEADER_SHORT:
        return DELETE, "never written"
    if scan.header.state == fmt.HEADER_CORRUPT and not scan.records:
        return QUARANTINE, NO_RECORDS
    if scan.last_seq < acked:
        return DELETE, "acknowledged"
    return KEEP, ""
