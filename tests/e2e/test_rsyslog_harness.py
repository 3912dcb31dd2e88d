"""The rsyslog harness, and what Debian's rsyslog 8.2302 really sends with the tutorial block.

Expected lines follow shared/samples/README.md, written as the sample lines are
but without the leading ``0.1 sys_tag <unixtime> `` and the optional ``<PRI>``
suffix of %pri-text% (both are checked separately by ``_strip``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pathlib
import pwd
import re
import socket
import time

import pytest

from tests.support import REPO, shared_data
from tests.support.rsyslog_harness import (
    SHARED_CONF,
    TUTORIAL_TARGET,
    VENDORED_CONF,
    Rsyslog,
    RsyslogError,
    logtail_conf_text,
)

_FACILITIES = ("kern user mail daemon auth syslog lpr news uucp cron authpriv ftp ntp security console solaris-cron "
               "local0 local1 local2 local3 local4 local5 local6 local7").split()
_SEVERITIES = "emerg alert crit err warning notice info debug".split()
_LINE = re.compile(rb"0\.1 sys_tag (\d+) (\S+ \S+) ([a-z0-9-]+)\.([a-z]+)(?:<(\d+)>)? (.*)", re.S)


def _strip(line: bytes, t_min: int, t_max: int) -> str:
    """``0.1 sys_tag T IP HOST fac.sev[<N>] REST`` -> ``IP HOST fac.sev REST`` after checking T and N."""
    m = _LINE.fullmatch(line)
    assert m, f"not a 0.1 sys_tag line: {line!r}"
    unixtime, ip_host, fac, sev, prinum, rest = m.groups()
    assert t_min <= int(unixtime) <= t_max, f"timegenerated {unixtime} not in [{t_min}, {t_max}]: {line!r}"
    if prinum is not None:  # newer rsyslog writes local0.err<131>
        assert int(prinum) == _FACILITIES.index(fac.decode()) * 8 + _SEVERITIES.index(sev.decode()), line
    return (b"%s %s.%s %s" % (ip_host, fac, sev, rest)).decode("utf-8")


def _logger_default_tag() -> str:
    # util-linux logger tags with getlogin(), else the effective user's name
    try:
        return os.getlogin()
    except OSError:
        return pwd.getpwuid(os.geteuid()).pw_name


class FakeAgent:
    """A plain asyncio TCP server standing in for slsfwd: collects every byte rsyslog sends."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        while chunk := await reader.read(65536):
            self.data += chunk

    def lines(self) -> list[bytes]:
        return bytes(self.data).split(b"\n")[:-1]

    async def wait_lines(self, n: int, rs: Rsyslog, timeout: float = 10.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.lines()) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"got {len(self.lines())} of {n} lines: {self.lines()!r}\n{rs.log_text(max_lines=100)}")
            await asyncio.sleep(0.01)
        return self.lines()

    async def stop(self) -> None:
        self._server.close()
        for w in self._writers:
            w.close()
        await self._server.wait_closed()


@pytest.fixture
async def agent():
    a = FakeAgent()
    await a.start()
    yield a
    await a.stop()


@pytest.mark.parametrize("name", sorted(shared_data.FILES))
def test_shared_files_and_their_copies_are_the_pinned_bytes(name):
    # The copy in tests/data/ must be the shared file itself: both are checked against the pin,
    # the shared one wherever ../shared exists (developers and CI), the copy always.
    _, pinned = shared_data.FILES[name]
    places = [shared_data.vendored_path(name)]
    if shared_data.shared_path(name).is_file():
        places.append(shared_data.shared_path(name))
    assert {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in places} == {str(p): pinned for p in places}
    assert shared_data.read_bytes(name) == shared_data.vendored_path(name).read_bytes()


def test_the_harness_uses_the_tutorial_block_byte_for_byte():
    assert SHARED_CONF == REPO.parent / "shared" / "rsyslog" / "80-logtail.conf"
    assert logtail_conf_text().encode("utf-8") == VENDORED_CONF.read_bytes()


def test_config_has_tutorial_block_verbatim_but_the_port(tmp_path):
    rs = Rsyslog(tmp_path, 23456)
    conf = rs.config_text()
    block = logtail_conf_text()
    assert TUTORIAL_TARGET in block
    assert block.replace(TUTORIAL_TARGET, "@@127.0.0.1:23456") in conf
    assert "/etc/" not in conf and "/dev/log" not in conf
    assert 'SysSock.Use="off"' in conf and 'ratelimit.interval="0"' in conf
    custom = Rsyslog(tmp_path, 1, forward_block='*.* action(type="omfwd" target="127.0.0.1" port="1")\n')
    assert "sys_tag" not in custom.config_text()


BIG = "BIG6K-BEGIN " + "0123456789abcdef" * 384 + " BIG6K-END"  # 6,166 bytes


