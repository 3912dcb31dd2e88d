"""HTTP/1.1 message heads (RFC 9112), pure: no sockets.

One grammar for both ends the agent speaks: the PutLogs client's responses
(:mod:`agent.output.http.wire`) and the requests of the ``/metrics`` and
``/healthz`` listener (:mod:`.status`). It sits in ops, the floor, because both
rooms may import it.

The listener's side is strict, since anything on the host may connect: a
request line ``METHOD SP request-target SP HTTP/1.x`` with an origin-form (or
absolute-form) target, header lines ``name: value`` with no folding and no
control characters, exactly one Host in HTTP/1.1, a valid Content-Length.
Anything else is an :class:`HttpProtocolError`, answered 400. Request bodies
are never read: a request that announces one is answered, then the connection
is closed (it cannot carry another request).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[^\r\n\x00]*")
_REQUEST_LINE = re.compile(rb"(" + TOKEN.pattern + rb") ([\x21-\x7e]+) HTTP/1\.([01])")
_ABSOLUTE_FORM = re.compile(rb"https?://[^/?#]+([^?#]*)(?:\?[^#]*)?", re.IGNORECASE)

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class HttpProtocolError(Exception):
    """Bytes that are not HTTP/1.1 as the agent accepts it."""


@dataclass(frozen=True, slots=True)
class Request:
    method: str  # as sent: methods are case-sensitive
    path: str  # the target's path, without its query
    headers: dict[str, str]  # names in lower case; a repeated header's values joined with ", "
    keep_alive: bool  # the connection may carry another request after this one


def parse_request(head: bytes) -> Request:
    """A request's head: the request line and header lines, without the blank line that ends them."""
    lines = head.split(b"\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise HttpProtocolError(f"malformed request line {lines[0][:80]!r}")
    minor = int(match.group(3))
    headers = parse_header_lines(lines[1:])
    if minor == 1 and ("host" not in headers or "," in headers["host"]):
        raise HttpProtocolError("an HTTP/1.1 request needs exactly one Host header")  # RFC 9112 3.2
    # A body is not read: whatever follows it could not be told apart from the next request.
    has_body = "transfer-encoding" in headers or content_length(headers.get("content-length", "0")) > 0
    keep_alive = keeps_alive(minor, headers) and not has_body
    return Request(match.group(1).decode("ascii"), _path(match.group(2)), headers, keep_alive)


def parse_header_lines(lines: list[bytes]) -> dict[str, str]:
    """Header lines (no CRLF) -> names in lower case; a repeated header's values joined with ", "."""
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise HttpProtocolError(f"malformed header line {line[:80]!r}")  # folded lines too
        key = name.decode("latin-1").lower()
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def keeps_alive(minor: int, headers: dict[str, str]) -> bool:
    """HTTP/1.1 keeps the connection unless told to close it; HTTP/1.0 only when asked to keep it."""
    connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    return "close" not in connection if minor == 1 else "keep-alive" in connection


def content_length(value: str) -> int:
    """A Content-Length value; a list of equal values counts as one (RFC 9110 8.6)."""
    values = {v.strip() for v in value.split(",")}
    only = next(iter(values))
    if len(values) != 1 or not (only.isascii() and only.isdigit()):
        raise HttpProtocolError(f"bad content-length {value[:40]!r}")
    return int(only)


def format_head(start_line: str, headers: list[tuple[str, str]]) -> bytes:
    """A start line and header fields, with the blank line that ends them; refuses what cannot be sent as is."""
    lines = [start_line, "\r\n"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\0" in value or not TOKEN.fullmatch(name.encode("latin-1")):
            raise ValueError(f"header {name!r} cannot be sent as is")
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def format_response(status: int, headers: list[tuple[str, str]], *, keep_alive: bool) -> bytes:
    """A response's head (the caller's headers include Content-Length: every answer has one)."""
    connection = [("Connection", "keep-alive" if keep_alive else "close")]
    return format_head(f"HTTP/1.1 {status} {REASONS[status]}", headers + connection)


def _path(target: bytes) -> str:
    if target.startswith(b"/"):
        return target.partition(b"?")[0].decode("ascii")
    absolute = _ABSOLUTE_FORM.fullmatch(target)  # a server must accept it (RFC 9112 3.2.2)
    if absolute is None:
        raise HttpProtocolError(f"request target {target[:80]!r} is neither origin- nor absolute-form")
    return absolute.group(1).decode("ascii") or "/"
