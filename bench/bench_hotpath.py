"""Hot-path micro-benchmark: rsyslog bytes -> compressed LogGroups, on one core.

Run from the repo root::

    python -m bench.bench_hotpath [--lines 200000] [--repeat 5] [--pin] [--json PATH]

The input is :mod:`bench.corpus` (about 140-byte lines plus the real rsyslog
samples, timestamps of now) cut into 64 KiB TCP-like reads. Measured stages,
each on inputs prepared beforehand, each timed with ``time.perf_counter``:

``frame``          ``LineFramer.feed`` over the reads (and ``finish``).
``parse+encode``   ``LineTransformer.process`` over the framed chunks, one
                   ``Ticket`` per chunk; closed batches are dropped.
``lz4``            ``encode.compress`` of every raw LogGroup of the corpus.
``full``           the agent's path: reads -> framer -> transformer -> batcher
                   -> ``encode.log_group`` -> compress.
``sdk-reference``  the same reads -> the same framer -> ``parse.parse_line``
                   per line -> ``aliyun.log.proto.LogGroup`` built with the
                   SDK's protobuf classes -> ``SerializeToString`` -> LZ4.

Rates are corpus lines (and corpus bytes) per second of the median run, so
the per-line costs of frame, parse+encode and lz4 add up to about ``full``.
The ratio is ``full`` / ``sdk-reference``.

With ``--against REV`` it runs instead, ``--rounds`` times, this tree's benchmark and REV's (a
``git worktree`` under ``bench/.work/hotpath/``, each with its own harness and agent) alternately as
``--pin --repeat N`` subprocesses, and prints their median ``full`` rates and the per-round ratios: a
paired comparison, as both see about the same moments of a noisy host.

Before timing, one run of each path is decoded with the SDK's ``LogGroupRaw``
and compared log by log (time, keys, values, topic, source, tags), so that a
broken encoder cannot look fast: the benchmark exits 1 if they differ.

The garbage collector stays enabled in timed sections, as in the agent;
``gc.collect()`` runs before each one so no stage pays for another's garbage.
``--no-gc`` disables it while timing instead.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import lz4.block
from aliyun.log.proto import LogGroup, LogGroupRaw
from google.protobuf.internal import api_implementation

from agent.input.framing import LineFramer
from agent.pipeline import encode
from agent.pipeline.batch import Batch, Batcher, Destination, Ticket
from agent.pipeline.parse import (
    MSG_KEY,
    ORIGINAL_TIME_KEY,
    PARSE_ERROR_KEY,
    ParseFailure,
    build_format_table,
    fix_time,
    make_valid_utf8,
    parse_line,
    peer_source,
    resolve_source,
)
from agent.pipeline.transform import LineTransformer, Router

from .corpus import READ_SIZE, build_corpus, tcp_reads

MAX_LINE_BYTES = 1048576  # config.input.max_line_bytes default
MAX_LOGS = 4096
MAX_BYTES = 524288
LINGER_S = 2.0
DEST = Destination("bench-project", "bench-logstore", "bench-topic")
HOSTNAME = "bench-host"
TAGS = [("__hostname__", HOSTNAME)]
HOST_IP = "10.0.0.1"
PEER = "127.0.0.1"  # rsyslog on the same host
TARGET_LINES_PER_S = 700_000  # issue 6, on a machine where the plain encoder does about 480k
TARGET_RATIO = 3.0
AGAINST_WORK = Path(__file__).resolve().parent / ".work" / "hotpath"


@dataclass
class Workload:
    """Everything a timed section needs, built before any timing."""

    reads: list[bytes]
    lines: int
    nbytes: int
    received_at: int
    chunks: list[bytes] = field(default_factory=list)  # framer output, for parse+encode
    raw_groups: list[bytes] = field(default_factory=list)  # uncompressed LogGroups, for lz4


# -- our path ------------------------------------------------------------


def make_transformer(on_close: Callable[[Batch], None]) -> LineTransformer:
    batcher = Batcher(max_logs=MAX_LOGS, max_bytes=MAX_BYTES, linger=LINGER_S, on_close=on_close, clock=time.monotonic)
    return LineTransformer(
        formats=build_format_table({}),
        router=Router(DEST, {}),
        host_ip=HOST_IP,
        batcher=batcher,
        clock=time.time,
    )


def raw_group(batch: Batch) -> bytes:
    return encode.log_group(batch.logs, batch.dest.topic, batch.source, TAGS)


def _ignore_ack(seq: int) -> None:
    pass


def frame_all(reads: list[bytes]) -> list[bytes]:
    framer = LineFramer(MAX_LINE_BYTES)
    chunks = [framer.feed(data) for data in reads]
    chunks.append(framer.finish())
    return [c for c in chunks if c]


def run_frame(w: Workload) -> None:
    framer = LineFramer(MAX_LINE_BYTES)
    feed = framer.feed
    for data in w.reads:
        feed(data)
    framer.finish()


def _drop(batch: Batch) -> None:
    pass


def run_parse_encode(w: Workload, on_close: Callable[[Batch], None] = _drop) -> None:
    """Closed batches go to ``on_close``; timed runs drop them, as a shipper
    would once they are sent, so memory does not grow with ``--lines``."""
    transformer = make_transformer(on_close)
    process = transformer.process
    for seq, chunk in enumerate(w.chunks):
        ticket = Ticket(seq, _ignore_ack)
        process(chunk, w.received_at, PEER, ticket)
        ticket.seal()
    transformer.batcher.close_all()


def run_lz4(w: Workload) -> None:
    compress = encode.compress
    for raw in w.raw_groups:
        compress(raw)


def run_full(w: Workload) -> list[tuple[bytes, int]]:
    """Returns (compressed LogGroup, raw size) pairs, as PutLogs would send them."""
    out: list[tuple[bytes, int]] = []
    compress = encode.compress

    def ship(batch: Batch) -> None:
        raw = raw_group(batch)
        out.append((compress(raw), len(raw)))

    framer = LineFramer(MAX_LINE_BYTES)
    transformer = make_transformer(ship)
    process = transformer.process
    received_at = w.received_at
    for seq, data in enumerate(w.reads):
        chunk = framer.feed(data)
        if chunk:
            ticket = Ticket(seq, _ignore_ack)
            process(chunk, received_at, PEER, ticket)
            ticket.seal()
    tail = framer.finish()
    if tail:
        ticket = Ticket(len(w.reads), _ignore_ack)
        process(tail, received_at, PEER, ticket)
        ticket.seal()
    transformer.batcher.close_all()
    return out


# -- a plain per-line encoder (the issue's "bytes formatting" baseline) ---


def run_plain(w: Workload) -> list[tuple[bytes, int]]:
    """A plain per-line encoder: split each ``0.1`` line and format its protobuf bytes
    (``encode.content`` per field, varints computed per line), with no caches and no
    chunk-level work; grouped like the Batcher. Lines it does not handle (1 % of the
    corpus: other formats, parse errors, invalid UTF-8, times out of window) take the
    agent's readable path, as in the agent."""
    out: list[tuple[bytes, int]] = []
    transformer = make_transformer(_drop)
    router = transformer.router
    peer_src = peer_source(PEER, HOST_IP)
    received_at = w.received_at
    fmt = build_format_table({})[b"0.1"]
    prefixes = [encode.key_prefix(k) for k in (*fmt.fields, MSG_KEY)]
    strip_index, strip_value = fmt.strip_space_when
    groups: dict[tuple[Destination, str], list] = {}  # key -> [logs, bytes]

    def close(key: tuple[Destination, str]) -> None:
        logs = groups.pop(key)[0]
        raw = encode.log_group(logs, key[0].topic, key[1], TAGS)
        out.append((encode.compress(raw), len(raw)))

    def plain_log(line: bytes, now: int) -> tuple[Destination, str, bytes] | None:
        parts = line.split(b" ", 10)
        if len(parts) != 11 or parts[0] != b"0.1" or not parts[2].isdigit() or not line.isascii():
            return None
        unix_time, replaced = fix_time(int(parts[2]), received_at, now)
        if replaced:
            return None
        values = parts[4:]
        if values[strip_index] == strip_value and values[6][:1] == b" ":
            values[6] = values[6][1:]
        body = encode.time_field(unix_time) + b"".join([encode.content(p, v) for p, v in zip(prefixes, values)])
        return router.destination(parts[1]), resolve_source(parts[3], peer_src), encode.log_entry(body)

    framer = LineFramer(MAX_LINE_BYTES)
    for data in [*w.reads, None]:
        chunk = framer.feed(data) if data is not None else framer.finish()
        now = int(time.time())
        for line in chunk.split(b"\n")[:-1]:
            encoded = plain_log(line, now)
            if encoded is None:
                encoded = transformer.encode_line(make_valid_utf8(line)[0], received_at, now, peer_src)
            dest, source, log = encoded
            key = (dest, source)
            entry = groups.get(key)
            if entry is not None and (len(entry[0]) >= MAX_LOGS or entry[1] + len(log) > MAX_BYTES):
                close(key)
                entry = None
            if entry is None:
                entry = groups[key] = [[], 0]
            entry[0].append(log)
            entry[1] += len(log)
    for key in list(groups):
        close(key)
    return out


