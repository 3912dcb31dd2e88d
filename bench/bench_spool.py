"""Spool append and replay throughput, against plain os.write + fsync of the same bytes.

    python -m bench.bench_spool [--lines 400000] [--repeat 3] [--dir DIR] [--pin]

What is timed, per fsync setting (``spool.fsync_ms`` = 0, 200, 1000):

* ``append``: ``DiskSpool.append()`` of every framed 64 KiB read of the corpus
  (the shape the receiver produces), then ``flush()`` so the data is on stable
  storage. The spool runs on a real event loop, so its group commit
  (fdatasync in a worker thread every ``fsync_ms``) is part of the figure.
* ``reference``: the same chunk bytes written with ``os.write`` to one file,
  with ``os.fdatasync`` after every write (fsync_ms = 0) or every ``fsync_ms``
  of elapsed time, then a final fdatasync: the least any durable spool must do.
* ``replay``: a new ``DiskSpool`` on the full spool: ``open()`` (recovery scan)
  plus ``get()`` of every chunk, as after a restart with a backlog.
* ``replay-reference``: reading the same bytes back with one ``read()``.

Rates are corpus lines (and bytes) per second of the median run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from agent.input.framing import LineFramer
from agent.spool import DiskSpool
from bench.corpus import build_corpus, tcp_reads

FSYNC_SETTINGS = (0, 200, 1000)
MAX_BYTES = 4 << 30


def framed_chunks(n_lines: int) -> list[bytes]:
    framer = LineFramer(1 << 20)
    chunks = [framer.feed(data) for data in tcp_reads(build_corpus(n_lines))]
    chunks.append(framer.finish())
    return [c for c in chunks if c]


async def spool_append(directory: Path, chunks: list[bytes], fsync_ms: int) -> float:
    spool = DiskSpool(directory, max_bytes=MAX_BYTES, fsync_ms=fsync_ms)
    spool.open()
    started = time.perf_counter()
    for i, chunk in enumerate(chunks):
        spool.append(1795591573, "127.0.0.1", chunk)
        if i % 16 == 0:
            await asyncio.sleep(0)  # let the group commit run, as the receiver's event loop would
    await spool.flush()
    elapsed = time.perf_counter() - started
    await spool.close()
    return elapsed


def reference_append(path: Path, chunks: list[bytes], fsync_ms: int) -> float:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    started = time.perf_counter()
    last_sync = started
    for chunk in chunks:
        os.write(fd, chunk)
        now = time.perf_counter()
        if fsync_ms == 0 or (now - last_sync) * 1000 >= fsync_ms:
            os.fdatasync(fd)
            last_sync = now
    os.fdatasync(fd)
    elapsed = time.perf_counter() - started
    os.close(fd)
    return elapsed


async def spool_replay(directory: Path, expected_chunks: int) -> float:
    started = time.perf_counter()
    spool = DiskSpool(directory, max_bytes=MAX_BYTES, fsync_ms=200)
    spool.open()
    for _ in range(expected_chunks):
        await spool.get()
    elapsed = time.perf_counter() - started
    await spool.close()
    return elapsed


def reference_replay(path: Path) -> float:
    started = time.perf_counter()
    with open(path, "rb") as f:
        f.read()
    return time.perf_counter() - started


def measure(base: Path, chunks: list[bytes], repeat: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    for _ in range(repeat):
        for fsync_ms in FSYNC_SETTINGS:
            spool_dir = base / f"spool-{fsync_ms}"
            shutil.rmtree(spool_dir, ignore_errors=True)
            times.setdefault(f"append fsync_ms={fsync_ms}", []).append(
                asyncio.run(spool_append(spool_dir, chunks, fsync_ms))
            )
            ref = base / f"ref-{fsync_ms}.bin"
            times.setdefault(f"reference fsync_ms={fsync_ms}", []).append(reference_append(ref, chunks, fsync_ms))
        times.setdefault("replay", []).append(asyncio.run(spool_replay(base / "spool-200", len(chunks))))
        times.setdefault("replay-reference", []).append(reference_replay(base / "ref-200.bin"))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=400_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary directory)")
    parser.add_argument("--pin", action="store_true", help="run on CPU 0 only")
    args = parser.parse_args(argv)
    if args.pin:
        os.sched_setaffinity(0, {0})
    chunks = framed_chunks(args.lines)
    nbytes = sum(len(c) for c in chunks)
    base = Path(tempfile.mkdtemp(prefix="slsfwd-bench-spool-", dir=args.dir))
    try:
        times = measure(base, chunks, args.repeat)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{args.lines} lines, {nbytes / 1e6:.1f} MB in {len(chunks)} chunks; median of {args.repeat}; dir {base.parent}")
    print(f"{'stage':<28} {'lines/s':>12} {'MB/s':>8}")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, seconds in medians.items():
        print(f"{name:<28} {args.lines / seconds:>12,.0f} {nbytes / seconds / 1e6:>8.1f}")
    for fsync_ms in FSYNC_SETTINGS:
        ratio = medians[f"reference fsync_ms={fsync_ms}"] / medians[f"append fsync_ms={fsync_ms}"]
        print(f"spool / reference, fsync_ms={fsync_ms}: {ratio:.2f}x of the reference's rate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
