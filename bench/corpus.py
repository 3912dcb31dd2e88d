"""A deterministic corpus of rsyslog ``0.1`` lines for the hot-path benchmark.

The corpus is mostly access-log-like lines of about 140 bytes (nginx access
lines, an application's request log, a little sshd and cron) from a handful
of hosts, apps and pids, mixed with the 50 real lines that Debian's rsyslog
8.2302 sent (``tests/data/rsyslog-8.2302-captured.bin``: UTF-8, escaped
control characters, an invalid byte, 8 KiB cut messages, misparsed pieces).

Timestamps are "now": the transformer replaces (slow path) any time outside
SLS's window, so the corpus ends at ``now`` and goes back one second every
``lines_per_second`` lines, the way rsyslog's ``%timegenerated%`` advances.
The real sample lines get the same rewritten timestamps.

Everything but ``now`` comes from a seeded :class:`random.Random`; pass
``now`` to get the very same bytes twice.

``line_bytes`` widens the generated lines to about that length (a referer, a
user agent and a trace id, as a verbose access log has), for the mid-rate
benchmark's ~500 B lines; the default corpus is unchanged by it.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

SAMPLE_PATH = Path(__file__).resolve().parent.parent / "tests" / "data" / "rsyslog-8.2302-captured.bin"
READ_SIZE = 64 * 1024  # what one recv() of the receiver hands the framer at most

# (hostname, fromhost-ip): the local host (rsyslog forwards its own logs, ip
# 127.0.0.1) and a few relayed peers, so lines go to several LogGroups.
HOSTS = (
    ("web-01", "127.0.0.1"),
    ("web-01", "127.0.0.1"),
    ("web-01", "127.0.0.1"),
    ("web-02", "10.0.1.12"),
    ("api-01", "10.0.1.21"),
)
NGINX_PIDS = ("1234", "1235", "1236")
CLIENTS = ("203.0.113.42", "198.51.100.7", "192.0.2.19", "203.0.113.101", "10.0.3.77")
METHODS = ("GET", "GET", "GET", "POST", "PUT", "DELETE")
PATHS = ("/api/v1/orders/", "/api/v1/items/", "/static/js/app.", "/cart/", "/api/v2/users/")
STATUSES = ("200", "200", "200", "200", "201", "204", "301", "404", "499", "502")
LEVELS = ("INFO", "INFO", "INFO", "WARN", "ERROR", "DEBUG")
ACTIONS = ("checkout", "add_item", "login", "search", "view_cart")
AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "curl/8.4.0",
    "Go-http-client/1.1",
)


def build_corpus(n_lines: int, *, seed: int = 1, now: int | None = None,
                 sample_every: int = 100, lines_per_second: int = 5000, line_bytes: int = 0) -> bytes:
    """``n_lines`` LF-terminated lines; every ``sample_every``-th is the next real sample line.
    With ``line_bytes``, generated lines are widened to about that many bytes."""
    rng = random.Random(seed)
    wide_rng = random.Random(seed + 1)  # its own stream: widening leaves the default corpus as it was
    now = int(time.time()) if now is None else now
    start = now - (n_lines - 1) // lines_per_second
    samples = sample_lines()
    out = []
    for i in range(n_lines):
        ts = str(start + i // lines_per_second).encode()
        if sample_every and i % sample_every == sample_every - 1:
            out.append(with_timestamp(samples[(i // sample_every) % len(samples)], ts))
        else:
            line = access_line(rng, ts)
            out.append(widen(line, wide_rng, line_bytes) if line_bytes else line)
    return b"".join(out)


def widen(line: bytes, rng: random.Random, line_bytes: int) -> bytes:
    """The line with a referer, a user agent and trace ids appended, to about ``line_bytes`` bytes."""
    parts = [line[:-1], f' ref="https://shop.example.com{rng.choice(PATHS)}{rng.randrange(1, 99999)}"'.encode(),
             f' ua="{rng.choice(AGENTS)}"'.encode()]
    size = sum(map(len, parts)) + 1
    while size < line_bytes:
        part = f" span={rng.getrandbits(64):016x}".encode()
        parts.append(part)
        size += len(part)
    return b"".join(parts)[: max(line_bytes - 1, len(line) - 1)] + b"\n"


def tcp_reads(blob: bytes, size: int = READ_SIZE) -> list[bytes]:
    """Cut a byte stream into reads of ``size`` bytes, as a busy socket would
    deliver it: boundaries fall anywhere, mostly inside a line."""
    return [blob[i : i + size] for i in range(0, len(blob), size)]


def sample_lines(path: Path = SAMPLE_PATH) -> list[bytes]:
    """The real lines, each with its LF."""
    return path.read_bytes().splitlines(keepends=True)


def with_timestamp(line: bytes, ts: bytes) -> bytes:
    """Replace the ``$unixtimestamp`` field (the third) of a ``0.1`` line."""
    version, tag, _, rest = line.split(b" ", 3)
    return b" ".join((version, tag, ts, rest))


def access_line(rng: random.Random, ts: bytes) -> bytes:
    hostname, ip = rng.choice(HOSTS)
    kind = rng.random()
    if kind < 0.6:
        head = f"local7.info 0 nginx {rng.choice(NGINX_PIDS)} -  "
        msg = nginx_message(rng)
    elif kind < 0.9:
        head = "user.info 0 shop-api 4242 -  "
        msg = app_message(rng)
    elif kind < 0.97:
        head = f"auth.info 0 sshd {rng.randrange(20000, 20010)} -  "
        msg = f"Accepted publickey for deploy from {rng.choice(CLIENTS)} port {rng.randrange(1024, 65536)} ssh2: ED25519 SHA256:{rng.getrandbits(64):016x}"
    else:
        head = f"cron.info 0 CRON {rng.randrange(30000, 30100)} -  "
        msg = f"(root) CMD (/usr/local/bin/rotate-and-upload --bucket logs-{rng.randrange(10)} >/dev/null 2>&1)"
    return f"0.1 sys_tag {ts.decode()} {ip} {hostname} {head}{msg}\n".encode()


def nginx_message(rng: random.Random) -> str:
    path = rng.choice(PATHS) + str(rng.randrange(1, 99999))
    return (
        f'{rng.choice(CLIENTS)} - - "{rng.choice(METHODS)} {path} HTTP/1.1" '
        f"{rng.choice(STATUSES)} {rng.randrange(0, 40000)} {rng.randrange(1, 900) / 1000:.3f}"
    )


def app_message(rng: random.Random) -> str:
    return (
        f"{rng.choice(LEVELS)} [req-{rng.getrandbits(32):08x}] {rng.choice(ACTIONS)} "
        f"user=u{rng.randrange(100000)} items={rng.randrange(1, 9)} took_ms={rng.randrange(1, 400)}"
    )


# ---------------------------------------------------------------- stack traces (the multiline benchmark)

JAVA_TRACE_PATH = SAMPLE_PATH.parent.parent / "system" / "data" / "java-trace.txt"
TRACE_APP_HEAD = "user.err 0 todo-java 4711 -  "  # one app, one pid: every trace is that source's


def java_trace_lines(path: Path = JAVA_TRACE_PATH) -> list[str]:
    """The real Java stack trace (OpenJDK 17: 33 lines, Caused by, ... N more, Suppressed), its tabs
    as rsyslog forwards them (``#011``)."""
    return [line.replace("\t", "#011") for line in path.read_text().splitlines()]


def with_stack_traces(corpus: bytes, *, share: float = 0.05, seed: int = 3, quiet_tail: float = 0.25) -> bytes:
    """``corpus`` with real Java stack traces inserted whole, in runs, so that about ``share`` of
    the result's lines are trace lines: each trace is one app's (todo-java on web-01, one pid),
    after that app's ERROR line, at a seeded random place, with the timestamp of the line before it.
    None in the last ``quiet_tail`` of the corpus: the agent ships the last trace's group only when
    ``flush_ms`` (plus ``read_coalesce_ms``) has passed after its last line, and a group still open
    when the corpus ends would add that wait to an end-to-end run's time."""
    trace = java_trace_lines()
    lines = corpus.splitlines(keepends=True)
    n_traces = round(share * len(lines) / ((1 - share) * len(trace)))
    rng = random.Random(seed)
    places = sorted(rng.sample(range(1, int(len(lines) * (1 - quiet_tail))), n_traces)) if n_traces else []
    out, last = [], 0
    for number, place in enumerate(places):
        out.extend(lines[last:place])
        ts = lines[place - 1].split(b" ", 3)[2].decode()
        head = f"0.1 sys_tag {ts} 127.0.0.1 web-01 {TRACE_APP_HEAD}"
        thread = f"http-nio-8080-exec-{number % 8 + 1}"
        out.append(f"{head}ERROR [{thread}] c.e.t.TodoController : request {number} failed\n".encode())
        out.extend(f"{head}{msg}\n".encode() for msg in trace)
        last = place
    out.extend(lines[last:])
    return b"".join(out)
