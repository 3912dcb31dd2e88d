"""RELP input: rsyslog's ``omrelp`` -> framed chunks in the queue, acknowledged once durable.

Plain TCP (``agent/receive.py``) loses what is in flight when the agent dies: rsyslog
considers a line delivered once the kernel took it. RELP (the Reliable Event Logging
Protocol, librelp's ``doc/relp.md``) acknowledges every message at the application level,
and rsyslog resends whatever was not acknowledged when a session breaks. This module is a
RELP *server* for that one client.

Protocol subset (what librelp 1.11 / rsyslog 8.2302's omrelp speak without TLS)
-------------------------------------------------------------------------------
* Frame: ``TXNR SP COMMAND SP DATALEN [SP DATA] LF``. TXNR is 1..9 digits and must be
  1 on the first frame of a connection and one more than the previous one after that
  (after 999999999 comes 1). TXNR 0 (a client "hint") is not accepted. COMMAND is 1..32
  ASCII letters. DATALEN is 1..9 digits; 0 means no ``SP DATA``; more than 128 KiB (librelp's
  default limit) is refused. DATA may contain LF; the byte after DATA must be LF.
* Commands accepted from the client: ``open``, ``syslog``, ``close``. Anything else (``rsp``,
  ``serverclose``, ``starttls``, unknown words), a ``syslog`` before ``open``, a second
  ``open`` or any frame after ``close`` is a protocol error.
* ``open``: the offers must contain ``relp_version`` with a number and ``commands`` naming
  ``syslog``; unknown offers are ignored. The answer is
  ``TXNR rsp LEN 200 OK\\nrelp_version=0\\nrelp_software=slsfwd\\ncommands=syslog``
  (version 0 is what librelp speaks; a client rejects a higher one).
* ``syslog``: DATA is one ``ALI_LOG_FMT`` line. rsyslog's template ends it with LF; a message
  cut at rsyslog's size limit has lost it, and it is added back. Answer ``TXNR rsp 6 200 OK``.
* ``close``: answered with an empty ``rsp`` (``TXNR rsp 0``) once every earlier frame is
  answered; then the connection is closed.
* ``0 serverclose 0``: the hint sent to every session when the agent shuts down (and when a
  session is closed because its data did not become durable in time).
* A framing or protocol error aborts the connection at once (no answer; counted in
  ``slsfwd_relp_framing_errors_total``; logged, rate-limited). The frames of that read are
  dropped unacknowledged: rsyslog resends them.

The acknowledgement rule
------------------------
All ``syslog`` frames of one socket read become ONE chunk (one ``queue.append``: group
commit), and their ``rsp`` frames are sent only from ``queue.when_durable(seq)``: once the
disk spool has fsynced the chunk (the memory queue: once it was shipped). Responses go out
strictly in TXNR order, as RELP requires: an ``rsp`` waits behind every earlier unanswered
frame of its session. So an acknowledged line survives a ``kill -9`` or a power loss of the
agent, and a line that is not acknowledged is still held by rsyslog.

Throughput follows from it: a session has at most omrelp's ``windowSize`` frames unanswered,
and an answer waits for the spool's group commit (``spool.fsync_ms``, 200 ms), so one session
carries about ``windowSize / fsync_ms`` lines per second (256 / 0.2 s = 1,280/s, measured 1,200/s
with rsyslog 8.2302; ``windowSize="1024"``: 4,000/s). Raise ``windowSize`` (this server reads up
to ``max_unacked_frames``, 1024, per session) or lower ``fsync_ms`` for more. With
``spool.type = "memory"`` "durable" means "shipped": answers wait for the service, and a service
outage longer than ``ack_timeout_s`` closes sessions, whose frames rsyslog then resends
(duplicates); RELP is meant to be used with the disk spool.

Why the agent never answers ``500``
-----------------------------------
An error answer is final for that message: librelp removes the frame from its list of
unacknowledged frames (``src/scrsp.c``), so it is never resent, and rsyslog only logs the error.
Every situation in which the agent cannot take a line now is temporary (spool full, disk
full, shipping stalled), so instead of refusing, the agent stops reading
(backpressure: the kernel buffers fill and rsyslog queues on its side) and, if a chunk has
not become durable within ``ack_timeout_s`` (10 s), closes the session without acknowledging
it (with a ``serverclose`` hint). rsyslog reconnects and resends everything unacknowledged.

Delivery is at-least-once
-------------------------
A chunk appended but not acknowledged when a session breaks (agent killed, ack timeout,
network) is still shipped, and rsyslog resends it on its next session: that line arrives
twice. Within one agent process such resends are recognised where possible: the DATA of
frames left unacknowledged by a closed session is remembered per peer address for
``duplicate_window_s``; identical DATA arriving later from that peer is counted in
``slsfwd_relp_duplicates_total`` (and still shipped: two identical lines in one second are
legitimate too). Resends after an agent restart cannot be recognised (the memory is gone).

Limits
------
Per session, reading stops while ``max_unacked_frames`` (1024) frames or
``max_unacked_bytes`` (8 MiB) of DATA wait for their acknowledgement, and while our answers
are not being read by the client (the transport's write buffer is full); with the queue not
writable every session stops reading. Sessions beyond ``max_connections`` are closed at once.

Structure: the pure part (:class:`FrameParser`, :func:`format_frame`, :func:`parse_offers`,
:class:`RelpSession`, :class:`DuplicateTracker`: bytes in, frames/responses out, no I/O, no
clock) is separate from the thin asyncio part (:class:`RelpReceiver`, ``_RelpConnection``).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import re
import time
from typing import Callable, Iterable, NamedTuple


from . import metrics
from .listener import Listener
from .queue import ChunkQueue
from .selflog import RateLimitedLog

log = logging.getLogger("slsfwd.relp")

MAX_DATALEN = 128 * 1024  # librelp's default maximum DATA size
MAX_TXNR = 999_999_999
SOFTWARE = "slsfwd"
CLIENT_COMMANDS = frozenset({"open", "syslog", "close"})
HEADER_MAX = 9 + 1 + 32 + 1 + 9 + 1  # longest possible "TXNR SP COMMAND SP DATALEN (SP|LF)"

RELP_FRAMES = metrics.RELP_FRAMES
RELP_FRAMING_ERRORS = metrics.RELP_FRAMING_ERRORS
RELP_DUPLICATES = metrics.RELP_DUPLICATES
RELP_SESSIONS = metrics.RELP_SESSIONS
RELP_ACK_TIMEOUTS = metrics.RELP_ACK_TIMEOUTS
for _command in sorted(CLIENT_COMMANDS):
    RELP_FRAMES.labels(command=_command)


# =============================================================================== pure part


class Frame(NamedTuple):
    txnr: int
    command: str
    data: bytes


def format_frame(txnr: int, command: str, data: bytes = b"") -> bytes:
    """One RELP frame; ``DATALEN 0`` has no ``SP DATA``."""
    if data:
        return b"%d %s %d %s\n" % (txnr, command.encode("ascii"), len(data), data)
    return b"%d %s 0\n" % (txnr, command.encode("ascii"))


OPEN_RESPONSE = b"200 OK\nrelp_version=0\nrelp_software=" + SOFTWARE.encode() + b"\ncommands=syslog"
SERVERCLOSE = format_frame(0, "serverclose")


def ack_frame(txnr: int) -> bytes:
    return b"%d rsp 6 200 OK\n" % txnr


def next_txnr(txnr: int) -> int:
    return 1 if txnr >= MAX_TXNR else txnr + 1


_HEADER = re.compile(rb"([0-9]{1,9}) ([A-Za-z]{1,32}) ([0-9]{1,9})([ \n])")
# Every proper prefix of a header (a complete one is matched by _HEADER).
_HEADER_PREFIX = re.compile(rb"(?:[0-9]{1,9}(?: (?:[A-Za-z]{1,32}(?: [0-9]{0,9})?)?)?)?")


def _diagnose(tail: bytes) -> str:
    """Why ``tail`` (at most HEADER_MAX bytes) cannot start a frame header. Slow path only."""
    fields = (("TXNR", b"0123456789", 9), ("command", None, 32), ("DATALEN", b"0123456789", 9))
    i = 0
    for name, allowed, limit in fields:
        start = i
        while i < len(tail) and (
            tail[i] in allowed if allowed else (65 <= tail[i] <= 90 or 97 <= tail[i] <= 122)
        ):
            i += 1
        width = i - start
        if width > limit:
            return f"{name} longer than {limit} {'digits' if allowed else 'letters'}"
        if i >= len(tail):
            break
        separator = tail[i]
        if width == 0 or (separator != 32 and not (name == "DATALEN" and separator == 10)):
            what = "a number" if allowed else "1 to 32 letters"
            return f"{name} is not {what} (byte {bytes(tail[i:i + 1])!r} at offset {i} of the header)"
        i += 1
    return "bad frame header"  # not reached: the caller only asks about invalid headers


class FrameParser:
    """Bytes of one connection -> :class:`Frame` objects; incremental over any read boundaries.

    ``feed`` returns the frames completed by the bytes given. On the first framing error
    ``error`` is set (a short reason), the frames before it in that call are still returned,
    and from then on nothing more is parsed: the caller aborts the connection.

    ``commands``: the command words accepted (``None``: any word). ``check_txnr``: TXNR must be
    ``first_txnr``, then increase by one (server side; a client reading answers turns it off).
    Memory: the unparsed tail, at most one frame (HEADER_MAX + ``max_datalen`` + 1) plus the
    last read.
    """

    __slots__ = ("max_datalen", "commands", "check_txnr", "expected_txnr", "error", "_buf", "_need")

    def __init__(
        self,
        *,
        max_datalen: int = MAX_DATALEN,
        commands: Iterable[str] | None = CLIENT_COMMANDS,
        check_txnr: bool = True,
        first_txnr: int = 1,
    ) -> None:
        self.max_datalen = max_datalen
        self.commands = frozenset(commands) if commands is not None else None
        self.check_txnr = check_txnr
        self.expected_txnr = first_txnr
        self.error: str | None = None
        self._buf = bytearray()
        self._need = 0  # do not parse again before the buffer holds this many bytes

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if self.error is not None:
            return []
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return []
            buf: bytes | bytearray = self._buf
        else:
            buf = data
        frames: list[Frame] = []
        pos = self._parse(buf, frames)
        if self.error is not None:
            self._buf = bytearray()
        elif pos == 0 and buf is self._buf:
            pass  # nothing consumed; keep the buffer as it is
        else:
            self._buf = bytearray(buf[pos:]) if pos < len(buf) else bytearray()
        return frames

    def _parse(self, buf: bytes | bytearray, frames: list[Frame]) -> int:
        pos = 0
        end_of_buf = len(buf)
        match = _HEADER.match
        commands = self.commands
        max_datalen = self.max_datalen
        self._need = 0
        while pos < end_of_buf:
            m = match(buf, pos)
            if m is None:
                tail = bytes(buf[pos : pos + HEADER_MAX])
                if not _HEADER_PREFIX.fullmatch(tail):
                    self.error = _diagnose(tail)
                return pos
            txnr_b, command_b, datalen_b, separator = m.groups()
            txnr = int(txnr_b)
            if self.check_txnr and txnr != self.expected_txnr:
                if txnr == 0:
                    self.error = "TXNR 0 (hint commands from the client are not accepted)"
                else:
                    self.error = f"TXNR {txnr} where {self.expected_txnr} was expected"
                return pos
            command = command_b.decode("ascii")
            if commands is not None and command not in commands:
                self.error = f"unknown or unsupported command {command!r}"
                return pos
            datalen = int(datalen_b)
            if datalen > max_datalen:
                self.error = f"DATALEN {datalen} over the limit of {max_datalen} bytes"
                return pos
            start = m.end()
            if datalen == 0:
                if separator != b"\n":
                    self.error = "DATALEN 0 is not followed by LF"
                    return pos
                data = b""
                pos = start
            else:
                if separator != b" ":
                    self.error = f"DATALEN {datalen} is followed by LF instead of SP and DATA"
                    return pos
                end = start + datalen
                if end >= end_of_buf:
                    self._need = end + 1 - pos
                    return pos
                if buf[end] != 10:
                    self.error = f"no LF after the {datalen} bytes of DATA (got {bytes(buf[end:end + 1])!r})"
                    return pos
                data = bytes(buf[start:end])
                pos = end + 1
            frames.append(Frame(txnr, command, data))
            if txnr:
                self.expected_txnr = next_txnr(txnr)
        return pos


def parse_offers(data: bytes) -> dict[str, list[str]]:
    """``name=value,value`` per line (the ``open`` DATA) -> {name: [values]}."""
    offers: dict[str, list[str]] = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        name, _, values = line.partition("=")
        offers[name] = [v for v in values.split(",") if v]
    return offers


def check_offers(offers: dict[str, list[str]]) -> str | None:
    """Why these client offers cannot open a session, or ``None``."""
    versions = offers.get("relp_version")
    if not versions:
        return "open without a relp_version offer"
    if not versions[0].isdigit():
        return f"open with relp_version={versions[0]!r}, not a number"
    if "syslog" not in offers.get("commands", []):
        return "open whose commands offer lacks syslog (the only command this server takes)"
    return None


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
    def has_unanswered(self) -> bool:
        return bool(self._answers)

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


# ============================================================================= asyncio part

_READING, _DRAINING, _CLOSING, _CLOSED = range(4)
ABORT_AFTER_CLOSE_S = 5.0  # a closing session whose client reads nothing is aborted after this


class RelpReceiver(Listener):
    """Listens for omrelp; one :class:`_RelpConnection` per session. See the module docstring."""

    def __init__(
        self,
        queue: ChunkQueue,
        *,
        max_connections: int,
        clock: Callable[[], float] = time.time,
        ack_timeout_s: float = 10.0,
        max_unacked_frames: int = 1024,
        max_unacked_bytes: int = 8 * 1024 * 1024,
        max_datalen: int = MAX_DATALEN,
        close_grace_s: float = 1.0,
        duplicate_window_s: float = 300.0,
    ) -> None:
        super().__init__(
            queue, max_connections=max_connections, clock=clock,
            connections_gauge=RELP_SESSIONS, log=log, what="RELP session",
        )
        self.ack_timeout_s = ack_timeout_s
        self.max_unacked_frames = max_unacked_frames
        self.max_unacked_bytes = max_unacked_bytes
        self.max_datalen = max_datalen
        self.close_grace_s = close_grace_s
        self.duplicates = DuplicateTracker(window_s=duplicate_window_s)
        self._error_log = RateLimitedLog(log, interval_s=60.0)
        self._timeout_log = RateLimitedLog(log, interval_s=60.0)
        self._duplicate_log = RateLimitedLog(log, interval_s=60.0)
        self.framing_errors = 0
        self.ack_timeouts = 0
        self.duplicate_frames = 0

    async def close(self) -> None:
        """Stop reading; give pending acknowledgements ``close_grace_s`` to go out; then send each
        session the ``serverclose`` hint and close it. What stays unacknowledged is resent by rsyslog."""
        self.stop_accepting()
        self._cancel_resume()
        loop = asyncio.get_running_loop()
        connections = list(self._connections)
        for conn in connections:
            conn.drain()
        deadline = loop.time() + self.close_grace_s
        while loop.time() < deadline and any(c.waiting_for_durability for c in connections):
            await asyncio.sleep(0.01)
        for conn in connections:
            conn.server_close()
        deadline = loop.time() + 2.0
        while self._connections and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self._connections):
            conn.abort()

    # -- connection bookkeeping ------------------------------------------

    def _make_protocol(self) -> "_RelpConnection":
        return _RelpConnection(self)

    def _session_closed(self, conn: "_RelpConnection", unacked_hashes: list[int]) -> None:
        self._closed(conn)
        self.duplicates.remember(conn.peer, unacked_hashes, time.monotonic())

    def _received(self, conn: "_RelpConnection", nbytes: int, counts: dict[str, int]) -> None:
        self._count_bytes(nbytes)
        for command, count in counts.items():
            if command in CLIENT_COMMANDS:
                RELP_FRAMES.labels(command=command).inc(count)

    def _deliver(self, conn: "_RelpConnection", received: Received) -> int:
        """Append one read's syslog lines as one chunk; returns its seq."""
        group = received.group
        assert group is not None
        duplicates = self.duplicates.check(conn.peer, group.hashes, time.monotonic())
        if duplicates:
            self.duplicate_frames += duplicates
            RELP_DUPLICATES.inc(duplicates)
            self._duplicate_log.info(
                "%d frames from %s resent after an earlier session broke: shipped again (at-least-once)",
                duplicates, conn.peer,
            )
        return self._append(conn.peer, received.payload)

    def _framing_error(self, conn: "_RelpConnection", reason: str) -> None:
        self.framing_errors += 1
        RELP_FRAMING_ERRORS.inc()
        self._error_log.warning("RELP session from %s aborted: %s", conn.peer, reason)

    def _ack_timeout(self, conn: "_RelpConnection", frames: int) -> None:
        self.ack_timeouts += 1
        RELP_ACK_TIMEOUTS.inc()
        self._timeout_log.warning(
            "RELP session from %s closed: %d frames not durable within %.0f s (spool blocked?); "
            "rsyslog resends them", conn.peer, frames, self.ack_timeout_s,
        )


