"""The load generator of the end-to-end benchmark: one TCP connection, pre-built bytes.

Run by ``bench/bench_e2e.py`` as a separate process (pinned with taskset)::

    python -m bench.e2e_sender --port P --corpus FILE --mode blast
    python -m bench.e2e_sender --port P --corpus FILE --mode paced --rate 1000 --seconds 30
    python -m bench.e2e_sender --port P --corpus FILE --mode paced --rate 20480 --seconds 25 --lines-per-write 64

It reads the corpus into memory, connects, prints ``ready`` and waits for a
line on stdin; then it sends and prints one JSON line with ``t_first`` (just
before the first byte is handed to the kernel), ``t_last`` (after the last
one), both ``time.monotonic()`` (CLOCK_MONOTONIC, comparable across processes
on Linux), and the lines and bytes sent. Then it closes the connection.

* ``blast``: ``sendall()`` of the whole corpus, as fast as the receiver's
  window allows (flow control is the receiver's).
* ``paced``: one ``send()`` per line at ``--rate`` lines/s on an absolute
  schedule (no drift), for ``--seconds``, cycling through the corpus lines.
  ``TCP_NODELAY`` is set so that each write leaves as its own segment, as
  rsyslog's writes do at such rates; with Nagle on, the kernel would batch
  lines behind a delayed ACK and flatter the receiver (``--nagle`` to see how much).
  ``--lines-per-write N`` sends N lines in each write instead (``rate / N``
  writes a second), as a busy rsyslog action hands over a batch at a time.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e_sender")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--mode", choices=("blast", "paced"), default="blast")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--nagle", action="store_true", help="paced: leave Nagle on (no TCP_NODELAY)")
    parser.add_argument("--lines-per-write", type=int, default=1, help="paced: lines in each write (default 1)")
    args = parser.parse_args(argv)

    with open(args.corpus, "rb") as f:
        blob = f.read()
    lines = blob.splitlines(keepends=True) if args.mode == "paced" else []
    per_write = max(1, args.lines_per_write)
    if per_write > 1:  # the writes, built before timing: cycling through the corpus, per_write lines each
        lines = [b"".join(lines[(i + k) % len(lines)] for k in range(per_write))
                 for i in range(0, len(lines), per_write)]

    sock = socket.create_connection(("127.0.0.1", args.port))
    if args.mode == "paced" and not args.nagle:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print("ready", flush=True)
    if not sys.stdin.readline():
        return 1  # the parent went away

    sent_lines = sent_bytes = 0
    if args.mode == "blast":
        t_first = time.monotonic()
        sock.sendall(blob)
        t_last = time.monotonic()
        sent_lines, sent_bytes = blob.count(b"\n"), len(blob)
    else:
        writes = int(args.rate * args.seconds) // per_write
        interval = per_write / args.rate
        t_first = time.monotonic()
        for i in range(writes):
            due = t_first + i * interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            data = lines[i % len(lines)]
            sock.sendall(data)
            sent_bytes += len(data)
        t_last = time.monotonic()
        sent_lines = writes * per_write
    sock.close()
    print(json.dumps({"t_first": t_first, "t_last": t_last, "lines": sent_lines, "bytes": sent_bytes}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
