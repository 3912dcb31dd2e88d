"""Moving off Logtail: real ``ilogtail_config.json`` variants through ``import-logtail`` → ``slsfwd run``.

Each variant is converted as a user converts it, the printed config is completed
the way its comments ask (project, logstore, credentials), and the real agent
ships a built-in ``0.1`` line and a user-format ``2.1`` line to the stand-in.
What arrives must carry the keys Logtail gave for that config: the built-in
``0.1`` keys whatever ``streamlog_formats`` says about ``0.*``/``1.*`` versions,
and a user format's fields only where the config defines it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.support.agent_proc import AgentProcess, run_cli
from tests.support.standin import PutLogsStandin

pytestmark = pytest.mark.e2e

BUILTIN_KEYS = ["hostname", "pri-text", "protocol-version", "app-name", "procid", "msgid", "msg"]

# The tutorial's file: streamlog switched on, with an entry for the built-in version that changes nothing.
TUTORIAL = {
    "config_server_address": "http://logtail.cn-hangzhou-intranet.log.aliyuncs.com",
    "data_server_list": [{"cluster": "cn-hangzhou", "endpoint": "cn-hangzhou-intranet.log.aliyuncs.com"}],
    "streamlog_open": True,
    "streamlog_tcp_addr": "127.0.0.1",
    "streamlog_tcp_port": 11111,
    "streamlog_formats": [{"version": "0.1", "fields": []}],
}
# What Logtail's installer writes before anyone edits it.
LOGTAIL_DEFAULTS = {
    "config_server_address": "http://logtail.cn-hangzhou-intranet.log.aliyuncs.com",
    "data_server_list": [{"cluster": "cn-hangzhou", "endpoint": "cn-hangzhou-intranet.log.aliyuncs.com"}],
    "cpu_usage_limit": 0.4,
    "mem_usage_limit": 100,
    "max_bytes_per_sec": 20971520,
    "process_thread_count": 1,
    "send_request_concurrency": 4,
    "streamlog_open": False,
    "streamlog_pool_size_in_mb": 50,
    "streamlog_rcv_size_each_call": 1024,
    "streamlog_formats": [],
    "streamlog_tcp_port": 11111,
    "buffer_file_num": 25,
    "buffer_file_size": 20971520,
    "buffer_file_path": "",
    "working_ip": "",
    "working_hostname": "",
}
USER_FORMAT = {"version": "2.1", "fields": ["level", "method"]}

VARIANTS = {
    "tutorial": (TUTORIAL, False),
    "logtail-defaults": (LOGTAIL_DEFAULTS, False),
    "user-format-2.x": ({**TUTORIAL, "streamlog_formats": [{"version": "0.1", "fields": []}, USER_FORMAT]}, True),
    "streamlog-closed": ({**TUTORIAL, "streamlog_open": False, "streamlog_formats": [USER_FORMAT]}, True),
    "formats-as-json-string": ({**TUTORIAL, "streamlog_formats": json.dumps([{"version": "0.1", "fields": []}, USER_FORMAT])}, True),
    "builtin-1.x-with-fields": ({**TUTORIAL, "streamlog_formats": [{"version": "1.0", "fields": ["x", "y"]}]}, False),
}


def completed(printed: str, agent: AgentProcess, standin: PutLogsStandin) -> str:
    """The printed config with what its comments ask for filled in, on test ports and directories."""
    text = re.sub(r'(?m)^listen = ".*"$', f'listen = "127.0.0.1:{agent.port}"', printed)
    text = re.sub(r'(?m)^endpoint = ".*"$', f'endpoint = "{standin.url}"', text)
    text = re.sub(r'(?m)^dir = ".*"$', f'dir = "{agent.spool_dir}"', text)
    text = text.replace('project = ""', 'project = "test-project"').replace('logstore = ""', 'logstore = "test-logstore"')
    text = text.replace(
        'ecs_ram_role = ""',
        f'access_key_id = "{standin.verifier.access_key_id}"\naccess_key_secret = "{standin.verifier.access_key_secret}"',
    )
    return text + f'\n[batch]\nlinger_ms = 100\n\n[metrics]\nlisten = "127.0.0.1:{agent.metrics_port}"\n'


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_imported_config_ships_logtails_keys(tmp_path: Path, variant: str) -> None:
    doc, has_user_format = VARIANTS[variant]
    source = tmp_path / "ilogtail_config.json"
    source.write_text(json.dumps(doc))
    code, printed, err = await run_cli("import-logtail", str(source))
    assert code == 0, err
    assert "[[input.formats]]" in printed if has_user_format else "[[input.formats]]" not in printed
    now = int(time.time())
    builtin_line = f"0.1 sys_tag {now} 127.0.0.1 web-1 user.info 0 todo-list 705 -  2018-12-17 10:06:44.111 INFO 705 --- started\n"
    user_line = f"2.1 sys_tag {now} 127.0.0.1 WARN GET /api/todos slow\n"
    async with PutLogsStandin() as standin:
        agent = AgentProcess(tmp_path / "agent")
        agent.config_text = completed(printed, agent, standin)
        async with agent:
            await agent.send((builtin_line + user_line).encode())
            await standin.wait_for_logs(2, timeout=15)
    assert not standin.rejections
    builtin, user = sorted(standin.logs, key=lambda log: log.contents.get("app-name", "~"))
    assert [key for key, _ in builtin.pairs] == BUILTIN_KEYS
    assert builtin.contents["app-name"] == "todo-list" and builtin.contents["hostname"] == "web-1"
    assert builtin.contents["msg"] == "2018-12-17 10:06:44.111 INFO 705 --- started"
    if has_user_format:
        assert user.contents == {"level": "WARN", "method": "GET", "msg": "/api/todos slow"}
    else:  # Logtail knew no 2.1 there: the line arrives whole, marked, never dropped
        assert user.contents == {"msg": user_line.rstrip("\n"), "parse-error": "unknown_version"}


async def test_import_explains_what_it_left_out(tmp_path: Path) -> None:
    source = tmp_path / "ilogtail_config.json"
    source.write_text(json.dumps(TUTORIAL))
    code, printed, err = await run_cli("import-logtail", str(source))
    assert code == 0, err
    assert '# streamlog_formats[0] (version "0.1") is left out: versions beginning with 0. or 1. are' in printed


@pytest.mark.parametrize("version", ["0.1", "0.2", "1.0", "1.12"])
async def test_check_refuses_a_format_that_redefines_a_builtin_version(tmp_path: Path, version: str) -> None:
    config = tmp_path / "slsfwd.toml"
    config.write_text(f'[[input.formats]]\nversion = "{version}"\nfields = []\n')
    code, out, err = await run_cli("check", "--config", str(config))
    assert code == 2
    assert f"input.formats[0].version: {version!r} is a built-in Logtail version" in err
