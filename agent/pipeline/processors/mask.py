"""``mask``: replace what patterns find in some keys' values."""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, NamedTuple

from .model import MASKED, Log
from .options import MaskOptions
from .patterns import compile_pattern
from .presets import MASK_PRESETS

_SMALL_CHUNK = 4096  # bytes: below it, one search for every word costs less in any_word_finder


class _Rule(NamedTuple):
    pattern: Any
    replacement: bytes | Callable[[Any], bytes]
    words: frozenset[bytes]  # see presets.MaskPreset; empty: no words to look for
    worth_searching: Callable[[bytes], bool] | None


class Mask:
    def __init__(self, name: str, options: MaskOptions) -> None:
        self.name = name
        self.keys = options.keys
        self.reads = self.writes = frozenset(options.keys)
        rules = []
        if options.pattern is not None:
            rules.append(_Rule(compile_pattern(options.pattern), options.replacement.encode(), frozenset(), None))
        for preset in options.presets:
            pattern, replacement, words, worth_searching = MASK_PRESETS[preset]
            rules.append(_Rule(compile_pattern(pattern), replacement, frozenset(words), worth_searching))
        self._rules = tuple(rules)
        words = sorted({word for rule in rules for word in rule.words})
        # One pass for every preset's words: Python's re on a fixed alternation of literals (no
        # quantifier, so linear), cheaper than a substring test per word. Which words it found
        # decides which presets search.
        self._find_words = re.compile(b"|".join(map(re.escape, words))).findall if words else None
        self._lowered = self._find_words is not None or any(rule.worth_searching for rule in rules)
        # When every rule needs a word, a chunk without any of them needs nothing from this mask.
        self.words: tuple[bytes, ...] = tuple(words) if all(rule.words for rule in rules) else ()
        self._only_words = bool(self.words)
        self._chunk_clean = False  # see mark_chunk

    def mark_chunk(self, clean: bool) -> None:
        """Set by the chain set before a chunk's lines (and reset after): True when none of
        :attr:`words` is anywhere in the chunk, so no line of it can need this mask. (Only the
        transform's repair of bad bytes changes a line before it gets here, and the ``\\xNN``
        text that makes cannot spell any of the words.)"""
        self._chunk_clean = clean and self._only_words

    def apply(self, log: Log) -> str | None:
        masked = False
        for key in self.keys:
            value = log.get(key)
            if value is None:
                continue
            masked_value = self.mask(value)
            if masked_value is not value:
                log[key] = masked_value
                masked = True
        return MASKED if masked else None

    def mask(self, value: bytes) -> bytes:
        """``value`` masked, or the very same object if nothing was found."""
        if self._chunk_clean:
            return value
        lowered = value.lower() if self._lowered else value
        found = self._find_words(lowered) if self._find_words is not None else ()
        if not found and self._only_words:
            return value
        masked = value
        for pattern, replacement, words, worth_searching in self._rules:
            if words and words.isdisjoint(found):
                continue
            if worth_searching is not None and not worth_searching(lowered):
                continue
            masked = pattern.sub(replacement, masked)
        return value if masked == value else masked  # a function replacement may leave a match as it was


def any_word_finder(words: Iterable[bytes]) -> Callable[[bytes], bool] | None:
    """A test of a whole chunk: whether it may hold any of ``words`` (lower case) in any case
    (never False when it does); None if there are no words.

    A chunk of a few lines is one case-insensitive RE2 search for every word. In a bigger one,
    where the bytes cost more than the calls, RE2's DFA reading every byte is the cost; there it
    is one search per first byte of a word and case, ``p(?i:ass|wd)`` then ``P(?i:ass|wd)``: a
    pattern that starts with a literal byte is searched with ``memchr``, so most of the chunk is
    skipped in C (a third of the cost on the e2e corpus; cheaper than lowering the chunk too).
    """
    by_first: dict[bytes, list[bytes]] = {}
    for word in sorted(set(words)):
        by_first.setdefault(word[:1], []).append(word[1:])
    if not by_first:
        return None
    search_all = compile_pattern("(?i)" + "|".join(re.escape((f + r).decode()) for f, rs in by_first.items() for r in rs)).search
    searches = tuple(
        compile_pattern(re.escape(start.decode()) + "(?i:" + "|".join(re.escape(r.decode()) for r in rests) + ")").search
        for first, rests in by_first.items()
        for start in sorted({first.lower(), first.upper()})
    )

    def holds_any(chunk: bytes) -> bool:
        if len(chunk) < _SMALL_CHUNK:
            return search_all(chunk) is not None
        for search in searches:
            if search(chunk) is not None:
                return True
        return False

    return holds_any
