"""Debian's Prometheus in the booted system, with the scrape config and rules the project ships.

Test-only change: every interval is 1 s instead of 30 s, so the alert's own timing (its range and
`for:`, from the shipped rules file) is what the test waits for, not the scrapes.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from tests.system.conftest import System
from tests.system.container import REPO, Container, wait_until

pytestmark = pytest.mark.system

PROMETHEUS = REPO / "packaging" / "prometheus"
INTERVAL_S = 1


def seconds(duration: str) -> int:
    value, unit = int(duration[:-1]), duration[-1]
    return value * {"s": 1, "m": 60, "h": 3600}[unit]


def no_success_rule_timing() -> tuple[int, int]:
    """(range, for) in seconds of the shipped SlsfwdShippingFailing rule with cause no_success."""
    rules = (PROMETHEUS / "slsfwd.rules.yml").read_text()
    block = next(b for b in rules.split("- alert: ")[1:] if "cause: no_success" in b)
    range_ = re.search(r'result="ok"\}\[(\d+[smh])\]', block).group(1)
    for_ = re.search(r"^\s+for: (\d+[smh])\s*$", block, re.M).group(1)
    return seconds(range_), seconds(for_)


def fast_config(scrape: str) -> str:
    """The shipped scrape config with every interval at INTERVAL_S (the only change)."""
    for key, value in (("scrape_interval", "30s"), ("scrape_timeout", "10s")):
        scrape, count = re.subn(rf"^(\s+){key}: {value}$", rf"\g<1>{key}: {INTERVAL_S}s", scrape, flags=re.M)
        assert count == 1, f"{key}: {value} is not where it was in {PROMETHEUS / 'prometheus.scrape.yml'}"
    return f"global:\n  scrape_interval: {INTERVAL_S}s\n  evaluation_interval: {INTERVAL_S}s\n\n{scrape}"


def api(container: Container, path: str, **params: str) -> dict:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    answer = json.loads(container.run("curl", "-fsS", f"http://127.0.0.1:9090/api/v1/{path}{query}").stdout)
    assert answer["status"] == "success", answer
    return answer["data"]


def no_success(container: Container) -> list[str]:
    """States (pending, firing) of SlsfwdShippingFailing with cause no_success: the one an unreachable SLS raises.

    (cause errors goes pending too, but fires only after 15 minutes: its promtool tests cover it.)
    """
    return [
        alert["state"] for alert in api(container, "alerts")["alerts"]
        if alert["labels"]["alertname"] == "SlsfwdShippingFailing" and alert["labels"]["cause"] == "no_success"
    ]


@pytest.fixture()
def prometheus(system: System) -> Iterator[Container]:
    container = system.container
    container.write("/etc/prometheus/prometheus.yml", fast_config((PROMETHEUS / "prometheus.scrape.yml").read_text()))
    container.file("/etc/prometheus/slsfwd.rules.yml").write_bytes((PROMETHEUS / "slsfwd.rules.yml").read_bytes())
    container.run("promtool", "check", "config", "/etc/prometheus/prometheus.yml")
    container.run("systemctl", "restart", "prometheus.service")
    ready = ["curl", "-fsS", "http://127.0.0.1:9090/-/ready"]
    try:
        wait_until(lambda: container.run(*ready, check=False).returncode == 0, 60, "Prometheus to be ready", interval=0.5)
        yield container
    finally:
        container.run("systemctl", "stop", "prometheus.service")


def test_prometheus_scrapes_the_agent_and_the_shipping_alert_fires_and_resolves(
    system: System, prometheus: Container
) -> None:
    container, standin = system.container, system.standin

    def up() -> list[str]:
        return [sample["value"][1] for sample in api(container, "query", query='up{job="slsfwd"}')["result"]]

    wait_until(lambda: up() == ["1"], 60, 'up{job="slsfwd"} == 1', interval=0.5)
    assert not no_success(container)

    range_s, for_s = no_success_rule_timing()
    standin.stop()  # the last successful PutLogs was before this
    stopped = time.monotonic()
    try:
        container.run("logger", "-t", "todo-list", "while SLS is unreachable")  # a backlog to alert about
        wait_until(
            lambda: "firing" in no_success(container),
            range_s + for_s + 60, "SlsfwdShippingFailing (no_success) to fire", interval=0.5,
        )
        fired_after = time.monotonic() - stopped
    finally:
        standin.start()
    assert for_s <= fired_after <= range_s + for_s + 3 * INTERVAL_S  # two scrapes and one evaluation
    healed = time.monotonic()
    # The agent retries each batch at most 30 s apart (README, "Delivery"); its first success resolves the alert.
    wait_until(lambda: not no_success(container), 30 + 10, "the alert to resolve", interval=0.5)
    assert time.monotonic() - healed <= 30 + 3 * INTERVAL_S
    standin.wait_for_messages({"while SLS is unreachable"}, timeout=30)
