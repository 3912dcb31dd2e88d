"""Encoded logs -> LogGroups, one open batch per destination and source.

A batch closes when it holds ``max_logs`` logs, when the next log would take
it past ``max_bytes`` of raw protobuf, or ``linger`` seconds after its first
log. Closing hands it to ``on_close`` (the shipper).

Acknowledgement: a queue chunk's lines may land in several batches (they
can have different tags or sources). Each chunk gets a :class:`Ticket` that
counts the batches still holding its lines; when the last one is delivered
and the chunk was fully read, the ticket acknowledges the chunk.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate
from typing import Callable, NamedTuple


class Destination(NamedTuple):
    """Where a batch goes. A NamedTuple: hashed in C, and it keys a dict per line change."""

    project: str
    logstore: str
    topic: str


class Ticket:
    """Acknowledges one queue chunk once every batch holding its lines is done."""

    __slots__ = ("seq", "lines", "appended", "_pending", "_sealed", "_on_done")

    def __init__(self, seq: int, on_done: Callable[[int], None], appended: float = 0.0) -> None:
        self.seq = seq
        self.lines = 0
        self.appended = appended  # when its chunk entered the queue (time.monotonic())
        self._pending = 0
        self._sealed = False
        self._on_done = on_done

    def hold(self) -> None:
        self._pending += 1

    def release(self) -> None:
        self._pending -= 1
        if self._pending == 0 and self._sealed:
            self._on_done(self.seq)

    def seal(self) -> None:
        """No more batches will take lines from this chunk."""
        self._sealed = True
        if self._pending == 0:
            self._on_done(self.seq)


class Batch:
    __slots__ = ("dest", "source", "logs", "raw_bytes", "tickets", "opened_at", "_last_ticket")

    def __init__(self, dest: Destination, source: str, opened_at: float) -> None:
        self.dest = dest
        self.source = source
        self.logs: list[bytes] = []
        self.raw_bytes = 0
        self.tickets: list[Ticket] = []
        self.opened_at = opened_at
        self._last_ticket: Ticket | None = None

    def hold(self, ticket: Ticket) -> None:
        """This batch will hold lines of ``ticket``'s chunk (idempotent per run of lines)."""
        if ticket is not self._last_ticket:
            ticket.hold()
            self.tickets.append(ticket)
            self._last_ticket = ticket

    def release(self) -> None:
        """The batch was delivered (or dead-lettered): let its chunks go."""
        for ticket in self.tickets:
            ticket.release()
        self.tickets = []

    def __len__(self) -> int:
        return len(self.logs)


class Batcher:
    def __init__(
        self,
        *,
        max_logs: int,
        max_bytes: int,
        linger: float,
        on_close: Callable[[Batch], None],
        clock: Callable[[], float],
    ) -> None:
        self.max_logs = max_logs
        self.max_bytes = max_bytes
        self.linger = linger
        self._on_close = on_close
        self._clock = clock
        self._open: dict[tuple[Destination, str], Batch] = {}

    def add_run(self, route: tuple[Destination, str], logs: list[bytes], ticket: Ticket) -> None:
        """Append ``logs`` (of ``ticket``'s chunk, in order) to the route's open batches.

        A batch closes as soon as it is full, that is when it holds ``max_logs`` logs or
        ``max_bytes`` (a single larger log goes alone), and before a log would take it past
        ``max_bytes``. The cut is found with running sums in C, not with a comparison per
        log in Python.
        """
        start, end = 0, len(logs)
        while start < end:
            batch = self._open.get(route)
            if batch is None:
                batch = self._open_batch(*route)
            room = self.max_logs - len(batch.logs)
            totals = list(accumulate(map(len, logs[start : start + room])))
            fit = bisect_right(totals, self.max_bytes - batch.raw_bytes)
            if fit == 0 and not batch.logs:
                fit = 1
            if fit:
                batch.hold(ticket)
                batch.logs += logs[start : start + fit]
                batch.raw_bytes += totals[fit - 1]
                start += fit
            if start < end or len(batch.logs) >= self.max_logs or batch.raw_bytes >= self.max_bytes:
                self._close(batch)

    def next_deadline(self) -> float | None:
        if not self._open:
            return None
        return min(b.opened_at for b in self._open.values()) + self.linger

    def close_expired(self, early_s: float = 0.0) -> None:
        """Close the batches whose linger ends within ``early_s`` from now."""
        cutoff = self._clock() - self.linger + early_s
        for batch in [b for b in self._open.values() if b.opened_at <= cutoff]:
            self._close(batch)

    def close_stale(self, appended_before: float) -> None:
        """Close the batches whose oldest lines entered the queue before ``appended_before``.

        Called when the reader has caught up: ``linger`` is how long a line may wait for
        company, and lines read from a backlog have waited long enough already.
        """
        for batch in [b for b in self._open.values() if b.tickets and b.tickets[0].appended < appended_before]:
            self._close(batch)

    def close_all(self) -> None:
        for batch in list(self._open.values()):
            self._close(batch)

    @property
    def open_bytes(self) -> int:
        return sum(b.raw_bytes for b in self._open.values())

    def _open_batch(self, dest: Destination, source: str) -> Batch:
        batch = Batch(dest, source, self._clock())
        self._open[(dest, source)] = batch
        return batch

    def _close(self, batch: Batch) -> None:
        if self._open.get((batch.dest, batch.source)) is batch:
            del self._open[(batch.dest, batch.source)]
        if batch.logs:
            self._on_close(batch)
