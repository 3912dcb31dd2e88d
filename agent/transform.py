"""Queue chunks -> encoded logs in their batches: the parse+encode hot path.

This is where per-line cost matters (issue 6 budgets about 1.4 us a line
for frame+parse+encode+compress in CPython), so it works on whole chunks:

* UTF-8 is checked once per chunk (``isascii`` then ``decode``); only a
  chunk that fails is repaired line by line.
* A ``0.1`` line is split once; the six fields before ``msg`` repeat a lot
  (same host, app and pid), so their encoded Contents come from a bounded
  cache keyed by the raw field values; the time field is cached per second.
* Anything unusual (user formats, too few fields, bad timestamps, times
  outside SLS's window) leaves the fast path for :mod:`agent.parse`'s
  readable functions, which are the specification; the tests check that
  both paths encode the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from . import encode
from .batch import Batcher, Destination, Ticket
from .parse import (
    BUILTIN_FORMATS,
    MSG_KEY,
    ORIGINAL_TIME_KEY,
    PARSE_ERROR_KEY,
    LineFormat,
    ParseFailure,
    fix_time,
    make_valid_utf8,
    parse_line,
    peer_source,
    resolve_source,
)

_FAST = BUILTIN_FORMATS["0.1"]
_FAST_VERSION = _FAST.version_bytes
_FAST_SPLIT = _FAST.maxsplit
_MSG_PREFIX = encode.key_prefix(MSG_KEY)
_MSG_PREFIX_LEN = len(_MSG_PREFIX)
_CACHE_LIMIT = 4096  # distinct field combinations kept; cleared when exceeded
_length_prefix = encode.length_prefix


@dataclass(slots=True)
class TransformStats:
    lines: int = 0
    empty_lines: int = 0
    invalid_utf8_lines: int = 0
    replaced_times: int = 0
    parse_errors: dict[str, int] = field(default_factory=dict)


class Router:
    """A line's tag picks its destination (Logtail's Tag Settings)."""

    def __init__(self, default: Destination, by_tag: Mapping[str, Destination]) -> None:
        self.default = default
        self._by_tag = {tag.encode(): dest for tag, dest in by_tag.items()}

    def destination(self, tag: bytes) -> Destination:
        return self._by_tag.get(tag, self.default)


class LineTransformer:
    def __init__(
        self,
        *,
        formats: Mapping[bytes, LineFormat],
        router: Router,
        host_ip: str,
        batcher: Batcher,
        clock: Callable[[], float],
    ) -> None:
        self.formats = formats
        self.router = router
        self.host_ip = host_ip
        self.batcher = batcher
        self.stats = TransformStats()
        self._clock = clock
        self._heads: dict[tuple[bytes, ...], tuple[bytes, bool]] = {}
        self._prefixes = {key: encode.key_prefix(key) for key in _FAST.fields}
        self._extra_prefixes = {
            key: encode.key_prefix(key) for key in (ORIGINAL_TIME_KEY, PARSE_ERROR_KEY, MSG_KEY)
        }

    def process(self, payload: bytes, received_at: int, peer: str, ticket: Ticket) -> None:
        """Turn one chunk of LF-terminated lines into logs in the batcher."""
        now = int(self._clock())
        if not payload.isascii():
            payload = self._repair_utf8(payload)
        peer_src = peer_source(peer, self.host_ip)
        lines = payload.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        stats = self.stats
        stats.lines += len(lines)

        # Names bound locally: attribute look-ups cost on a per-line loop.
        heads = self._heads
        batcher = self.batcher
        max_logs = batcher.max_logs
        max_bytes = batcher.max_bytes
        router = self.router
        msg_prefix = _MSG_PREFIX
        length_prefix = _length_prefix
        last_ts = None
        time_prefix = b""
        last_route = None
        batch = None
        for line in lines:
            parts = line.split(b" ", _FAST_SPLIT)
            if len(parts) != 11 or parts[0] != _FAST_VERSION:
                if line:
                    self._slow_line(line, received_at, now, peer_src, ticket)
                    last_route = None  # the slow path may have closed our batch
                else:
                    stats.empty_lines += 1
                continue
            ts = parts[2]
            if ts != last_ts:
                time_prefix = self._time_prefix(ts, received_at, now)
                last_ts = ts
            if time_prefix is None:
                self._slow_line(line, received_at, now, peer_src, ticket)
                last_route = None
                continue
            route = (parts[1], parts[3])
            if route != last_route:
                dest = router.destination(parts[1])
                source = resolve_source(parts[3], peer_src)
                batch = batcher.batch_for(dest, source)
                last_route = route
            head = (parts[4], parts[5], parts[6], parts[7], parts[8], parts[9])
            cached = heads.get(head)
            if cached is None:
                cached = self._encode_head(head)
            head_bytes, strip_space = cached
            msg = parts[10]
            if strip_space and msg[:1] == b" ":
                msg = msg[1:]
            mlen = len(msg)
            vlen = length_prefix(mlen)
            body = b"".join(
                (
                    time_prefix,
                    head_bytes,
                    b"\x12",
                    length_prefix(_MSG_PREFIX_LEN + len(vlen) + mlen),
                    msg_prefix,
                    vlen,
                    msg,
                )
            )
            log = b"\x0a" + length_prefix(len(body)) + body
            if batch.raw_bytes + len(log) > max_bytes and batch.logs:
                batcher.close_if_full(batch, len(log))
                batch = batcher.batch_for(dest, source)
            batch.add(log, ticket)
            if len(batch.logs) >= max_logs:
                batcher.close_if_full(batch)
                last_route = None
        ticket.lines = len(lines)

    # -- helpers off the per-line fast path -------------------------------

    def _time_prefix(self, ts: bytes, received_at: int, now: int) -> bytes | None:
        """Encoded Time field (plus orig-time content) for a line's timestamp,
        or None to send the line through the slow path."""
        if not ts.isdigit():
            return None
        unix_time, replaced = fix_time(int(ts), received_at, now)
        if replaced:
            return None
        return encode.time_field(unix_time)

    def _encode_head(self, head: tuple[bytes, ...]) -> tuple[bytes, bool]:
        prefixes = self._prefixes
        encoded = b"".join(encode.content(prefixes[k], v) for k, v in zip(_FAST.fields, head))
        strip_space = _FAST.strip_space_when is not None and head[_FAST.strip_space_when[0]] == _FAST.strip_space_when[1]
        if len(self._heads) >= _CACHE_LIMIT:
            self._heads.clear()
        self._heads[head] = (encoded, strip_space)
        return encoded, strip_space

    def _slow_line(self, line: bytes, received_at: int, now: int, peer_src: str, ticket: Ticket) -> None:
        dest, source, log = self.encode_line(line, received_at, now, peer_src)
        self.batcher.add(dest, source, log, ticket)

    def encode_line(self, line: bytes, received_at: int, now: int, peer_src: str) -> tuple[Destination, str, bytes]:
        """The readable reference: any line -> (destination, source, encoded log)."""
        parsed = parse_line(line, self.formats)
        if isinstance(parsed, ParseFailure):
            self._count_parse_error(parsed.reason)
            unix_time, _ = fix_time(received_at, received_at, now)
            contents = [(MSG_KEY, line), (PARSE_ERROR_KEY, parsed.reason.encode())]
            return self.router.default, peer_src, encode.encode_log(unix_time, contents)
        unix_time, replaced = fix_time(parsed.time, received_at, now)
        contents = parsed.contents()
        if replaced:
            self.stats.replaced_times += 1
            contents.append((ORIGINAL_TIME_KEY, str(parsed.time).encode()))
        dest = self.router.destination(parsed.tag)
        return dest, resolve_source(parsed.ip, peer_src), encode.encode_log(unix_time, contents)

    def _count_parse_error(self, reason: str) -> None:
        errors = self.stats.parse_errors
        errors[reason] = errors.get(reason, 0) + 1

    def _repair_utf8(self, payload: bytes) -> bytes:
        try:
            payload.decode("utf-8")
            return payload
        except UnicodeDecodeError:
            pass
        lines = payload.split(b"\n")
        for i, line in enumerate(lines):
            fixed, repaired = make_valid_utf8(line)
            if repaired:
                lines[i] = fixed
                self.stats.invalid_utf8_lines += 1
        return b"\n".join(lines)
