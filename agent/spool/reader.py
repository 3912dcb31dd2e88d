"""Reading: chunks still in memory first, then records read back from the segments a bounded
stretch at a time (damage found there is skipped and counted).

A part of :class:`agent.spool.disk.DiskSpool`, whose ``__init__`` holds the state."""

from __future__ import annotations

import logging

from . import format as fmt
from . import tuning
from .queue import Chunk
from .records import _pread, _Segment
from .recovery import (
    count_record_damage,
)

log = logging.getLogger("slsfwd.spool")


class Reading:

    async def get(self) -> Chunk:
        while True:
            chunk = self.get_nowait()
            if chunk is not None:
                return chunk
            self._has_data.clear()
            await self._has_data.wait()

    def get_nowait(self) -> Chunk | None:
        chunk = self._next_chunk()
        if chunk is not None:
            self._handed_out[chunk.seq] = (len(chunk.payload), chunk.lines, chunk.received_at)
        return chunk

    def _next_chunk(self) -> Chunk | None:
        if self._mem:
            chunk = self._mem.popleft()
            self._mem_bytes -= len(chunk.payload)
            self._handed_upto = chunk.seq + 1
            return chunk
        while not self._mem_mode:
            if self._disk:
                record = self._disk.popleft()
                if record.seq > self._handed_upto:
                    self._skip_lost(self._handed_upto, record.seq)
                self._handed_upto = record.seq + 1
                return Chunk(record.seq, record.received_at, record.peer, record.payload, record.lines)
            if not self._load_from_disk():
                self._mem_mode = True  # caught up with the writer
        return None

    def _load_from_disk(self) -> bool:
        """Read the next unread records at the read position; False when caught up."""
        while self._read_index < len(self._segments):
            segment = self._segments[self._read_index]
            # The newest segment is where the writer is (or will be, after a write error).
            is_active = segment is self._active or self._read_index == len(self._segments) - 1
            if self._read_offset < segment.size:
                self._read_records(segment)
                if self._disk:
                    return True
                if self._read_offset < segment.size:
                    continue  # that stretch held only damage: read on
            if is_active:
                return False
            self._read_index += 1
            self._read_offset = fmt.SEGMENT_HEADER_SIZE
        return False

    def _read_records(self, segment: _Segment) -> None:
        """Load about tuning.DISK_READ_BYTES of records from the read position: reading a whole
        segment at once held it twice in memory (the bytes and the records' payloads)."""
        want = tuning.DISK_READ_BYTES
        while True:
            remaining = segment.size - self._read_offset
            data = _pread(segment.path, self._read_offset, min(want, remaining))
            at_end = len(data) >= remaining
            result = fmt.scan(data, 0)
            if result.records or at_end:
                break
            want *= 2  # a record, or a stretch of damage, longer than the read
        if segment.path not in self._recovered:  # recovery counted those already
            # An incomplete record at the end of a read is only cut by the read, unless it
            # is the end of the segment.
            count_record_damage(segment.path, result.corrupt_records, result.corrupt_bytes,
                                result.torn_bytes if at_end else 0, self.recovery)
        self._disk.extend(r for r in result.records if r.seq >= self._acked_seq and r.seq not in self._acked_above)
        self._read_offset += len(data) if at_end else result.valid_end
