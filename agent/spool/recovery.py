"""Opening a spool at start: the ledger, then every segment, through the shared scan.

The I/O shell around :mod:`agent.spool.scan`: it reads the files, deletes
acknowledged segments, moves unusable ones aside (:mod:`agent.spool.quarantine`),
and logs and counts each loss once. Damage never stops the agent; only a spool
of a newer format does (before anything is deleted or moved), and a spool
directory that cannot be written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, NamedTuple

from agent.ops import metrics

from . import format as fmt
from .ledger import Ledger
from .quarantine import move_aside, quarantine_dir
from .report import RecoveryReport
from .scan import (
    BAD_NAME,
    DELETE,
    NO_RECORDS,
    QUARANTINE,
    REFUSE,
    SEGMENT_SUFFIX,
    UNREADABLE,
    Backlog,
    SegmentScan,
    fate,
    first_seq_of,
    scan_segment,
    unreadable_segment,
)

log = logging.getLogger("slsfwd.spool")


class SpoolError(Exception):
    """The spool cannot be used (a newer format version, locked by another agent, not writable)."""


def load_ledger(ledger: Ledger, report: RecoveryReport) -> int:
    """The acknowledged position. A damaged ledger costs duplicates, never a stop."""
    try:
        slots = ledger.load()
    except fmt.OtherVersionError as exc:
        raise SpoolError(str(exc)) from None
    acked = report.add_ledger(slots)
    if slots is not None and slots.damaged_slots:
        metrics.SPOOL_DAMAGED_LEDGER_SLOTS.inc(slots.damaged_slots)
    if report.ledger_problem:
        log.error("%s; replaying every record still in the spool (duplicates, never loss)", report.ledger_problem)
    elif slots is not None and slots.problems:
        outcome = "using the other slot" if slots.damaged_slots else "both slots check out"
        log.warning("%s; %s", "; ".join(slots.problems), outcome)
    return acked


def segment_paths(queue: Path) -> list[Path]:
    """Every segment file, oldest first (by the seq in the name; foreign names last)."""
    def order(path: Path) -> tuple[bool, int, str]:
        first_seq = first_seq_of(path.name)
        return first_seq is None, first_seq or 0, path.name

    return sorted(queue.glob("*" + SEGMENT_SUFFIX), key=order)


def read_segment(path: Path) -> SegmentScan:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return unreadable_segment(path.name, os.strerror(exc.errno) if exc.errno else str(exc))
    return scan_segment(path.name, data)


def refuse_newer(paths: list[Path]) -> None:
    """Raise SpoolError if any segment is of a newer format: checked before anything is
    deleted or moved, so a newer slsfwd finds its spool as it left it."""
    for path in paths:
        try:
            with open(path, "rb") as f:
                head = f.read(fmt.SEGMENT_HEADER_SIZE)
        except OSError:
            continue  # the full read will say so
        header = fmt.read_segment_header(head)
        if header.state == fmt.HEADER_NEWER:
            raise SpoolError(str(fmt.other_version_error(str(path), header.version, fmt.SEGMENT_VERSION)))


class KeptSegment(NamedTuple):
    path: Path
    first_seq: int
    size: int  # up to its torn tail, if any
    last_seq: int
    first_received_at: int
    backlog: Backlog


def recover_segments(queue: Path, acked: int, report: RecoveryReport) -> Iterator[KeptSegment]:
    """The segments still holding records to ship, oldest first. The others are deleted
    (acknowledged) or moved aside (unusable) on the way."""
    paths = segment_paths(queue)
    refuse_newer(paths)
    for path in paths:
        scan = read_segment(path)
        action, reason = fate(scan, acked)
        if action == REFUSE:  # written since the check above: not by us (we hold the lock)
            raise SpoolError(str(fmt.other_version_error(str(path), scan.header.version, fmt.SEGMENT_VERSION)))
        backlog = report.add_segment(scan, action)
        if action == QUARANTINE:
            _quarantine(path, scan, reason)
            continue
        _note_header(path, scan)
        count_record_damage(path, scan.corrupt_records, scan.corrupt_bytes, scan.torn_bytes)
        if action == DELETE:
            path.unlink(missing_ok=True)
            continue
        assert scan.first_seq is not None  # fate() quarantines the others
        kept = KeptSegment(path, scan.first_seq, scan.valid_size, scan.last_seq, scan.records[0].received_at, backlog)
        del scan  # its records hold a copy of every payload: freed before the next segment is read
        yield kept


def _note_header(path: Path, scan: SegmentScan) -> None:
    if scan.header.state == fmt.HEADER_ZEROED:
        metrics.SPOOL_DAMAGED_SEGMENT_HEADERS.labels(reason=fmt.HEADER_ZEROED).inc()
        log.warning("%s: segment header lost (zeros: a power loss right after it was created); "
                    "reading its %d records by their own checksums", path, len(scan.records))
    elif scan.header.state == fmt.HEADER_CORRUPT:
        metrics.SPOOL_DAMAGED_SEGMENT_HEADERS.labels(reason=fmt.HEADER_CORRUPT).inc()
        log.error("%s: segment header damaged (not a format version: its checksum fails); "
                  "reading its %d records by their own checksums", path, len(scan.records))


def _quarantine(path: Path, scan: SegmentScan, reason: str) -> None:
    why = {
        UNREADABLE: f"cannot be read: {scan.unreadable}",
        BAD_NAME: "its name is not a seq: slsfwd did not write it",
        NO_RECORDS: "its header is damaged and not one record in it checks out",
    }[reason]
    target_dir = quarantine_dir(path.parent.parent)
    try:
        target = move_aside(path, target_dir)
    except OSError as exc:
        raise SpoolError(f"{path}: unusable ({why}) and cannot be moved to {target_dir}: {exc}; "
                         "move it away by hand") from None
    metrics.SPOOL_QUARANTINED_SEGMENTS.labels(reason=reason).inc()
    log.error("%s: unusable (%s): moved to %s, %d bytes not shipped", path, why, target, scan.size)


def count_record_damage(path: Path, corrupt_records: int, corrupt_bytes: int, torn_bytes: int,
                        report: RecoveryReport | None = None) -> None:
    """Count and log records lost to damage (``report``: also add them to it)."""
    if corrupt_records:
        if report is not None:
            report.corrupt_records += corrupt_records
            report.corrupt_bytes += corrupt_bytes
        metrics.SPOOL_CORRUPT_RECORDS.inc(corrupt_records)
        metrics.SPOOL_CORRUPT_BYTES.labels(reason="crc").inc(corrupt_bytes)
        log.error("%s: skipped %d corrupt record(s), %d bytes lost", path, corrupt_records, corrupt_bytes)
    if torn_bytes:
        if report is not None:
            report.torn_bytes += torn_bytes
        metrics.SPOOL_CORRUPT_BYTES.labels(reason="torn").inc(torn_bytes)
        log.warning("%s: cut off a torn record at the end (%d bytes)", path, torn_bytes)
