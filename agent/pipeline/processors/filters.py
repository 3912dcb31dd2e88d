"""``drop`` and ``keep``: decide a log's fate by one key."""

from __future__ import annotations

from typing import Callable

from .model import DROPPED, Log
from .options import FilterOptions
from .patterns import compile_pattern, literal_of


def condition(options: FilterOptions) -> Callable[[Log], bool]:
    """Whether a log meets the options' one condition."""
    key = options.key
    if options.equals is not None:
        wanted = options.equals.encode()
        return lambda log: log.get(key) == wanted
    if options.matches is not None:
        literal = literal_of(options.matches)
        if literal is not None:  # a plain word: a substring test costs a tenth of a search
            return lambda log: key in log and literal in log[key]
        search = compile_pattern(options.matches).search
        return lambda log: key in log and search(log[key]) is not None
    present = bool(options.present)
    return lambda log: (key in log) == present


class Filter:
    """Drops a log that meets the condition (``drop``), or one that does not (``keep``)."""

    writes: frozenset[str] = frozenset()

    def __init__(self, name: str, options: FilterOptions, *, keep: bool) -> None:
        self.name = name
        self.reads = frozenset((options.key,))
        self.reads_key = options.key
        self._meets = condition(options)
        self._keep = keep

    def apply(self, log: Log) -> str | None:
        return DROPPED if self._meets(log) is not self._keep else None

    def drops_value(self, value: bytes) -> bool:
        """Whether a log whose key has ``value`` is dropped (the message stage's shortcut)."""
        return self._meets({self.reads_key: value}) is not self._keep
