"""Multiline grouping through the real transform, joiner and batcher, with a hand-driven clock.

Each case feeds chunks of ``0.1`` lines, delivers what the batcher closed, and
looks at the logs that came out and at which chunks were acknowledged.
"""

from __future__ import annotations

import pytest
from aliyun.log.proto import LogGroupRaw

from agent.pipeline.batch import Batch, Batcher, Destination, Ticket
from agent.pipeline.join import Joiner
from agent.pipeline.parse import build_format_table
from agent.pipeline.processors import ProcessorConfig, build_chain_set
from agent.pipeline.processors.options import MaskOptions, MultilineOptions, ParseJsonOptions
from agent.pipeline.transform import LineTransformer, Router

NOW = 1795591600


def line(msg: str, *, app: str = "todo-list", pid: str = "42", pri: str = "user.info") -> bytes:
    return f"0.1 sys_tag {NOW} 127.0.0.1 web-01 {pri} 0 {app} {pid} -  {msg}".encode()


JAVA_TRACE = [
    'Exception in thread "main" java.lang.IllegalStateException: boom',
    "#011at com.example.Todo.save(Todo.java:42)",
    "#011at com.example.Main.main(Main.java:7)",
    "Caused by: java.io.IOException: disk full",
    "#011at java.base/java.io.FileOutputStream.write(FileOutputStream.java:1)",
    "#011... 3 more",
    "#011Suppressed: java.lang.RuntimeException: close failed",
    "#011#011at com.example.Todo.close(Todo.java:50)",
]
PYTHON_TRACE = [
    "Traceback (most recent call last):",
    '  File "/srv/app.py", line 3, in <module>',
    "    load()",
    "KeyError: 'user'",
    "",
    "During handling of the above exception, another exception occurred:",
    "",
    "Traceback (most recent call last):",
    '  File "/srv/app.py", line 5, in <module>',
    '    raise ValueError("no user")',
    "ValueError: no user",
]
GO_PANIC = [
    "panic: runtime error: index out of range [5] with length 3",
    "",
    "goroutine 1 [running]:",
    "main.main()",
    "#011/srv/main.go:8 +0x1d",
    "exit status 2",
]


def multiline(name: str = "traces", **options) -> ProcessorConfig:
    options.setdefault("preset", "java")
    return ProcessorConfig(name, "multiline", (), MultilineOptions(**options))


class Harness:
    def __init__(self, configs: list[ProcessorConfig]) -> None:
        self.clock = 100.0
        self.closed: list[Batch] = []
        self.acked: list[int] = []
        self.shipped: list[dict[str, str]] = []
        self.batcher = Batcher(max_logs=4096, max_bytes=1 << 20, linger=2.0, on_close=self.closed.append,
                               clock=lambda: self.clock)
        self.joiner = Joiner(self.batcher, lambda: self.clock)
        self.transformer = LineTransformer(
            formats=build_format_table({}), router=Router(Destination("p", "ls", ""), {}), host_ip="10.0.0.1",
            batcher=self.batcher, clock=lambda: NOW, processors=build_chain_set(configs), joiner=self.joiner,
        )
        self._seq = 0

    def chunk(self, lines: list[bytes]) -> int:
        self._seq += 1
        ticket = Ticket(self._seq, self.acked.append)
        self.transformer.process(b"".join(raw + b"\n" for raw in lines), NOW, "127.0.0.1", ticket)
        ticket.seal()
        return self._seq

    def deliver(self) -> list[dict[str, str]]:
        """Close every batch and deliver it; the logs delivered by this call."""
        self.batcher.close_all()
        got = []
        for batch in self.closed:
            group = LogGroupRaw()
            group.ParseFromString(b"".join(batch.logs))
            got += [{c.Key: c.Value.decode() for c in entry.Contents} for entry in group.Logs]
            batch.release()
        self.closed.clear()
        self.shipped += got
        return got

    def later(self, seconds: float) -> None:
        self.clock += seconds
        self.joiner.flush_expired()


def msgs(logs: list[dict[str, str]], app: str = "todo-list") -> list[str]:
    return [log["msg"] for log in logs if log["app-name"] == app]