# -- the reference: the SDK's protobuf classes ----------------------------


class SdkGroups:
    """One open ``LogGroup`` per (destination, source), closed like the Batcher:
    at ``MAX_LOGS`` logs or about ``MAX_BYTES`` (estimated from line lengths)."""

    def __init__(self) -> None:
        self.open: dict[tuple[Destination, str], list] = {}  # key -> [group, logs, bytes]
        self.out: list[tuple[bytes, int]] = []

    def log_for(self, dest: Destination, source: str, nbytes: int):
        """A new Log in the open group of (dest, source); a full group is closed first."""
        key = (dest, source)
        entry = self.open.get(key)
        if entry is not None and (entry[1] >= MAX_LOGS or entry[2] + nbytes > MAX_BYTES):
            self.close(dest, source)
            entry = None
        if entry is None:
            entry = self.open[key] = [LogGroup(), 0, 0]
        entry[1] += 1
        entry[2] += nbytes
        return entry[0].Logs.add()

    def close(self, dest: Destination, source: str) -> None:
        group = self.open.pop((dest, source))[0]
        group.Topic = dest.topic
        group.Source = source
        tag = group.LogTags.add()
        tag.Key, tag.Value = TAGS[0]
        raw = group.SerializeToString()
        self.out.append((lz4.block.compress(raw, store_size=False), len(raw)))

    def close_all(self) -> None:
        for dest, source in list(self.open):
            self.close(dest, source)


