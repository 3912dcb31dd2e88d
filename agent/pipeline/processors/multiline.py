"""Which lines of one source make one event: the rules of the ``multiline`` processor.

A source's lines go through a small state machine (as Fluent Bit's multiline
parsers do). A line that no open group takes is looked at by :meth:`Rules.start`:
it either starts a group in some state, or stands alone (it can never be
continued, so it need not wait for the next line). A group in a state takes the
source's next line if one of the state's patterns matches it
(:meth:`Rules.follow`); otherwise the group is complete.

Some states are *tentative*: the lines that led into them (a blank line after a
Python traceback, say) belong to the group only if more of it follows. When a
group ends in a tentative state, those lines are given back and ship alone.

rsyslog escapes control characters on receive: a tab arrives as ``#011``, so
the presets take ``#011`` wherever they take white space.

Preset patterns are ours, written for Python's ``re`` (a failing match costs a
fraction of RE2's call overhead, and they cannot backtrack badly); patterns from
a user's config are RE2, as for every other processor.

Pure: no I/O, no clocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .patterns import compile_pattern

if TYPE_CHECKING:
    from .options import MultilineOptions

Matcher = Callable[[bytes], Any]  # a compiled pattern's match/search: truthy when the line matches

_WS = rb"(?:\s|#011)"  # white space as rsyslog forwards it
_WS_FIRST = b" \t\n\r\x0b\x0c#"  # the bytes _WS may begin with
ANY_FIRST = bytes(range(256))


@dataclass(frozen=True)
class Rules:
    """A multiline state machine: what starts a group and what each state takes next."""

    starts: tuple[tuple[Matcher, str], ...]  # (pattern, state) tried in order on a line no group took
    default_state: str | None  # the state of any other line; None: such a line stands alone
    follows: Mapping[str, tuple[tuple[Matcher, str], ...]]  # state -> (pattern, next state), in order
    tentative: frozenset[str] = frozenset()
    # Every byte a line that some state takes may begin with (an empty line passes too): a line
    # whose first byte is not here continues nothing, and costs no pattern.
    follow_first: bytes = ANY_FIRST
    start_first: bytes = ANY_FIRST  # the same for lines that a start pattern matches

    def start(self, msg: bytes) -> str | None:
        """The state of a group that ``msg`` starts, or None: it stands alone."""
        for matches, state in self.starts:
            if matches(msg):
                return state
        return self.default_state

    def follow(self, state: str, msg: bytes) -> str | None:
        """The group's next state if it takes ``msg``, else None (the group is complete)."""
        for matches, next_state in self.follows.get(state, ()):
            if matches(msg):
                return next_state
        return None


def _re(pattern: bytes) -> Matcher:
    return re.compile(pattern).match


def _java() -> Rules:
    frame = _re(
        rb"%s+at |%s*\.\.\. \d+ (?:more|common frames omitted)|%s*Caused by: |%s*Suppressed: " % (_WS, _WS, _WS, _WS)
    )
    return Rules(
        starts=(), default_state="event", follows={"event": ((frame, "event"),)}, follow_first=_WS_FIRST + b".CS",
    )


def _python() -> Rules:
    traceback = _re(rb"Traceback \(most recent call last\):")
    indented = _re(_WS)
    exception = _re(rb"[A-Za-z_][\w.]*(?::.*)?$")  # ValueError: bad value / KeyboardInterrupt
    blank = _re(rb"%s*$" % _WS)
    chained = _re(rb"During handling of the above exception|The above exception was the direct cause")
    return Rules(
        starts=((traceback, "frames"),),
        start_first=b"T",
        default_state=None,
        # The blank lines around "During handling ..." are optional: journald stores no entry for an
        # empty line, so through journald they never arrive.
        follows={
            "frames": ((indented, "frames"), (exception, "raised")),
            "raised": ((blank, "gap"), (chained, "chained")),
            "gap": ((chained, "chained"),),
            "chained": ((blank, "chained_gap"), (traceback, "frames")),
            "chained_gap": ((traceback, "frames"),),
        },
        tentative=frozenset({"gap", "chained", "chained_gap"}),
    )


def _go() -> Rules:
    begins = _re(rb"panic: |fatal error: |goroutine \d+ \[[^\]]*\]:")
    blank = _re(rb"%s*$" % _WS)
    # goroutine headers, function lines like main.(*T).f(0x1, {0x2}), indented file lines, and the tail
    trace = _re(
        rb"goroutine \d+ \[|%s|\S+\(.*\)$|created by |\[signal |exit status \d+|panic: |fatal error: |\[recovered\]"
        % _WS
    )
    takes = ((blank, "blank"), (trace, "trace"))
    return Rules(
        starts=((begins, "trace"),), start_first=b"pfg", default_state=None,
        follows={"trace": takes, "blank": takes}, tentative=frozenset({"blank"}),
    )


PRESETS: dict[str, Callable[[], Rules]] = {"java": _java, "python": _python, "go": _go}


def custom_rules(continuation: str, start: str | None) -> Rules:
    """Rules from a user's RE2 patterns (searched, so anchor them with ``^``)."""
    follows = {"event": ((compile_pattern(continuation).search, "event"),)}
    if start is None:
        return Rules(starts=(), default_state="event", follows=follows)
    return Rules(starts=((compile_pattern(start).search, "event"),), default_state=None, follows=follows)


class Multiline:
    """One ``multiline`` processor: its rules, the apps it is for, and its limits."""

    def __init__(self, name: str, options: "MultilineOptions") -> None:
        self.name = name
        if options.preset is not None:
            self.rules = PRESETS[options.preset]()
        else:
            assert options.continuation is not None
            self.rules = custom_rules(options.continuation, options.start)
        self.apps = frozenset(app.encode() for app in options.apps)
        self.flush_s = options.flush_ms / 1000.0
        self.max_lines = options.max_lines
        self.max_bytes = options.max_bytes

    def applies_to(self, app_name: bytes) -> bool:
        return not self.apps or app_name in self.apps
