"""The metrics listener: ``/metrics`` for Prometheus and ``/healthz``.

``/healthz`` answers 200 ``ok`` while the agent is healthy, and 503 with
the reasons when it is not (the spool cannot be written, or shipping is
refused for a credential or configuration reason).

Plain asyncio streams and :mod:`.httphead`'s strict request grammar: GET and
HEAD of two paths need no web framework (aiohttp's server cost 11 MB of the
agent's memory at rest). Anything on the host may connect, so every resource
is bounded: at most :data:`MAX_CONNECTIONS` connections; a request head must
fit in :data:`MAX_HEAD_BYTES` and arrive whole within :data:`HEAD_TIMEOUT_S`
of its first byte (a slow client is answered 408 and dropped); a kept-alive
connection waits :data:`IDLE_TIMEOUT_S` for its next request; an answer the
client does not take within :data:`WRITE_TIMEOUT_S` ends the connection. When
every slot is taken, the connection that has waited longest for a request gives
its slot to the newcomer (closing a waiting connection is always allowed in
HTTP: clients open another), so a scraper is never locked out for long.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from .httphead import HttpProtocolError, Request, format_response, parse_request
from .selflog import RateLimitedLog

log = logging.getLogger("slsfwd.status")

MAX_CONNECTIONS = 16
MAX_HEAD_BYTES = 8 * 1024  # Prometheus's request head is about 300 bytes
HEAD_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 75.0  # beyond the usual scrape intervals (15-60 s), so a scraper's connection is reused
WRITE_TIMEOUT_S = 10.0
LINGER_S = 1.0  # after an answer that closes the connection (see linger)
TEXT = "text/plain; charset=utf-8"

Answer = tuple[int, list[tuple[str, str]], bytes]  # status, headers, body


class _Refused(Exception):
    """The request cannot be read: answer this status, then close."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass(eq=False)
class _Client:
    writer: asyncio.StreamWriter
    waiting_since: float | None = None  # monotonic time it began waiting for a request; None while answered


def metrics_answer(accept: str) -> tuple[bytes, str]:
    """The exposition in Prometheus's text format, and the content type naming the version asked for.

    Only the ``text/plain`` offers of ``Accept`` are heard. Prometheus also offers (and prefers)
    OpenMetrics, but every version of it takes the text format, the one this listener has always served:
    keeping to it keeps what a Prometheus stores (family names, metadata) the same.
    """
    offers = ",".join(o for o in accept.split(",") if o.split(";")[0].strip().lower() == "text/plain")
    encoder, content_type = choose_encoder(offers)
    return encoder(REGISTRY), content_type


