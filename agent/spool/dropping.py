"""``spool.full_policy = "drop_oldest"``: a full spool deletes its oldest segment and counts its lines.

A part of :class:`agent.spool.disk.DiskSpool`, whose ``__init__`` holds the state."""

from __future__ import annotations

import collections
import logging

from agent.ops import metrics

from . import format as fmt
from .acks import advance_acked
from .records import _pread, _Segment

log = logging.getLogger("slsfwd.spool")


class DroppingOldest:

    def _drop_oldest(self) -> None:
        while self._totals.bytes >= self.max_bytes:
            oldest = self._segments[0] if self._segments else None
            if oldest is None or oldest.last_seq < 0:
                return  # nothing left on disk to drop; the rest waits in memory
            if oldest is self._active:
                try:
                    self._open_new_segment(self._next_seq)
                except OSError as exc:
                    self._note_write_error(exc)
                    return
            if not self._discard_segment(oldest):
                return

    def _discard_segment(self, segment: _Segment) -> bool:
        """Drop a whole segment: ledger first (so a failure changes nothing), then state."""
        acked_above = {s for s in self._acked_above if s > segment.last_seq}
        acked = max(self._acked_seq, segment.last_seq + 1)
        lost = {max(start, acked): end for start, end in self._lost.items() if end > acked}
        acked = advance_acked(acked, acked_above, lost)
        try:
            # Durable before the segment goes, as for acknowledged segments (an invariant).
            self._ledger.write(acked)
            self._ledger.sync_now()
        except OSError as exc:
            self._note_write_error(exc)
            return False
        dropped_lines = 0
        for record in fmt.scan(_pread(segment.path, 0, segment.size)).records:
            if record.seq < self._acked_seq or record.seq in self._acked_above:
                continue
            self._handed_out.pop(record.seq, None)  # its ack, if it comes, is ignored
            self._totals.remove(len(record.payload), record.lines)
            dropped_lines += record.lines
        self._mem = collections.deque(c for c in self._mem if c.seq > segment.last_seq)
        self._mem_bytes = sum(len(c.payload) for c in self._mem)
        self._disk = collections.deque(r for r in self._disk if r.seq > segment.last_seq)
        self._acked_above = acked_above
        self._lost = lost
        self._acked_seq = acked
        self._segments.remove(segment)
        if self._read_index == 0:
            self._read_offset = fmt.SEGMENT_HEADER_SIZE
        else:
            self._read_index -= 1
        segment.path.unlink(missing_ok=True)
        self.dropped_lines += dropped_lines
        metrics.SPOOL_DROPPED_LINES.labels(reason="spool_full").inc(dropped_lines)
        self._error_log.error(
            "spool full (spool.max_bytes = %d, full_policy = drop_oldest): dropped the oldest segment, %d lines",
            self.max_bytes, dropped_lines,
        )
        return True