def _text(value: bytes) -> str:
    # The agent's UTF-8 repair: invalid bytes become \xNN escapes.
    return value.decode("utf-8", "backslashreplace")


def sdk_line(groups: SdkGroups, router: Router, formats, line: bytes, received_at: int, now: int, peer_src: str) -> None:
    """One line, the readable way: parse_line, then the SDK's message classes."""
    parsed = parse_line(line, formats)
    if isinstance(parsed, ParseFailure):
        log = groups.log_for(router.default, peer_src, len(line))
        log.Time = fix_time(received_at, received_at, now)[0]
        contents = [(MSG_KEY, line), (PARSE_ERROR_KEY, parsed.reason.encode())]
    else:
        unix_time, replaced = fix_time(parsed.time, received_at, now)
        contents = parsed.contents()
        if replaced:
            contents.append((ORIGINAL_TIME_KEY, str(parsed.time).encode()))
        log = groups.log_for(router.destination(parsed.tag), resolve_source(parsed.ip, peer_src), len(line))
        log.Time = unix_time
    for key, value in contents:
        content = log.Contents.add()
        content.Key = key
        content.Value = _text(value)


def run_sdk_reference(w: Workload) -> list[tuple[bytes, int]]:
    groups = SdkGroups()
    router = Router(DEST, {})
    formats = build_format_table({})
    peer_src = peer_source(PEER, HOST_IP)
    received_at = w.received_at
    framer = LineFramer(MAX_LINE_BYTES)
    for data in w.reads:
        now = int(time.time())
        for line in framer.feed(data).split(b"\n")[:-1]:
            sdk_line(groups, router, formats, line, received_at, now, peer_src)
    for line in framer.finish().split(b"\n")[:-1]:
        sdk_line(groups, router, formats, line, received_at, int(time.time()), peer_src)
    groups.close_all()
    return groups.out


# -- correctness ----------------------------------------------------------


