"""RELP frames and offers: bytes in, frames out. Pure: no I/O, no clock.

The wire format and the offers of the ``open`` command, as librelp speaks them
(see the package docstring for the protocol as rsyslog uses it).
"""

from __future__ import annotations

import re
from typing import Iterable, NamedTuple

MAX_DATALEN = 128 * 1024  # librelp's default maximum DATA size
MAX_TXNR = 999_999_999
SOFTWARE = "slsfwd"
CLIENT_COMMANDS = frozenset({"open", "syslog", "close"})
HEADER_MAX = 9 + 1 + 32 + 1 + 9 + 1  # longest possible "TXNR SP COMMAND SP DATALEN (SP|LF)"



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
