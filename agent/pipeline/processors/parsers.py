"""``parse_json``, ``parse_regex``, ``parse_kv``: a key's text becomes keys.

All three end the same way (:meth:`_Parser.merge`): each new key is the
``prefix`` plus the name found; a name SLS would refuse as a key (empty, or
beginning with ``__``) is not added and the log is counted as ``error``, with
the source key kept whatever ``keep_original`` says, so no data is lost; a key
the log already has keeps its value unless ``on_conflict = "overwrite"``.
Text that does not parse leaves the log unchanged and counts as ``unmatched``.
"""

from __future__ import annotations

import json

from .model import ERROR, PARSED, UNMATCHED, Log
from .options import (
    ParseJsonOptions,
    ParseKvOptions,
    ParseRegexOptions,
    ParserOptions,
    key_problem,
)
from .patterns import compile_pattern


class _Parser:
    writes = None  # the keys come from the data

    def __init__(self, name: str, options: ParserOptions) -> None:
        self.name = name
        self.key = options.key
        self.reads = frozenset((options.key,))
        self._prefix = options.prefix
        self._keep_original = options.keep_original
        self._overwrite = options.on_conflict == "overwrite"

    def apply(self, log: Log) -> str | None:
        text = log.get(self.key)
        pairs = self.extract(text) if text is not None else None
        if pairs is None:
            return UNMATCHED
        return self.merge(log, pairs)

    def extract(self, text: bytes) -> list[tuple[str, bytes]] | None:
        """The (name, value) pairs found in ``text``, or None if it does not parse."""
        raise NotImplementedError

    def merge(self, log: Log, pairs: list[tuple[str, bytes]]) -> str:
        # Without keep_original the source key is gone before merging, so a member of
        # the same name takes its place instead of being skipped as a conflict.
        original = None if self._keep_original else log.pop(self.key)
        refused = False
        for name, value in pairs:
            key = self._prefix + name
            if key_problem(key) is not None:
                refused = True
            elif self._overwrite or key not in log:
                log[key] = value
        if refused and original is not None and self.key not in log:
            log[self.key] = original  # a member could not become a key: keep the text it came from
        return ERROR if refused else PARSED


class ParseJson(_Parser):
    def __init__(self, name: str, options: ParseJsonOptions) -> None:
        super().__init__(name, options)

    def extract(self, text: bytes) -> list[tuple[str, bytes]] | None:
        if not text.lstrip().startswith(b"{"):
            return None  # most messages: no need to try
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the interpreter's stack
            return None
        if not isinstance(document, dict):
            return None
        return [(name, _json_value(value)) for name, value in document.items()]


def _json_value(value: object) -> bytes:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # A lone surrogate (\ud800 in the JSON) cannot be UTF-8: escape it as text, never fail.
    return text.encode("utf-8", "backslashreplace")


class ParseRegex(_Parser):
    def __init__(self, name: str, options: ParseRegexOptions) -> None:
        super().__init__(name, options)
        self._search = compile_pattern(options.pattern).search

    def extract(self, text: bytes) -> list[tuple[str, bytes]] | None:
        match = self._search(text)
        if match is None:
            return None
        return [(name.decode(), value) for name, value in match.groupdict().items() if value is not None]


class ParseKeyValue(_Parser):
    def __init__(self, name: str, options: ParseKvOptions) -> None:
        super().__init__(name, options)
        self._pair_sep = options.pair_separator
        self._kv_sep = options.kv_separator
        self._quote = options.quote

    def extract(self, text: bytes) -> list[tuple[str, bytes]] | None:
        pairs = split_pairs(text.decode("utf-8", "backslashreplace"), self._pair_sep, self._kv_sep, self._quote)
        return [(name, value.encode()) for name, value in pairs] or None


def split_pairs(text: str, pair_sep: str, kv_sep: str, quote: str) -> list[tuple[str, str]]:
    """``a=1 b="x y" c`` -> [("a", "1"), ("b", "x y")]; words without ``kv_sep`` are skipped."""
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] == pair_sep:
            i += 1
        start = i
        while i < n and text[i] not in (pair_sep, kv_sep):
            i += 1
        if i >= n or text[i] != kv_sep:
            continue  # a word that is not a pair
        name = text[start:i]
        i += 1
        if i < n and text[i] == quote:
            value, i = _quoted(text, i + 1, quote)
        else:
            value_start = i
            while i < n and text[i] != pair_sep:
                i += 1
            value = text[value_start:i]
        if name:
            pairs.append((name, value))
    return pairs


def _quoted(text: str, i: int, quote: str) -> tuple[str, int]:
    """The value of a quoted string starting after its opening quote, and where it ends.
    An unterminated quote takes the rest of the text."""
    out: list[str] = []
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in (quote, "\\"):
            out.append(text[i + 1])
            i += 2
        elif ch == quote:
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out), i
