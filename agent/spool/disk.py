"""The disk spool: segment files, group commit, acknowledgement, recovery.

The format and its invariants are in the package docstring (:mod:`agent.spool`).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import fcntl
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from agent.ops import metrics
from agent.ops.files import fsync_dir, write_all
from agent.ops.selflog import RateLimitedLog
from agent.ops.wakeups import on_grid

from . import format as fmt
from .ledger import Ledger
from .queue import Chunk
from .recovery import (
    KeptSegment,
    SpoolError,
    count_record_damage,
    load_ledger,
    recover_segments,
)
from .report import RecoveryReport
from .scan import segment_name

log = logging.getLogger("slsfwd.spool")

QUEUE_DIR = "queue"
DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024
READ_AHEAD_BYTES = 8 * 1024 * 1024  # chunks kept in memory for the reader before it reads from disk
DISK_READ_BYTES = 1024 * 1024  # a reader behind the writer reads records back this much at a time
WRITE_RETRY_S = 1.0
# A group commit with at most this much written since the last one fdatasyncs on the loop
# (about a millisecond); more goes to a thread, so that the loop keeps receiving meanwhile.
INLINE_SYNC_BYTES = 256 * 1024
SYNC_RETRY_S = 0.1  # a failed sync is retried this long after at the soonest
# Acknowledgements reach the ledger file at once (a pwrite); its fdatasync rides on the next
# group commit, or waits at most this long when no data is written meanwhile.
LEDGER_SYNC_MS = 1000


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
class _SyncWork:
    """One group commit: fds to fdatasync and close, then the directory to fsync."""

    fds: list[int]
    directory: Path | None
    ledger: bool  # the ledger's fd is among fds
    acked: int  # the value the ledger file holds
    written: int  # every record up to this seq is in the files synced


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


class DiskSpool:
    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        fsync_ms: int = 200,
        full_policy: str = "backpressure",
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        read_ahead_bytes: int | None = None,  # None: READ_AHEAD_BYTES
    ) -> None:
        self.directory = Path(directory) / QUEUE_DIR
        self.max_bytes = max_bytes
        self.fsync_ms = fsync_ms
        self.full_policy = full_policy
        self.segment_bytes = segment_bytes
        self.read_ahead_bytes = READ_AHEAD_BYTES if read_ahead_bytes is None else read_ahead_bytes
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

    # -- appending (ChunkQueue) -------------------------------------------

    def append(self, received_at: int, peer: str, payload: bytes, lines: int | None = None) -> int:
        seq = self._next_seq
        self._next_seq += 1
        item = _Pending(seq, received_at, peer, payload, payload.count(b"\n") if lines is None else lines)
        self._totals.add(len(payload), item.lines)
        if self._pending or not self._write(item):
            self._pending.append(item)
            self._schedule_retry()
        self._after_append()
        return seq

    def when_durable(self, seq: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the record ``seq`` is fsynced (RELP acknowledges then)."""
        if seq <= self._durable_seq:
            callback()
        else:
            self._durable_waiters.append((seq, callback))

    def _mark_durable(self, upto: int) -> None:
        if upto <= self._durable_seq:
            return
        self._durable_seq = upto
        waiters = self._durable_waiters
        while waiters and waiters[0][0] <= upto:
            _, callback = waiters.popleft()
            callback()

    def _write(self, item: _Pending) -> bool:
        """Append one record to the active segment; False (nothing written) on an error."""
        active = self._active
        if active is None or (active.size >= self.segment_bytes and active.last_seq >= 0):
            try:
                self._open_new_segment(item.seq)
            except OSError as exc:
                self._note_write_error(exc)
                return False
            active = self._active
            assert active is not None
        head, payload = fmt.encode_record_parts(item.seq, item.received_at, item.lines, item.peer.encode(), item.payload)
        try:
            _write_both(self._fd, head, payload)
        except OSError as exc:
            self._truncate_back(active.size)
            self._note_write_error(exc)
            return False
        if active.last_seq < 0:
            active.first_received_at = item.received_at
        active.size += len(head) + len(payload)
        active.last_seq = item.seq
        self._written_seq = item.seq
        self._dirty = True
        self._unsynced_bytes += len(head) + len(payload)
        chunk = Chunk(item.seq, item.received_at, item.peer, item.payload, item.lines, time.monotonic())
        if self._mem_mode and self._mem_bytes < self.read_ahead_bytes:
            self._mem.append(chunk)
            self._mem_bytes += len(item.payload)
            self._read_index = len(self._segments) - 1  # the active segment is always the last
            self._read_offset = active.size
        else:
            self._mem_mode = False  # the reader goes to disk from its position
        if self._write_error is not None and not self._pending:
            self._clear_write_error()
        return True

    def _after_append(self) -> None:
        if self.fsync_ms == 0 and self._dirty:
            self._sync_now()
        else:
            self._schedule_sync()
        if self._totals.bytes >= self.max_bytes:
            if self.full_policy == "drop_oldest":
                self._drop_oldest()
            if self._totals.bytes >= self.max_bytes:
                self._has_room.clear()
        # Wake the reader after arming the sync, so that a sync handed to the thread starts
        # before the reader's turn: it then ends while the loop is busy, not after it slept.
        self._has_data.set()

    def _truncate_back(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)  # a partial record must not stay behind
        except OSError as exc:
            self._error_log.error("cannot truncate a partial spool record: %s", exc)

    def _note_write_error(self, exc: OSError) -> None:
        reason = "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "io_error"
        if self._write_error is None:
            metrics.SPOOL_WRITE_ERRORS.labels(reason=reason).inc()
        self._write_error = reason
        metrics.SPOOL_WRITE_BLOCKED.set(1)
        self._has_room.clear()
        self._error_log.error(
            "cannot write to the spool in %s (%s): input paused, retrying every %.0f s; nothing is dropped",
            self.directory, os.strerror(exc.errno or 0) or exc, WRITE_RETRY_S,
        )

    def _clear_write_error(self) -> None:
        log.info("spool writes work again")
        self._write_error = None
        metrics.SPOOL_WRITE_BLOCKED.set(0)

    def _schedule_retry(self) -> None:
        if self._retry_handle is None and not self.closed:
            loop = asyncio.get_running_loop()
            self._retry_handle = loop.call_later(WRITE_RETRY_S, self._retry_pending)

    def _retry_pending(self) -> None:
        self._retry_handle = None
        while self._pending:
            if not self._write(self._pending[0]):
                self._schedule_retry()
                return
            self._pending.popleft()
        if self._write_error is not None:
            self._clear_write_error()
        self._after_append()
        if self._totals.bytes < self.max_bytes:
            self._has_room.set()

    @property
    def writable(self) -> bool:
        return self._totals.bytes < self.max_bytes and not self._pending

    async def wait_writable(self) -> None:
        while not self.writable:
            self._has_room.clear()
            await self._has_room.wait()

    # -- reading and acknowledging (ChunkQueue) ----------------------------

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
        """Load about DISK_READ_BYTES of records from the read position: reading a whole
        segment at once held it twice in memory (the bytes and the records' payloads)."""
        want = DISK_READ_BYTES
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

    # -- durability: group commit, ledger, segment deletion ----------------

    def request_sync(self) -> None:
        """Sync as soon as possible (a waiter needs durability, e.g. RELP acks); a sync
        already running is followed by another at once, so waiters group-commit per batch."""
        self._sync_urgent = True
        if self._sync_task is None and not self.closed:
            self._start_sync()

    def _schedule_sync(self) -> None:
        """Arm the group commit. A write is synced at once if no sync began in the last
        ``fsync_ms`` (so low rates need no timer wake-up for it), else by the sync
        ``fsync_ms`` after the last one began; an acknowledgement alone waits up to
        LEDGER_SYNC_MS. A running sync schedules the next one when it ends."""
        if self._sync_task is not None or self.closed:
            return
        data = self._dirty or bool(self._unsynced_fds)
        if not data and not self._ledger_behind():
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if data:
            delay = max(self._last_sync_start + self.fsync_ms / 1000.0, self._retry_sync_at) - now
            if delay <= 0:
                self._start_sync()
                return
        else:
            delay = max(self.fsync_ms, LEDGER_SYNC_MS) / 1000.0
        when = on_grid(now, delay)
        if self._sync_handle is not None:
            if self._sync_handle.when() <= when:
                return
            self._sync_handle.cancel()
        self._sync_handle = loop.call_at(when, self._start_sync)

    def _ledger_behind(self) -> bool:
        return self._ledger.unsynced or self._acked_seq > self._ledger.value

    def _needs_sync(self) -> bool:
        return self._dirty or bool(self._unsynced_fds) or self._ledger_behind()

    def _start_sync(self) -> None:
        if self._sync_handle is not None:
            self._sync_handle.cancel()  # this sync does what it was armed for
            self._sync_handle = None
        if not self._needs_sync():
            return
        loop = asyncio.get_running_loop()
        self._last_sync_start = loop.time()
        if self._unsynced_bytes <= INLINE_SYNC_BYTES:
            # Little to write back: syncing here costs less CPU than handing it to the
            # thread (a thread wake-up, GIL hand-offs, and one more wake-up of the loop).
            self._sync_now()
        else:
            self._sync_task = loop.create_task(self._sync_in_thread())

    def _take_sync_work(self) -> _SyncWork:
        """What covers everything written so far: segment fds, the directory, the ledger."""
        fds, self._unsynced_fds = self._unsynced_fds, []
        if self._dirty and self._fd >= 0:
            fds.append(os.dup(self._fd))
        sync_dir, self._dir_dirty = self._dir_dirty, False
        self._dirty = self._sync_urgent = False
        self._unsynced_bytes = 0
        if self._acked_seq > self._ledger.value:
            self._write_ledger()  # a write that failed before, retried
        ledger_fd, acked = self._ledger.take_sync()
        if ledger_fd >= 0:
            fds.append(ledger_fd)
        return _SyncWork(fds, self.directory if sync_dir else None, ledger_fd >= 0, acked, self._written_seq)

    def _sync_done(self, work: _SyncWork) -> None:
        if work.ledger:
            self._ledger.synced(work.acked)
        self._after_persist(self._ledger.durable)
        self._mark_durable(work.written)

    def _sync_failed(self, work: _SyncWork, exc: OSError) -> None:
        self._retry_sync_at = asyncio.get_running_loop().time() + max(self.fsync_ms / 1000.0, SYNC_RETRY_S)
        self._dirty = self._dir_dirty = True
        if work.ledger:
            self._ledger.sync_failed()
        self._error_log.error("spool sync failed (%s); retrying", exc)

    async def _sync_in_thread(self) -> None:
        work = self._take_sync_work()
        try:
            await asyncio.to_thread(_sync_files, work.fds, work.directory)
            self._sync_done(work)
        except OSError as exc:
            self._sync_failed(work, exc)
        finally:
            self._sync_task = None
        if self._sync_urgent and not self.closed:
            self.request_sync()
        elif self._needs_sync():
            self._schedule_sync()

    def _sync_now(self) -> None:
        work = self._take_sync_work()
        try:
            _sync_files(work.fds, work.directory)
            self._sync_done(work)
        except OSError as exc:  # append() must never fail: retry in the group commit
            self._sync_failed(work, exc)
            self._schedule_sync()

    def _after_persist(self, acked: int) -> None:
        # Whole segments below the durable ledger can go; never the active one.
        while self._segments and self._segments[0] is not self._active and self._segments[0].last_seq < acked:
            segment = self._segments.pop(0)
            if self._read_index == 0:  # it was read to its end: continue at the next one's start
                self._read_offset = fmt.SEGMENT_HEADER_SIZE
            else:
                self._read_index -= 1
            try:
                segment.path.unlink()
            except FileNotFoundError:
                pass

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

    # -- full spool: drop the oldest segment (opt-in) ----------------------

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


def _write_both(fd: int, head: bytes, payload: bytes) -> None:
    written = os.writev(fd, (head, payload))
    if written < len(head) + len(payload):  # a short write (a nearly full disk): finish it
        write_all(fd, (head + payload)[written:])


def _pread(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _sync_files(fds: list[int], directory: Path | None) -> None:
    """fdatasync and close every fd (all of them closed, even if one fails), then fsync
    ``directory`` so that new segment files are found after a power loss."""
    error: OSError | None = None
    for fd in fds:
        try:
            os.fdatasync(fd)
        except OSError as exc:
            error = error or exc
        finally:
            os.close(fd)
    if error is not None:
        raise error
    if directory is not None:
        fsync_dir(directory)
