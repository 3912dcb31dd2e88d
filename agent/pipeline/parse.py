"""One streamlog line -> fields. Pure: no sockets, no clocks.

A line is ``$version $tag $unixtimestamp $ip [$field ...] $msg`` (Logtail's
streamlog layout). ``version`` picks the format; the built-in ``0.1`` is what
the tutorial's rsyslog template writes, and its content keys are exactly the
rsyslog property names of that template, because that is what people query
in the SLS console (``app-name=todo-list``).

Neither ``version`` nor ``tag`` is shipped as content: the tag picks the
destination (Logtail's "Tag Settings"), and ``$ip`` becomes the LogGroup's
Source (see :func:`resolve_source`).

A line that does not fit its format is never dropped: the caller ships it
whole as ``msg`` with the receive time and a ``parse-error`` key naming the
reason, so the user can find it and nothing vanishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

BUILTIN_0_1_FIELDS = ("hostname", "pri-text", "protocol-version", "app-name", "procid", "msgid")
MSG_KEY = "msg"
PARSE_ERROR_KEY = "parse-error"
ORIGINAL_TIME_KEY = "orig-time"
MULTILINE_LINES_KEY = "multiline-lines"  # on a log the multiline processor joined: how many lines

LOOPBACK_IPS = frozenset({b"127.0.0.1", b"::1"})

# SLS rejects a whole request if one log's time is outside [now - 7 d, now + 15 min].
# Keep a margin so that a log accepted here is still inside the window when
# the request reaches the service (batch linger, retries, clock skew).
MAX_PAST_S = 7 * 24 * 3600 - 3600
MAX_FUTURE_S = 15 * 60 - 60


@dataclass(frozen=True, slots=True)
class LineFormat:
    """A streamlog format: the named fields between ``$ip`` and ``$msg``."""

    version: str
    fields: tuple[str, ...]
    # rsyslog keeps the space that followed "tag:" in %msg% for RFC 3164 and
    # local messages (protocol-version 0); that one space is not the user's.
    strip_space_when: tuple[int, bytes] | None = None
    version_bytes: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "version_bytes", self.version.encode())

    @property
    def maxsplit(self) -> int:
        return 4 + len(self.fields)

    def message(self, values: tuple[bytes, ...] | list[bytes], msg: bytes) -> bytes:
        if self.strip_space_when is not None:
            index, value = self.strip_space_when
            if values[index] == value and msg[:1] == b" ":
                return msg[1:]
        return msg


BUILTIN_FORMATS: dict[str, LineFormat] = {
    "0.1": LineFormat("0.1", BUILTIN_0_1_FIELDS, strip_space_when=(2, b"0")),
}

# Logtail reserves every version that begins with these for its own formats: a
# ``streamlog_formats`` entry with such a version never changed how lines were parsed.
BUILTIN_VERSION_PREFIXES = ("0.", "1.")


def is_builtin_version(version: str) -> bool:
    return version.startswith(BUILTIN_VERSION_PREFIXES)


def build_format_table(user_formats: Mapping[str, tuple[str, ...]]) -> dict[bytes, LineFormat]:
    """Built-in formats plus the user's ``[[input.formats]]``; user formats win."""
    table = {fmt.version_bytes: fmt for fmt in BUILTIN_FORMATS.values()}
    for version, names in user_formats.items():
        fmt = LineFormat(version, tuple(names))
        table[fmt.version_bytes] = fmt
    return table


class ParsedLine(NamedTuple):
    format: LineFormat
    tag: bytes
    time: int
    ip: bytes
    values: tuple[bytes, ...]
    msg: bytes

    def contents(self) -> list[tuple[str, bytes]]:
        pairs = list(zip(self.format.fields, self.values))
        pairs.append((MSG_KEY, self.msg))
        return pairs


class ParseFailure(NamedTuple):
    reason: str  # low-cardinality: used as a metric label


UNKNOWN_VERSION = ParseFailure("unknown_version")
TOO_FEW_FIELDS = ParseFailure("too_few_fields")
BAD_TIMESTAMP = ParseFailure("bad_timestamp")


def parse_line(line: bytes, formats: Mapping[bytes, LineFormat]) -> ParsedLine | ParseFailure:
    """Split one line (no trailing LF) by its format."""
    version, _, _ = line.partition(b" ")
    fmt = formats.get(version)
    if fmt is None:
        return UNKNOWN_VERSION
    parts = line.split(b" ", fmt.maxsplit)
    if len(parts) == fmt.maxsplit:
        parts.append(b"")  # the message is empty and its separator was trimmed
    elif len(parts) < fmt.maxsplit:
        return TOO_FEW_FIELDS
    timestamp = parts[2]
    if not timestamp.isdigit():
        return BAD_TIMESTAMP
    values = tuple(parts[4:-1])
    return ParsedLine(fmt, parts[1], int(timestamp), parts[3], values, fmt.message(values, parts[-1]))


def resolve_source(line_ip: bytes, peer_source: str) -> str:
    """Logtail's rule: the line's ip, unless it is loopback; then the peer's
    (itself already resolved to the host's primary IP if it is loopback)."""
    if line_ip in LOOPBACK_IPS or not line_ip:
        return peer_source
    return line_ip.decode("utf-8", "backslashreplace")


def peer_source(peer_ip: str, host_ip: str) -> str:
    """What a line whose ``$ip`` is loopback gets as Source."""
    if not peer_ip or peer_ip.encode() in LOOPBACK_IPS:
        return host_ip
    return peer_ip


def fix_time(line_time: int, receive_time: int, now: int) -> tuple[int, bool]:
    """A time SLS will accept: the line's, else the receive time, else now.

    Returns (time, replaced). A replaced time is shipped with the original in
    ``orig-time``, so that SLS never rejects a batch with InvalidTimestamp.
    """
    if now - MAX_PAST_S <= line_time <= now + MAX_FUTURE_S:
        return line_time, False
    if now - MAX_PAST_S <= receive_time <= now + MAX_FUTURE_S:
        return receive_time, True
    return now, True


def make_valid_utf8(data: bytes) -> tuple[bytes, bool]:
    """Invalid UTF-8 is escaped as ``\\xNN`` so SLS never answers InvalidEncoding.

    Backslash escapes keep the original bytes recoverable, unlike U+FFFD.
    """
    try:
        data.decode("utf-8")
        return data, False
    except UnicodeDecodeError:
        return data.decode("utf-8", "backslashreplace").encode("utf-8"), True


def contents_in_window(
    unix_time: int, contents: list[tuple[str, str]], now: int
) -> tuple[int, list[tuple[str, bytes]]]:
    """A stored log made fit to send again: a time SLS accepts (the original kept under
    ``orig-time`` when it had to be replaced, unless it already is) and UTF-8 values."""
    fixed, replaced = fix_time(unix_time, now, now)
    pairs = [(key, value.encode("utf-8", "backslashreplace")) for key, value in contents]
    if replaced and not any(key == ORIGINAL_TIME_KEY for key, _ in pairs):
        pairs.append((ORIGINAL_TIME_KEY, str(unix_time).encode()))
    return fixed, pairs