class StatusServer:
    def __init__(self, problems: Callable[[], list[str]]) -> None:
        self._problems = problems
        self._server: asyncio.Server | None = None
        self._clients: dict[_Client, asyncio.Task] = {}
        self._failure_log = RateLimitedLog(log, interval_s=60.0)

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._serve, host, port, limit=MAX_HEAD_BYTES, reuse_address=True,
        )

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        tasks = list(self._clients.values())
        for client in list(self._clients):
            # Every wait of a connection's task is on its stream: aborted, it ends at once. Not cancelled:
            # Python 3.11's streams log a cancelled connection task as an error.
            client.writer.transport.abort()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        await self._server.wait_closed()
        self._server = None

    @property
    def connections(self) -> int:
        return len(self._clients)

    # -- one connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._make_room():
            writer.transport.abort()  # every slot is busy answering: refuse rather than pile up
            return
        client = _Client(writer)
        self._clients[client] = asyncio.current_task()  # type: ignore[assignment]
        # Nothing stays buffered in the process: drain() returns only once the kernel took every byte.
        writer.transport.set_write_buffer_limits(high=0)
        try:
            if await self._converse(reader, client):
                client.waiting_since = time.monotonic()  # evictable while lingering
                await linger(reader, writer)
        except (ConnectionError, TimeoutError):
            writer.transport.abort()
        finally:
            self._clients.pop(client, None)
            writer.close()

    async def _converse(self, reader: asyncio.StreamReader, client: _Client) -> bool:
        """Answers requests until one closes the connection (then True) or the client leaves or idles."""
        wait_s = HEAD_TIMEOUT_S  # a new connection is for a request now
        while True:
            client.waiting_since = time.monotonic()
            try:
                head = await read_head(reader, wait_s)
            except _Refused as refused:
                client.waiting_since = None
                await self._send(client.writer, (refused.status, [], b""), keep_alive=False)
                return True
            if head is None:
                return False
            client.waiting_since = None
            try:
                request = parse_request(head)
            except HttpProtocolError:
                await self._send(client.writer, (400, [("Content-Type", TEXT)], b"bad request\n"), keep_alive=False)
                return True
            status, headers, body = answer = self._answer(request)
            keep_alive = request.keep_alive and status != 500
            await self._send(client.writer, answer if request.method != "HEAD" else (status, headers, b""),
                             keep_alive=keep_alive, length=len(body))
            if not keep_alive:
                return True
            wait_s = IDLE_TIMEOUT_S

    def _answer(self, request: Request) -> Answer:
        if request.path == "/metrics":
            render = self._metrics
        elif request.path == "/healthz":
            render = self._healthz
        else:
            return 404, [("Content-Type", TEXT)], b"not found\n"
        if request.method not in ("GET", "HEAD"):
            return 405, [("Allow", "GET, HEAD"), ("Content-Type", TEXT)], b"method not allowed\n"
        try:
            return render(request)
        except Exception as exc:  # a broken collector must not take the listener down
            self._failure_log.error("cannot answer %s: %s: %s", request.path, type(exc).__name__, exc)
            return 500, [("Content-Type", TEXT)], b"internal error\n"

    def _metrics(self, request: Request) -> Answer:
        body, content_type = metrics_answer(request.headers.get("accept", ""))
        return 200, [("Content-Type", content_type)], body

    def _healthz(self, _request: Request) -> Answer:
        problems = self._problems()
        if problems:
            return 503, [("Content-Type", TEXT)], ("\n".join(problems) + "\n").encode()
        return 200, [("Content-Type", TEXT)], b"ok\n"

    async def _send(self, writer: asyncio.StreamWriter, answer: Answer, *, keep_alive: bool,
                    length: int | None = None) -> None:
        status, headers, body = answer
        length = len(body) if length is None else length  # a HEAD answer: the length the GET body would have
        head = format_response(
            status, [("Date", formatdate(usegmt=True)), *headers, ("Content-Length", str(length))],
            keep_alive=keep_alive,
        )
        writer.write(head + body)
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await writer.drain()

    def _make_room(self) -> bool:
        """True if a new connection may be served, closing the longest-waiting one if need be."""
        if len(self._clients) < MAX_CONNECTIONS:
            return True
        waiting = [c for c in self._clients if c.waiting_since is not None]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.waiting_since or 0.0)
        oldest.writer.transport.abort()  # its task sees the connection lost and ends
        self._clients.pop(oldest, None)
        return True


async def linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Closing after an answer: half-close, and discard what the client still sends for a moment.

    Closed with unread bytes in its buffer (the rest of a refused head, a body never read), the
    kernel resets the connection, and the client may lose the answer it has not read yet.
    """
    if writer.can_write_eof():
        writer.write_eof()
    async with asyncio.timeout(LINGER_S):
        while await reader.read(MAX_HEAD_BYTES):
            pass


async def read_head(reader: asyncio.StreamReader, wait_s: float) -> bytes | None:
    """The next request head (without its blank line), or None if the client left or stayed silent."""
    try:
        async with asyncio.timeout(wait_s):
            first = await reader.readexactly(1)
    except (TimeoutError, asyncio.IncompleteReadError):
        return None
    try:
        async with asyncio.timeout(HEAD_TIMEOUT_S):
            rest = await reader.readuntil(b"\r\n\r\n")
    except TimeoutError:
        raise _Refused(408) from None
    except asyncio.LimitOverrunError:
        raise _Refused(431) from None
    except asyncio.IncompleteReadError:
        return None
    return first + rest[:-4]
