"""agent/http1.py against a real loopback server that scripts each answer.

Keep-alive reuse, a kept connection the server closed, a close in the instant a request is sent
(sent once more), resets, hangs (timeouts), garbage, and TLS verification.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from agent.output.http.client import Http1Client, HttpError

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class ScriptedServer:
    """Answers request n with ``script[n]`` (bytes to send, or an action); counts connections."""

    def __init__(self, script) -> None:
        self.script = list(script)
        self.requests: list[bytes] = []
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                self.requests.append(head + await reader.readexactly(length))
                action = self.script.pop(0) if self.script else OK
                if action == "close":
                    writer.close()
                    return
                if action == "hang":
                    await asyncio.sleep(3600)
                writer.write(action)
                await writer.drain()
                if b"Connection: close" in action:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def close_idle_connections(self) -> None:
        for writer in self._writers:
            writer.close()


@asynccontextmanager
async def serve(script, ssl_context=None):
    server = ScriptedServer(script)
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=ssl_context)
    try:
        server.port = srv.sockets[0].getsockname()[1]
        yield server
    finally:
        server.close_idle_connections()
        srv.close()


def client(**kw) -> Http1Client:
    kw.setdefault("ssl_context", None)
    kw.setdefault("connect_timeout_s", 2.0)
    kw.setdefault("request_timeout_s", 2.0)
    return Http1Client(**kw)


async def post(http: Http1Client, port: int, body: bytes = b"abc", host: str = "127.0.0.1"):
    headers = [("Host", f"project.{host}"), ("Content-Length", str(len(body)))]
    return await http.request(host, port, "POST", "/logstores/s/shards/lb", headers, body)


async def test_keep_alive_reuses_one_connection():
    async with serve([OK, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\n{}", OK]) as server:
        http = client()
        statuses = [(await post(http, server.port, b"x" * n)).status for n in (1, 2, 3)]
        await http.close()
    assert statuses == [200, 403, 200]
    assert server.connections == 1
    assert [r.endswith(b"x" * n) for r, n in zip(server.requests, (1, 2, 3))] == [True] * 3
    assert server.requests[0].startswith(b"POST /logstores/s/shards/lb HTTP/1.1\r\nHost: project.127.0.0.1\r\n")


async def test_connection_close_answer_is_not_reused():
    async with serve([b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", OK]) as server:
        http = client()
        assert (await post(http, server.port)).status == 200
        assert (await post(http, server.port)).status == 200
        await http.close()
    assert server.connections == 2


async def test_a_kept_connection_the_server_closed_is_not_used(monkeypatch):
    attempts: list[bool] = []  # reuse asked for, per attempt: a dead connection tried first would add one
    real = Http1Client._exchange

    async def exchange(self, host, port, head, body, *, reuse):
        attempts.append(reuse)
        return await real(self, host, port, head, body, reuse=reuse)

    monkeypatch.setattr(Http1Client, "_exchange", exchange)
    async with serve([OK, OK]) as server:
        http = client()
        await post(http, server.port)
        server.close_idle_connections()
        await asyncio.sleep(0.05)
        assert (await post(http, server.port)).status == 200
        await http.close()
    assert server.connections == 2 and len(server.requests) == 2
    assert attempts == [True, True]  # one attempt each: the closed connection was seen as lost, not tried


async def test_a_close_in_the_instant_of_sending_is_sent_once_more_on_a_new_connection():
    async with serve([OK, "close", OK]) as server:
        http = client()
        await post(http, server.port)
        assert (await post(http, server.port, b"second")).status == 200
        await http.close()
    assert server.connections == 2
    assert [r.endswith(b"second") for r in server.requests] == [False, True, True]


async def test_a_close_on_a_new_connection_is_an_error_not_a_resend():
    async with serve(["close"]) as server:
        http = client()
        with pytest.raises(HttpError, match="closed"):
            await post(http, server.port)
        await http.close()
    assert len(server.requests) == 1


async def test_a_hang_times_out_and_the_connection_is_dropped():
    async with serve(["hang", OK]) as server:
        http = client(request_timeout_s=0.3)
        with pytest.raises(HttpError, match="timed out"):
            await post(http, server.port)
        assert (await post(http, server.port)).status == 200
        await http.close()
    assert server.connections == 2


@pytest.mark.parametrize("answer, error", [
    (b"<html>502 Bad Gateway</html>\r\n\r\n", "status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nshort", "closed before"),
])
async def test_garbage_and_truncated_answers_are_errors(answer, error):
    async with serve([answer, OK]) as server:
        http = client()
        with pytest.raises(HttpError, match=error):
            await post(http, server.port)
        assert (await post(http, server.port)).status == 200  # on a new connection
        await http.close()
    assert server.connections == 2


async def test_refused_and_unresolvable_hosts_are_errors():
    http = client(connect_timeout_s=1.0)
    with pytest.raises(HttpError, match="ConnectionRefused|Connect"):
        await post(http, 1)
    with pytest.raises(HttpError):
        await post(http, 80, host="no-such-host.invalid")
    await http.close()


async def test_idle_connections_per_host_are_bounded():
    async with serve([]) as server:
        http = client(max_idle=2)
        await asyncio.gather(*(post(http, server.port) for _ in range(5)))
        assert server.connections == 5
        assert len(http._idle[("127.0.0.1", server.port)]) == 2
        await http.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(where / "key.pem"), "-out", str(where / "cert.pem")],
        check=True, capture_output=True,
    )
    return where


async def test_tls_is_verified(certificate):
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(certificate / "cert.pem", certificate / "key.pem")
    async with serve([OK], ssl_context=server_ctx) as server:
        untrusting = client(ssl_context=ssl.create_default_context())
        with pytest.raises(HttpError, match="certificate"):
            await post(untrusting, server.port)
        await untrusting.close()
        trusting = client(ssl_context=ssl.create_default_context(cafile=str(certificate / "cert.pem")))
        assert (await post(trusting, server.port)).status == 200
        await trusting.close()
