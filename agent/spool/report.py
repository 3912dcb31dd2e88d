"""What a spool holds and what is damaged in it: one tally for recovery and ``slsfwd spool verify``.

Pure: it adds up ledger reads and segment scans (:mod:`agent.spool.scan`); the
callers read the files and act.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import format as fmt
from .scan import DELETE, QUARANTINE, Backlog, SegmentScan

NO_BACKLOG = Backlog(0, 0, 0)


@dataclass(slots=True)
class RecoveryReport:
    segments: int = 0  # segment files read (quarantined ones and empty ones aside)
    records: int = 0  # intact records in them
    replay_records: int = 0  # not acknowledged: shipped (again)
    replay_lines: int = 0
    replay_bytes: int = 0
    corrupt_records: int = 0  # CRC mismatches in the middle, skipped
    corrupt_bytes: int = 0
    torn_bytes: int = 0  # an incomplete record (or garbage) at the end, cut off
    deleted_segments: int = 0  # every record acknowledged
    damaged_headers: int = 0  # zeroed or corrupt; their records are read all the same
    quarantined_segments: int = 0  # nothing in them usable: moved to quarantine/
    acked_seq: int = 1
    ledger_problem: str = ""  # no slot valid: everything still in the segments is replayed
    ledger_damaged_slots: int = 0
    quarantine_files: int = 0  # verify only: what quarantine/ holds, from this start or earlier ones

    def add_ledger(self, slots: fmt.LedgerSlots | None) -> int:
        """Note the ledger as read (None: no file yet); the acknowledged position to use."""
        if slots is not None:
            self.ledger_damaged_slots += slots.damaged_slots
            if slots.acked_seq is None:
                # Replaying everything still on disk costs duplicates, never loss.
                self.ledger_problem = "; ".join(slots.problems)
            else:
                self.acked_seq = slots.acked_seq
        return self.acked_seq

    def add_segment(self, scan: SegmentScan, action: str) -> Backlog:
        """Tally a scanned segment and what is done with it; its backlog (what a start replays)."""
        if action == QUARANTINE:
            self.quarantined_segments += 1  # its header, if damaged, is not counted apart
            return NO_BACKLOG
        if scan.header.state == fmt.HEADER_SHORT:
            return NO_BACKLOG  # created, never written: nothing in it
        self.segments += 1
        self.records += len(scan.records)
        self.corrupt_records += scan.corrupt_records
        self.corrupt_bytes += scan.corrupt_bytes
        self.torn_bytes += scan.torn_bytes
        self.damaged_headers += scan.header_damaged
        if action == DELETE:
            self.deleted_segments += 1
            return NO_BACKLOG
        backlog = scan.backlog(self.acked_seq)
        self.replay_records += backlog.records
        self.replay_lines += backlog.lines
        self.replay_bytes += backlog.bytes
        return backlog

    @property
    def damaged(self) -> bool:
        return bool(
            self.corrupt_records or self.torn_bytes or self.damaged_headers or self.quarantined_segments
            or self.ledger_damaged_slots or self.ledger_problem or self.quarantine_files
        )

    def summary(self) -> str:
        """One line for ``slsfwd spool verify``."""
        parts = [
            f"{self.segments} segments, {self.records} records",
            f"backlog {self.replay_lines} lines in {self.replay_records} records ({self.replay_bytes} bytes)",
            f"corrupt {self.corrupt_records} records ({self.corrupt_bytes} bytes), torn {self.torn_bytes} bytes",
        ]
        if self.damaged_headers:
            parts.append(f"{self.damaged_headers} damaged segment headers (their records are read)")
        if self.quarantined_segments:
            parts.append(f"{self.quarantined_segments} unusable segments (moved to quarantine/ at the next start)")
        if self.ledger_problem:
            parts.append(f"ledger lost ({self.ledger_problem}): the next start replays every record")
        elif self.ledger_damaged_slots:
            parts.append(f"{self.ledger_damaged_slots} damaged ledger slot (the other one is used)")
        if self.quarantine_files:
            parts.append(f"quarantine/ holds {self.quarantine_files} files set aside earlier: inspect, then remove them")
        if not self.damaged:
            parts.append("healthy")
        return "; ".join(parts)

