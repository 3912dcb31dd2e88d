"""Multiline groups as lines arrive, across chunks: the ``multiline`` processor's runtime.

The transform offers every line in a multiline scope to :meth:`Joiner.offer`,
in its loop, with the :class:`Emitter` that knows the line's head and route.
Each source's state machine (:mod:`agent.pipeline.processors.multiline`) then
decides:

* a line nothing continues is encoded by the transform as usual; if it may
  start a group, the joiner notes where its log went in the chunk's logs;
* a line that continues it takes that log back (it becomes ``None`` there,
  and is filtered out when the chunk ends) and the two form a group, which
  takes the lines that follow; the group's log goes into the chunk's logs
  when a line ends it. A line that cannot be continued costs one pattern
  check; most lines in scope cost that and a note;
* when the chunk ends, lines that may still be continued are taken back and
  held, with the chunk's ticket (:meth:`Ticket.hold`): the spool keeps the
  chunk until their group is delivered. Such groups ship in runs of their
  own, one per route and chunk, under a ticket that releases the chunks they
  held. A ``kill -9`` therefore loses nothing: those chunks replay and their
  lines are joined again.

A source is one sender address with one ``hostname``, ``app-name`` and
``procid``: a group survives rsyslog reconnecting, and other sources' lines in
between do not break it. Each source's order is kept.

Pure: the clock is passed in; the flush timer is the caller's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Hashable, Protocol

from . import encode
from .batch import Batcher, Ticket
from .parse import MSG_KEY, MULTILINE_LINES_KEY

if TYPE_CHECKING:
    from .processors.multiline import Multiline, Rules

# Events counted per processor: groups of two lines or more, the lines in them, groups cut at a cap,
# groups shipped by the flush timer.
GROUPS, JOINED_LINES, CUT_MAX_LINES, CUT_MAX_BYTES, TIMER_FLUSHES = (
    "groups", "joined_lines", "cut_max_lines", "cut_max_bytes", "timer_flushes",
)


class Emitter(Protocol):
    """What the joiner needs of a line besides its message."""

    route: Hashable  # the batcher's route
    source: Hashable  # lines of one source may join
    multiline: "Multiline"
    rules: "Rules"  # multiline.rules, one look-up nearer

    def encode(self, msg: bytes, lines: int) -> bytes | None:
        """The log with this line's head and ``msg``; ``lines`` > 1 adds ``multiline-lines``.
        None: a later processor dropped it."""
        ...


_MSG_PREFIX = encode.key_prefix(MSG_KEY)
_LINES_PREFIX = encode.key_prefix(MULTILINE_LINES_KEY)


class HeadLine:
    """A line of the transform's fast path: its time and fields come encoded from a cached head."""

    __slots__ = ("head", "route", "stage", "source", "multiline", "rules")

    def __init__(self, head: bytes, route: Hashable, stage: Callable | None, source: Hashable, multiline: "Multiline"):
        self.head = head  # Time and the contents before msg, encoded
        self.route = route
        self.stage = stage  # the other processors' work on msg, or None
        self.source = source
        self.multiline = multiline
        self.rules = multiline.rules

    def encode(self, msg: bytes, lines: int) -> bytes | None:
        if self.stage is not None:
            msg = self.stage(msg)
            if msg is None:
                return None
        count = encode.content(_LINES_PREFIX, b"%d" % lines) if lines > 1 else b""
        return encode.log_entry(self.head + count + encode.content(_MSG_PREFIX, msg))


class ReadableLine:
    """A line of the readable path: ``finish`` runs the processors and encodes it."""

    __slots__ = ("route", "source", "multiline", "rules", "encode")

    def __init__(self, route: Hashable, source: Hashable, multiline: "Multiline", finish: Callable) -> None:
        self.route = route
        self.source = source
        self.multiline = multiline
        self.rules = multiline.rules
        self.encode: Callable[[bytes, int], bytes | None] = finish


# A line already encoded into the chunk's logs that a later line may still continue:
# (its emitter, its message, its state, the route and index of its log in by_route).
_Placed = tuple[Emitter, bytes, str, Hashable, int]


@dataclass(slots=True, eq=False)
class _Group:
    multiline: "Multiline"
    state: str
    lines: list[tuple[Emitter, bytes]]
    size: int  # bytes of the joined message
    firm: int  # how many lines belong to it whatever follows (the rest led into tentative states)
    deadline: float  # set when a chunk ends with the group open
    chunk: int  # the last chunk it took a line from
    held: list[Ticket]
    alone: bytes | None = None  # its one line's log, already encoded (taken back when a chunk ended)