def decode_groups(groups: list[tuple[bytes, int]]) -> dict[tuple, list]:
    """LZ4 LogGroups -> {(topic, source, tags): [(time, ((key, value), ...)), ...]}."""
    streams: dict[tuple, list] = {}
    for body, raw_size in groups:
        group = LogGroupRaw()
        group.ParseFromString(lz4.block.decompress(body, uncompressed_size=raw_size))
        key = (group.Topic, group.Source, tuple((t.Key, t.Value) for t in group.LogTags))
        logs = streams.setdefault(key, [])
        logs.extend((log.Time, tuple((c.Key, c.Value) for c in log.Contents)) for log in group.Logs)
    return streams


def verify(w: Workload) -> str:
    """Decode both paths' LogGroups; '' if they carry the same logs, else why not."""
    ours = decode_groups(run_full(w))
    reference = decode_groups(run_sdk_reference(w))
    if decode_groups(run_plain(w)) != reference:
        return "the plain per-line encoder's LogGroups differ from the SDK reference's"
    count = sum(len(logs) for logs in ours.values())
    if count != w.lines:
        return f"our LogGroups hold {count} logs for {w.lines} lines"
    if ours.keys() != reference.keys():
        return f"LogGroup keys differ: ours {sorted(ours)} vs reference {sorted(reference)}"
    for key, logs in ours.items():
        expected = reference[key]
        if logs != expected:
            where = next((i for i, (a, b) in enumerate(zip(logs, expected)) if a != b), min(len(logs), len(expected)))
            return f"logs of {key} differ: {len(logs)} vs {len(expected)} logs, first difference at log {where}"
    return ""


# -- timing and reporting -------------------------------------------------

STAGES: dict[str, Callable[[Workload], object]] = {
    "frame": run_frame,
    "parse+encode": run_parse_encode,
    "lz4": run_lz4,
    "full": run_full,
    "plain-encoder": run_plain,
    "sdk-reference": run_sdk_reference,
}


def prepare(n_lines: int) -> Workload:
    now = int(time.time())
    corpus = build_corpus(n_lines, now=now)
    w = Workload(reads=tcp_reads(corpus), lines=n_lines, nbytes=len(corpus), received_at=now)
    w.chunks = frame_all(w.reads)
    closed: list[Batch] = []
    run_parse_encode(w, closed.append)
    w.raw_groups = [raw_group(batch) for batch in closed]
    return w


def timed(run: Callable[[Workload], object], w: Workload, no_gc: bool) -> float:
    gc.collect()
    if no_gc:
        gc.disable()
    try:
        start = time.perf_counter()
        run(w)
        return time.perf_counter() - start
    finally:
        gc.enable()


def measure(w: Workload, repeat: int, no_gc: bool) -> dict[str, list[float]]:
    """Stages interleaved within each round, so a slow moment of the machine
    does not land on one stage only."""
    times: dict[str, list[float]] = {name: [] for name in STAGES}
    for _ in range(repeat):
        for name, run in STAGES.items():
            times[name].append(timed(run, w, no_gc))
    return times


