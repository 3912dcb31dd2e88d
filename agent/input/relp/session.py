"""One RELP session's state: what was received, what is durable, what to answer. Pure: no I/O, no clock.

Frames go in; chunks to append and responses to send come out, in order, each
answered only once its chunk is durable. :class:`DuplicateTracker` recognises
frames rsyslog resends after a reconnect.
"""

from __future__ import annotations

import collections
from typing import NamedTuple

from .protocol import (
    MAX_DATALEN,
    OPEN_RESPONSE,
    FrameParser,
    ack_frame,
    check_offers,
    format_frame,
    parse_offers,
)


class Pending:
    """A response (or a group of them) in a session's answer queue, sent once ``ready``."""

    __slots__ = ("response", "frames", "nbytes", "hashes", "since", "ready", "closes")

    def __init__(
        self, response: bytes, *, frames: int = 0, nbytes: int = 0, hashes: list[int] | None = None,
        since: float = 0.0, ready: bool = False, closes: bool = False,
    ) -> None:
        self.response = response
        self.frames = frames  # syslog frames answered by it
        self.nbytes = nbytes
        self.hashes = hashes or []
        self.since = since
        self.ready = ready
        self.closes = closes


class Received(NamedTuple):
    """What one read brought: the chunk to append (if any), its answer group, what went wrong."""

    payload: bytes  # LF-terminated lines of the syslog frames; b"" if none
    group: Pending | None  # the acknowledgements for those frames, to be made ready when durable
    counts: dict[str, int]  # frames by command
    error: str | None


_STATE_AWAIT_OPEN, _STATE_OPEN, _STATE_CLOSE_RECEIVED = range(3)


class RelpSession:
    """One RELP session without I/O: ``feed`` bytes, mark groups durable, ``take_output`` answers."""

    def __init__(self, *, max_datalen: int = MAX_DATALEN) -> None:
        self.parser = FrameParser(max_datalen=max_datalen)
        self._state = _STATE_AWAIT_OPEN
        self._answers: collections.deque[Pending] = collections.deque()
        self.error: str | None = None
        self.unacked_frames = 0
        self.unacked_bytes = 0
        self.acked_frames = 0
        self.close_answered = False  # the rsp to the client's close was taken: close the connection

    @property
    def opened(self) -> bool:
        return self._state != _STATE_AWAIT_OPEN

    def feed(self, data: bytes, now: float = 0.0) -> Received:
        if self.error is not None:
            return Received(b"", None, {}, self.error)
        frames = self.parser.feed(data)
        error = self.parser.error
        counts: dict[str, int] = {}
        lines: list[bytes] = []
        txnrs: list[int] = []
        close_txnr = 0
        for frame in frames:
            command = frame.command
            counts[command] = counts.get(command, 0) + 1
            if command == "syslog":
                if self._state != _STATE_OPEN:
                    error = "syslog frame before open" if self._state == _STATE_AWAIT_OPEN else "frame after close"
                    break
                lines.append(frame.data)
                txnrs.append(frame.txnr)
            elif command == "open":
                if self._state != _STATE_AWAIT_OPEN:
                    error = "open on an open session" if self._state == _STATE_OPEN else "frame after close"
                    break
                error = check_offers(parse_offers(frame.data))
                if error is not None:
                    break
                self._state = _STATE_OPEN
                self._answers.append(Pending(format_frame(frame.txnr, "rsp", OPEN_RESPONSE), ready=True))
            else:  # close
                if self._state == _STATE_CLOSE_RECEIVED:
                    error = "frame after close"
                    break
                self._state = _STATE_CLOSE_RECEIVED
                close_txnr = frame.txnr
        if error is not None:
            self.error = error
            return Received(b"", None, counts, error)
        payload = b""
        group = None
        if txnrs:
            nbytes = 0
            hashes = []
            for i, line in enumerate(lines):
                nbytes += len(line)
                hashes.append(hash(line))
                if not line.endswith(b"\n"):
                    lines[i] = line + b"\n"  # cut at rsyslog's size limit (or sent without it)
            payload = b"".join(lines)
            group = Pending(
                b"".join([ack_frame(t) for t in txnrs]), frames=len(txnrs), nbytes=nbytes, hashes=hashes, since=now
            )
            self._answers.append(group)
            self.unacked_frames += group.frames
            self.unacked_bytes += nbytes
        if close_txnr:
            self._answers.append(Pending(format_frame(close_txnr, "rsp"), ready=True, closes=True))
        return Received(payload, group, counts, None)

    def durable(self, group: Pending) -> None:
        group.ready = True

    def take_output(self) -> bytes:
        """The answers that may go out now: the ready ones at the head of the queue, in TXNR order."""
        answers = self._answers
        out = []
        while answers and answers[0].ready:
            item = answers.popleft()
            out.append(item.response)
            if item.frames:
                self.unacked_frames -= item.frames
                self.unacked_bytes -= item.nbytes
                self.acked_frames += item.frames
            if item.closes:
                self.close_answered = True
        return b"".join(out)

    @property
    def oldest_unacked_since(self) -> float | None:
        for item in self._answers:
            if not item.ready:
                return item.since
        return None

    def unacked_hashes(self) -> list[int]:
        """DATA hashes of the syslog frames appended but not answered (rsyslog will resend them)."""
        return [h for item in self._answers if item.frames for h in item.hashes]


class DuplicateTracker:
    """Per peer: DATA hashes left unacknowledged by closed sessions, remembered for ``window_s``.

    ``check`` counts (and forgets) the given hashes it remembers for that peer. Bounded: at most
    ``max_per_peer`` hashes per peer and ``max_peers`` peers (oldest forgotten first).
    """

    def __init__(self, *, window_s: float = 300.0, max_per_peer: int = 65536, max_peers: int = 1024) -> None:
        self.window_s = window_s
        self.max_per_peer = max_per_peer
        self.max_peers = max_peers
        self._peers: collections.OrderedDict[str, tuple[collections.deque, collections.Counter]] = (
            collections.OrderedDict()
        )

    def remember(self, peer: str, hashes: list[int], now: float) -> None:
        if not hashes:
            return
        entry = self._peers.get(peer)
        if entry is None:
            entry = self._peers[peer] = (collections.deque(), collections.Counter())
            while len(self._peers) > self.max_peers:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        order, live = entry
        expires = now + self.window_s
        for h in hashes:
            order.append((expires, h))
            live[h] += 1
        while len(order) > self.max_per_peer:
            _, h = order.popleft()
            self._forget(live, h)

    def check(self, peer: str, hashes: list[int], now: float) -> int:
        if not self._peers:
            return 0
        entry = self._peers.get(peer)
        if entry is None:
            return 0
        order, live = entry
        while order and order[0][0] <= now:
            _, h = order.popleft()
            self._forget(live, h)
        found = 0
        for h in hashes:
            if live.get(h):
                found += 1
                self._forget(live, h)
        if not live:
            del self._peers[peer]
        return found

    @staticmethod
    def _forget(live: collections.Counter, h: int) -> None:
        count = live.get(h, 0)
        if count > 1:
            live[h] = count - 1
        elif count == 1:
            del live[h]
