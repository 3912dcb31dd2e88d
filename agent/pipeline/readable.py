"""The readable path: any line, parsed field by field, through the whole processor chain.

:mod:`agent.pipeline.parse` is the specification of a line; this is the
encoding that follows it, kept plain. The transform's fast path must produce
the same bytes (its tests check), and takes every line it cannot settle from a
cached prefix here: user formats, too few fields, bad timestamps, times outside
SLS's window, invalid UTF-8 in the fields, chains that are not separable.
Lines in a multiline scope go to the joiner with a :class:`ReadableLine` that
finishes them once their group is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from . import encode
from .batch import Destination
from .join import Joiner, ReadableLine, source_key
from .parse import (
    MSG_KEY,
    MULTILINE_LINES_KEY,
    ORIGINAL_TIME_KEY,
    PARSE_ERROR_KEY,
    LineFormat,
    ParsedLine,
    ParseFailure,
    fix_time,
    make_valid_utf8,
    parse_line,
    resolve_source,
)
from .processors import ChainSet


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


class ReadablePath:
    """The readable half of :class:`agent.pipeline.transform.LineTransformer`."""

    formats: Mapping[bytes, LineFormat]
    router: Router
    stats: TransformStats
    joiner: Joiner | None
    _chains: ChainSet | None

    def _slow_line(self, line: bytes, received_at: int, now: int, peer_src: str, by_route: dict) -> None:
        line = self._valid_utf8(line)
        parsed = parse_line(line, self.formats)
        joining = self._offer_to_joiner(parsed, received_at, now, peer_src)
        if joining is not None and joining[1] is None:
            return  # the joiner took it into a group
        encoded = self._encode_parsed(parsed, line, received_at, now, peer_src)
        if encoded is None and joining is not None:
            self.joiner.forget(joining[0])  # type: ignore[union-attr]
        if encoded is not None:
            dest, source, log = encoded
            by_route.setdefault((dest, source), []).append(log)

    def encode_line(
        self, line: bytes, received_at: int, now: int, peer_src: str
    ) -> tuple[Destination, str, bytes] | None:
        """The readable reference: any line -> (destination, source, encoded log); None if a processor dropped it."""
        return self._encode_parsed(parse_line(line, self.formats), line, received_at, now, peer_src)

    def _encode_parsed(
        self, parsed: ParsedLine | ParseFailure, line: bytes, received_at: int, now: int, peer_src: str, lines: int = 1
    ) -> tuple[Destination, str, bytes] | None:
        if isinstance(parsed, ParseFailure):
            self._count_parse_error(parsed.reason)
            unix_time, _ = fix_time(received_at, received_at, now)
            contents = self._processed(None, [(MSG_KEY, line), (PARSE_ERROR_KEY, parsed.reason.encode())])
            if contents is None:
                return None
            return self.router.default, peer_src, encode.encode_log(unix_time, contents)
        unix_time, replaced = fix_time(parsed.time, received_at, now)
        contents = parsed.contents()
        if lines > 1:
            contents.insert(-1, (MULTILINE_LINES_KEY, b"%d" % lines))
        contents = self._processed(parsed.tag, contents)
        if contents is None:
            return None
        if replaced:
            self.stats.replaced_times += 1
            contents.append((ORIGINAL_TIME_KEY, str(parsed.time).encode()))
        dest = self.router.destination(parsed.tag)
        return dest, resolve_source(parsed.ip, peer_src), encode.encode_log(unix_time, contents)

    def _offer_to_joiner(
        self, parsed: ParsedLine | ParseFailure, received_at: int, now: int, peer_src: str
    ) -> tuple[ReadableLine, bytes | None] | None:
        """When a multiline processor applies to the line: what :meth:`Joiner.offer` made of it."""
        if self.joiner is None or self._chains is None or not self._chains.joins or isinstance(parsed, ParseFailure):
            return None
        chain = self._chains.for_tag(parsed.tag.decode())
        fields = dict(zip(parsed.format.fields, parsed.values))
        multiline = chain.multiline_for(fields.get("app-name", b"")) if chain is not None else None
        if multiline is None:
            return None
        source = source_key(peer_src, fields.get("hostname", b""), fields.get("app-name", b""), fields.get("procid", b""))
        route = (self.router.destination(parsed.tag), resolve_source(parsed.ip, peer_src))

        def finish(msg: bytes, lines: int) -> bytes | None:
            encoded = self._encode_parsed(parsed._replace(msg=msg), b"", received_at, now, peer_src, lines)
            return None if encoded is None else encoded[2]

        line = ReadableLine(route, source, multiline, finish)
        return line, self.joiner.offer(line, parsed.msg)

    def _processed(self, tag: bytes | None, contents: list[tuple[str, bytes]]) -> list[tuple[str, bytes]] | None:
        """``contents`` after the tag's processors (no tag: a line that did not parse); None if dropped."""
        chain = None if self._chains is None else self._chains.for_tag(None if tag is None else tag.decode())
        if chain is None:
            return contents
        log = dict(contents)
        if not chain.run(log):
            return None
        if contents[-1][0] == MSG_KEY and MSG_KEY in log:
            log[MSG_KEY] = log.pop(MSG_KEY)  # msg stays last, as on the fast path, whatever was added
        return list(log.items())

    def _count_parse_error(self, reason: str) -> None:
        errors = self.stats.parse_errors
        errors[reason] = errors.get(reason, 0) + 1

    def _valid_utf8(self, data: bytes) -> bytes:
        fixed, repaired = make_valid_utf8(data)
        if repaired:
            self.stats.invalid_utf8_lines += 1
        return fixed
