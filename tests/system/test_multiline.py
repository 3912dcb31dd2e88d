"""Stack traces through the real chain: journald → rsyslog → slsfwd's multiline processors → the stand-in.

Four services start at once and print to stdout (tests/system/data/print_app.py), a line every
10 ms: ``todo-java`` a real Java stack trace (data/java-trace.txt, from OpenJDK 17: ``Caused by:``,
``... N more``, a ``Suppressed:`` with its own indented ``Caused by:``), ``todo-python`` the real
chained traceback python3 prints for data/raise_chained.py ("During handling of the above
exception" and "The above exception was the direct cause"), ``todo-go`` a real Go panic with every
goroutine (data/go-panic.txt), each between normal lines, and ``todo-web`` normal lines all the
while, which journald interleaves with the others'. The agent has one multiline processor per
preset, scoped by ``apps``; ``todo-web`` is in the Java one's scope too, so its lines are another
source's lines inside the Java trace's group.

What must arrive: one log per exception whose ``msg`` is the trace's lines joined with ``\\n``, in
order, none missing, with ``multiline-lines`` their number; one log per normal line, unchanged.
The chain changes the text on the way, so the expected ``msg`` is the printed text as it reaches
the agent: journald stores each line of a service's stdout as an entry and drops empty lines,
and rsyslog's parser escapes control characters on receive, so a tab arrives as ``#011``. journald
also names each line's writer: the Python traceback, written by a child process of the service,
arrives with the child's pid as ``procid`` (another source than the service's normal lines), so
only ``flush_ms`` ends its group.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.system.conftest import System
from tests.system.container import CONF, INSIDE, Container, Standin, configure_agent

pytestmark = pytest.mark.system

DATA = Path(__file__).resolve().parent / "data"
DATA_INSIDE = INSIDE / "src" / "tests" / "system" / "data"
APPS = ("todo-java", "todo-python", "todo-go", "todo-web")
UNIT = "slsfwd-test-app@.service"
PROCESSORS = {"java-traces": "todo-java", "python-traces": "todo-python", "go-panics": "todo-go"}
RUN_FILE = "/run/slsfwd-test-app.env"  # RUN=<this run's id>, in the apps' normal lines

MULTILINE = """
[[processors]]
name = "java-traces"
type = "multiline"
preset = "java"
apps = ["todo-java", "todo-web"]

[[processors]]
name = "python-traces"
type = "multiline"
preset = "python"
apps = ["todo-python"]

[[processors]]
name = "go-panics"
type = "multiline"
preset = "go"
apps = ["todo-go"]
"""

APP_UNIT = f"""\
[Unit]
Description=an application of the multiline test: normal lines and a stack trace on stdout

[Service]
Type=oneshot
ExecStart=/usr/bin/python3 {DATA_INSIDE}/print_app.py %i $RUN
StandardOutput=journal
SyslogIdentifier=%i
Environment=PYTHONDONTWRITEBYTECODE=1
EnvironmentFile={RUN_FILE}
"""


def as_received(printed: str) -> list[str]:
    """The lines of ``printed`` as the agent receives them through journald and rsyslog."""
    return [line.replace("\t", "#011") for line in printed.splitlines() if line]


def normal_lines(app: str, run: str, count: int) -> list[str]:
    """print_app.py's normal lines."""
    return [f"{app} request {i} of {run}: GET /api/todos/{i} 200 {i + 3} ms" for i in range(count)]


def multiline_metrics(container: Container) -> dict[tuple[str, str], float]:
    """(metric, processor) -> value of the agent's slsfwd_multiline_* samples; a cut is keyed by its reason too."""
    text = container.run("curl", "-fsS", "http://127.0.0.1:9469/metrics").stdout
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("slsfwd_multiline_") and sample.name.endswith("_total"):
                key = "/".join(sample.labels[label] for label in ("processor", "reason") if label in sample.labels)
                found[sample.name, key] = sample.value
    return found


def what_arrived(standin: Standin, traces: dict[str, list[str]]) -> str:
    """For a failure: the logs each trace arrived as (how many lines, the first one)."""
    out = []
    for app, trace in traces.items():
        pieces = [
            msg.split("\n") for msg in (log["contents"]["msg"] for log in standin.logs())
            if msg.split("\n")[0] in trace
        ]
        out.append(f"{app}: its {len(trace)} lines arrived as {len(pieces)} logs:")
        out.extend(f"  {len(piece):3} lines from {piece[0][:70]!r}" for piece in pieces)
    return "\n".join(out)


