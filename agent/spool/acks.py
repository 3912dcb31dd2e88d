"""Acknowledging: the acknowledged position advances past every record the service accepted (and past
seqs lost to damage) and is written to the ledger in the same loop turn.

A part of :class:`agent.spool.disk.DiskSpool`, whose ``__init__`` holds the state."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("slsfwd.spool")


class Acknowledging:
    def ack(self, seq: int) -> None:
        entry = self._handed_out.pop(seq, None)
        if entry is None or seq < self._acked_seq:
            return  # dropped meanwhile (drop_oldest), or acknowledged twice
        self._totals.remove(entry[0], entry[1])
        if seq == self._acked_seq:
            self._acked_seq += 1
            if self._acked_above or self._lost:
                self._acked_seq = advance_acked(self._acked_seq, self._acked_above, self._lost)
        else:
            self._acked_above.add(seq)
        if self._totals.bytes < self.max_bytes and not self._pending:
            self._has_room.set()
        self._acked_moved()

    def _skip_lost(self, start: int, end: int) -> None:
        """No record of the seqs [start, end) is left (damage, counted where it was found):
        they count as acknowledged."""
        start = max(start, self._acked_seq)
        if start >= end:
            return
        if start > self._acked_seq:
            self._lost[start] = end
            return
        self._acked_seq = advance_acked(end, self._acked_above, self._lost)
        self._acked_moved()

    def _acked_moved(self) -> None:
        if self._acked_seq > self._ledger.value and not self._ledger_write_soon and not self.closed:
            # Once per loop turn, however many chunks one response acknowledged.
            self._ledger_write_soon = True
            asyncio.get_running_loop().call_soon(self._write_ledger_soon)

    def _write_ledger_soon(self) -> None:
        self._ledger_write_soon = False
        if not self.closed:
            self._write_ledger()
            self._schedule_sync()

    def _write_ledger(self) -> None:
        """Put the acknowledged position in the ledger file (page cache: a kill -9 keeps it)."""
        try:
            self._ledger.write(self._acked_seq)
        except OSError as exc:
            self._error_log.error("cannot write the spool ledger (%s); retrying at the next group commit", exc)


def advance_acked(acked: int, above: set[int], lost: dict[int, int]) -> int:
    """The acknowledged position, moved past the seqs acknowledged out of order and the
    lost ones that follow it (consuming those entries)."""
    while True:
        if acked in above:
            above.remove(acked)
            acked += 1
        elif acked in lost:
            acked = lost.pop(acked)
        else:
            return acked
