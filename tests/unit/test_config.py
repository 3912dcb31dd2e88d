"""agent.config: strict TOML loading, defaults, errors that name the key; the `slsfwd` CLI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agent.config import (
    BatchConfig,
    Config,
    ConfigError,
    InputConfig,
    LineFormatConfig,
    MetricsConfig,
    RouteConfig,
    SlsConfig,
    SpoolConfig,
    load,
    loads,
)
from tests.support import REPO

SLSFWD = REPO / ".venv" / "bin" / "slsfwd"

MINIMAL_SLS = """
[sls]
project = "my-project"
logstore = "my-logstore"
access_key_id = "file-akid"
access_key_secret = "file-secret"
"""


def full_toml(ca_file: Path) -> str:
    return f"""
shutdown_timeout_s = 7.5
log_level = "debug"

[input]
listen = "0.0.0.0:5140"
max_line_bytes = 65536
max_connections = 10

[[input.formats]]
version = "2.1"
fields = ["level", "method"]

[[input.formats]]
version = "3.0"
fields = []

[sls]
endpoint = "https://cn-shanghai.log.aliyuncs.com"
project = "my-project"
logstore = "my-logstore"
topic = "my-topic"
access_key_id = "file-akid"
access_key_secret = "file-secret"
security_token = "file-token"
auth_version = "v4"
region = "cn-shanghai"
source_ip = "10.0.0.5"
max_in_flight = 2
connect_timeout_s = 3
request_timeout_s = 12.5
verify_tls = false
ca_file = "{ca_file}"

[[routes]]
tag = "nginx_tag"
logstore = "nginx-store"
project = "other-project"
topic = "nginx"

[[routes]]
tag = "app_tag"
logstore = "app-store"

[batch]
max_logs = 1000
max_bytes = 262144
linger_ms = 500

[spool]
dir = "/tmp/slsfwd-spool"
type = "memory"
max_bytes = 1048576
fsync_ms = 0
full_policy = "drop_oldest"
dead_letter_max_bytes = 4096

