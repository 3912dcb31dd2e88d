"""The disk spool: its state, opening and recovery, shutdown and what it reports.

Its work is cut along its seams, one part per module: :mod:`.writer` (appending),
:mod:`.reader` (reading back), :mod:`.acks` (acknowledging and the ledger), :mod:`.commit`
(the group commit) and :mod:`.dropping` (``drop_oldest``); :mod:`.records` holds what they
share and :mod:`.tuning` their sizes and timings. The format and its invariants are in the
package docstring (:mod:`agent.spool`).
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import os
from pathlib import Path
from typing import Callable

from agent.ops import metrics
from agent.ops.files import write_all
from agent.ops.selflog import RateLimitedLog

from . import format as fmt
from .ledger import Ledger
from .queue import Chunk
from .recovery import (
    KeptSegment,
    SpoolError,
    load_ledger,
    recover_segments,
)
from .report import RecoveryReport
from .scan import segment_name

log = logging.getLogger("slsfwd.spool")
from . import tuning
from .acks import Acknowledging
from .commit import GroupCommit
from .dropping import DroppingOldest
from .reader import Reading
from .records import _Pending, _Segment, _Totals
from .writer import Appending

log = logging.getLogger("slsfwd.spool")


class DiskSpool(Appending, Reading, Acknowledging, GroupCommit, DroppingOldest):
    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        fsync_ms: int = 200,
        full_policy: str = "backpressure",
        segment_bytes: int = tuning.DEFAULT_SEGMENT_BYTES,
        read_ahead_bytes: int | None = None,  # None: tuning.READ_AHEAD_BYTES
    ) -> None:
        self.directory = Path(directory) / tuning.QUEUE_DIR
        self.max_bytes = max_bytes
        self.fsync_ms = fsync_ms
        self.full_policy = full_policy
        self.segment_bytes = segment_bytes
        self.read_ahead_bytes = tuning.READ_AHEAD_BYTES if read_ahead_bytes is None else read_ahead_bytes
        self.recovery = RecoveryReport()
        self._segments: list[_Segment] = []
        self._active: _Segment | None = None  # None only while a write error keeps us from creating it
        self._recovered: set[Path] = set()
        self._fd = -1
        self._lock_fd = -1
        self._next_seq = 1
        self._acked_seq = 1  # every seq below is acknowledged
        self._acked_above: set[int] = set()
        # Seqs lost to damage, found as a jump in the seqs handed out: start -> end (exclusive).
        # They count as acknowledged: waiting for them would hold the ledger back for good.
        self._lost: dict[int, int] = {}
        self._handed_upto = 1  # every seq below was handed out, acknowledged or lost
        self._ledger = Ledger(self.directory / "ledger")
        self._ledger_write_soon = False
        self._totals = _Totals()  # everything not acknowledged, on disk or pending
        self._handed_out: dict[int, tuple[int, int, int]] = {}  # seq -> (bytes, lines, received_at)
        # Reading: chunks in memory first, then records loaded from disk.
        self._mem: collections.deque[Chunk] = collections.deque()
        self._mem_bytes = 0
        self._mem_mode = True  # True: every unread record is in _mem (read position == write end)
        self._disk: collections.deque[fmt.Record] = collections.deque()
        self._read_index = 0  # index into _segments
        self._read_offset = fmt.SEGMENT_HEADER_SIZE
        self._pending: collections.deque[_Pending] = collections.deque()
        self._written_seq = 0  # last seq written to a segment
        self._durable_seq = 0  # last seq known to be on stable storage
        self._durable_waiters: collections.deque[tuple[int, Callable[[], None]]] = collections.deque()
        self._write_error: str | None = None
        self._retry_handle: asyncio.TimerHandle | None = None
        self._sync_handle: asyncio.TimerHandle | None = None
        self._sync_task: asyncio.Task | None = None
        self._last_sync_start = float("-inf")  # loop time
        self._unsynced_bytes = 0  # written since the last sync began
        self._retry_sync_at = float("-inf")  # after a failed sync, not before this (loop time)
        self._dirty = False
        # Rotation does not fsync on the event loop: the group commit syncs these
        # finished segments' fds, then the directory (new segment entries), then the ledger.
        self._unsynced_fds: list[int] = []
        self._dir_dirty = False
        self._sync_urgent = False
        self._has_data = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._error_log = RateLimitedLog(log, interval_s=60.0)
        self.dropped_lines = 0
        self.closed = False

    # -- opening and recovery ---------------------------------------------

    def open(self) -> RecoveryReport:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise
        self._publish()  # the gauges read the totals when scraped: nothing to do per append or ack
        return self.recovery

    def _recover(self) -> None:
        acked = load_ledger(self._ledger, self.recovery)
        for kept in recover_segments(self.directory, acked, self.recovery):
            self._keep_recovered(kept)
        self._recovered = {segment.path for segment in self._segments}  # their damage is counted
        self._acked_seq = self._handed_upto = acked
        self._next_seq = max([acked] + [s.last_seq + 1 for s in self._segments])
        self._written_seq = self._durable_seq = self._next_seq - 1  # recovered records are on disk
        try:
            # Both slots are allocated now, while there is room; later writes overwrite them.
            self._ledger.open(acked, rewrite=bool(self.recovery.ledger_problem))
        except OSError as exc:
            self._error_log.error("cannot create the spool ledger yet: %s", exc)
        self._read_index = 0
        self._read_offset = fmt.SEGMENT_HEADER_SIZE
        self._mem_mode = not self._segments  # a backlog is read from disk first
        try:
            self._open_new_segment(self._next_seq)
        except OSError as exc:
            # A full disk must not stop the agent: it can still ship the backlog, which
            # frees space; the first append creates the segment (see _write).
            self._note_write_error(exc)

    def _take_lock(self) -> None:
        self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise SpoolError(f"{self.directory} is in use by another slsfwd process") from None

    def _keep_recovered(self, kept: KeptSegment) -> None:
        self._segments.append(_Segment(kept.first_seq, kept.path, kept.size, kept.last_seq, kept.first_received_at))
        self._totals.bytes += kept.backlog.bytes
        self._totals.lines += kept.backlog.lines
        self._totals.chunks += kept.backlog.records

    def _open_new_segment(self, first_seq: int) -> None:
        """A new active segment, named by the seq of the first record it will hold."""
        path = self.directory / segment_name(first_seq)
        # O_EXCL: a segment file is never reused; that would mix two runs' records.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            write_all(fd, fmt.segment_header())
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        if self._fd >= 0:
            self._unsynced_fds.append(self._fd)  # the group commit syncs and closes it
        self._fd = fd
        self._dirty = self._dir_dirty = True
        self._active = _Segment(first_seq, path)
        self._segments.append(self._active)

    async def flush(self) -> None:
        """Make everything written durable and persist the ledger now."""
        if self._sync_task is not None:
            await asyncio.gather(self._sync_task, return_exceptions=True)
        if self._sync_handle is not None:
            self._sync_handle.cancel()
            self._sync_handle = None
        await self._sync_in_thread()

    async def close(self) -> None:
        if self.closed:
            return
        await self.flush()
        self.closed = True
        for handle in (self._retry_handle, self._sync_handle):
            if handle is not None:
                handle.cancel()
        if self._pending:
            log.error(
                "%d chunk(s) (%d lines) could not be written to the spool before exit and are lost",
                len(self._pending), sum(p.lines for p in self._pending),
            )
            metrics.LOST_LINES.labels(reason="spool_write_error").inc(sum(p.lines for p in self._pending))
        for fd in self._unsynced_fds:  # left only by a failed sync, already logged
            os.close(fd)
        self._unsynced_fds = []
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._ledger.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- observability -----------------------------------------------------

    @property
    def backlog_bytes(self) -> int:
        return self._totals.bytes

    @property
    def backlog_chunks(self) -> int:
        return self._totals.chunks

    @property
    def unread(self) -> int:
        unread_disk = 0 if self._mem_mode else 1  # at least one; exact count would need a scan
        return len(self._mem) + len(self._disk) + unread_disk + len(self._pending)

    def unacked_lines(self) -> int:
        return self._totals.lines

    def oldest_unacked_received_at(self) -> int | None:
        """Receive time of the oldest line not yet acknowledged (an upper bound on its age)."""
        if self._totals.chunks == 0:
            return None
        candidates = [entry[2] for entry in self._handed_out.values()]
        for queue in (self._mem, self._disk, self._pending):
            if queue:
                candidates.append(queue[0].received_at)
        if not self._mem_mode and self._read_index < len(self._segments):
            candidates.append(self._segments[self._read_index].first_received_at)
        return min(candidates) if candidates else None

    @property
    def write_error(self) -> str | None:
        return self._write_error

    def _publish(self) -> None:
        totals = self._totals
        metrics.SPOOL_BYTES.set_function(lambda: totals.bytes)
        metrics.SPOOL_BACKLOG_LINES.set_function(lambda: totals.lines)
        metrics.SPOOL_BACKLOG_CHUNKS.set_function(lambda: totals.chunks)
