"""/metrics and /healthz of the real agent while the service pushes back."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.agent_proc import AgentProcess, sls_section
from tests.support.standin import Fault, PutLogsStandin

pytestmark = pytest.mark.e2e

REQUIRED = {
    "slsfwd_input_connections": "gauge",
    "slsfwd_input_lines": "counter",
    "slsfwd_input_bytes": "counter",
    "slsfwd_parse_errors": "counter",
    "slsfwd_spool_bytes": "gauge",
    "slsfwd_spool_backlog_lines": "gauge",
    "slsfwd_shipped_logs": "counter",
    "slsfwd_shipped_bytes": "counter",
    "slsfwd_ship_requests": "counter",
    "slsfwd_dead_letter_logs": "counter",
    "slsfwd_ship_latency_seconds": "histogram",
    "slsfwd_build_info": "gauge",
    "slsfwd_ship_retries": "counter",
    "slsfwd_input_backpressure_seconds": "counter",
    "slsfwd_spool_oldest_unacked_age_seconds": "gauge",
    "slsfwd_credential_refresh_failures": "counter",
}


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(f"{family.name}:{family.type}", {})
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


async def test_metrics_after_5001_lines_under_quota_pressure(tmp_path: Path) -> None:
    now = int(time.time())
    lines = [b"0.1 sys_tag %d 127.0.0.1 web-1 user.notice 0 m 1 -  line %d\n" % (now, i) for i in range(5000)]
    lines.insert(2500, b"0.1 sys_tag not-a-time 127.0.0.1 broken line\n")
    async with PutLogsStandin() as standin:
        standin.faults.when(lambda i: i % 4 == 3, Fault.error(403, "WriteQuotaExceed"))
        async with AgentProcess(tmp_path, sls=sls_section(standin), linger_ms=200) as agent:
            for i in range(0, len(lines), 500):  # several batches, so some meet the quota errors
                await agent.send(b"".join(lines[i : i + 500]))
                await asyncio.sleep(0.3)
            await standin.wait_for_logs(5001, timeout=60)
            deadline = time.monotonic() + 10
            while True:
                metrics = await asyncio.to_thread(scrape, agent.metrics_port)
                if metrics["slsfwd_spool_backlog_lines"][()] == 0 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            health = urllib.request.urlopen(f"http://127.0.0.1:{agent.metrics_port}/healthz", timeout=5)
            assert health.status == 200 and health.read() == b"ok\n"
    for name, kind in REQUIRED.items():
        assert f"{name}:{kind}" in metrics, name
    assert metrics["slsfwd_input_lines_total"][()] >= 5001
    assert metrics["slsfwd_shipped_logs_total"][()] >= 5000
    assert sum(metrics["slsfwd_parse_errors_total"].values()) >= 1
    assert metrics["slsfwd_spool_backlog_lines"][()] == 0
    assert metrics["slsfwd_spool_oldest_unacked_age_seconds"][()] == 0
    assert metrics["slsfwd_ship_requests_total"][(("result", "WriteQuotaExceed"),)] >= 1
    assert metrics["slsfwd_shipped_bytes_total"][(("stage", "compressed"),)] > 0
