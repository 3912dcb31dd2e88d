"""Listening sockets handed over by systemd (socket activation, ``sd_listen_fds``).

With ``systemd/slsfwd.socket`` the listening sockets belong to systemd, so the
port stays open while the agent restarts: rsyslog's connections wait in the
kernel's backlog instead of failing. The agent takes the inherited socket
whose address matches ``input.listen`` (or ``input.relp_listen``) instead of
binding its own.

The listen backlog stays the one systemd gave the socket (the unit's ``Backlog=``):
asyncio calls ``listen()`` again on a socket it is handed, so the listener passes
:func:`listen_backlog` of the inherited socket rather than asyncio's default of 100.
"""

from __future__ import annotations

import os
import socket
import struct

SD_LISTEN_FDS_START = 3

# struct tcp_info (linux/tcp.h): eight u8 fields, then u32 tcpi_rto, ato, snd_mss, rcv_mss,
# unacked, sacked. For a socket in TCP_LISTEN the kernel reports its accept queue there:
# tcpi_unacked = connections waiting, tcpi_sacked = the backlog listen() set.
_TCP_INFO_HEAD = struct.Struct("=8B6I")
_TCP_LISTEN = 10


def inherited_sockets(environ: dict[str, str] | None = None) -> list[socket.socket]:
    """The sockets passed in ``LISTEN_FDS`` for this process; the variables are then cleared."""
    env = os.environ if environ is None else environ
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)  # not for our children
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        if sock.type == socket.SOCK_STREAM:
            sockets.append(sock)
        else:
            sock.detach()
    return sockets


def take_matching(sockets: list[socket.socket], host: str, port: int) -> socket.socket | None:
    """Remove and return the inherited socket bound to host:port (a wildcard bind matches any host)."""
    wanted = {socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]} if host else set()
    for sock in sockets:
        bound_host, bound_port = sock.getsockname()[:2]
        if bound_port == port and (bound_host in wanted or bound_host in ("0.0.0.0", "::")):
            sockets.remove(sock)
            sock.setblocking(False)
            return sock
    return None


def listen_backlog(sock: socket.socket) -> int | None:
    """The backlog of a listening TCP socket, as the kernel applies it; None if it cannot tell."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_HEAD.size)
    except (OSError, AttributeError):  # not TCP, or no TCP_INFO on this platform
        return None
    if len(info) < _TCP_INFO_HEAD.size:
        return None
    fields = _TCP_INFO_HEAD.unpack_from(info)
    state, backlog = fields[0], fields[-1]
    return backlog if state == _TCP_LISTEN and backlog > 0 else None