class _RelpConnection(asyncio.Protocol):
    def __init__(self, receiver: RelpReceiver) -> None:
        self.receiver = receiver
        self.session = RelpSession(max_datalen=receiver.max_datalen)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = _CLOSED
        self._reading = True
        self._write_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        self._flush_scheduled = False

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        peername = transport.get_extra_info("peername")
        self.peer = peername[0] if isinstance(peername, tuple) and peername else ""
        if not self.receiver._opened(self):
            transport.abort()
            return
        self._state = _READING
        self.update_reading()

    def data_received(self, data: bytes) -> None:
        if self._state != _READING:
            return
        receiver = self.receiver
        received = self.session.feed(data, self._loop.time())
        receiver._received(self, len(data), received.counts)
        if received.error is not None:
            receiver._framing_error(self, received.error)
            self.abort()
            return
        if received.group is not None:
            seq = receiver._deliver(self, received)
            receiver.queue.when_durable(seq, functools.partial(self._durable, received.group))
            # Group commit per read: the acks wait for this fsync, not for the next timer tick.
            receiver.queue.request_sync()
            self._arm_timer()
        self._flush()
        self.update_reading()

    def eof_received(self) -> bool:
        # The client will send nothing more; answers still owed cannot be read by a half-closed
        # rsyslog, so close (unanswered frames are resent by rsyslog).
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = self._state != _CLOSED
        self._state = _CLOSED
        for timer in (self._timer, self._abort_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._abort_timer = None
        if was_open:
            self.receiver._session_closed(self, self.session.unacked_hashes())

    def pause_writing(self) -> None:
        self._write_paused = True  # the client does not read our answers: stop reading its frames
        self.update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self.update_reading()

    # -- answers

    def _durable(self, group: Pending) -> None:
        self.session.durable(group)
        # Coalesce: one spool sync makes many chunks durable in one go; answer them in one write.
        if not self._flush_scheduled and self._state in (_READING, _DRAINING):
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        if self._state in (_READING, _DRAINING):
            self._flush()
            self.update_reading()

    def _flush(self) -> None:
        out = self.session.take_output()
        if out and not self.transport.is_closing():
            self.transport.write(out)
        if self.session.close_answered:
            self._close()
        elif self.session.oldest_unacked_since is None and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def waiting_for_durability(self) -> bool:
        return self._state in (_READING, _DRAINING) and self.session.oldest_unacked_since is not None

    # -- reading

    def backpressure_changed(self) -> None:
        self.update_reading()

    def update_reading(self) -> None:
        if self._state == _CLOSED or self.transport is None or self.transport.is_closing():
            return
        session = self.session
        receiver = self.receiver
        want = (
            self._state == _READING
            and not receiver.backpressured
            and not self._write_paused
            and session.unacked_frames < receiver.max_unacked_frames
            and session.unacked_bytes < receiver.max_unacked_bytes
        )
        if want != self._reading:
            self._reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    # -- the acknowledgement timeout

    def _arm_timer(self) -> None:
        if self._timer is None:
            since = self.session.oldest_unacked_since
            if since is not None:
                self._timer = self._loop.call_at(since + self.receiver.ack_timeout_s, self._check_timeout)

    def _check_timeout(self) -> None:
        self._timer = None
        if self._state not in (_READING, _DRAINING):
            return
        since = self.session.oldest_unacked_since
        if since is None:
            return
        if self._loop.time() - since >= self.receiver.ack_timeout_s - 0.001:
            self.receiver._ack_timeout(self, self.session.unacked_frames)
            self.server_close()
        else:
            self._arm_timer()

    # -- closing

    def drain(self) -> None:
        """Agent shutdown, step 1: read nothing more, keep sending acknowledgements."""
        if self._state == _READING:
            self._state = _DRAINING
            self._reading = False
            if not self.transport.is_closing():
                self.transport.pause_reading()

    def server_close(self) -> None:
        """Send what may be answered, the serverclose hint, and close."""
        if self._state not in (_READING, _DRAINING):
            return
        out = self.session.take_output()
        if not self.transport.is_closing():
            self.transport.write(out + SERVERCLOSE)
        self._close()

    def _close(self) -> None:
        if self._state in (_CLOSING, _CLOSED):
            return
        self._state = _CLOSING
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.transport.close()  # flushes the answers already written
        self._abort_timer = self._loop.call_later(ABORT_AFTER_CLOSE_S, self.abort)

    def abort(self) -> None:
        if self.transport is not None and self._state != _CLOSED:
            if self._state in (_READING, _DRAINING):
                self._state = _CLOSING
            self.transport.abort()
