"""The monitoring assets in packaging/prometheus: alert rules, their unit tests, dashboard, scrape config.

Without any tool: the dashboard is valid JSON of the expected shape, every alert is there with its
`for:`, severity and annotations, and every metric name in these files is one that agent/metrics.py
defines (with the `_total`, `_bucket`, `_sum`, `_count` suffixes the exposition adds).
With promtool (Debian: `apt-get install -y --no-install-recommends prometheus`): the rules and the
scrape config pass its checks, the dashboard's PromQL parses, and the rule unit tests pass.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from tests.support import REPO

ROOT = REPO
PROM = ROOT / "packaging" / "prometheus"
RULES = PROM / "slsfwd.rules.yml"
RULES_TEST = PROM / "slsfwd.rules.test.yml"
DASHBOARD = PROM / "slsfwd.dashboard.json"
SCRAPE = PROM / "prometheus.scrape.yml"

ALERTS = {
    "SlsfwdDown",
    "SlsfwdShippingFailing",
    "SlsfwdBacklogGrowing",
    "SlsfwdOldestLineTooOld",
    "SlsfwdSpoolNearlyFull",
    "SlsfwdSpoolWriteBlocked",
    "SlsfwdParseErrors",
    "SlsfwdDeadLetters",
    "SlsfwdDroppedLines",
    "SlsfwdCredentialRefreshFailing",
}
# The unit tests must make at least these fire.
FIRED_IN_UNIT_TESTS = {"SlsfwdDown", "SlsfwdOldestLineTooOld", "SlsfwdSpoolNearlyFull"}

# Used by the rules and the dashboard, announced but not yet in agent/metrics.py. Drop a name
# from here once it is defined there (a missing name only warns until then).
PENDING_METRICS: set[str] = set()  # metrics the agent is about to grow; none now
TARGET_LABELS = {"job", "instance"}

# A metric name, not part of a recording rule's name (level:metric:operation).
METRIC_NAME = re.compile(r"(?<![\w:])slsfwd_[a-z0-9_]+(?![\w:])")
SELECTOR = re.compile(r"(?<![\w:])(slsfwd_[a-z0-9_]+)\{([^}]*)\}")
LABEL_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian: apt-get install -y --no-install-recommends prometheus)",
)


# -- what agent/metrics.py defines ----------------------------------------------------------


def _defined() -> dict[str, set[str]]:
    """Every exposed sample name of the agent's metrics, with the label names it carries."""
    from prometheus_client import REGISTRY

    from agent.ops import metrics

    labels_of = {
        m._name: set(m._labelnames)  # noqa: SLF001 - the definitions' label names
        for m in vars(metrics).values()
        if hasattr(m, "_labelnames") and hasattr(m, "_name")
    }
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
    names: dict[str, set[str]] = {}
    for family in REGISTRY.collect():
        if not family.name.startswith("slsfwd_"):
            continue
        labels = labels_of.get(family.name, labels_of.get(family.name + "_total", set()))
        for suffix in suffixes.get(family.type, ("",)):
            names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def _texts() -> dict[str, str]:
    return {p.name: p.read_text() for p in (RULES, RULES_TEST, DASHBOARD, SCRAPE)}


def test_every_metric_name_is_defined_in_agent_metrics() -> None:
    defined = _defined()
    assert "slsfwd_input_lines_total" in defined and "slsfwd_ship_latency_seconds_bucket" in defined
    unknown, pending = {}, set()
    for name, text in _texts().items():
        for metric in set(METRIC_NAME.findall(text)):
            if metric in defined:
                continue
            if metric in PENDING_METRICS:
                pending.add(metric)
            else:
                unknown.setdefault(name, set()).add(metric)
    assert not unknown, f"metric names not defined in agent/metrics.py: {unknown}"
    if pending:
        warnings.warn(f"not yet defined in agent/metrics.py (announced): {sorted(pending)}", stacklevel=1)


def test_label_matchers_name_labels_the_metric_has() -> None:
    defined = _defined()
    wrong = set()
    for name, text in _texts().items():
        for metric, matchers in SELECTOR.findall(text.replace('\\"', '"')):
            allowed = defined.get(metric, set()) | TARGET_LABELS
            for label in LABEL_MATCHER.findall(matchers):
                if label not in allowed and metric not in PENDING_METRICS:
                    wrong.add((name, metric, label))
    assert not wrong, sorted(wrong)


# -- the rules, read without a YAML parser --------------------------------------------------


def _rule_blocks() -> list[tuple[str, str, str]]:
    """(kind, name, text) of each rule: 'alert' or 'record', split at the list items."""
    text = RULES.read_text()
    starts = list(re.finditer(r"^\s*- (alert|record): (\S+)\s*$", text, re.M))
    ends = [m.start() for m in starts[1:]] + [len(text)]
    blocks = []
    for m, end in zip(starts, ends):
        body = text[m.start():end]
        body = re.split(r"^\s*- name: ", body, flags=re.M)[0]  # not into the next group
        blocks.append((m.group(1), m.group(2), body))
    return blocks


