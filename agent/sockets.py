"""Listening sockets handed over by systemd (socket activation, ``sd_listen_fds``).

With ``systemd/slsfwd.socket`` the listening sockets belong to systemd, so the
port stays open while the agent restarts: rsyslog's connections wait in the
kernel's backlog instead of failing. The agent takes the inherited socket
whose address matches ``input.listen`` (or ``input.relp_listen``) instead of
binding its own.
"""

from __future__ import annotations

import os
import socket

SD_LISTEN_FDS_START = 3


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
