"""Bytes from one TCP connection -> complete lines. Pure: no sockets, no clocks.

rsyslog sends either LF-terminated lines (the tutorial's ``@@host:port``) or
RFC 6587 octet-counted frames (``TCP_Framing="octet-counted"``). The framer
detects which from the first bytes of the connection: an octet count is a
non-zero digit run followed by a space, which a ``0.1 ...`` line never is.

The output of :meth:`LineFramer.feed` is one ``bytes`` blob of complete lines,
each terminated by LF, with CRLF folded to LF. Downstream stages (spool,
parser) only ever see that shape, so a whole read is handled as one object
instead of one object per line.

Memory is bounded: a line longer than ``max_line_bytes`` is cut there and
the rest of it is skipped up to the next LF (counted in
``FramerStats.truncated_lines`` / ``discarded_bytes``).
"""

from __future__ import annotations

from dataclasses import dataclass

LF = b"\n"
_MAX_COUNT_DIGITS = 10
_NONZERO_DIGITS = b"123456789"


@dataclass(slots=True)
class FramerStats:
    truncated_lines: int = 0
    discarded_bytes: int = 0
    framing_errors: int = 0
    escaped_newlines: int = 0


class LineFramer:
    """Incremental framer for one connection."""

    __slots__ = ("max_line_bytes", "stats", "_partial", "_octet", "_discarding", "_frame_left")

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.stats = FramerStats()
        self._partial = bytearray()
        self._octet: bool | None = None  # None until the first bytes decide
        self._discarding = False  # inside an over-long LF line, skipping to the next LF
        self._frame_left = 0  # octet mode: bytes of an over-long frame still to skip

    @property
    def octet_counted(self) -> bool | None:
        return self._octet

    @property
    def buffered(self) -> int:
        return len(self._partial)

    def feed(self, data: bytes) -> bytes:
        """Consume ``data``; return the complete lines it finished (maybe b"")."""
        if self._octet is None:
            # Line ends before the first frame are empty lines: nothing to keep.
            head = _strip_leading_line_ends(bytes(self._partial) + data)
            self._partial.clear()
            mode = detect_octet_counting(head)
            if mode is None:
                self._partial += head  # at most a short digit run
                return b""
            self._octet = mode
            data = head
        if self._octet:
            return self._feed_octet(data)
        return self._feed_lf(data)

    def finish(self) -> bytes:
        """End of stream: a partial last line is still a line."""
        if self._octet is None and self._partial:
            self._octet = detect_octet_counting(bytes(self._partial)) or False
        if self._octet and self._partial:
            # A truncated octet-counted frame: keep what arrived, as a line.
            rest = bytes(self._partial)
            self._partial.clear()
            _, _, body = rest.partition(b" ")
            return self._frame_to_line(body) if body else b""
        if self._discarding or not self._partial:
            self._partial.clear()
            return b""
        line = bytes(self._partial)
        self._partial.clear()
        return _fold_crlf(line.rstrip(b"\r") + LF)

    # -- LF framing -------------------------------------------------------

    def _feed_lf(self, data: bytes) -> bytes:
        if self._discarding:
            data = self._skip_to_lf(data)
            if not data:
                return b""
        last = data.rfind(LF)
        if last < 0:
            return self._buffer_partial(data)
        if self._partial:
            # One copy: the line's head and the rest of this read joined straight into the chunk.
            complete = b"".join((self._partial, memoryview(data)[: last + 1]))
            self._partial.clear()
        elif last == len(data) - 1:
            complete = data
        else:
            complete = data[: last + 1]
        complete = _fold_crlf(complete)
        if len(complete) > self.max_line_bytes:
            complete = self._cut_long_lines(complete)
        if last < len(data) - 1:
            head_of_long_line = self._buffer_partial(data[last + 1 :])
            if head_of_long_line:
                complete += head_of_long_line
        return complete

    def _buffer_partial(self, data: bytes) -> bytes:
        """Keep an unfinished line; if it grew too long, return its cut head as a line."""
        # The CR of a CRLF ending may arrive before its LF: it is not part of the line.
        room = self.max_line_bytes - len(self._partial) + (1 if data.endswith(b"\r") else 0)
        if len(data) <= room:
            self._partial += data
            return b""
        head = bytes(self._partial) + data[:room] + LF
        self._partial.clear()
        self.stats.truncated_lines += 1
        self.stats.discarded_bytes += len(data) - room
        self._discarding = True
        return head

    def _skip_to_lf(self, data: bytes) -> bytes:
        nl = data.find(LF)
        if nl < 0:
            self.stats.discarded_bytes += len(data)
            return b""
        self.stats.discarded_bytes += nl
        self._discarding = False
        return data[nl + 1 :]

    def _cut_long_lines(self, complete: bytes) -> bytes:
        limit = self.max_line_bytes
        out = []
        for line in complete.split(LF)[:-1]:
            if len(line) > limit:
                self.stats.truncated_lines += 1
                self.stats.discarded_bytes += len(line) - limit
                line = line[:limit]
            out.append(line)
        out.append(b"")
        return LF.join(out)

    # -- octet-counted framing (RFC 6587 3.4.1) ---------------------------

    def _feed_octet(self, data: bytes) -> bytes:
        if self._frame_left:
            skip = min(self._frame_left, len(data))
            self._frame_left -= skip
            self.stats.discarded_bytes += skip
            data = data[skip:]
        buf = bytes(self._partial) + data if self._partial else data
        self._partial.clear()
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while pos < end:
            space = buf.find(b" ", pos, pos + _MAX_COUNT_DIGITS + 1)
            if space < 0:
                if end - pos > _MAX_COUNT_DIGITS or not buf[pos:end].isdigit():
                    return self._octet_framing_error(out, buf[pos:])
                break  # the count itself is still arriving
            count_text = buf[pos:space]
            if not count_text.isdigit() or count_text[:1] not in _NONZERO_DIGITS:
                return self._octet_framing_error(out, buf[pos:])
            count = int(count_text)
            body_start = space + 1
            if count > self.max_line_bytes + 2:  # + the template's line ending, CRLF at most
                available = end - body_start
                if available < self.max_line_bytes:
                    break  # wait until the part we keep has arrived
                # The kept head is mid-frame: its trailing CR/LF bytes are data, not a line ending.
                out.append(self._frame_to_line(buf[body_start : body_start + self.max_line_bytes], ending=False))
                self.stats.truncated_lines += 1
                skip_total = count - self.max_line_bytes
                skip_now = min(skip_total, end - body_start - self.max_line_bytes)
                self.stats.discarded_bytes += skip_now
                self._frame_left = skip_total - skip_now
                pos = body_start + self.max_line_bytes + skip_now
                continue
            if end - body_start < count:
                break
            out.append(self._frame_to_line(buf[body_start : body_start + count]))
            pos = body_start + count
        if pos < end:
            self._partial += buf[pos:]
        return b"".join(out)

    def _frame_to_line(self, body: bytes, ending: bool = True) -> bytes:
        if ending:
            # The template ends each message with LF; an octet-counted frame keeps it.
            if body.endswith(LF):
                body = body[:-1]
            body = body.rstrip(b"\r")
        if len(body) > self.max_line_bytes:
            self.stats.truncated_lines += 1
            self.stats.discarded_bytes += len(body) - self.max_line_bytes
            body = body[: self.max_line_bytes]
        if LF in body:
            # Only non-rsyslog senders put raw LF in a frame; escape it the way
            # rsyslog does, so one frame stays one line.
            self.stats.escaped_newlines += body.count(LF)
            body = body.replace(LF, b"#012")
        return body + LF

    def _octet_framing_error(self, out: list[bytes], rest: bytes) -> bytes:
        # Not a valid count: the sender is not speaking octet counting (or lost
        # sync). Fall back to LF framing for the rest of the connection, as
        # rsyslog's imtcp does, rather than dropping the connection's data.
        self.stats.framing_errors += 1
        self._octet = False
        out.append(self._feed_lf(rest))
        return b"".join(out)


def detect_octet_counting(head: bytes) -> bool | None:
    """True/False once ``head`` decides the framing; None while undecided."""
    stripped = head.lstrip(b"\r\n")
    if not stripped:
        return None
    if stripped[:1] not in _NONZERO_DIGITS:
        return False
    for i, byte in enumerate(stripped[: _MAX_COUNT_DIGITS + 1]):
        if byte == 0x20:
            return i > 0
        if not 0x30 <= byte <= 0x39:
            return False
    return None if len(stripped) <= _MAX_COUNT_DIGITS else False


def _fold_crlf(complete: bytes) -> bytes:
    if b"\r" in complete and b"\r\n" in complete:  # one byte: a memchr, far cheaper
        return complete.replace(b"\r\n", LF)
    return complete


def _strip_leading_line_ends(data: bytes) -> bytes:
    """Drop leading LF and CRLF (empty lines); a lone CR is data and stays."""
    start = 0
    while True:
        if data.startswith(b"\n", start):
            start += 1
        elif data.startswith(b"\r\n", start):
            start += 2
        else:
            return data[start:] if start else data