[metrics]
listen = "127.0.0.1:9999"
"""


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads(text, env={} if env is None else env)
    return info.value.problems


# ---------------------------------------------------------------- valid configs


def test_full_config_with_every_key_loads(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here\n")
    config = loads(full_toml(ca), env={})
    assert config == Config(
        input=InputConfig(
            listen="0.0.0.0:5140",
            max_line_bytes=65536,
            max_connections=10,
            formats=(LineFormatConfig("2.1", ("level", "method")), LineFormatConfig("3.0", ())),
        ),
        sls=SlsConfig(
            project="my-project",
            logstore="my-logstore",
            endpoint="https://cn-shanghai.log.aliyuncs.com",
            topic="my-topic",
            access_key_id="file-akid",
            access_key_secret="file-secret",
            security_token="file-token",
            auth_version="v4",
            region="cn-shanghai",
            source_ip="10.0.0.5",
            max_in_flight=2,
            connect_timeout_s=3.0,
            request_timeout_s=12.5,
            verify_tls=False,
            ca_file=str(ca),
        ),
        routes=(
            RouteConfig("nginx_tag", "nginx-store", "other-project", "nginx"),
            RouteConfig("app_tag", "app-store", "", ""),
        ),
        batch=BatchConfig(max_logs=1000, max_bytes=262144, linger_ms=500),
        spool=SpoolConfig(
            dir="/tmp/slsfwd-spool",
            type="memory",
            max_bytes=1048576,
            fsync_ms=0,
            full_policy="drop_oldest",
            dead_letter_max_bytes=4096,
        ),
        metrics=MetricsConfig(listen="127.0.0.1:9999"),
        shutdown_timeout_s=7.5,
        log_level="debug",
    )
    assert isinstance(config.sls.connect_timeout_s, float)


def test_empty_config_is_all_defaults():
    config = loads("", env={})
    assert config == Config()
    assert config.sls is None  # console sink
    assert config.routes == ()


@pytest.mark.parametrize(
    "get, expected",
    [
        (lambda c: c.shutdown_timeout_s, 10.0),
        (lambda c: c.log_level, "info"),
        (lambda c: c.input.listen, "127.0.0.1:11111"),
        (lambda c: c.input.max_line_bytes, 1048576),
        (lambda c: c.input.max_connections, 1024),
        (lambda c: c.input.formats, ()),
        (lambda c: c.sls.endpoint, "cn-hangzhou-intranet.log.aliyuncs.com"),
        (lambda c: c.sls.topic, ""),
        (lambda c: c.sls.security_token, ""),
        (lambda c: c.sls.auth_version, "v1"),
        (lambda c: c.sls.region, ""),
        (lambda c: c.sls.source_ip, ""),
        (lambda c: c.sls.max_in_flight, 4),
        (lambda c: c.sls.connect_timeout_s, 5.0),
        (lambda c: c.sls.request_timeout_s, 30.0),
        (lambda c: c.sls.verify_tls, True),
        (lambda c: c.sls.ca_file, ""),
        (lambda c: c.batch.max_logs, 4096),
        (lambda c: c.batch.max_bytes, 524288),
        (lambda c: c.batch.linger_ms, 2000),
        (lambda c: c.batch.window_bytes, 4194304),
        (lambda c: c.spool.read_ahead_bytes, 8388608),
        (lambda c: c.spool.dir, "/var/lib/slsfwd"),
        (lambda c: c.spool.type, "disk"),
        (lambda c: c.spool.max_bytes, 1073741824),
        (lambda c: c.spool.fsync_ms, 200),
        (lambda c: c.spool.full_policy, "backpressure"),
        (lambda c: c.spool.dead_letter_max_bytes, 104857600),
        (lambda c: c.metrics.listen, "127.0.0.1:9469"),
    ],
)
def test_documented_defaults(get, expected):
    value = get(loads(MINIMAL_SLS, env={}))
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    "batch, window",
    [
        ("max_bytes = 1048576", 4194304),  # the default window holds it four times
        ("max_bytes = 5242880", 10485760),  # larger LogGroups: twice batch.max_bytes, never a config error
        ("max_bytes = 5242880\nwindow_bytes = 6000000", 6000000),  # set: taken as it is
    ],
)
def test_the_default_window_holds_two_log_groups_at_least(batch, window):
    assert loads(MINIMAL_SLS + f"\n[batch]\n{batch}\n", env={}).batch.window_bytes == window


def test_route_project_and_topic_default_to_empty():
    config = loads(MINIMAL_SLS + '\n[[routes]]\ntag = "t"\nlogstore = "s"\n', env={})
    assert config.routes == (RouteConfig("t", "s", "", ""),)


def test_packaged_example_config_loads():
    config = load(
        REPO / "packaging" / "slsfwd.toml",
        env={"ALIBABA_CLOUD_ACCESS_KEY_ID": "akid", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "secret"},
    )
    assert config.sls is not None and config.sls.project == "my-project"


def test_int_is_accepted_for_a_float_key():
    config = loads("shutdown_timeout_s = 3", env={})
    assert config.shutdown_timeout_s == 3.0 and isinstance(config.shutdown_timeout_s, float)


# ---------------------------------------------------------------- errors name the key


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[input]\nnope = 1\n", "input.nope: unknown key"),
        ("nope = 1\n", "nope: unknown key"),
        ("[nope]\nx = 1\n", "nope: unknown key"),
        (MINIMAL_SLS + "colour = 'red'\n", "sls.colour: unknown key"),
        (MINIMAL_SLS + "[[routes]]\ntag = 't'\nlogstore = 's'\nextra = 1\n", "routes[0].extra: unknown key"),
        ("[[input.formats]]\nversion = '2.1'\nfields = []\nx = 1\n", "input.formats[0].x: unknown key"),
    ],
)
def test_unknown_key(text, expected):
    assert expected in problems_of(text)


@pytest.mark.parametrize(
    "text, key",
    [
        ("[input]\nmax_line_bytes = '1024'\n", "input.max_line_bytes"),
        ("[input]\nmax_line_bytes = 1024.0\n", "input.max_line_bytes"),
        ("[input]\nmax_line_bytes = true\n", "input.max_line_bytes"),  # a bool is not an integer
        ("[input]\nlisten = 11111\n", "input.listen"),
        ("[input]\nformats = 'x'\n", "input.formats"),
        ("[[input.formats]]\nversion = 2.1\nfields = []\n", "input.formats[0].version"),
        ("[[input.formats]]\nversion = '2.1'\nfields = ['a', 1]\n", "input.formats[0].fields[1]"),
        ("shutdown_timeout_s = 'soon'\n", "shutdown_timeout_s"),
        ("shutdown_timeout_s = true\n", "shutdown_timeout_s"),
        ("log_level = 1\n", "log_level"),
        ("input = 1\n", "input"),
        ("sls = 'x'\n", "sls"),
        (MINIMAL_SLS + "verify_tls = 1\n", "sls.verify_tls"),
        (MINIMAL_SLS + "max_in_flight = '4'\n", "sls.max_in_flight"),
        ("[batch]\nlinger_ms = 2.5\n", "batch.linger_ms"),
        ("[spool]\ndir = ['a']\n", "spool.dir"),
    ],
)
def test_wrong_type_names_the_key(text, key):
    problems = problems_of(text)
    assert any(p.startswith(f"{key}: must be") for p in problems), problems


def test_wrong_type_says_what_was_expected():
    assert problems_of("[input]\nmax_line_bytes = 'big'\n") == ["input.max_line_bytes: must be an integer, got a string"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[sls]\nlogstore = "l"\naccess_key_id = "a"\naccess_key_secret = "s"\n', "sls.project: missing"),
        ('[sls]\nproject = "p"\naccess_key_id = "a"\naccess_key_secret = "s"\n', "sls.logstore: missing"),
        ("[[input.formats]]\nversion = '2.1'\n", "input.formats[0].fields: missing"),
        (MINIMAL_SLS + "[[routes]]\ntag = 't'\n", "routes[0].logstore: missing"),
    ],
)
def test_missing_required_key(text, expected):
    assert expected in problems_of(text)


def test_missing_credentials_name_the_env_vars():
    problems = problems_of('[sls]\nproject = "p"\nlogstore = "l"\n')
    assert any(p.startswith("sls.access_key_id: missing") and "ALIBABA_CLOUD_ACCESS_KEY_ID" in p for p in problems)
    assert any(p.startswith("sls.access_key_secret: missing") and "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in p for p in problems)


@pytest.mark.parametrize(
    "text, key",
    [
        ('[input]\nlisten = "127.0.0.1:99999"\n', "input.listen"),
        ('[input]\nlisten = "127.0.0.1:0"\n', "input.listen"),
        ('[input]\nlisten = "127.0.0.1"\n', "input.listen"),
        ('[input]\nlisten = ":11111"\n', "input.listen"),
        ('[metrics]\nlisten = "127.0.0.1:99999"\n', "metrics.listen"),
        ("[input]\nmax_line_bytes = 0\n", "input.max_line_bytes"),
        ("[input]\nmax_connections = -1\n", "input.max_connections"),
        ("[batch]\nmax_bytes = 100\n", "batch.max_bytes"),
        ("[batch]\nmax_bytes = 6000000\n", "batch.max_bytes"),
        ("[batch]\nmax_logs = 0\n", "batch.max_logs"),
        ("[batch]\nmax_logs = 50000\n", "batch.max_logs"),
        ("[batch]\nlinger_ms = -1\n", "batch.linger_ms"),
        ('[spool]\ntype = "tape"\n', "spool.type"),
        ('[spool]\nfull_policy = "panic"\n', "spool.full_policy"),
        ("[spool]\nfsync_ms = -1\n", "spool.fsync_ms"),
        ("[spool]\nmax_bytes = 0\n", "spool.max_bytes"),
        ('[spool]\ndir = ""\n', "spool.dir"),
        ("shutdown_timeout_s = 0\n", "shutdown_timeout_s"),
        ('log_level = "loud"\n', "log_level"),
        ("[[input.formats]]\nversion = ''\nfields = []\n", "input.formats[0].version"),
        ("[[input.formats]]\nversion = 'a b'\nfields = []\n", "input.formats[0].version"),
        ("[[input.formats]]\nversion = '2.1'\nfields = ['msg']\n", "input.formats[0].fields[0]"),
        ("[[input.formats]]\nversion = '2.1'\nfields = []\n[[input.formats]]\nversion = '2.1'\nfields = []\n",
         "input.formats[1].version"),
        (MINIMAL_SLS + 'endpoint = "ftp://example.com"\n', "sls.endpoint"),
        (MINIMAL_SLS + 'endpoint = "http://example.com/path"\n', "sls.endpoint"),
        (MINIMAL_SLS + 'endpoint = "http://example.com:99999"\n', "sls.endpoint"),
        (MINIMAL_SLS + 'endpoint = ""\n', "sls.endpoint"),
        (MINIMAL_SLS + 'auth_version = "v4"\n', "sls.region"),
        (MINIMAL_SLS + 'auth_version = "v3"\n', "sls.auth_version"),
        (MINIMAL_SLS + 'source_ip = "not-an-ip"\n', "sls.source_ip"),
        (MINIMAL_SLS + "max_in_flight = 0\n", "sls.max_in_flight"),
        (MINIMAL_SLS + 'ca_file = "/nonexistent/ca.pem"\n', "sls.ca_file"),
        (MINIMAL_SLS + "[[routes]]\ntag = ''\nlogstore = 's'\n", "routes[0].tag"),
        (MINIMAL_SLS + "[[routes]]\ntag = 't'\nlogstore = ''\n", "routes[0].logstore"),
        (MINIMAL_SLS + "[[routes]]\ntag = 't'\nlogstore = 'a'\n[[routes]]\ntag = 't'\nlogstore = 'b'\n", "routes[1].tag"),
        ("[[routes]]\ntag = 't'\nlogstore = 's'\n", "routes[0]"),  # routes without [sls]
    ],
)
def test_invalid_value_names_the_key(text, key):
    problems = problems_of(text)
    assert any(p.startswith(f"{key}:") for p in problems), problems


def test_port_out_of_range_message():
    (problem,) = problems_of('[input]\nlisten = "127.0.0.1:99999"\n')
    assert problem.startswith("input.listen:") and "99999" in problem


def test_routes_without_sls_says_so():
    assert problems_of("[[routes]]\ntag = 't'\nlogstore = 's'\n") == ["routes[0]: routes need an [sls] section"]


def test_missing_project_with_routes_reports_only_the_missing_key():
    text = '[sls]\nlogstore = "l"\naccess_key_id = "a"\naccess_key_secret = "s"\n[[routes]]\ntag = "t"\nlogstore = "x"\n'
    assert problems_of(text) == ["sls.project: missing"]


def test_v4_without_region():
    assert problems_of(MINIMAL_SLS + 'auth_version = "v4"\n') == ['sls.region: required with auth_version = "v4"']


def test_all_problems_are_reported_at_once():
    problems = problems_of('nope = 1\n[input]\nlisten = "x:99999"\nmax_line_bytes = "a"\n[batch]\nmax_logs = 0\n')
    joined = "\n".join(problems)
    for key in ("nope", "input.listen", "input.max_line_bytes", "batch.max_logs"):
        assert f"{key}:" in joined


def test_invalid_toml_is_one_problem():
    (problem,) = problems_of("[input\nlisten = 1")
    assert "invalid TOML" in problem


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "absent.toml", env={})
    (problem,) = info.value.problems
    assert "absent.toml" in problem and "cannot read" in problem


# ---------------------------------------------------------------- credentials


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, ("file-akid", "file-secret", "")),
        (
            {"ALIBABA_CLOUD_ACCESS_KEY_ID": "env-akid", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "env-secret"},
            ("env-akid", "env-secret", ""),
        ),
        ({"ALIBABA_CLOUD_ACCESS_KEY_ID": "env-akid"}, ("env-akid", "file-secret", "")),
        ({"ALIBABA_CLOUD_SECURITY_TOKEN": "env-token"}, ("file-akid", "file-secret", "env-token")),
        ({"ALIBABA_CLOUD_ACCESS_KEY_ID": ""}, ("file-akid", "file-secret", "")),  # empty does not win
    ],
)
def test_environment_wins_over_the_file(env, expected):
    sls = loads(MINIMAL_SLS, env=env).sls
    assert (sls.access_key_id, sls.access_key_secret, sls.security_token) == expected


def test_credentials_from_environment_only():
    sls = loads(
        '[sls]\nproject = "p"\nlogstore = "l"\n',
        env={"ALIBABA_CLOUD_ACCESS_KEY_ID": "env-akid", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "env-secret"},
    ).sls
    assert (sls.access_key_id, sls.access_key_secret) == ("env-akid", "env-secret")


def test_env_argument_is_used_instead_of_the_process_environment(monkeypatch):
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "process-akid")
    assert loads(MINIMAL_SLS, env={}).sls.access_key_id == "file-akid"


def test_repr_never_contains_secrets():
    config = loads(
        MINIMAL_SLS + 'security_token = "file-token"\n',
        env={"ALIBABA_CLOUD_ACCESS_KEY_SECRET": "env-secret-value"},
    )
    for text in (repr(config.sls), str(config.sls), repr(config), str(config)):
        assert "env-secret-value" not in text
        assert "file-secret" not in text
        assert "file-token" not in text
    assert "my-project" in repr(config.sls)


# ---------------------------------------------------------------- the real CLI

GOOD = MINIMAL_SLS
CLI_CASES = {
    "good": (["check"], GOOD, 0, None),
    "unknown_key": (["check"], GOOD + "nope = 1\n", 2, "sls.nope: unknown key"),
    "missing_project": (["check"], '[sls]\nlogstore = "l"\naccess_key_id = "a"\naccess_key_secret = "s"\n', 2,
                        "sls.project: missing"),
    "port_99999": (["check"], '[input]\nlisten = "127.0.0.1:99999"\n', 2, "input.listen:"),
    "version": (["version"], None, 0, "slsfwd "),
}


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    """Run every CLI case at once (each start costs most of a second)."""
    tmp = tmp_path_factory.mktemp("cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}
    procs = {}
    for name, (args, text, _, _) in CLI_CASES.items():
        argv = [str(SLSFWD), *args]
        path = tmp / f"{name}.toml"
        if text is not None:
            path.write_text(text)
            argv += ["--config", str(path)]
        procs[name] = (path, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    results = {}
    for name, (path, proc) in procs.items():
        out, err = proc.communicate(timeout=60)
        results[name] = (proc.returncode, out, err, path)
    return results


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_cli(cli_results, name):
    _, _, expected_rc, expected_text = CLI_CASES[name]
    rc, out, err, path = cli_results[name]
    assert rc == expected_rc, (out, err)
    assert "Traceback" not in out + err
    if expected_rc == 0:
        if expected_text:
            assert expected_text in out
        elif name == "good":
            assert out.strip() == f"{path}: ok"
    else:
        lines = err.strip().splitlines()
        assert any(expected_text in line for line in lines), err
        # one line per problem, each naming the file
        assert all(line.startswith(f"{path}: ") for line in lines), lines


def test_cli_main_in_process(tmp_path, capsys):
    # the same code path without a subprocess: usage errors exit 2 through argparse
    from agent.cli import main

    with pytest.raises(SystemExit) as info:
        main(["bogus-command"])
    assert info.value.code == 2
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    assert main(["check", "--config", str(path)]) == 0
    assert main(["version"]) == 0
    path.write_text(GOOD + "nope = 1\n")
    assert main(["check", "--config", str(path)]) == 2
    assert f"{path}: sls.nope: unknown key" in capsys.readouterr().err
