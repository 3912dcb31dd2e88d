"""Queue chunks -> encoded logs in their batches: the parse+encode hot path.

This is where per-line cost matters (about 1 us a line for frame, parse,
encode and compress in CPython; bench/README.md), so it works on whole chunks:

* UTF-8: a chunk that is all ASCII (``isascii``, word-at-a-time in C) needs
  no check. Otherwise only non-ASCII messages are decoded, and the fields of
  a prefix once, when they enter their cache: decoding a whole chunk into a
  ``str`` cost more than parsing it.
* A line costs one append: a chunk's logs are gathered per route (lines of a
  few sources interleave, and a switch is one dict look-up), and each route's
  run goes to :meth:`Batcher.add_run`, which finds where batches fill with
  running sums in C.
* The six fields before ``msg`` repeat a lot (same host, app and pid), so a
  line's encoded Time and fields come from a bounded cache keyed by the raw
  bytes before ``msg``; the time field is cached per second.
* Finding where ``msg`` starts is the costly part of a line: splitting it
  into 11 fields makes 11 objects. Nearly every line rsyslog sends is an
  RFC 3164 or local message, whose ``msgid`` is ``-`` and whose ``msg`` keeps
  the space that followed ``tag:``, so one ``partition`` at the first
  ``" -  "`` cuts the line into the cache key and the message (space already
  dropped). That cut is right exactly when the key holds the first eight
  fields, which depends on the key alone; so only keys checked once against
  the full split enter that cache, and every other line takes the split.
* Anything unusual (user formats, too few fields, bad timestamps, times
  outside SLS's window) leaves the fast path for :mod:`agent.parse`'s
  readable functions, which are the specification; the tests check that
  both paths encode the same bytes.
* Processors (:mod:`agent.pipeline.processors`): a tag without any keeps the
  fast path as it is. A separable chain is planned once per cached prefix:
  the prefix is encoded after the processors that never touch ``msg``, and
  the cached head carries a *stage* that runs per line (counting, and the
  processors of ``msg``), or drops the line. Other chains take the readable
  path, where every processor sees the whole log.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Mapping

from . import encode
from .batch import Batcher, Destination, Ticket
from . import join
from .join import HeadLine, Joiner
from .parse import (
    BUILTIN_FORMATS,
    MSG_KEY,
    ORIGINAL_TIME_KEY,
    PARSE_ERROR_KEY,
    LineFormat,
    fix_time,
    peer_source,
    resolve_source,
)
from .processors import ChainSet
from .processors.chain import NO_STAGES, MsgStage
from .processors.multiline import Multiline
from .readable import ReadablePath, Router, TransformStats

_FAST = BUILTIN_FORMATS["0.1"]
_FAST_VERSION = _FAST.version_bytes
_FAST_SPLIT = _FAST.maxsplit
# What ends the eighth field when msgid is "-" and msg keeps its leading space.
_NIL_MSGID = b" -  "
_NIL_MSGID_HEAD = len(_NIL_MSGID) - 1  # the bytes of it that belong to the head
_MSG_PREFIX = encode.key_prefix(MSG_KEY)
_MSG_FRAMING = encode.value_framing_table(_MSG_PREFIX)
# Framing plus the message, by message length: a log's body length is then one addition.
_MSG_FRAMED_LENGTH = tuple(len(framing) + n for n, framing in enumerate(_MSG_FRAMING))
_CACHE_LIMIT = 4096  # distinct line prefixes kept per peer; cleared when exceeded
_MAX_PEERS = 64


class _OfferStage(partial):
    """offer(line, msg) as a stage: a call in C up to offer (no Python frame between)."""

    skip_when_clean = False


class _Slow:
    """The cache marker of a prefix (or a part of one) whose lines take the readable path."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SLOW"


_SLOW = _Slow()

Route = tuple[Destination, str]  # a LogGroup's destination and Source; one object per route (compared by identity)


# What a cached line prefix gives every line that has it: the log's Time and the contents
# before msg, encoded; its route; the encoded length (so a log's length is one addition); and
# the processors to run on each line's msg (counting, masks, drops), or None. A plain tuple,
# not a NamedTuple: the per-line unpacking has a fast path for exact tuples only (a NamedTuple
# cost the hot path about 9 % in a paired run).
Head = tuple[bytes, Route, int, "MsgStage | None"]


