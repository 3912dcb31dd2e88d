"""Processors in the real agent: noise dropped and counted, secrets masked, JSON and k=v as keys.

A corpus of noise (cron, health checks), secrets (one per preset), JSON and
``key=value`` messages, and plain lines goes through ``slsfwd run`` with the
README's three recipes configured. What reaches the stand-in must be exactly
what the config says, and ``/metrics`` must count every drop.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.agent_proc import AgentProcess, run_cli, sls_section
from tests.support.standin import PutLogsStandin

pytestmark = pytest.mark.e2e

PROCESSORS = '''
[[routes]]
tag = "todo_tag"
logstore = "todo-store"

[[processors]]
name = "no-cron"
type = "drop"
key = "app-name"
equals = "CRON"

[[processors]]
name = "no-health-checks"
type = "drop"
key = "msg"
matches = '"GET /(healthz|ready)'

[[processors]]
name = "secrets"
type = "mask"
presets = ["password", "bearer_token", "aliyun_access_key", "email", "card_number"]

[[processors]]
name = "todo-json"
type = "parse_json"
tags = ["todo_tag"]
keep_original = false

[[processors]]
name = "kv"
type = "parse_kv"
tags = ["kv_tag"]
prefix = "kv."
'''

SECRETS = {
    "login ok password=hunter2 for bob": "login ok password=*** for bob",
    "GET /api Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig": "GET /api Authorization: Bearer ***",
    "AccessKeySecret=abcdefghijklmnopqrstuvwxyz1234 in env": "AccessKeySecret=*** in env",
    "mail to jane.doe@example.com bounced": "mail to j***@example.com bounced",
    "charged 4111 1111 1111 1111 ok": "charged ****1111 ok",
}


def line(msg: str, *, app: str = "todo-list", tag: str = "sys_tag") -> str:
    return f"0.1 {tag} {int(time.time())} 127.0.0.1 web-1 user.info 0 {app} 705 -  {msg}\n"


async def test_what_arrives_is_exactly_what_the_config_says(tmp_path: Path) -> None:
    noise = [line("(root) CMD (run-parts /etc/cron.hourly)", app="CRON") for _ in range(30)]
    noise += [line('10.0.0.9 - - "GET /healthz HTTP/1.1" 200 2') for _ in range(20)]
    noise += [line('10.0.0.9 - - "GET /ready HTTP/1.1" 200 2') for _ in range(5)]
    secrets = [line(text) for text in SECRETS]
    json_lines = [line('{"level": "info", "user": "alice", "latency_ms": 12}', tag="todo_tag"),
                  line('{"level": "warn", "password": "s3cr3t"}', tag="todo_tag"),
                  line("not json at all", tag="todo_tag")]
    bad_utf8 = '0.1 todo_tag {t} 127.0.0.1 web-1 user.info 0 todo-list 705 -  {{"user": "bad \xff"}}\n'
    kv_lines = [line('user=carol action="log out" ok=1', tag="kv_tag")]
    plain = [line(f"plain message {i}") for i in range(10)]
    payload = "".join(noise + secrets + json_lines + kv_lines + plain).encode()
    payload += bad_utf8.format(t=int(time.time())).encode("latin-1")
    expected_logs = len(secrets) + len(json_lines) + len(kv_lines) + len(plain) + 1

    async with PutLogsStandin() as standin:
        async with AgentProcess(tmp_path, sls=sls_section(standin), extra=PROCESSORS) as agent:
            await agent.send(payload)
            await standin.wait_for_logs(expected_logs, timeout=20)
            events = "slsfwd_processor_events_total"
            drops = {name: agent.metric(events, processor=name, result="dropped") for name in ("no-cron", "no-health-checks")}
            parsed = agent.metric(events, processor="todo-json", result="parsed")
            unmatched = agent.metric(events, processor="todo-json", result="unmatched")
            masked = agent.metric(events, processor="secrets", result="masked")

    assert not standin.rejections
    logs = standin.logs
    assert len(logs) == expected_logs
    assert drops == {"no-cron": 30.0, "no-health-checks": 25.0}
    msgs = [log.contents.get("msg") for log in logs]
    assert not any(log.contents.get("app-name") == "CRON" for log in logs)
    assert not any("healthz" in (m or "") for m in msgs)
    for original, masked_text in SECRETS.items():
        assert masked_text in msgs
    everything = " ".join(v for log in logs for v in log.contents.values())
    for secret in ("hunter2", "eyJhbGciOiJIUzI1NiJ9", "abcdefghijklmnopqrstuvwxyz1234", "jane.doe", "4111 1111", "s3cr3t"):
        assert secret not in everything
    todo = [log for log in logs if log.logstore == "todo-store"]
    alice = next(log for log in todo if log.contents.get("user") == "alice")
    assert alice.contents["level"] == "info" and alice.contents["latency_ms"] == "12" and "msg" not in alice.contents
    warn = next(log for log in todo if log.contents.get("level") == "warn")
    assert warn.contents["password"] == "***"  # masked in msg before it was parsed
    assert any(log.contents.get("msg") == "not json at all" for log in todo)  # unmatched: unchanged
    bad = next(log for log in todo if "bad" in (log.contents.get("msg") or ""))
    assert bad.contents["msg"] == '{"user": "bad \\xff"}'  # escaped, so not JSON any more: left as it is
    assert (parsed, unmatched) == (2.0, 2.0)
    (kv,) = [log for log in logs if "kv.user" in log.contents]
    assert (kv.contents["kv.user"], kv.contents["kv.action"], kv.contents["kv.ok"]) == ("carol", "log out", "1")
    assert kv.contents["msg"] == 'user=carol action="log out" ok=1'
    assert masked == float(len(SECRETS) + 1)
    assert sorted(m for m in msgs if m and m.startswith("plain")) == sorted(f"plain message {i}" for i in range(10))


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('type = "nope"', "processors[0].type: unknown processor 'nope'"),
        ('type = "drop"\nkey = "app-name"', "processors[0]: give exactly one of equals, matches, present"),
        ('type = "drop"\nequals = "x"', "processors[0].key: missing"),
        ('type = "mask"\npattern = "(a)\\\\1"', "processors[0].pattern: not a pattern RE2 accepts"),
        ('type = "mask"\npresets = ["ssn"]', "processors[0].presets[0]: unknown preset 'ssn'"),
        ('type = "parse_regex"\npattern = "(?<=x)y"', "processors[0].pattern: not a pattern RE2 accepts"),
        ('type = "parse_json"\nprefx = "j."', "processors[0].prefx: unknown key"),
    ],
)
async def test_bad_processors_are_config_errors_naming_the_key(tmp_path: Path, table: str, problem: str) -> None:
    config = tmp_path / "slsfwd.toml"
    config.write_text(f'[[processors]]\nname = "p"\n{table}\n')
    code, _, err = await run_cli("check", "--config", str(config))
    assert code == 2
    assert problem in err and "Traceback" not in err


async def test_check_explain_shows_order_and_scope(tmp_path: Path) -> None:
    config = tmp_path / "slsfwd.toml"
    config.write_text(
        '[sls]\nproject = "p"\nlogstore = "main"\naccess_key_id = "a"\naccess_key_secret = "b"\n' + PROCESSORS
    )
    code, out, err = await run_cli("check", "--explain", "--config", str(config))
    assert code == 0, err
    assert "tag 'todo_tag' -> p/todo-store: no-cron, no-health-checks, secrets, todo-json" in out  # a parser: all per line
    assert "tag 'kv_tag' -> p/main: no-cron, no-health-checks, secrets, kv" in out
    assert "any other tag -> p/main: no-cron (once per line prefix), no-health-checks, secrets" in out
