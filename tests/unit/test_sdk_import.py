"""The agent loads only the SDK's signing, credentials and proto modules.

Each check runs in a fresh interpreter: this test process has long since
imported the whole SDK through other tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys

from tests.support import REPO

ROOT = REPO

# Everything under agent/ except the entry point, which would run the CLI.
IMPORT_AGENT = """
import pkgutil, importlib, agent
for m in pkgutil.walk_packages(agent.__path__, "agent."):
    if m.name != "agent.__main__":
        importlib.import_module(m.name)
"""

RSS = """
import json
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        print(json.dumps(int(line.split()[1]) / 1024))
"""


def _run(code: str):
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_agent_imports_leave_the_full_sdk_out_and_signing_works():
    result = _run(IMPORT_AGENT + """
import json, sys
from agent.output.putlogs import ClockOffsetSigner
from agent.output.sdk import StaticCredentialsProvider
provider = StaticCredentialsProvider("test-akid", "test-secret")
signed = {}
for version, region in (("v1", ""), ("v4", "cn-hangzhou")):
    headers = {"Content-Type": "application/x-protobuf", "x-log-apiversion": "0.6.0", "x-log-bodyrawsize": "3"}
    ClockOffsetSigner(provider, version, region).sign("POST", "/logstores/ls/shards/lb", headers, b"abc")
    signed[version] = headers
heavy = ("requests", "aliyun.log.logclient", "jmespath", "google.protobuf", "aliyun.log.proto",
         "dateutil.parser._parser", "dateutil.tz", "decimal", "ctypes")
print(json.dumps({"loaded": [m for m in heavy if m in sys.modules], "signed": signed}))
""")
    # aliyun/log/util.py, which auth.py needs, binds dateutil.parser: lazily, it is never run.
    assert result["loaded"] == []

    v1 = result["signed"]["v1"]
    string_to_sign = (
        "POST\n900150983CD24FB0D6963F7D28E17F72\napplication/x-protobuf\n" + v1["Date"] + "\n"
        "x-log-apiversion:0.6.0\nx-log-bodyrawsize:3\nx-log-signaturemethod:hmac-sha1\n"
        "/logstores/ls/shards/lb"
    )
    digest = hmac.new(b"test-secret", string_to_sign.encode(), hashlib.sha1).digest()
    assert v1["Authorization"] == "LOG test-akid:" + base64.b64encode(digest).decode()
    assert result["signed"]["v4"]["Authorization"].startswith("SLS4-HMAC-SHA256 Credential=test-akid/")


def test_full_sdk_still_importable_after_the_agent():
    assert _run("""
import json
import agent.output.putlogs, agent.output.sdk
from aliyun.log import LogClient, LogItem
import aliyun.log
import aliyun.log.auth
print(json.dumps([
    LogClient.__module__,
    LogItem.__module__,
    aliyun.log.auth.AuthV1 is agent.output.sdk.AuthV1,
    aliyun.log.LogGroup is agent.output.sdk.log_group_raw_class(),
]))
""") == ["aliyun.log.logclient", "aliyun.log.logitem", True, True]


def test_the_lazy_dateutil_parser_loads_when_used():
    assert _run("""
import json
import agent.output.sdk
import dateutil.parser
from aliyun.log.util import parse_timestamp
from dateutil.parser import isoparse
print(json.dumps([parse_timestamp("2020-01-01 00:00:00"), isoparse("2020-01-01T00:00:01Z").timestamp(),
                  type(dateutil.parser).__name__]))
""") == [1577836800, 1577836801.0, "module"]


def test_resident_memory_is_well_below_the_full_sdk():
    agent_only = _run("import agent.cli, agent.app\n" + RSS)
    full_sdk = _run("import aliyun.log\nimport agent.cli, agent.app\n" + RSS)
    assert agent_only <= full_sdk - 5, (
        f"RSS after import agent.cli, agent.app: {agent_only:.1f} MB; with the full SDK: {full_sdk:.1f} MB")