@pytest.mark.e2e
async def test_logtail_lines_as_rsyslog_sends_them(tmp_path, agent):
    user = _logger_default_tag()
    t_min = int(time.time())
    async with Rsyslog(tmp_path, agent.port) as rs:
        H = rs.hostname
        L = f"127.0.0.1 {H}"
        local = [  # (logger args, expected line after _strip: str exact, or re.Pattern fullmatch)
            (["plain message"], f"{L} user.notice 0 {user} - -  plain message"),
            (["-t", "myapp", "tagged message"], f"{L} user.notice 0 myapp - -  tagged message"),
            (["-t", "myapp", "--id=4242", "explicit pid"], f"{L} user.notice 0 myapp 4242 -  explicit pid"),
            (["-t", "myapp", "-i", "logger's own pid"],
             re.compile(re.escape(L) + r" user\.notice 0 myapp [1-9]\d* -  logger's own pid")),
            (["-p", "local0.err", "-t", "dbapp", "priority"], f"{L} local0.err 0 dbapp - -  priority"),
            # imuxsock does not parse RFC 5424: protocol-version stays 0, app-name is the
            # header's VERSION "1", and the whole header (with ORDER42) is in %msg%.
            (["-t", "shop", "--rfc5424", "--msgid", "ORDER42", "rfc5424 via unix socket"],
             re.compile(re.escape(L) + r" user\.notice 0 1 - -  \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+[+-]\d\d:\d\d "
                        r"\S+ shop - ORDER42 \[timeQuality [^\]]*\] rfc5424 via unix socket")),
            (["-t", "chars", "UTF-8: äöü 日本語, emoji: 😀🚀"], f"{L} user.notice 0 chars - -  UTF-8: äöü 日本語, emoji: 😀🚀"),
            (["-t", "spaces", "   three leading and trailing   "],
             f"{L} user.notice 0 spaces - -     three leading and trailing   "),
            (["-t", "tab", "tab\there"], f"{L} user.notice 0 tab - -  tab#011here"),
            (["-t", "ml", "line1\nline2\nline3"], f"{L} user.notice 0 ml - -  line1#012line2#012line3"),
            # logger itself cuts at 1 KiB unless --size is given
            (["-t", "big6k", "--size", "8192", BIG], f"{L} user.notice 0 big6k - -  {BIG}"),
        ]
        for args, _ in local:
            await rs.logger(*args)
        await rs.logger("-t", "stdin", stdin=b"stdin line A\nstdin line B\n")
        local += [(None, f"{L} user.notice 0 stdin - -  stdin line A"),
                  (None, f"{L} user.notice 0 stdin - -  stdin line B")]
        await rs.send_tcp(b"<34>Oct 11 22:14:15 webhost01 su[123]: 'su root' failed for lonvick on /dev/pts/8")
        await rs.send_tcp(b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 8710 ID47 '
                          b'[exampleSDID@32473 iut="3"] An application event log entry', source_ip="127.0.0.3")
        remote = {
            "127.0.0.2": "127.0.0.2 webhost01 auth.crit 0 su 123 -  'su root' failed for lonvick on /dev/pts/8",
            "127.0.0.3": "127.0.0.3 mymachine.example.com local4.notice 1 evntslog 8710 ID47 "
                         "An application event log entry",
        }
        received = await agent.wait_lines(len(local) + len(remote), rs)
    t_max = int(time.time()) + 1

    assert H == socket.gethostname().split(".")[0], "rsyslog's %hostname% should be the short host name"
    assert len(agent.lines()) == len(local) + len(remote), "unexpected extra lines (rsyslogd's own messages?)"
    got = [_strip(line, t_min, t_max) for line in received]
    got_local = [g for g in got if g.startswith("127.0.0.1 ")]  # one unix socket: order is kept
    got_remote = {g.split(" ", 1)[0]: g for g in got if not g.startswith("127.0.0.1 ")}
    assert len(got_local) == len(local)
    for (args, want), line in zip(local, got_local):
        if isinstance(want, str):
            assert line == want, args
        else:
            assert want.fullmatch(line), (args, line)
    assert got_remote == remote


@pytest.mark.e2e
async def test_stops_cleanly_while_forward_target_is_down(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    async with Rsyslog(tmp_path, dead_port) as rs:
        pid = rs.pid
        await rs.logger("-t", "lost", "nobody listens")
        await asyncio.sleep(0.1)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not pathlib.Path(f"/proc/{pid}").exists()


@pytest.mark.e2e
async def test_config_error_is_explained(tmp_path):
    rs = Rsyslog(tmp_path, 1, extra_conf='input(type="imtcp" port="0" bogusParameter="1")')
    with pytest.raises(RsyslogError, match=r"(?s)exited with status.*bogusParameter"):
        async with rs:
            pass
    assert rs.process.returncode is not None
