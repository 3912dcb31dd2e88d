"""`slsfwd import-logtail` and `slsfwd check --live`, run as a user runs them."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from agent.config import loads
from tests.support.agent_proc import free_port, run_cli
from tests.support.standin import Fault, PutLogsStandin

LOGTAIL_CONFIG = {
    "config_server_address": "http://logtail.cn-shanghai-intranet.log.aliyuncs.com",
    "data_server_list": [{"cluster": "cn-shanghai", "endpoint": "cn-shanghai-intranet.log.aliyuncs.com"}],
    "streamlog_open": True,
    "streamlog_tcp_addr": "127.0.0.1",
    "streamlog_tcp_port": 11112,
    "streamlog_formats": [{"version": "2.1", "fields": ["level", "method"]}],
}


@pytest.mark.parametrize(
    ("changes", "listen", "formats"),
    [
        ({}, "127.0.0.1:11112", [{"version": "2.1", "fields": ["level", "method"]}]),
        ({"streamlog_tcp_addr": None, "streamlog_formats": None}, "127.0.0.1:11112", []),
        ({"streamlog_formats": json.dumps([{"version": "3.0", "fields": ["a"]}])}, "127.0.0.1:11112",
         [{"version": "3.0", "fields": ["a"]}]),
        ({"streamlog_tcp_addr": "0.0.0.0", "streamlog_tcp_port": None}, "0.0.0.0:11111",
         [{"version": "2.1", "fields": ["level", "method"]}]),
    ],
)
async def test_import_logtail_prints_an_equivalent_config(tmp_path: Path, changes, listen, formats) -> None:
    doc = {k: v for k, v in {**LOGTAIL_CONFIG, **changes}.items() if v is not None}
    source = tmp_path / "ilogtail_config.json"
    source.write_text(json.dumps(doc))
    code, out, err = await run_cli("import-logtail", str(source))
    assert code == 0, err
    data = tomllib.loads(out)
    assert data["input"]["listen"] == listen
    assert data["input"].get("formats", []) == formats
    assert data["sls"]["endpoint"] == "cn-shanghai-intranet.log.aliyuncs.com"
    assert "fill in" in err
    # Once project and logstore are filled in, the result is a valid config.
    filled = out.replace('project = ""', 'project = "p"').replace('logstore = ""', 'logstore = "l"')
    filled = filled.replace('ecs_ram_role = ""', 'ecs_ram_role = "role"')
    assert loads(filled, env={}).input.listen == listen


@pytest.mark.parametrize("content", ["not json", "[]", '{"streamlog_tcp_port": 99999}', '{"streamlog_formats": [{"fields": ["a"]}]}'])
async def test_import_logtail_refuses_what_it_cannot_convert(tmp_path: Path, content: str) -> None:
    source = tmp_path / "ilogtail_config.json"
    source.write_text(content)
    code, out, err = await run_cli("import-logtail", str(source))
    assert code == 2
    assert err.startswith("slsfwd import-logtail: ") and "Traceback" not in err


def live_config(tmp_path: Path, endpoint: str, secret: str = "test-secret") -> Path:
    path = tmp_path / "live.toml"
    path.write_text(
        f'[sls]\nendpoint = "{endpoint}"\nproject = "proj"\nlogstore = "store"\n'
        f'access_key_id = "test-akid"\naccess_key_secret = "{secret}"\n'
        f'[spool]\ndir = "{tmp_path}"\n'
    )
    return path


async def test_check_live_ok_writes_one_test_log(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        code, out, err = await run_cli("check", "--live", "--config", str(live_config(tmp_path, standin.url)))
    assert code == 0, err
    assert "ok: credentials, project proj, logstore store" in out
    assert len(standin.logs) == 1 and standin.logs[0].contents["app-name"] == "slsfwd"


@pytest.mark.parametrize(
    ("fault", "secret", "expected"),
    [
        (None, "not-the-secret-xyz", "failed: SignatureNotMatch (HTTP 401)"),
        (Fault.error(404, "LogStoreNotExist"), "test-secret", "failed: LogStoreNotExist (HTTP 404) writing to proj/store"),
        (Fault.error(404, "ProjectNotExist"), "test-secret", "the project does not exist"),
    ],
)
async def test_check_live_names_what_failed(tmp_path: Path, fault, secret: str, expected: str) -> None:
    async with PutLogsStandin() as standin:
        if fault is not None:
            standin.faults.at(0, fault)
        code, out, err = await run_cli("check", "--live", "--config", str(live_config(tmp_path, standin.url, secret)))
    assert code == 1
    assert expected in err
    assert secret not in err and "Traceback" not in err


async def test_check_live_says_unreachable(tmp_path: Path) -> None:
    code, _, err = await run_cli("check", "--live", "--config", str(live_config(tmp_path, f"http://127.0.0.1:{free_port()}")))
    assert code == 1
    assert "is unreachable" in err
