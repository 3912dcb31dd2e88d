"""What the multiline processor costs a line, in process, on the realistic corpus plus 5 % stack-trace lines.

    python -m bench.bench_multiline [--lines 200000] [--repeat 7] [--share 0.05] [--pin]

The parse+encode stage of ``bench_processors`` (framed 64 KiB reads through ``LineTransformer`` into
closed batches), with the agent's ``Joiner`` wired as ``agent/app.py`` wires it, no processors
against the configurations below, interleaved round by round; the cost of a configuration is its
median time a line minus the median with none on the same corpus, in the same run. The corpus is
``bench/corpus.py``'s with real Java stack traces of one app (``with_stack_traces``: 33 lines each,
after that app's ERROR line) making ``--share`` of the lines; ``plain`` rows use the corpus without
them. Open groups are shipped at the end of each run (``flush_all``), inside the timing.

Before timing, each configuration's output is counted: with the ``java`` preset every trace must
come out as one log (lines in − 32 a trace); the exit status is 1 if not.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from agent.input.framing import LineFramer
from bench.bench_hotpath import MAX_LINE_BYTES, tcp_reads
from bench.bench_processors import processors_toml, run
from bench.corpus import build_corpus, java_trace_lines, with_stack_traces

JAVA_SCOPED = 'type = "multiline"\npreset = "java"\napps = ["todo-java"]'
JAVA_EVERY_APP = 'type = "multiline"\npreset = "java"'
# (row, corpus, processor bodies): "traces" is the corpus with stack traces, "plain" the one without.
CONFIGS = (
    ("none", "traces", ()),
    ("java, apps = [todo-java]", "traces", (JAVA_SCOPED,)),
    ("java, every app", "traces", (JAVA_EVERY_APP,)),
    ("python, every app", "traces", ('type = "multiline"\npreset = "python"',)),
    ("none", "plain", ()),
    ("java, every app", "plain", (JAVA_EVERY_APP,)),
)


def chunks_of(blob: bytes) -> list[bytes]:
    framer = LineFramer(MAX_LINE_BYTES)
    chunks = [c for c in (framer.feed(data) for data in tcp_reads(blob)) if c]
    tail = framer.finish()
    return chunks + ([tail] if tail else [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=200_000, help="lines of the realistic corpus, before the traces")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--share", type=float, default=0.05, help="share of stack-trace lines (default 0.05)")
    parser.add_argument("--pin", action="store_true", help="run on core 0 only")
    args = parser.parse_args()
    if args.pin:
        os.sched_setaffinity(0, {0})
    now = int(time.time())
    plain = build_corpus(args.lines, now=now)
    traced = with_stack_traces(plain, share=args.share)
    corpora = {"plain": plain, "traces": traced}
    chunks = {name: chunks_of(blob) for name, blob in corpora.items()}
    lines = {name: blob.count(b"\n") for name, blob in corpora.items()}
    trace_len = len(java_trace_lines())
    n_traces = (lines["traces"] - lines["plain"]) // (trace_len + 1)

    status = 0
    logs_out = {}
    for name, corpus, bodies in CONFIGS:
        _, logs_out[name, corpus] = run(chunks[corpus], now, processors_toml(*bodies))
    want = lines["traces"] - n_traces * (trace_len - 1)
    for name in ("java, apps = [todo-java]", "java, every app"):
        if logs_out[name, "traces"] != want:
            print(f"CHECK FAILED: {name}: {logs_out[name, 'traces']:,} logs out, {want:,} expected "
                  f"(every trace one log)")
            status = 1

    times: dict[tuple[str, str], list[float]] = {(name, corpus): [] for name, corpus, _ in CONFIGS}
    for _ in range(args.repeat):
        for name, corpus, bodies in CONFIGS:
            times[name, corpus].append(run(chunks[corpus], now, processors_toml(*bodies))[0])

    trace_share = n_traces * trace_len / lines["traces"]
    print(f"corpus: {lines['plain']:,} realistic lines; with traces {lines['traces']:,} lines, "
          f"{n_traces:,} Java traces of {trace_len} lines ({trace_share:.1%} trace lines); medians of {args.repeat} "
          f"rounds; {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"{'configuration':<28} {'corpus':<7} {'µs/line':>8} {'cost µs/line':>13} {'lines/s':>11} {'logs out':>10}")
    for name, corpus, _ in CONFIGS:
        per_line = statistics.median(times[name, corpus]) / lines[corpus]
        base = statistics.median(times["none", corpus]) / lines[corpus]
        print(f"{name:<28} {corpus:<7} {per_line * 1e6:>8.3f} {(per_line - base) * 1e6:>13.3f} "
              f"{1 / per_line:>11,.0f} {logs_out[name, corpus]:>10,}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
