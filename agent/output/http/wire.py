"""HTTP/1.1 on the wire, for a client: request heads out, responses in. Pure: no sockets.

Only what a PutLogs client meets (RFC 9112): a response's body is framed by
``Transfer-Encoding: chunked``, ``Content-Length``, or the end of the
connection; 1xx answers are skipped; 204 and 304 have no body. Anything else
malformed (a bad status line, folded or nameless headers, conflicting lengths,
an oversized head or body) is an :class:`HttpProtocolError`, never a guess.
The header grammar is :mod:`agent.ops.httphead`'s, shared with the status listener.

Hand-written because it is on a measured path: h11 spent 0.2 ms of CPU per
request validating and tracking state (half of a whole PutLogs request), and
aiohttp's client twice that (bench/README.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.ops.httphead import (
    HttpProtocolError,
    content_length,
    format_head,
    keeps_alive,
    parse_header_lines,
)

__all__ = ["HttpProtocolError", "Response", "ResponseParser", "format_request"]

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024  # PutLogs answers are empty or a small JSON error

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) (\d{3})(?: [^\r\n]*)?")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case; a repeated header's values joined with ", "
    body: bytes
    keep_alive: bool  # the connection may carry another request


def format_request(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    """The request line and headers (the caller includes Host and Content-Length)."""
    return format_head(f"{method} {target} HTTP/1.1", headers)


class ResponseParser:
    """Feed it a connection's bytes; it returns each complete response once."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head: tuple[int, dict[str, str], bool] | None = None  # status, headers, keep-alive
        self._framing = ""  # "length", "chunked" or "close", once the head is parsed
        self._remaining = 0  # body bytes still expected ("length")
        self._body: list[bytes] = []
        self._body_bytes = 0

    @property
    def idle(self) -> bool:
        """Nothing of a response received (a connection closed now lost no answer)."""
        return not self._buf and self._head is None

    def feed(self, data: bytes) -> Response | None:
        self._buf += data
        if self._head is None and not self._parse_head():
            return None
        if self._framing == "length":
            return self._take_length()
        if self._framing == "chunked":
            return self._take_chunks()
        self._collect(bytes(self._buf))
        self._buf.clear()
        return None

    def feed_eof(self) -> Response:
        """The server closed the connection: the end of a body framed by it, else an error."""
        if self._head is not None and self._framing == "close":
            return self._finish()
        raise HttpProtocolError("connection closed before a complete response")

    # -- the head

    def _parse_head(self) -> bool:
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD_BYTES:
                    raise HttpProtocolError("response head too large")
                return False
            lines = bytes(self._buf[:end]).split(b"\r\n")
            del self._buf[:end + 4]
            status, minor = _status(lines[0])
            if 100 <= status < 200:
                continue  # informational (100 Continue): the real answer follows
            headers = parse_header_lines(lines[1:])
            self._start_body(status, minor, headers)
            return True

    def _start_body(self, status: int, minor: int, headers: dict[str, str]) -> None:
        keep_alive = keeps_alive(minor, headers)
        coding = headers.get("transfer-encoding", "")
        if status in (204, 304):
            self._framing, self._remaining = "length", 0
        elif coding:
            if coding.split(",")[-1].strip().lower() != "chunked":
                raise HttpProtocolError(f"unsupported transfer-encoding {coding!r}")
            self._framing = "chunked"
        elif "content-length" in headers:
            self._framing, self._remaining = "length", content_length(headers["content-length"])
            if self._remaining > MAX_BODY_BYTES:
                raise HttpProtocolError("response body too large")
        else:
            self._framing, keep_alive = "close", False
        self._head = (status, headers, keep_alive)

    # -- the body

    def _take_length(self) -> Response | None:
        take = min(self._remaining, len(self._buf))
        if take:
            self._collect(bytes(self._buf[:take]))
            del self._buf[:take]
            self._remaining -= take
        return self._finish() if self._remaining == 0 else None

    def _take_chunks(self) -> Response | None:
        while True:
            if self._remaining:  # inside a chunk's data (plus its CRLF)
                if len(self._buf) < self._remaining + 2:
                    return None
                if self._buf[self._remaining:self._remaining + 2] != b"\r\n":
                    raise HttpProtocolError("chunk data not followed by CRLF")
                self._collect(bytes(self._buf[:self._remaining]))
                del self._buf[:self._remaining + 2]
                self._remaining = 0
            end = self._buf.find(b"\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD_BYTES:
                    raise HttpProtocolError("chunk size line too long")
                return None
            match = _CHUNK_SIZE.fullmatch(bytes(self._buf[:end]))
            if match is None:
                raise HttpProtocolError("malformed chunk size")
            size = int(match.group(1), 16)
            if size:
                del self._buf[:end + 2]
                self._remaining = size
                continue
            trailer_end = self._buf.find(b"\r\n\r\n", end) if self._buf[end + 2:end + 4] != b"\r\n" else end
            if trailer_end < 0:
                return None  # trailers still coming
            del self._buf[:trailer_end + 4]
            return self._finish()

    def _collect(self, data: bytes) -> None:
        self._body_bytes += len(data)
        if self._body_bytes > MAX_BODY_BYTES:
            raise HttpProtocolError("response body too large")
        self._body.append(data)

    def _finish(self) -> Response:
        assert self._head is not None
        status, headers, keep_alive = self._head
        body = b"".join(self._body)
        self._head, self._framing, self._body, self._body_bytes = None, "", [], 0
        if self._buf and keep_alive:
            raise HttpProtocolError("bytes after the response")
        return Response(status, headers, body, keep_alive)


def _status(line: bytes) -> tuple[int, int]:
    match = _STATUS_LINE.fullmatch(line)
    if match is None:
        raise HttpProtocolError(f"malformed status line {line[:80]!r}")
    return int(match.group(2)), int(match.group(1))

