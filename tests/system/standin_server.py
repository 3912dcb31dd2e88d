"""The PutLogs stand-in (tests/support/standin.py) as a process inside a booted container.

    python -m tests.system.standin_server --port 18080 --record /srv/share/standin.jsonl
        [--metadata-address 100.100.100.200 --role slsfwd-ecs]

Every log it accepts is appended to ``--record`` as one JSON object per line (``contents``,
``pairs``, ``tags``, ``source``, ``time``, ``project``, ``logstore``, and ``received``: the unix
time it was written out, at most 0.1 s after it arrived), so the test on the host reads what
arrived from the shared directory. Nothing goes to
the journal: inside the container a line there would travel journald → rsyslog → slsfwd → this
stand-in and be logged again. Prints ``listening HOST:PORT`` once ready; exits 0 on SIGTERM.

With ``--metadata-address`` it also serves the ECS metadata service (tests/support/metadata_standin.py)
on that address, port 80, with STS credentials for ``--role``; the PutLogs stand-in then accepts
exactly those credentials, so the agent must have fetched them to ship.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import IO

from tests.support.metadata_standin import MetadataStandin
from tests.support.standin import AcceptedLog, PutLogsStandin

FLUSH_EVERY_S = 0.1


def record(log: AcceptedLog, received: float) -> str:
    return json.dumps(dataclasses.asdict(log) | {"received": received}, ensure_ascii=False)


async def write_new_logs(standin: PutLogsStandin, out: IO[str], stop: asyncio.Event) -> None:
    written = 0
    while True:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), FLUSH_EVERY_S)
        fresh = standin.logs[written:]
        if fresh:
            now = time.time()  # at most FLUSH_EVERY_S after the stand-in accepted them
            out.write("".join(record(log, now) + "\n" for log in fresh))
            out.flush()
            written += len(fresh)
        if stop.is_set():
            return


def notify_ready() -> None:
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"READY=1", "\0" + address[1:] if address.startswith("@") else address)


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        credentials = {}
        if args.metadata_address:
            metadata = MetadataStandin(role=args.role, port=80)
            # Inside the container's own network namespace the metadata address is one of lo's,
            # as 100.100.100.200 is on an ECS instance; the loopback guard is for the host.
            metadata.host = args.metadata_address
            await stack.enter_async_context(metadata)
            akid, secret, token = metadata.credentials
            credentials = {"access_key_id": akid, "access_key_secret": secret, "security_token": token}
        standin = await stack.enter_async_context(PutLogsStandin(port=args.port, **credentials))
        with Path(args.record).open("a", encoding="utf-8") as out:
            print(f"listening {standin.endpoint}", flush=True)
            notify_ready()
            await write_new_logs(standin, out, stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True, help="append each accepted log here as a JSON line")
    parser.add_argument("--metadata-address", default="", help="also serve ECS metadata on this address, port 80")
    parser.add_argument("--role", default="slsfwd-ecs", help="the RAM role the metadata service knows")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