def journal_order(container: Container, since: float) -> list[tuple[str, str]]:
    """(app, message) of the apps' journal entries since ``since``, in the journal's order."""
    out = container.run(
        "journalctl", "-o", "json", "--no-pager", "--since", f"@{since:.0f}",
        *(f"SYSLOG_IDENTIFIER={app}" for app in APPS),
    ).stdout
    entries = [json.loads(line) for line in out.splitlines()]
    return [(entry["SYSLOG_IDENTIFIER"], entry["MESSAGE"]) for entry in entries if isinstance(entry["MESSAGE"], str)]


@pytest.fixture()
def multiline_agent(system: System) -> Iterator[System]:
    """The agent with the three multiline processors and the apps' unit; the original config back afterwards."""
    container = system.container
    original = container.file(CONF).read_text()
    container.write(f"/etc/systemd/system/{UNIT}", APP_UNIT)
    container.run("systemctl", "daemon-reload")
    configure_agent(container, original + MULTILINE)
    try:
        yield system
    finally:
        configure_agent(container, original)


def test_one_log_per_exception_and_per_normal_line(multiline_agent: System) -> None:
    container, standin = multiline_agent.container, multiline_agent.standin
    run = f"run-{time.time_ns()}"
    ready = f"multiline agent ready {run}"
    container.run("logger", "-t", "todo-list", ready)  # rsyslog is connected to the restarted agent
    standin.wait_for_messages({ready}, timeout=20)

    python_printed = container.run("python3", f"{DATA_INSIDE}/raise_chained.py", check=False).stderr
    assert python_printed.startswith("Traceback (most recent call last):") and "During handling" in python_printed
    traces = {
        "todo-java": as_received((DATA / "java-trace.txt").read_text()),
        "todo-python": as_received(python_printed),
        "todo-go": as_received((DATA / "go-panic.txt").read_text()),
    }
    normal = {app: normal_lines(app, run, 60 if app == "todo-web" else 6) for app in APPS}
    container.write(RUN_FILE, f"RUN={run}\n")
    started = time.time()
    container.run("systemctl", "start", *(f"slsfwd-test-app@{app}.service" for app in APPS), timeout=60)
    expected = set(normal["todo-web"]) | {line for app in traces for line in normal[app]}
    expected |= {"\n".join(lines) for lines in traces.values()}
    try:
        standin.wait_for_messages(expected, timeout=20)
    except AssertionError as missing:
        raise AssertionError(f"{missing}\n{what_arrived(standin, traces)}") from None

    order = journal_order(container, started - 1)
    java_at = [i for i, (app, msg) in enumerate(order) if app == "todo-java" and msg.startswith(("\t", "Caused by"))]
    assert any(app == "todo-web" for app, _ in order[java_at[0] : java_at[-1]]), "journald did not interleave the apps"

    time.sleep(1.5)  # a stray piece of a trace, shipped after its group, would show up by now
    for app in APPS:
        logs = [log["contents"] for log in standin.logs() if log["contents"].get("app-name") == app]
        got = sorted(log["msg"] for log in logs)
        want = sorted(normal[app] + (["\n".join(traces[app])] if app in traces else []))
        unexpected = sorted(set(got) - set(want))[:4]
        assert got == want, f"{app}: {len(got)} logs, {len(want)} expected; unexpected: {unexpected}"
        for log in logs:
            lines = log["msg"].count("\n") + 1
            if lines > 1:
                assert log["multiline-lines"] == str(lines), log
            else:
                assert "multiline-lines" not in log, log  # a line that joins nothing ships as it is
    trace_log = next(log for log in standin.logs() if log["contents"]["msg"] == "\n".join(traces["todo-java"]))
    assert trace_log["contents"]["app-name"] == "todo-java" and trace_log["contents"]["hostname"] == container.name

    metrics = multiline_metrics(container)
    deadline = time.monotonic() + 10  # the counts may be published a little after the logs went out
    while not all(metrics.get(("slsfwd_multiline_groups_total", name)) for name in PROCESSORS):
        assert time.monotonic() < deadline, f"a processor's groups are not counted: {metrics}"
        time.sleep(0.2)
        metrics = multiline_metrics(container)
    for name, app in PROCESSORS.items():
        assert metrics.get(("slsfwd_multiline_groups_total", name)) == 1.0, (name, metrics)
        assert metrics.get(("slsfwd_multiline_joined_lines_total", name)) == float(len(traces[app])), (name, metrics)
    assert not any(value for (metric, _), value in metrics.items() if metric == "slsfwd_multiline_cut_groups_total")