class LineTransformer(ReadablePath):
    def __init__(
        self,
        *,
        formats: Mapping[bytes, LineFormat],
        router: Router,
        host_ip: str,
        batcher: Batcher,
        clock: Callable[[], float],
        processors: ChainSet | None = None,
        joiner: Joiner | None = None,
    ) -> None:
        self.formats = formats
        self.router = router
        self.host_ip = host_ip
        self.batcher = batcher
        self.stats = TransformStats()
        self._clock = clock
        # peer source -> {line before " -  " -> its Head}; fast lines only
        self._heads: dict[str, dict[bytes, Head]] = {}
        # peer source -> {line before msg -> (its Head, whether msg's first space is rsyslog's) or _SLOW}
        self._split_heads: dict[str, dict[bytes, tuple[Head, bool] | _Slow]] = {}
        self._routes: dict[tuple[bytes, bytes, str], Route | _Slow] = {}
        self._interned_routes: dict[Route, Route] = {}
        self._times: dict[bytes, bytes | _Slow] = {}  # the timestamp field -> Time, encoded
        self._fields: dict[tuple[bytes, ...], tuple[bytes, bool] | _Slow] = {}  # the six fields -> encoded, strip space
        self._chains = processors if processors else None
        self.joiner = joiner  # joins lines of a multiline processor's scope
        # (tag, fields) -> the processors' plan for that prefix: the fields encoded (None: the readable
        # path), the stage, and the multiline processor its lines go through
        self._planned: dict[tuple[bytes, tuple[bytes, ...]], tuple[bytes | None, MsgStage | None, Multiline | None]] = {}
        self._cache_minute = -1
        # A user format may redefine "0.1"; then every line takes the readable path.
        self._fast_path = formats.get(_FAST_VERSION) is _FAST
        self._prefixes = {key: encode.key_prefix(key) for key in _FAST.fields}
        self._extra_prefixes = {
            key: encode.key_prefix(key) for key in (ORIGINAL_TIME_KEY, PARSE_ERROR_KEY, MSG_KEY)
        }

    def reconfigure(
        self, *, formats: Mapping[bytes, LineFormat], router: Router, host_ip: str, processors: ChainSet | None
    ) -> None:
        """A reload: chunks processed from now on follow the new settings (open groups ship first)."""
        if self.joiner is not None:
            self.joiner.flush_all()
        self.formats = formats
        self.router = router
        self.host_ip = host_ip
        self._chains = processors if processors else None
        self._fast_path = formats.get(_FAST_VERSION) is _FAST
        self._cache_minute = -1  # every cache is cleared on the next chunk

    def process(self, payload: bytes, received_at: int, peer: str, ticket: Ticket) -> None:
        """Turn one chunk of LF-terminated lines into logs in the batcher."""
        now = int(self._clock())
        check_utf8 = not payload.isascii()
        peer_src = peer_source(peer, self.host_ip)
        heads = self._heads_for(peer_src, now)
        # A chunk none of whose lines a mask could match: mask-only stages are not even called.
        skip = NO_STAGES if self._chains is None else self._chains.prepare_chunk(payload)
        lines = payload.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        self.stats.lines += len(lines)

        # Names bound locally: attribute and global look-ups cost on a per-line loop.
        msg_framing = _MSG_FRAMING
        framed_length = _MSG_FRAMED_LENGTH
        entry_headers = encode.LOG_ENTRY_HEADERS
        slow = _SLOW
        nil_msgid = _NIL_MSGID
        split_head = self._split_head
        head_of = heads.get
        # The chunk's logs by route, in line order; batch limits are applied per route
        # after the loop, so a line costs one append. Lines of a few sources usually
        # interleave: a switch of route costs one dict look-up.
        by_route: dict[tuple[Destination, str], list[bytes]] = {}
        joiner = self.joiner if self._chains is not None and self._chains.joins else None
        if joiner is not None:
            joiner.begin_chunk(ticket, by_route)
        route = None
        logs: list[bytes] = []
        for line in lines:
            key, cut, msg = line.partition(nil_msgid)
            head = head_of(key) if cut else None
            if head is None:
                head, msg = split_head(line, key if cut else None, heads, now, peer_src)
                if head is slow:
                    if line:
                        self._slow_line(line, received_at, now, peer_src, by_route)
                    else:
                        self.stats.empty_lines += 1
                    continue
            head_bytes, head_route, head_len, stage = head
            if check_utf8 and not msg.isascii():
                msg = self._valid_utf8(msg)
            if stage is not None and stage not in skip:
                msg = stage(msg)
                if msg is None:
                    continue  # a processor dropped it (and counted it)
            mlen = len(msg)
            try:
                log = b"".join((entry_headers[head_len + framed_length[mlen]], head_bytes, msg_framing[mlen], msg))
            except IndexError:  # a message or log of encode.SMALL_LENGTH_LIMIT bytes or more: past the tables.
                # Catching this instead of comparing lengths first saved 188 instructions a line (2 %; bench/README.md).
                log = encode.log_entry(head_bytes + encode.content(_MSG_PREFIX, msg))
            if head_route is not route:
                route = head_route
                logs = by_route.get(route)
                if logs is None:
                    logs = by_route[route] = []
            logs.append(log)
        ticket.lines = len(lines)
        if self._chains is not None:
            self._chains.finish_chunk()
        if joiner is not None:
            joiner.end_chunk()
        for route, logs in by_route.items():
            self.batcher.add_run(route, logs, ticket)

    # -- helpers off the per-line fast path -------------------------------

    def _heads_for(self, peer_src: str, now: int) -> dict:
        """The head cache for a peer. All caches are cleared every minute, so that
        a cached time is never judged against a stale window."""
        minute = now // 60
        if minute != self._cache_minute or len(self._heads) > _MAX_PEERS:
            for cache in (self._heads, self._split_heads, self._routes, self._interned_routes, self._times,
                          self._fields, self._planned):
                cache.clear()
            self._cache_minute = minute
        heads = self._heads.get(peer_src)
        if heads is None:
            heads = self._heads[peer_src] = {}
            self._split_heads[peer_src] = {}
        return heads

    def _split_head(
        self, line: bytes, nil_msgid_key: bytes | None, heads: dict[bytes, Head], now: int, peer_src: str
    ) -> tuple[Head | _Slow, bytes]:
        """(head, msg) of a line the ``" -  "`` cut did not settle: split it into its
        fields. ``nil_msgid_key`` is what that cut left before it, if it found one;
        when the split proves the cut right, the key enters ``heads`` for next time."""
        parts = line.split(b" ", _FAST_SPLIT)
        if len(parts) != 11:
            return _SLOW, line
        msg = parts[10]
        key = line[: len(line) - len(msg)]
        split_heads = self._split_heads[peer_src]
        entry = split_heads.get(key)
        if entry is None:
            if len(split_heads) >= _CACHE_LIMIT:
                split_heads.clear()
            entry = split_heads[key] = self._encode_head(parts, now, peer_src)
        if entry is _SLOW:
            return _SLOW, line
        head, strip_space = entry
        if strip_space and msg[:1] == b" ":
            msg = msg[1:]
            if nil_msgid_key is not None and len(key) == len(nil_msgid_key) + _NIL_MSGID_HEAD:
                # The cut was at the field boundary, and it drops that very space.
                if len(heads) >= _CACHE_LIMIT:
                    heads.clear()
                heads[nil_msgid_key] = head
        return head, msg

    def _encode_head(self, parts: list[bytes], now: int, peer_src: str) -> tuple[Head, bool] | _Slow:
        if not self._fast_path or parts[0] != _FAST_VERSION:
            return _SLOW
        # Invalid UTF-8 in any field sends the line to the readable path, which repairs
        # it whole; the sub-caches remember that as _SLOW, so only a miss checks.
        time_bytes = self._times.get(parts[2])
        if time_bytes is None:
            if len(self._times) >= _CACHE_LIMIT:
                self._times.clear()
            time_bytes = self._times[parts[2]] = self._encode_time(parts[2], now)
        if time_bytes is _SLOW:
            return _SLOW
        fields = (parts[4], parts[5], parts[6], parts[7], parts[8], parts[9])
        encoded_fields = self._fields.get(fields)
        if encoded_fields is None:
            encoded_fields = self._fields[fields] = self._encode_fields(fields)
        if encoded_fields is _SLOW:
            return _SLOW
        route_key = (parts[1], parts[3], peer_src)
        route = self._routes.get(route_key)
        if route is None:
            route = self._routes[route_key] = self._new_route(parts[1], parts[3], peer_src)
        if route is _SLOW:
            return _SLOW
        encoded, strip_space = encoded_fields
        stage = None
        if self._chains is not None:
            planned = self._planned.get((parts[1], fields))
            if planned is None:
                planned = self._planned[parts[1], fields] = self._plan(parts[1], fields, encoded)
            encoded, stage, multiline = planned
            if encoded is None:
                return _SLOW
            if multiline is not None:
                source = join.source_key(peer_src, fields[0], fields[3], fields[4])  # hostname, app-name, procid
                stage = self._collector(HeadLine(time_bytes + encoded, route, stage, source, multiline))
        head = time_bytes + encoded
        return (head, route, len(head), stage), strip_space

    def _collector(self, line: HeadLine) -> MsgStage:
        """The stage of a head in a multiline scope: the joiner sees the line first, then the
        other processors' stage runs on what it lets through (and on joined logs, at their end)."""
        assert self.joiner is not None
        offer, forget, stage = self.joiner.offer, self.joiner.forget, line.stage
        if stage is None:
            return _OfferStage(offer, line)

        def collect(msg: bytes) -> bytes | None:
            kept = offer(line, msg)
            if kept is None or stage is None:
                return kept
            shipped = stage(kept)
            if shipped is None:
                forget(line)
            return shipped

        collect.skip_when_clean = False  # type: ignore[attr-defined]
        return collect

    def _plan(
        self, tag: bytes, fields: tuple[bytes, ...], encoded: bytes
    ) -> tuple[bytes | None, MsgStage | None, Multiline | None]:
        """The encoded fields, the per-line stage and the multiline processor of this prefix under
        the tag's processors; encoded None when the chain needs the readable path."""
        assert self._chains is not None
        if len(self._planned) >= _CACHE_LIMIT:
            self._planned.clear()
        chain = self._chains.for_tag(tag.decode())
        if chain is None:
            return encoded, None, None
        if not chain.separable:
            return None, None, None
        multiline = chain.multiline_for(fields[3]) if self.joiner is not None else None  # by app-name
        pairs = list(zip(_FAST.fields, fields))
        plan = chain.plan_prefix(dict(pairs))
        if plan.head is None:
            return b"", plan.stage, None  # dropped: the stage counts and drops each line
        if list(plan.head.items()) == pairs:
            return encoded, plan.stage, multiline  # the processors left the fields as they were, and their encoding
        prefixes = self._prefixes
        encoded = b"".join(
            encode.content(prefixes.get(key) or encode.key_prefix(key), value) for key, value in plan.head.items()
        )
        return encoded, plan.stage, multiline

    def _encode_time(self, ts: bytes, now: int) -> bytes | _Slow:
        if not ts.isdigit():
            return _SLOW
        unix_time, replaced = fix_time(int(ts), now, now)
        return _SLOW if replaced else encode.time_field(unix_time)

    def _new_route(self, tag: bytes, ip: bytes, peer_src: str) -> Route | _Slow:
        if len(self._routes) >= _CACHE_LIMIT:
            self._routes.clear()
            self._interned_routes.clear()
        if not _is_utf8(tag + ip):
            return _SLOW
        route = (self.router.destination(tag), resolve_source(ip, peer_src))
        # One object per route, so the loop compares routes by identity.
        return self._interned_routes.setdefault(route, route)

    def _encode_fields(self, fields: tuple[bytes, ...]) -> tuple[bytes, bool] | _Slow:
        if len(self._fields) >= _CACHE_LIMIT:
            self._fields.clear()
        if not _is_utf8(b"".join(fields)):
            return _SLOW
        prefixes = self._prefixes
        encoded = b"".join(encode.content(prefixes[k], v) for k, v in zip(_FAST.fields, fields))
        index, value = _FAST.strip_space_when  # type: ignore[misc]
        return encoded, fields[index] == value

def _is_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
