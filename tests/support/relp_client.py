"""A raw RELP client for tests: writes frames, reads the server's frames."""

from __future__ import annotations

import asyncio

from agent.input.relp.protocol import Frame, FrameParser, format_frame

# What rsyslog 8.2302's omrelp (librelp 1.11) sends to open a session.
LIBRELP_OPEN = b"relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog"


class Client:
    """A raw RELP client: writes frames, reads the server's frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = FrameParser(commands=None, check_txnr=False)
        self.frames: list[Frame] = []
        self.next_txnr = 1

    @classmethod
    async def connect(cls, port: int) -> "Client":
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, command: str, data: bytes = b"") -> int:
        txnr = self.next_txnr
        self.next_txnr += 1
        self.writer.write(format_frame(txnr, command, data))
        await self.writer.drain()
        return txnr

    async def send_many(self, payloads: list[bytes]) -> list[int]:
        txnrs = list(range(self.next_txnr, self.next_txnr + len(payloads)))
        self.writer.write(b"".join(format_frame(t, "syslog", p) for t, p in zip(txnrs, payloads)))
        self.next_txnr += len(payloads)
        await self.writer.drain()
        return txnrs

    async def open(self) -> Frame:
        await self.send("open", LIBRELP_OPEN)
        (answer,) = await self.read(1)
        return answer

    async def read(self, n: int, timeout: float = 3.0) -> list[Frame]:
        """Wait for n more frames; returns them."""
        start = len(self.frames)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.frames) < start + n:
            data = await asyncio.wait_for(self.reader.read(65536), max(0.01, deadline - loop.time()))
            if not data:
                raise EOFError(f"EOF after {self.frames[start:]}")
            self.frames.extend(self.parser.feed(data))
            assert self.parser.error is None, self.parser.error
        return self.frames[start:]

    async def read_until_eof(self, timeout: float = 3.0) -> list[Frame]:
        start = len(self.frames)
        while True:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                return self.frames[start:]
            self.frames.extend(self.parser.feed(data))

    async def nothing_for(self, seconds: float) -> None:
        try:
            data = await asyncio.wait_for(self.reader.read(65536), seconds)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"expected silence, got {data!r}")

    def close(self) -> None:
        self.writer.close()
