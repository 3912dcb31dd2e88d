"""What every TCP input shares: the server socket, the set of connections and its limit,
appending to the queue, and backpressure.

Backpressure: when the queue stops being writable, every connection of the input is told
(``backpressure_changed()``) and stops reading, so the kernel's buffers fill and the sender
queues on its side; when the queue has room again, they are told again and resume.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Callable, Protocol

from prometheus_client import Gauge

from agent.ops import metrics
from agent.ops.selflog import RateLimitedLog
from agent.spool.queue import ChunkQueue

from .activation import listen_backlog

# As systemd/slsfwd.socket's Backlog=: connections rsyslog opens while the agent is busy wait here.
LISTEN_BACKLOG = 1024


class Connection(Protocol):
    peer: str

    def backpressure_changed(self) -> None: ...


class Listener:
    def __init__(
        self,
        queue: ChunkQueue,
        *,
        max_connections: int,
        clock: Callable[[], float],
        connections_gauge: Gauge,
        log: logging.Logger,
        what: str,
    ) -> None:
        self.queue = queue
        self.max_connections = max_connections
        self._clock = clock
        self._gauge = connections_gauge
        self._log = log
        self._what = what  # "connection" / "RELP session", for log lines
        self._server: asyncio.AbstractServer | None = None
        self._connections: set = set()
        self._paused_since: float | None = None
        self._resume_task: asyncio.Task | None = None
        self._limit_log = RateLimitedLog(log, interval_s=60.0)
        self.lines = 0
        self.bytes = 0

    def _make_protocol(self) -> asyncio.Protocol:
        raise NotImplementedError  # each input has its own protocol class

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self._server.sockets) if self._server else []

    async def start(self, host: str, port: int, *, sock: socket.socket | None = None) -> None:
        """Listen on host:port, or on ``sock`` when systemd handed one over."""
        loop = asyncio.get_running_loop()
        if sock is not None:
            # asyncio listens again on the socket it is given: keep the backlog systemd set.
            backlog = listen_backlog(sock) or LISTEN_BACKLOG
            self._server = await loop.create_server(self._make_protocol, sock=sock, backlog=backlog)
        else:
            self._server = await loop.create_server(
                self._make_protocol, host, port, reuse_address=True, backlog=LISTEN_BACKLOG
            )

    async def open_server(self, host: str, port: int) -> asyncio.AbstractServer:
        """A listening socket on host:port for :meth:`switch_to`; the current one keeps serving."""
        return await asyncio.get_running_loop().create_server(
            self._make_protocol, host, port, reuse_address=True, backlog=LISTEN_BACKLOG
        )

    def switch_to(self, server: asyncio.AbstractServer) -> None:
        """Accept on ``server`` from now on; connections made on the old one stay open."""
        old, self._server = self._server, server
        if old is not None:
            old.close()

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    @property
    def backpressured(self) -> bool:
        return self._paused_since is not None

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # -- connection bookkeeping ------------------------------------------

    def admit(self, conn: Connection, transport: asyncio.BaseTransport) -> bool:
        """A new connection: note its peer, and let it in unless the limit is reached (then it is aborted)."""
        peername = transport.get_extra_info("peername")
        conn.peer = peername[0] if isinstance(peername, tuple) and peername else ""
        if len(self._connections) >= self.max_connections:
            transport.abort()
            self._limit_log.warning(
                "refusing a %s from %s: input.max_connections (%d) reached", self._what, conn.peer, self.max_connections
            )
            return False
        self._connections.add(conn)
        self._gauge.set(len(self._connections))
        return True

    def forget(self, conn: Connection) -> None:
        self._connections.discard(conn)
        self._gauge.set(len(self._connections))

    def count_bytes(self, nbytes: int) -> None:
        self.bytes += nbytes
        metrics.INPUT_BYTES.inc(nbytes)

    def append(self, peer: str, payload: bytes) -> int:
        """Append complete lines as one chunk; pause every connection if the queue filled."""
        lines = payload.count(b"\n")
        self.lines += lines
        metrics.INPUT_LINES.inc(lines)
        seq = self.queue.append(int(self._clock()), peer, payload, lines)
        if not self.queue.writable and self._paused_since is None:
            self._pause_all()
        return seq

    # -- backpressure -----------------------------------------------------

    def _pause_all(self) -> None:
        self._paused_since = time.monotonic()
        for conn in self._connections:
            conn.backpressure_changed()
        self._resume_task = asyncio.get_running_loop().create_task(self._resume_when_writable())
        self._log.debug("queue full: paused %d %ss", len(self._connections), self._what)

    async def _resume_when_writable(self) -> None:
        await self.queue.wait_writable()
        if self._paused_since is not None:
            metrics.INPUT_PAUSED_SECONDS.inc(time.monotonic() - self._paused_since)
        self._paused_since = None
        self._resume_task = None
        for conn in list(self._connections):
            conn.backpressure_changed()

    def _cancel_resume(self) -> None:
        if self._resume_task is not None:
            self._resume_task.cancel()
            self._resume_task = None
