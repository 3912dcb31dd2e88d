"""What each processor kind costs a line, on the realistic corpus.

    python -m bench.bench_processors [--lines 200000] [--repeat 7] [--pin]

The parse+encode stage of ``bench_hotpath`` (framed chunks of the corpus from
``bench/corpus.py`` through ``LineTransformer`` into closed batches) runs with
no processors and with each configuration below, interleaved round by round.
The cost of a configuration is its median time a line minus the median with
none, in the same run. The corpus's messages are access-log lines; a tenth of
them are given a ``password=`` pair, so that masks have something to find.

Then the end-to-end bar's configurations (``bench/processors-drop-mask.toml``)
on the corpus as ``bench_e2e`` sends it (no secrets, as in most logs) and in
the chunks the running agent gets under that load (256 KB), where a chunk
that clears every mask skips them: what those processors cost the agent.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import time

from agent.config import loads
from agent.input.framing import LineFramer
from agent.pipeline.batch import Batcher, Ticket
from agent.pipeline.join import Joiner
from agent.pipeline.parse import build_format_table
from agent.pipeline.processors import build_chain_set
from agent.pipeline.transform import LineTransformer, Router
from bench.bench_hotpath import (
    DEST,
    HOST_IP,
    MAX_BYTES,
    MAX_LINE_BYTES,
    MAX_LOGS,
    PEER,
    tcp_reads,
)
from bench.corpus import build_corpus

CONFIGS = {
    "none": "",
    "drop app-name (prefix)": 'type = "drop"\nkey = "app-name"\nequals = "CRON"',
    "keep pri-text (prefix)": 'type = "keep"\nkey = "pri-text"\nmatches = "\\\\.(info|notice|warning|err)$"',
    "add_fields (prefix)": 'type = "add_fields"\nfields = { env = "prod", service = "todo-list" }',
    "drop msg regex": 'type = "drop"\nkey = "msg"\nmatches = "GET /healthz"',
    "mask preset password": 'type = "mask"\npresets = ["password"]',
    "mask all presets": 'type = "mask"\npresets = ["password", "bearer_token", "aliyun_access_key", "email", "card_number"]',
    "parse_regex msg": 'type = "parse_regex"\npattern = "^(?P<client>\\\\S+) - - \\\\[[^]]+\\\\] \\"(?P<method>[A-Z]+) (?P<path>\\\\S+)"',
    "parse_kv msg": 'type = "parse_kv"',
    "parse_json msg": 'type = "parse_json"',
}
DROP_PLUS_MASK = ('type = "drop"\nkey = "app-name"\nequals = "CRON"', 'type = "mask"\npresets = ["password"]')
E2E_CHUNK_BYTES = 256_000  # what the agent's reads hold under bench_e2e's load (about 1,800 lines)


def processors_toml(*bodies: str) -> str:
    return "".join(f'[[processors]]\nname = "p{i}"\n{body}\n' for i, body in enumerate(bodies) if body)


def chunks_of(n_lines: int) -> tuple[list[bytes], int]:
    now = int(time.time())
    corpus = build_corpus(n_lines, now=now)
    lines = corpus.split(b"\n")
    for i in range(0, len(lines), 10):  # something for masks to find
        if lines[i]:
            lines[i] += b" password=hunter2"
    framer = LineFramer(MAX_LINE_BYTES)
    chunks = [c for c in (framer.feed(data) for data in tcp_reads(b"\n".join(lines))) if c]
    tail = framer.finish()
    return chunks + ([tail] if tail else []), now


def e2e_chunks_of(n_lines: int) -> tuple[list[bytes], int]:
    now = int(time.time())
    corpus, chunks, start = build_corpus(n_lines, now=now), [], 0
    while start < len(corpus):
        end = corpus.rfind(b"\n", start, start + E2E_CHUNK_BYTES) + 1 or len(corpus)
        chunks.append(corpus[start:end])
        start = end
    return chunks, now


def run(chunks: list[bytes], received_at: int, toml: str) -> tuple[float, int]:
    """(seconds, logs out) of one pass of the transform over ``chunks``, with the processors of
    ``toml`` and the multiline joiner wired as agent/app.py wires them."""
    config = loads(toml, env={})
    out = [0]
    batcher = Batcher(max_logs=MAX_LOGS, max_bytes=MAX_BYTES, linger=2.0, clock=time.monotonic,
                      on_close=lambda batch: out.__setitem__(0, out[0] + len(batch.logs)))
    joiner = Joiner(batcher, time.monotonic)
    transformer = LineTransformer(
        formats=build_format_table({}), router=Router(DEST, {}), host_ip=HOST_IP, batcher=batcher,
        clock=time.time, processors=build_chain_set(config.processors), joiner=joiner,
    )
    gc.collect()
    started = time.perf_counter()
    for seq, chunk in enumerate(chunks):
        ticket = Ticket(seq, lambda s: None)
        transformer.process(chunk, received_at, PEER, ticket)
        ticket.seal()
    joiner.flush_all()
    batcher.close_all()
    return time.perf_counter() - started, out[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--pin", action="store_true", help="run on core 0 only")
    args = parser.parse_args()
    if args.pin:
        os.sched_setaffinity(0, {0})
    configs = {name: processors_toml(body) for name, body in CONFIGS.items()}
    configs["drop app-name + mask password"] = processors_toml(*DROP_PLUS_MASK)
    print(f"{args.lines:,} lines, medians of {args.repeat} rounds; {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}")
    report(*chunks_of(args.lines), configs, args.lines, args.repeat)
    print(f"\nthe e2e corpus (no secrets) in chunks of up to {E2E_CHUNK_BYTES:,} bytes:")
    e2e_configs = {"none": "", "drop app-name + mask password": processors_toml(*DROP_PLUS_MASK)}
    report(*e2e_chunks_of(args.lines), e2e_configs, args.lines, args.repeat)


def report(chunks: list[bytes], now: int, configs: dict[str, str], lines: int, repeat: int) -> None:
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(repeat):
        for name, toml in configs.items():
            times[name].append(run(chunks, now, toml)[0])
    base = statistics.median(times["none"]) / lines
    print(f"{'configuration':<32} {'µs/line':>8} {'cost µs/line':>13} {'lines/s':>11}")
    for name, values in times.items():
        per_line = statistics.median(values) / lines
        print(f"{name:<32} {per_line * 1e6:>8.3f} {(per_line - base) * 1e6:>13.3f} {1 / per_line:>11,.0f}")


if __name__ == "__main__":
    main()
