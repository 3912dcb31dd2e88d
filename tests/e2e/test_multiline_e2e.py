"""The multiline processor in the real agent: kill -9 mid-trace, the flush timer, the caps, SIGTERM, chunks.

``slsfwd run`` gets rsyslog's lines over TCP and ships to the PutLogs stand-in. The traces are
real (tests/system/data/README.md): a Java stack trace from OpenJDK 17 with its tabs as rsyslog
forwards them (``#011``), and the chained traceback python3 prints for
tests/system/data/raise_chained.py, made by the Python running these tests.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import REPO
from tests.support.agent_proc import AgentProcess, sls_section, wait_until
from tests.support.standin import PutLogsStandin

pytestmark = pytest.mark.e2e

DATA = REPO / "tests" / "system" / "data"
JAVA = [line.replace("\t", "#011") for line in (DATA / "java-trace.txt").read_text().splitlines()]


def python_traceback() -> list[str]:
    """The lines python3 prints for raise_chained.py's uncaught chained exception, blank lines included."""
    done = subprocess.run([sys.executable, str(DATA / "raise_chained.py")], capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "During handling of the above exception" in done.stderr, done.stderr
    return done.stderr.splitlines()


def multiline(preset: str, app: str, **options: int) -> str:
    extra = "".join(f"{key} = {value}\n" for key, value in options.items())
    return f'[[processors]]\nname = "traces"\ntype = "multiline"\npreset = "{preset}"\napps = ["{app}"]\n{extra}'


def line(msg: str, app: str = "todo-java", procid: str = "4242") -> bytes:
    return f"0.1 sys_tag {int(time.time())} 127.0.0.1 web-1 user.err 0 {app} {procid} -  {msg}\n".encode()


def lines(msgs: list[str], app: str = "todo-java") -> bytes:
    return b"".join(line(msg, app) for msg in msgs)


def msgs_of(standin: PutLogsStandin, app: str) -> list[str]:
    return [log.contents["msg"] for log in standin.logs if log.contents.get("app-name") == app]


def trace_ended(standin: PutLogsStandin, app: str = "todo-java", trace: list[str] = JAVA) -> bool:
    return any(msg.endswith(trace[-1]) for msg in msgs_of(standin, app))


def pieces(msgs: list[str]) -> str:
    """For a failure: how many lines each log holds, and its first."""
    split = [msg.split("\n") for msg in msgs]
    return "; ".join(f"{len(run)} lines from {run[0][:50]!r}" for run in split)


def assert_every_frame_in_order(logs: list[str], trace: list[str]) -> None:
    """Each log is a run of consecutive trace lines (text intact, in order); together they hold every line.

    The runs are read in the order they arrived; a run may repeat lines an earlier one held
    (at-least-once), but none may skip one.
    """
    covered = 0
    for msg in logs:
        run = msg.split("\n")
        starts = [i for i in range(len(trace)) if trace[i : i + len(run)] == run]
        assert starts, f"a log that is not a run of the trace's lines: {msg!r}"
        assert min(starts) <= covered, f"lines {covered}..{min(starts) - 1} of the trace are missing before {run[0]!r}"
        covered = max(covered, min(starts) + len(run))
    assert covered == len(trace), f"the trace's lines from {covered} on never arrived: {trace[covered:][:3]}"


async def test_kill_9_while_a_trace_is_half_received_loses_no_frame(tmp_path: Path) -> None:
    """kill -9 after the first half of a Java trace was spooled, restart, then the second half.

    What arrives: the first half's group was still open at the kill (``flush_ms`` is 5 s), so
    nothing of it had been shipped and its spool chunk was not acknowledged. The restarted agent
    replays that chunk and groups its lines again; the second half arrives well within
    ``flush_ms`` of the replay from the same sender, so it continues that group, and the trace
    arrives as ONE log, whole and in order. (Had the second half come later than ``flush_ms``,
    the first half would have shipped alone and the second half as its own log: still every
    frame, in order, which is asserted first.)
    """
    half = len(JAVA) // 2
    async with PutLogsStandin() as standin:
        agent = AgentProcess(tmp_path, sls=sls_section(standin), extra=multiline("java", "todo-java", flush_ms=5000))
        await agent.start()
        await agent.send(lines(["GET /api/todos 200 before the trace"] + JAVA[:half]))
        await agent.wait_for_metric("slsfwd_input_lines_total", half + 1)  # read and appended to the spool
        await asyncio.sleep(0.3)
        await agent.kill()
        assert not any("#011at " in msg for msg in msgs_of(standin, "todo-java")), "the open group was shipped"

        await agent.start()
        await agent.send(lines(JAVA[half:] + ["GET /api/todos 200 after the trace"]))
        await wait_until(lambda: trace_ended(standin), 20, "the trace's last line")
        await asyncio.sleep(0.5)
        assert await agent.stop() == 0, agent.stderr()  # ships the line after the trace, still open

    got = msgs_of(standin, "todo-java")
    assert_every_frame_in_order([msg for msg in got if "GET /api/todos" not in msg], JAVA)
    assert got.count("\n".join(JAVA)) == 1, f"not one log of the whole trace: {pieces(got)}"
    assert set(got) == {"\n".join(JAVA), "GET /api/todos 200 before the trace", "GET /api/todos 200 after the trace"}
    assert not standin.rejections


async def test_a_group_ships_flush_ms_after_its_last_line(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        extra = multiline("java", "todo-java", flush_ms=1500)
        async with AgentProcess(tmp_path, sls=sls_section(standin), extra=extra, linger_ms=50) as agent:
            sent = time.monotonic()
            await agent.send(lines(JAVA))
            await agent.wait_for_metric("slsfwd_input_lines_total", len(JAVA))
            await asyncio.sleep(max(0.0, sent + 1.3 - time.monotonic()))
            early = [log.contents["msg"] for log in standin.logs]
            assert not early, f"shipped before flush_ms: {pieces(early)}"
            await standin.wait_for_logs(1, timeout=10)
            await agent.wait_for_metric("slsfwd_multiline_timer_flushes_total", 1, timeout=5, processor="traces")
            timer_flushes = agent.metric("slsfwd_multiline_timer_flushes_total", processor="traces")
            joined = agent.metric("slsfwd_multiline_joined_lines_total", processor="traces")
    assert [log.contents["msg"] for log in standin.logs] == ["\n".join(JAVA)]
    assert standin.logs[0].contents["multiline-lines"] == str(len(JAVA))
    assert (timer_flushes, joined) == (1.0, float(len(JAVA)))


@pytest.mark.parametrize(("cap", "value"), [("max_lines", 10), ("max_bytes", 1024)])
async def test_a_group_past_a_cap_is_cut_there_and_counted_never_dropped(tmp_path: Path, cap: str, value: int) -> None:
    """Every cut log is as full as the cap allows (the next line would pass it); the rest of the
    trace goes on in the next log; each cut is counted with its reason."""
    end = "GET /api/todos 200 after the trace"
    async with PutLogsStandin() as standin:
        extra = multiline("java", "todo-java", **{cap: value})
        async with AgentProcess(tmp_path, sls=sls_section(standin), extra=extra) as agent:
            await agent.send(lines(JAVA + [end]))
            await wait_until(lambda: trace_ended(standin), 15, "the trace's last line")
            cuts = agent.metric("slsfwd_multiline_cut_groups_total", processor="traces", reason=cap)
            other = agent.metric("slsfwd_multiline_cut_groups_total", processor="traces",
                                 reason=({"max_lines", "max_bytes"} - {cap}).pop())
    got = msgs_of(standin, "todo-java")
    assert got[-1] == end  # shipped at SIGTERM
    logs = got[:-1]
    assert "\n".join(logs).split("\n") == JAVA, f"a line lost, repeated or out of order: {pieces(logs)}"
    size = (lambda msg: msg.count("\n") + 1) if cap == "max_lines" else (lambda msg: len(msg.encode()))
    assert all(size(msg) <= value for msg in logs), pieces(logs)
    for msg, following in itertools.pairwise(logs):
        assert size(msg + "\n" + following.split("\n")[0]) > value, f"cut before the cap was reached: {pieces(logs)}"
    assert len(logs) > 2 and (cuts, other) == (float(len(logs) - 1), 0.0)
    for log in standin.logs[:-1]:
        count = log.contents["msg"].count("\n") + 1
        assert log.contents.get("multiline-lines") == (str(count) if count > 1 else None)


async def test_sigterm_flushes_an_open_group(tmp_path: Path) -> None:
    async with PutLogsStandin() as standin:
        agent = AgentProcess(tmp_path, sls=sls_section(standin), extra=multiline("java", "todo-java", flush_ms=60000))
        await agent.start()
        await agent.send(lines(JAVA))
        await agent.wait_for_metric("slsfwd_input_lines_total", len(JAVA))
        await asyncio.sleep(0.5)
        # The group is open: nothing has ended it, flush_ms is a minute.
        assert standin.log_count == 0, pieces([log.contents["msg"] for log in standin.logs])
        assert await agent.stop() == 0, agent.stderr()
    assert [log.contents["msg"] for log in standin.logs] == ["\n".join(JAVA)]
    assert standin.logs[0].contents["multiline-lines"] == str(len(JAVA))


@pytest.mark.parametrize("blank_lines", ["sent", "dropped"])
async def test_a_traceback_split_across_two_writes_far_apart_is_one_log(tmp_path: Path, blank_lines: str) -> None:
    """The first write ends in the middle of a line; the second comes 1.5 s later on the same
    connection, after the first one's lines were appended to the spool as a chunk of their own.
    The chained traceback's blank lines are sent as empty messages, or left out as journald
    leaves them out (it stores no entry for an empty line of a service's stdout)."""
    traceback = [msg for msg in python_traceback() if msg or blank_lines == "sent"]
    payload = lines(traceback, app="todo-python")
    cut_line = traceback.index("During handling of the above exception, another exception occurred:")
    whole_lines = sum(len(line("", "todo-python")) + len(msg.encode()) for msg in traceback[:cut_line])
    cut = whole_lines + len(line("", "todo-python")) - 1 + 10  # ten bytes into the message of line cut_line
    end = "todo-python request 7: GET /api/todos 200"
    async with PutLogsStandin() as standin:
        extra = multiline("python", "todo-python", flush_ms=5000)
        async with AgentProcess(tmp_path, sls=sls_section(standin), extra=extra) as agent:
            _, writer = await asyncio.open_connection("127.0.0.1", agent.port)
            writer.write(payload[:cut])
            await writer.drain()
            await agent.wait_for_metric("slsfwd_input_lines_total", cut_line)
            await asyncio.sleep(1.5)
            assert agent.metric("slsfwd_input_lines_total") == cut_line  # the cut line waits for its end
            writer.write(payload[cut:] + line(end, "todo-python"))
            await writer.drain()
            await wait_until(lambda: end in msgs_of(standin, "todo-python"), 15, "the line after the traceback")
            writer.close()
            await writer.wait_closed()
            groups = agent.metric("slsfwd_multiline_groups_total", processor="traces")
            joined = agent.metric("slsfwd_multiline_joined_lines_total", processor="traces")
    got = msgs_of(standin, "todo-python")
    assert got == ["\n".join(traceback), end], pieces(got)
    assert standin.logs[0].contents["multiline-lines"] == str(len(traceback))
    assert (groups, joined) == (1.0, float(len(traceback)))