def test_a_java_trace_is_one_log_whatever_other_sources_write_in_between() -> None:
    h = Harness([multiline()])
    lines = [line(JAVA_TRACE[0]), line("GET / 200", app="nginx")]
    lines += [line(m) for m in JAVA_TRACE[1:4]] + [line("upstream slow", app="nginx")]
    lines += [line(m) for m in JAVA_TRACE[4:]] + [line("saved todo 7")]
    h.chunk(lines)
    h.later(1.5)
    logs = h.deliver()
    assert msgs(logs) == ["\n".join(JAVA_TRACE), "saved todo 7"]
    assert msgs(logs, "nginx") == ["GET / 200", "upstream slow"]
    trace = next(log for log in logs if log["msg"].startswith("Exception"))
    assert trace["multiline-lines"] == str(len(JAVA_TRACE))
    assert "multiline-lines" not in next(log for log in logs if log["msg"] == "saved todo 7")
    assert h.joiner.counts["traces", "groups"] == 1 and h.joiner.counts["traces", "joined_lines"] == 8


@pytest.mark.parametrize("preset, trace", [("python", PYTHON_TRACE), ("go", GO_PANIC), ("java", JAVA_TRACE)])
def test_each_preset_joins_its_trace_and_leaves_the_next_line_alone(preset: str, trace: list[str]) -> None:
    h = Harness([multiline(preset=preset)])
    h.chunk([line("starting")] + [line(m) for m in trace] + [line("request done in 3 ms")])
    h.later(1.5)
    assert msgs(h.deliver()) == ["starting", "\n".join(trace), "request done in 3 ms"]


@pytest.mark.parametrize("tail, expected_tail", [
    ([""], [""]),  # a blank line after the exception: not part of it, given back
    (["", "During handling of the above exception, another exception occurred:", "", "next request"],
     ["", "During handling of the above exception, another exception occurred:", "", "next request"]),
])
def test_lines_that_only_might_have_continued_a_python_trace_ship_alone(tail: list[str], expected_tail: list[str]) -> None:
    h = Harness([multiline(preset="python")])
    h.chunk([line(m) for m in PYTHON_TRACE[:4] + tail])
    h.later(1.5)
    assert msgs(h.deliver()) == ["\n".join(PYTHON_TRACE[:4])] + expected_tail


def test_a_trace_split_across_chunks_is_one_log_and_its_chunks_wait_for_it() -> None:
    h = Harness([multiline(apps=("todo-list",))])
    first = h.chunk([line(m) for m in JAVA_TRACE[:3]] + [line("GET /", app="nginx")])
    assert msgs(h.deliver(), "nginx") == ["GET /"]
    assert h.acked == []  # the open trace holds its chunk
    second = h.chunk([line(m) for m in JAVA_TRACE[3:]] + [line("next")])
    assert msgs(h.deliver()) == ["\n".join(JAVA_TRACE)]
    assert h.acked == [first]  # "next" may still be continued: the second chunk waits for it
    h.later(1.5)
    assert msgs(h.deliver()) == ["next"]
    assert sorted(h.acked) == [first, second]


def test_the_timer_ships_an_open_group_flush_ms_after_its_last_line() -> None:
    h = Harness([multiline(flush_ms=500)])
    h.chunk([line(m) for m in JAVA_TRACE[:2]])
    h.later(0.4)
    h.chunk([line(JAVA_TRACE[2])])
    h.later(0.4)  # 0.8 s after the first line, 0.4 s after the last
    assert h.deliver() == []
    h.later(0.2)
    assert msgs(h.deliver()) == ["\n".join(JAVA_TRACE[:3])]
    assert h.joiner.counts["traces", "timer_flushes"] == 1
    assert h.acked == [1, 2]


@pytest.mark.parametrize("options, sizes, cut", [
    ({"max_lines": 3}, [3, 3, 2], ("traces", "cut_max_lines")),
    ({"max_bytes": 1024}, [14, 6], ("traces", "cut_max_bytes")),
])
def test_a_group_past_a_cap_is_cut_and_counted_never_dropped(options: dict, sizes: list[int], cut: tuple) -> None:
    frames = [f"#011at com.example.Frame{i:02}.call(Frame.java:{i})" + "x" * 30 for i in range(19)]
    if options.get("max_lines"):
        frames = frames[:7]
    h = Harness([multiline(**options)])
    h.chunk([line("boom")] + [line(f) for f in frames])
    h.later(1.5)
    got = msgs(h.deliver())
    assert [len(m.split("\n")) for m in got] == sizes
    assert "\n".join(got).split("\n") == ["boom"] + frames
    assert h.joiner.counts[cut] == len(sizes) - 1