def summarize(w: Workload, times: dict[str, list[float]]) -> dict:
    stages = {}
    for name, samples in times.items():
        median = statistics.median(samples)
        stages[name] = {
            "median_s": median,
            "runs_s": samples,
            "lines_per_s": w.lines / median,
            "mb_per_s": w.nbytes / median / 1e6,
            "us_per_line": median / w.lines * 1e6,
            "spread_pct": (max(samples) - min(samples)) / median * 100,
        }
    ratio = stages["full"]["lines_per_s"] / stages["sdk-reference"]["lines_per_s"]
    return {"stages": stages, "ratio_full_over_sdk": ratio}


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "cpu": model or platform.processor(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "protobuf": api_implementation.Type(),
        "lz4": lz4.version.version,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def print_table(w: Workload, summary: dict, info: dict, args) -> None:
    print(f"{w.lines} lines, {w.nbytes / 1e6:.1f} MB ({w.nbytes / w.lines:.0f} B/line), "
          f"{len(w.reads)} reads of {READ_SIZE // 1024} KiB, {len(w.raw_groups)} LogGroups; "
          f"median of {args.repeat}; gc {'off' if args.no_gc else 'on'}; pinned {bool(args.pin)}")
    print(f"{info['cpu']}, {info['cpus']} CPUs, Python {info['python']}, protobuf {info['protobuf']}, {info['date']}")
    print(f"{'stage':<15}{'lines/s':>12}{'MB/s':>9}{'us/line':>9}{'spread':>8}")
    for name, s in summary["stages"].items():
        print(f"{name:<15}{s['lines_per_s']:>12,.0f}{s['mb_per_s']:>9.1f}{s['us_per_line']:>9.3f}{s['spread_pct']:>7.0f}%")
    full = summary["stages"]["full"]["lines_per_s"]
    ratio = summary["ratio_full_over_sdk"]
    plain = summary["stages"]["plain-encoder"]["lines_per_s"]
    print(f"full / plain-encoder = {full / plain:.2f}x (issue 6: 700k against the plain encoder's ~480k there, 1.46x)")
    print(f"full / sdk-reference = {ratio:.2f}x   "
          f"(targets: full >= {TARGET_LINES_PER_S:,} lines/s: {'met' if full >= TARGET_LINES_PER_S else 'NOT met'}; "
          f"ratio ~{TARGET_RATIO:.0f}x: {'met' if ratio >= TARGET_RATIO else 'NOT met'})")


def profile_full(w: Workload, top: int = 10) -> None:
    profiler = cProfile.Profile()
    profiler.runcall(run_full, w)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_hotpath", description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=200_000, help="corpus lines (default 200000)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per stage; medians are reported (default 5)")
    p.add_argument("--pin", action="store_true", help="pin this process to CPU 0 (os.sched_setaffinity)")
    p.add_argument("--no-gc", action="store_true", help="disable the garbage collector in timed sections")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--profile", action="store_true", help="after timing, cProfile the full path (top 10 by own time)")
    p.add_argument("--against", metavar="REV", help="paired rounds of this tree's and REV's benchmark (full stage)")
    p.add_argument("--rounds", type=int, default=5, help="with --against: rounds of each (default 5)")
    args = p.parse_args(argv)
    if args.lines < 1 or args.repeat < 1 or args.rounds < 1:
        p.error("--lines, --repeat and --rounds must be at least 1")
    return args


def full_rate_of(tree: Path, lines: int, repeat: int) -> float:
    """One ``--pin`` run of ``tree``'s own hot-path benchmark: its median ``full`` lines/s."""
    out = AGAINST_WORK / "round.json"
    subprocess.run([sys.executable, "-m", "bench.bench_hotpath", "--pin", "--repeat", str(repeat), "--lines", str(lines),
                    "--json", str(out)], cwd=tree, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["stages"]["full"]["lines_per_s"]


def compare_against(rev: str, rounds: int, lines: int, repeat: int) -> int:
    from bench.bench_everyday import (
        worktree,  # it loads the end-to-end harness: only --against needs it
    )

    AGAINST_WORK.mkdir(parents=True, exist_ok=True)
    trees = {rev: worktree(rev, AGAINST_WORK), "this tree": Path(__file__).resolve().parent.parent}
    rates: dict[str, list[float]] = {name: [] for name in trees}
    for r in range(rounds):
        for name, tree in trees.items():
            rates[name].append(full_rate_of(tree, lines, repeat))
            print(f"round {r + 1}: {name:>12}: full {rates[name][-1]:,.0f} lines/s", flush=True)
    for name, values in rates.items():
        print(f"{name:>12}: median {statistics.median(values):,.0f} lines/s")
    ratios = [new / old for old, new in zip(rates[rev], rates["this tree"])]
    print(f"this tree / {rev}: median {statistics.median(ratios):.2f}x (per round: {', '.join(f'{x:.2f}' for x in ratios)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.against:
        return compare_against(args.against, args.rounds, args.lines, args.repeat)
    if args.pin:
        os.sched_setaffinity(0, {0})
    w = prepare(args.lines)
    problem = verify(w)
    if problem:
        print(f"FAIL: our LogGroups do not match the SDK reference: {problem}", file=sys.stderr)
        return 1
    summary = summarize(w, measure(w, args.repeat, args.no_gc))
    info = machine()
    print_table(w, summary, info, args)
    if args.json:
        result = {"machine": info, "lines": w.lines, "bytes": w.nbytes, "repeat": args.repeat,
                  "gc": not args.no_gc, "pinned": bool(args.pin), "verified": True, **summary}
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)  # bench/results/ is git-ignored: absent in a fresh clone
        path.write_text(json.dumps(result, indent=2) + "\n")
    if args.profile:
        profile_full(w)
    return 0


if __name__ == "__main__":
    sys.exit(main())
