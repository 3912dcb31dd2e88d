"""A small HTTP/1.1 client: keep-alive connections per host, TLS, timeouts.

Why not aiohttp's client, which the agent used before: a PutLogs request through
``ClientSession`` cost about 1.3 ms of CPU with cold caches (0.54 ms hot), and at
the everyday rate (1,000 lines/s, a request per LogGroup every ``linger_ms``)
requests were a fifth of the agent's CPU. Most of it was generality PutLogs does
not need: cookies, redirects, proxies, tracing, URL objects, multi-dicts. The
bytes of HTTP are :mod:`.wire`'s; this module is the I/O shell: one
request at a time per connection, idle connections kept for reuse.

A kept connection the server closed meanwhile is noticed (EOF while idle) and
dropped. If the server closes it in the instant a request is sent on it, before
any byte of an answer came back, the request is sent once more on a new
connection, as browsers and urllib3 do; any other failure is an
:class:`HttpError` for the caller's retry policy.
"""

from __future__ import annotations

import asyncio
import ssl

from .wire import HttpProtocolError, Response, ResponseParser, format_request

__all__ = ["Http1Client", "HttpError", "Response"]


class HttpError(Exception):
    """No usable answer: connecting, TLS, a reset, a timeout or a malformed response."""


class _Stale(Exception):
    """A reused connection failed before any byte of the answer: safe to send again."""


class _Connection(asyncio.Protocol):
    """One connection; :meth:`exchange` sends a request and waits for its answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = ResponseParser()
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self.reused = False
        self.reusable = False  # set when an answer leaves the connection open for another
        self.lost = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing was asked: a server talking out of turn
            self.close()
            return
        try:
            response = self._parser.feed(data)
        except HttpProtocolError as exc:
            self._fail(HttpError(f"malformed HTTP response: {exc}"))
            self.close()
            return
        if response is not None:
            self._answered(response)

    def eof_received(self) -> bool:
        self.lost = True
        if self._waiter is not None and self._parser.idle:
            self._fail(ConnectionResetError("the server closed the connection"))
        elif self._waiter is not None:
            try:
                self._answered(self._parser.feed_eof())
            except HttpProtocolError as exc:
                self._fail(exc)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    # -- use

    async def exchange(self, head: bytes, body: bytes) -> Response:
        assert self._transport is not None
        if self.lost:
            raise _Stale("closed while idle") if self.reused else ConnectionResetError("connection closed")
        self.reusable = False
        self._waiter = self._loop.create_future()
        self._transport.writelines([head, body])
        return await self._waiter

    def close(self) -> None:
        self.lost = True
        self.reusable = False
        if self._transport is not None:
            self._transport.close()

    def _answered(self, response: Response) -> None:
        waiter, self._waiter = self._waiter, None
        self.reusable = response.keep_alive and not self.lost
        if waiter is not None and not waiter.done():
            waiter.set_result(response)
        if not self.reusable:
            self.close()

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        if self.reused and self._parser.idle and not isinstance(exc, (HttpError, HttpProtocolError)):
            exc = _Stale(str(exc))
        waiter.set_exception(exc)


class Http1Client:
    """Requests to any number of hosts; at most ``max_idle`` idle connections kept per host."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None,
        connect_timeout_s: float,
        request_timeout_s: float,
        max_idle: int = 8,
    ) -> None:
        self._ssl = ssl_context
        self._connect_timeout_s = connect_timeout_s
        self._request_timeout_s = request_timeout_s
        self._max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()

    async def request(self, host: str, port: int, method: str, target: str,
                      headers: list[tuple[str, str]], body: bytes) -> Response:
        """One request; ``headers`` must include Host and Content-Length. Raises HttpError."""
        try:
            head = format_request(method, target, headers)
            async with asyncio.timeout(self._request_timeout_s):
                try:
                    return await self._exchange(host, port, head, body, reuse=True)
                except _Stale:
                    return await self._exchange(host, port, head, body, reuse=False)
        except TimeoutError:
            raise HttpError("timed out") from None
        except HttpError:
            raise
        except (OSError, ValueError, HttpProtocolError, _Stale) as exc:
            raise HttpError(f"{type(exc).__name__}: {exc or type(exc).__name__}"[:300]) from None

    async def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        for conn in list(self._busy):
            conn.close()

    async def _exchange(self, host: str, port: int, head: bytes, body: bytes, *, reuse: bool) -> Response:
        conn = self._take_idle(host, port) if reuse else None
        if conn is None:
            conn = await self._connect(host, port)
        self._busy.add(conn)
        try:
            response = await conn.exchange(head, body)
        except BaseException:
            conn.close()
            raise
        finally:
            self._busy.discard(conn)
        self._keep(host, port, conn)
        return response

    def _take_idle(self, host: str, port: int) -> _Connection | None:
        idle = self._idle.get((host, port))
        while idle:
            conn = idle.pop()
            if conn.reusable and not conn.lost:
                conn.reused = True
                return conn
            conn.close()
        return None

    def _keep(self, host: str, port: int, conn: _Connection) -> None:
        idle = self._idle.setdefault((host, port), [])
        if conn.reusable and not conn.lost and len(idle) < self._max_idle:
            idle.append(conn)
        else:
            conn.close()

    async def _connect(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop), host, port, ssl=self._ssl,
                    server_hostname=host if self._ssl is not None else None,
                )
        except TimeoutError:
            raise HttpError(f"connecting to {host}:{port} timed out") from None
        return conn