class Joiner:
    def __init__(
        self, batcher: Batcher, clock: Callable[[], float], *, read_delay_s: float = 0.0, counts: Counter | None = None
    ) -> None:
        self._batcher = batcher
        self._clock = clock
        # How late the input may read a line that arrived (read coalescing): the flush timer allows for
        # it, so a line that arrived within flush_ms of the group's last line still joins it.
        self.read_delay_s = read_delay_s
        self.counts: Counter = Counter() if counts is None else counts  # (processor, event) -> n
        # source -> its open group, or (while a chunk is processed) its last line, already in by_route
        self._open: dict[Hashable, _Group | _Placed] = {}
        self._chunk = 0
        self._ticket: Ticket | None = None  # while a chunk is being processed
        self._by_route: dict[Hashable, list[bytes | None]] = {}  # that chunk's logs by route
        self._retracted: set[Hashable] = set()  # routes of by_route with lines taken back (None)
        self._read_at = 0.0  # when that chunk was read
        self._held_logs: dict[Hashable, list[bytes]] = {}  # logs of groups that held chunks, by route
        self._held_tickets: list[Ticket] = []  # the chunks they held

    def begin_chunk(self, ticket: Ticket, by_route: dict) -> None:
        self._chunk += 1
        self._ticket = ticket
        self._by_route = by_route
        # flush_ms counts from when a line was read, not from when the consumer got to it; a chunk
        # read back from the spool after a restart has no such time, and counts from now.
        self._read_at = ticket.appended or self._clock()

    def offer(self, line: Emitter, msg: bytes) -> bytes | None:
        """A line in a multiline scope, in the transform's loop: ``msg`` if the caller is to encode
        it now (into ``by_route``, at once), or None if the joiner took it into a group."""
        source = line.source
        entry = self._open.get(source)
        state = None
        if entry is not None:
            if type(entry) is tuple:
                rules = entry[0].rules
                if msg[:1] in rules.follow_first:
                    state = rules.follow(entry[2], msg)
                    if state is not None and self._fits(entry[0].multiline, len(entry[1]), 1, msg):
                        self._open[source] = self._group_from(entry, line, msg, state)
                        return None
            else:
                rules = entry.multiline.rules
                if msg[:1] in rules.follow_first:
                    state = rules.follow(entry.state, msg)
                    if state is not None and self._fits(entry.multiline, entry.size, len(entry.lines), msg):
                        self._extend(entry, line, msg, state)
                        return None
                self._ship(entry)
        if state is None:  # not a continuation (or a cut one): does it start a group?
            rules = line.rules
            state = rules.start(msg) if rules.starts and msg[:1] in rules.start_first else rules.default_state
            if state is None:
                if entry is not None:
                    del self._open[source]
                return msg
        logs = self._by_route.get(line.route)
        self._open[source] = (line, msg, state, line.route, 0 if logs is None else len(logs))
        return msg

    def forget(self, line: Emitter) -> None:
        """The caller did not encode the line ``offer`` returned (a processor dropped it)."""
        entry = self._open.get(line.source)
        if type(entry) is tuple and entry[0] is line:
            del self._open[line.source]

    def end_chunk(self) -> None:
        """Lines that may still be continued are taken back from the chunk's logs and held, with
        the chunk: its ticket is held until their group is delivered."""
        ticket, chunk, by_route = self._ticket, self._chunk, self._by_route
        assert ticket is not None
        self._ship_held()  # before the chunk's own logs: a source's earlier lines go first
        for source, entry in list(self._open.items()):
            if type(entry) is tuple:
                line, msg, state, route, index = entry
                log = self._take_back(route, index)
                entry = self._open[source] = _Group(line.multiline, state, [(line, msg)], len(msg), 1, 0.0, chunk, [], log)
            if entry.chunk == chunk:
                ticket.hold()
                entry.held.append(ticket)
                entry.deadline = self._read_at + entry.multiline.flush_s + self.read_delay_s
        for route in self._retracted:
            by_route[route] = [log for log in by_route[route] if log is not None]
        self._retracted.clear()
        self._ticket, self._by_route = None, {}

    def next_deadline(self) -> float | None:
        return min((g.deadline for g in self._open.values()), default=None)  # type: ignore[union-attr]

    def flush_expired(self, early_s: float = 0.0) -> None:
        """Ship the groups whose ``flush_ms`` has passed since their last line (or will within ``early_s``)."""
        now = self._clock() + early_s
        for source, group in [(s, g) for s, g in self._open.items() if g.deadline <= now]:  # type: ignore[union-attr]
            del self._open[source]
            if len(group.lines) > 1:  # type: ignore[union-attr]
                self.counts[group.multiline.name, TIMER_FLUSHES] += 1
            self._ship(group)  # type: ignore[arg-type]

    @property
    def open_groups(self) -> int:
        return len(self._open)

    def flush_all(self) -> None:
        """Ship every open group (shutdown, reload)."""
        groups = list(self._open.values())
        self._open.clear()
        for group in groups:
            self._ship(group)  # type: ignore[arg-type]

    # -- helpers ------------------------------------------------------------

    def _fits(self, multiline: "Multiline", size: int, lines: int, msg: bytes) -> bool:
        """Whether a group of ``lines`` lines and ``size`` bytes may take ``msg``; counts a cut if not."""
        if lines >= multiline.max_lines:
            self.counts[multiline.name, CUT_MAX_LINES] += 1
            return False
        if size + 1 + len(msg) > multiline.max_bytes:
            self.counts[multiline.name, CUT_MAX_BYTES] += 1
            return False
        return True

    def _take_back(self, route: Hashable, index: int) -> bytes:
        logs = self._by_route[route]
        log, logs[index] = logs[index], None
        self._retracted.add(route)
        return log  # type: ignore[return-value]

    def _group_from(self, first: _Placed, line: Emitter, msg: bytes, state: str) -> _Group:
        """A line already in the chunk's logs is continued: it is taken back into a group."""
        first_line, first_msg, _, route, index = first
        self._take_back(route, index)
        multiline = first_line.multiline
        firm = 2 if state not in multiline.rules.tentative else 1
        return _Group(multiline, state, [(first_line, first_msg), (line, msg)], len(first_msg) + 1 + len(msg),
                      firm, 0.0, self._chunk, [])

    def _extend(self, group: _Group, line: Emitter, msg: bytes, state: str) -> None:
        group.lines.append((line, msg))
        group.size += 1 + len(msg)
        group.state = state
        if state not in group.multiline.rules.tentative:
            group.firm = len(group.lines)
        group.chunk = self._chunk

    def _ship(self, group: _Group) -> None:
        """The group's log, then any lines it gave back. Those of a group that held no chunk go
        with the chunk's logs; the others go to the batcher in runs of their own, under a ticket
        that releases the chunks they held (when the chunk ends, or at once on the timer)."""
        lines, firm = group.lines, max(group.firm, 1)
        first = lines[0][0]
        if len(lines) == 1 and group.alone is not None:
            logs = [(first.route, group.alone)]
        elif firm > 1:
            self.counts[group.multiline.name, GROUPS] += 1
            self.counts[group.multiline.name, JOINED_LINES] += firm
            logs = [(first.route, first.encode(b"\n".join(msg for _, msg in lines[:firm]), firm))]
        else:
            logs = [(first.route, first.encode(lines[0][1], 1))]
        logs.extend((emitter.route, emitter.encode(msg, 1)) for emitter, msg in lines[firm:])
        in_chunk = self._ticket is not None
        if in_chunk and not group.held:
            for route, log in logs:
                if log is not None:
                    _append(self._by_route, route, log)
            return
        if in_chunk and group.chunk == self._chunk:
            self._ticket.hold()  # type: ignore[union-attr]  # it holds lines of this chunk too
            group.held.append(self._ticket)  # type: ignore[arg-type]
        self._held_tickets += group.held
        for route, log in logs:
            if log is not None:
                _append(self._held_logs, route, log)
        if not in_chunk:
            self._ship_held()

    def _ship_held(self) -> None:
        """Logs of groups that held chunks, in one run per route, under one ticket that releases them."""
        if not self._held_logs:
            return
        own = _release_ticket(self._held_tickets)
        for route, logs in self._held_logs.items():
            self._batcher.add_run(route, logs, own)  # type: ignore[arg-type]
        own.seal()
        self._held_logs, self._held_tickets = {}, []


def source_key(peer: str, hostname: bytes, app_name: bytes, procid: bytes) -> bytes:
    """The key of a source: bytes, whose hash Python caches (a tuple's is computed at every look-up)."""
    return b"\0".join((peer.encode(), hostname, app_name, procid))


def _append(by_route: dict, route: Hashable, log: bytes) -> None:
    logs = by_route.get(route)
    if logs is None:
        by_route[route] = [log]
    else:
        logs.append(log)


def _release_ticket(held: list[Ticket]) -> Ticket:
    """A ticket for a group's logs that lets the chunks it held go once they are delivered."""

    def release(_seq: int) -> None:
        for ticket in held:
            ticket.release()

    # Its "appended" is that of the oldest chunk: a batch's age is the age of its oldest line.
    return Ticket(-1, release, held[0].appended if held else 0.0)
