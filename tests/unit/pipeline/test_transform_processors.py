"""The transform with processors: the fast path must ship exactly what the readable path ships.

Each chain runs over the same realistic lines twice: once through
``LineTransformer.process`` (separable chains planned per prefix, the rest on
the readable path) and once line by line through ``encode_line``, the readable
reference. Both must encode the same bytes for the same lines, drop the same
lines, and count the same drops.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from aliyun.log.proto import LogGroupRaw

from agent.pipeline.batch import Batch, Batcher, Destination, Ticket
from agent.pipeline.parse import build_format_table, make_valid_utf8, peer_source
from agent.pipeline.processors import DROPPED, ProcessorConfig, build_chain_set
from agent.pipeline.processors.mask import Mask
from agent.pipeline.processors.options import (
    AddFieldsOptions,
    FilterOptions,
    MaskOptions,
    ParseJsonOptions,
    ParseKvOptions,
    RemoveOptions,
    RenameOptions,
)
from agent.pipeline.transform import LineTransformer, Router

NOW = 1795591600
HOST_IP = "10.0.0.1"
DEFAULT = Destination("p", "ls", "")
WEB = Destination("p", "web-store", "")


def line(app: str, msg: str, *, tag: str = "sys_tag", pid: str = "42", host: str = "web-01", pv: str = "0") -> bytes:
    space = " " if pv == "0" else ""
    return f"0.1 {tag} {NOW} 127.0.0.1 {host} user.info {pv} {app} {pid} - {space}{msg}".encode()


def corpus(n: int = 600, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    messages = [
        "GET /healthz 200 1ms",
        "user bob logged in with password=hunter2",
        '{"level": "info", "user": "alice", "latency_ms": 12}',
        '{"level": "debug", "password": "s3cr3t"}',
        "user=carol action=\"log out\" ok=1",
        "card 4111 1111 1111 1111 charged",
        "plain message",
        "bad \xff byte",
        '{"user": "bad \xff byte in JSON", "level": "info"}',
        "{not json",
    ]
    out = []
    for _ in range(n):
        app = rng.choice(["todo-list", "CRON", "nginx", "sshd"])
        tag = rng.choice(["sys_tag", "sys_tag", "web_tag"])
        msg = rng.choice(messages)
        raw = line(app, msg, tag=tag, pid=rng.choice(["42", "43"]), pv=rng.choice(["0", "0", "1"]))
        out.append(raw.replace("\xff".encode(), b"\xff"))
    out.append(b"garbage without fields password=oops")
    return out


def transformer(configs: list[ProcessorConfig]) -> tuple[LineTransformer, list[Batch]]:
    closed: list[Batch] = []
    batcher = Batcher(max_logs=4096, max_bytes=512 * 1024, linger=2.0, on_close=closed.append, clock=lambda: NOW)
    chains = build_chain_set(configs)
    t = LineTransformer(
        formats=build_format_table({}),
        router=Router(DEFAULT, {"web_tag": WEB}),
        host_ip=HOST_IP,
        batcher=batcher,
        clock=lambda: NOW,
        processors=chains,
    )
    return t, closed


def decode(logs: list[bytes]) -> list[dict[str, bytes]]:
    group = LogGroupRaw()
    group.ParseFromString(b"".join(logs))
    return [{c.Key: c.Value for c in entry.Contents} for entry in group.Logs]


CHAINS = {
    "drop-cron": [ProcessorConfig("no-cron", "drop", (), FilterOptions("app-name", equals="CRON"))],
    "drop-cron+mask": [
        ProcessorConfig("no-cron", "drop", (), FilterOptions("app-name", equals="CRON")),
        ProcessorConfig("secrets", "mask", (), MaskOptions(presets=("password", "card_number"))),
    ],
    "keep-web-warnings": [
        ProcessorConfig("warn", "keep", ("web_tag",), FilterOptions("pri-text", matches=r"\.(warning|err)$")),
    ],
    "health+fields": [
        ProcessorConfig("no-health", "drop", (), FilterOptions("msg", matches="healthz")),
        ProcessorConfig("env", "add_fields", (), AddFieldsOptions({"env": "prod", "app-name": "ignored"})),
        ProcessorConfig("app", "rename", ("web_tag",), RenameOptions({"app-name": "app"})),
        ProcessorConfig("quiet", "remove", (), RemoveOptions(("procid", "msgid"))),
    ],
    "json (readable path)": [
        ProcessorConfig("secrets", "mask", (), MaskOptions(presets=("password",))),
        ProcessorConfig("json", "parse_json", (), ParseJsonOptions(keep_original=False)),
        ProcessorConfig("no-debug", "drop", (), FilterOptions("level", equals="debug")),
    ],
    "kv on web (mixed paths)": [
        ProcessorConfig("kv", "parse_kv", ("web_tag",), ParseKvOptions(prefix="kv.")),
        ProcessorConfig("no-cron", "drop", (), FilterOptions("app-name", equals="CRON")),
    ],
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_fast_path_ships_what_the_readable_path_ships(name: str) -> None:
    lines = corpus()
    fast, closed = transformer(CHAINS[name])
    fast.process(b"\n".join(lines) + b"\n", NOW, "127.0.0.1", Ticket(0, lambda seq: None))
    fast.batcher.close_all()
    got: dict[tuple, list[bytes]] = {}
    for batch in closed:
        got.setdefault((batch.dest, batch.source), []).extend(batch.logs)

    ref, _ = transformer(CHAINS[name])
    expected: dict[tuple, list[bytes]] = {}
    for raw in lines:
        encoded = ref.encode_line(make_valid_utf8(raw)[0], NOW, NOW, peer_source("127.0.0.1", HOST_IP))
        if encoded is not None:
            dest, source, log = encoded
            expected.setdefault((dest, source), []).append(log)

    assert got == expected
    drops = lambda t: {k: v for k, v in t._chains.counts.items() if k[1] == DROPPED}  # noqa: E731
    assert drops(fast) == drops(ref)


def test_what_arrives_is_what_the_config_says() -> None:
    lines = corpus()
    fast, closed = transformer(CHAINS["drop-cron+mask"])
    ticket_done: list[int] = []
    fast.process(b"\n".join(lines) + b"\n", NOW, "127.0.0.1", Ticket(0, ticket_done.append))
    fast.batcher.close_all()
    logs = [log for batch in closed for log in decode(batch.logs)]
    assert not any(log.get("app-name") == b"CRON" for log in logs)
    assert not any(b"hunter2" in log["msg"] for log in logs)
    assert not any(b"4111 1111 1111 1111" in log["msg"] for log in logs)
    cron = sum(1 for raw in lines if b" CRON " in raw)
    counts = fast._chains.counts
    assert counts["no-cron", DROPPED] == cron
    assert len(logs) == len(lines) - cron
    assert counts["secrets", "masked"] == sum(1 for log in logs if b"***" in log["msg"])


def test_a_chunk_of_only_dropped_lines_is_acknowledged() -> None:
    fast, closed = transformer(CHAINS["drop-cron"])
    done: list[int] = []
    ticket = Ticket(7, done.append)
    fast.process(line("CRON", "a") + b"\n" + line("CRON", "b") + b"\n", NOW, "127.0.0.1", ticket)
    ticket.seal()
    assert done == [7] and closed == [] and fast.batcher.open_bytes == 0
    assert Counter(fast._chains.counts) == Counter({("no-cron", DROPPED): 2})


def test_no_processors_keeps_heads_without_a_stage() -> None:
    fast, _ = transformer([])
    assert fast._chains is None
    fast.process(line("todo-list", "x") + b"\n", NOW, "127.0.0.1", Ticket(0, lambda seq: None))
    (heads,) = fast._heads.values()
    assert all(head[3] is None for head in heads.values())


def test_a_chunk_without_the_words_skips_masks_and_the_next_line_is_still_masked() -> None:
    fast, closed = transformer(CHAINS["drop-cron+mask"])
    clean = b"".join(line("app", f"nothing to hide {i}") + b"\n" for i in range(20))
    fast.process(clean, NOW, "127.0.0.1", Ticket(0, lambda seq: None))
    # The readable path right after: what the clean chunk taught the masks must not linger.
    dest, source, log = fast.encode_line(line("app", "password=hunter2"), NOW, NOW, HOST_IP)
    assert decode([log])[0]["msg"] == b"password=***"
    fast.process(clean + line("app", "token: abc") + b"\n", NOW, "127.0.0.1", Ticket(1, lambda seq: None))
    fast.batcher.close_all()
    msgs = [log["msg"] for batch in closed for log in decode(batch.logs)]
    assert msgs.count(b"token: ***") == 1 and len(msgs) == 41


def test_a_big_chunk_without_the_words_never_calls_the_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = Mask.mask
    monkeypatch.setattr(Mask, "mask", lambda self, value: calls.append(value) or real(self, value))
    fast, closed = transformer([
        ProcessorConfig("no-cron", "drop", (), FilterOptions("app-name", equals="CRON")),
        ProcessorConfig("secrets", "mask", (), MaskOptions(presets=("password",))),
    ])
    clean = b"".join(line(app, f"GET /index.html {i} 200", pid=str(i % 7)) + b"\n" for i in range(100)
                     for app in ("app", "CRON"))
    assert len(clean) > 10_000  # the chunk test's way for big chunks
    fast.process(clean, NOW, "127.0.0.1", Ticket(0, lambda seq: None))
    assert calls == []  # every prefix of the chain shares one mask stage, and the chunk skips it
    fast.process(clean + line("app", "ToKeN: abc") + b"\n", NOW, "127.0.0.1", Ticket(1, lambda seq: None))
    fast.batcher.close_all()
    msgs = [log["msg"] for batch in closed for log in decode(batch.logs)]
    assert msgs.count(b"ToKeN: ***") == 1 and len(msgs) == 201
    assert dict(fast._chains.counts) == {("no-cron", DROPPED): 200, ("secrets", "masked"): 1}