def test_rules_have_every_alert_in_group_slsfwd() -> None:
    text = RULES.read_text()
    assert re.search(r"^groups:\s*$", text, re.M)
    assert re.search(r"^  - name: slsfwd\s*$", text, re.M)
    alerts = {name for kind, name, _ in _rule_blocks() if kind == "alert"}
    assert ALERTS <= alerts, sorted(ALERTS - alerts)


def test_every_alert_has_for_severity_and_annotations_naming_the_instance() -> None:
    problems = []
    for kind, name, body in _rule_blocks():
        if kind != "alert":
            continue
        for needed in (r"^\s+expr: ", r"^\s+for: \d+[smh]\s*$", r"^\s+severity: (critical|warning)\s*$",
                       r"^\s+summary: ", r"^\s+description: "):
            if not re.search(needed, body, re.M):
                problems.append((name, needed))
        if body.count("$labels.instance") < 2:
            problems.append((name, "summary and description name the instance"))
    assert not problems, problems


def test_recording_rules_follow_the_naming_convention() -> None:
    records = [name for kind, name, _ in _rule_blocks() if kind == "record"]
    assert records and len(records) == len(set(records))
    for name in records:
        assert re.fullmatch(r"instance:slsfwd_[a-z0-9_]+:[a-z0-9_]+", name), name


def test_rule_unit_tests_cover_the_key_alerts() -> None:
    text = RULES_TEST.read_text()
    assert re.search(r"^rule_files:\s*\n\s+- slsfwd\.rules\.yml\s*$", text, re.M)
    tested = set(re.findall(r"^\s+alertname: (\w+)\s*$", text, re.M))
    assert FIRED_IN_UNIT_TESTS <= tested
    assert ALERTS <= tested, sorted(ALERTS - tested)
    # each of them also fires somewhere (a non-empty exp_alerts after its alertname)
    fired = set(re.findall(r"^\s+alertname: (\w+)\s*\n\s+exp_alerts:\s*\n", text, re.M))
    assert FIRED_IN_UNIT_TESTS <= fired, sorted(FIRED_IN_UNIT_TESTS - fired)


# -- the dashboard --------------------------------------------------------------------------


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def _exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]


def test_dashboard_parses_and_is_templated() -> None:
    dashboard = _dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] == "slsfwd" and dashboard["id"] is None
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["definition"] == "label_values(slsfwd_build_info, instance)"
    assert instance["datasource"]["uid"] == "${datasource}"


def test_dashboard_panels_use_the_variables_and_fit_the_grid() -> None:
    dashboard = _dashboard()
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])
    refs = [(p["id"], t["refId"]) for p in panels for t in p.get("targets", [])]
    assert len(refs) == len(set(refs))


def test_dashboard_shows_what_the_brief_asks_for() -> None:
    exprs = "\n".join(_exprs(_dashboard()))
    for metric in (
        "slsfwd_input_lines_total", "slsfwd_input_bytes_total", "slsfwd_input_connections",
        "slsfwd_input_backpressure_seconds_total", "slsfwd_parse_errors_total", "slsfwd_spool_backlog_lines",
        "slsfwd_spool_bytes", "slsfwd_spool_max_bytes", "slsfwd_spool_oldest_unacked_age_seconds",
        "slsfwd_shipped_logs_total", "slsfwd_shipped_bytes_total", "slsfwd_ship_requests_total",
        "slsfwd_ship_retries_total", "slsfwd_ship_latency_seconds_bucket", "slsfwd_dead_letter_logs_total",
        "slsfwd_spool_dropped_lines_total", "slsfwd_lost_lines_total", "slsfwd_ship_blocked",
        "slsfwd_spool_write_blocked", "slsfwd_build_info",
    ):
        assert re.search(rf"(?<![\w:]){metric}(?![\w:])", exprs), metric
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    assert 'stage="raw"' in exprs and 'stage="compressed"' in exprs


def test_scrape_config_targets_the_metrics_port() -> None:
    text = SCRAPE.read_text()
    assert re.search(r"^\s+- job_name: slsfwd\s*$", text, re.M)
    assert '"127.0.0.1:9469"' in text


# -- promtool -------------------------------------------------------------------------------


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


@needs_promtool
def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_test_rules() -> None:
    result = _promtool("test", "rules", str(RULES_TEST.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_check_scrape_config() -> None:
    result = _promtool("check", "config", str(SCRAPE.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables filled in, as a recording rule for promtool."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "5m").replace("$instance", ".*")}
        for i, expr in enumerate(_exprs(_dashboard()))
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