def test_lines_of_another_procid_or_app_do_not_join() -> None:
    h = Harness([multiline(apps=("todo-list",))])
    h.chunk([line(JAVA_TRACE[0]), line(JAVA_TRACE[1], pid="43"), line(JAVA_TRACE[2]),
             line(JAVA_TRACE[1], app="billing")])
    h.later(1.5)
    logs = h.deliver()
    by_pid = sorted((log["procid"], log["msg"]) for log in logs if log["app-name"] == "todo-list")
    assert by_pid == [("42", "\n".join([JAVA_TRACE[0], JAVA_TRACE[2]])), ("43", JAVA_TRACE[1])]
    assert msgs(logs, "billing") == [JAVA_TRACE[1]]  # not in the processor's apps


def test_the_group_keeps_the_first_lines_keys_even_when_pri_text_changes() -> None:
    h = Harness([multiline()])
    h.chunk([line(JAVA_TRACE[0], pri="user.err"), line(JAVA_TRACE[1], pri="user.info")])
    h.later(1.5)
    (log,) = h.deliver()
    assert log["pri-text"] == "user.err" and log["msg"] == "\n".join(JAVA_TRACE[:2])


def test_other_processors_see_the_joined_message() -> None:
    h = Harness([ProcessorConfig("secrets", "mask", (), MaskOptions(presets=("password",))), multiline()])
    h.chunk([line("login failed"), line("#011at Auth.check password=hunter2 failed"), line("ok")])
    h.later(1.5)
    assert msgs(h.deliver()) == ["login failed\n#011at Auth.check password=*** failed", "ok"]


def test_the_readable_path_joins_the_same_way() -> None:
    lines = [line(m) for m in JAVA_TRACE] + [line("GET /", app="nginx"), line("done")]
    fast = Harness([multiline()])
    # parse_json makes the chain not separable: every line takes the readable path
    readable = Harness([multiline(), ProcessorConfig("json", "parse_json", (), ParseJsonOptions())])
    for h in (fast, readable):
        h.chunk(lines[:4])
        h.chunk(lines[4:])
        h.later(1.5)
        h.deliver()
    assert sorted(map(sorted, (d.items() for d in fast.shipped))) == sorted(
        map(sorted, (d.items() for d in readable.shipped)))
    assert msgs(readable.shipped) == ["\n".join(JAVA_TRACE), "done"]


def test_lines_out_of_scope_ship_exactly_as_without_the_processor() -> None:
    lines = [line("GET / 200", app="nginx"), line("#011at not.a.Trace(X.java:1)", app="nginx")]
    with_it, without = Harness([multiline(apps=("todo-list",))]), Harness([])
    for h in (with_it, without):
        h.chunk(lines)
    assert with_it.batcher.open_bytes == without.batcher.open_bytes
    assert with_it.deliver() == without.deliver()


def test_a_reload_and_shutdown_ship_open_groups() -> None:
    h = Harness([multiline()])
    h.chunk([line(m) for m in JAVA_TRACE[:2]])
    h.transformer.reconfigure(formats=build_format_table({}), router=Router(Destination("p", "ls", ""), {}),
                              host_ip="10.0.0.1", processors=build_chain_set([multiline()]))
    assert msgs(h.deliver()) == ["\n".join(JAVA_TRACE[:2])]
    h.chunk([line(JAVA_TRACE[0])])
    h.joiner.flush_all()
    assert msgs(h.deliver()) == [JAVA_TRACE[0]]
    assert h.acked == [1, 2]


def test_replaying_unacknowledged_chunks_joins_the_trace_again() -> None:
    chunks = [[line(m) for m in JAVA_TRACE[:3]], [line(m) for m in JAVA_TRACE[3:]] + [line("after")]]
    before = Harness([multiline()])
    for lines in chunks:
        before.chunk(lines)
    assert before.acked == []  # killed here: nothing acknowledged, both chunks replay
    after = Harness([multiline()])
    for lines in chunks:
        after.chunk(lines)
    after.later(1.5)
    assert msgs(after.deliver()) == ["\n".join(JAVA_TRACE), "after"]
