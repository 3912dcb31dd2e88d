"""The multiline state machines, line by line: which lines start a group, which continue it."""

from __future__ import annotations

import pytest

from agent.pipeline.processors.multiline import PRESETS, Rules, custom_rules


def walk(rules: Rules, lines: list[str]) -> list[str]:
    """Each line's fate: "start", "alone", "+" (joins the open group) or "end" (ends it, then starts/alone)."""
    fates, state = [], None
    for text in lines:
        msg = text.encode()
        if state is not None:
            following = rules.follow(state, msg)
            if following is not None:
                fates.append("+" + ("?" if following in rules.tentative else ""))
                state = following
                continue
        state = rules.start(msg)
        fates.append("alone" if state is None else "start")
    return fates


@pytest.mark.parametrize(("preset", "lines", "fates"), [
    ("java", ['Exception in thread "main" java.lang.NullPointerException', "#011at a.B.c(B.java:1)",
              "\tat a.B.d(B.java:2)", "Caused by: java.io.IOException: x", "#011... 12 more",
              "#011... 5 common frames omitted", "#011Suppressed: java.lang.Exception: y", "Started app"],
     ["start", "+", "+", "+", "+", "+", "+", "start"]),
    ("java", ["Caused by nothing", "atrium opened", "Sub: x"], ["start", "start", "start"]),
    ("java", ["java.lang.Exception: outer", "#011at A.b(A.java:1)", "#011Suppressed: java.lang.Exception: close",
              "#011#011at A.c(A.java:2)", "#011Caused by: java.io.IOException: Broken pipe", "#011#011... 4 more"],
     ["start", "+", "+", "+", "+", "+"]),
    ("python", ["Traceback (most recent call last):", '  File "a.py", line 1, in <module>', "    f()",
                "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)", "GET / 200"],
     ["start", "+", "+", "+", "alone"]),
    ("python", ["Traceback (most recent call last):", "#011File x", "KeyboardInterrupt", "", "",
                "hello"], ["start", "+", "+", "+?", "alone", "alone"]),
    ("python", ["Traceback (most recent call last):", "  x", "KeyError: 1", "",
                "The above exception was the direct cause of the following exception:", "",
                "Traceback (most recent call last):", "  y", "RuntimeError: z"],
     ["start", "+", "+", "+?", "+?", "+?", "+", "+", "+"]),
    ("python", ["Starting worker", "  indented but no traceback"], ["alone", "alone"]),
    # through journald, which stores no entry for an empty line
    ("python", ["Traceback (most recent call last):", "  x", "KeyError: 1",
                "During handling of the above exception, another exception occurred:",
                "Traceback (most recent call last):", "  y", "RuntimeError: z", "done"],
     ["start", "+", "+", "+?", "+", "+", "+", "alone"]),
    ("go", ["panic: runtime error: invalid memory address or nil pointer dereference",
            "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x47b5c1]", "",
            "goroutine 1 [running]:", "main.(*Server).Run(0xc000010000, {0x4b2a3f, 0x5})",
            "#011/srv/main.go:17 +0x21", "created by main.main in goroutine 1", "exit status 2", "served 3"],
     ["start", "+", "+?", "+", "+", "+", "+", "+", "alone"]),
    ("go", ["goroutine 7 [chan receive]:", "main.worker()", "Server listening on :8080"],
     ["start", "+", "alone"]),
])
def test_presets(preset: str, lines: list[str], fates: list[str]) -> None:
    assert walk(PRESETS[preset](), lines) == fates


def test_custom_rules_with_and_without_a_start_pattern() -> None:
    continuation_only = custom_rules(r"^\s", None)
    assert walk(continuation_only, ["a", " b", "c"]) == ["start", "+", "start"]
    with_start = custom_rules(r"^\s", r"^\d{4}-")
    assert walk(with_start, ["2026-12-06 boom", " b", "plain", " c"]) == ["start", "+", "alone", "alone"]
