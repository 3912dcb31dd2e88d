"""``mask``: replace what patterns find in some keys' values."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from .model import MASKED, Log
from .options import MaskOptions
from .patterns import compile_pattern
from .presets import MASK_PRESETS


class _Rule(NamedTuple):
    pattern: Any
    replacement: bytes | Callable[[Any], bytes]
    worth_searching: Callable[[bytes], bool] | None  # see presets.MaskPreset; None: always search


class Mask:
    def __init__(self, name: str, options: MaskOptions) -> None:
        self.name = name
        self.keys = options.keys
        self.reads = self.writes = frozenset(options.keys)
        rules = []
        if options.pattern is not None:
            rules.append(_Rule(compile_pattern(options.pattern), options.replacement.encode(), None))
        for preset in options.presets:
            pattern, replacement, worth_searching = MASK_PRESETS[preset]
            rules.append(_Rule(compile_pattern(pattern), replacement, worth_searching))
        self._rules = tuple(rules)
        self._prefiltered = any(rule.worth_searching is not None for rule in rules)

    def apply(self, log: Log) -> str | None:
        masked = False
        for key in self.keys:
            value = log.get(key)
            if value is None:
                continue
            lowered = value.lower() if self._prefiltered else value
            masked_value = value
            for pattern, replacement, worth_searching in self._rules:
                if worth_searching is not None and not worth_searching(lowered):
                    continue
                masked_value = pattern.sub(replacement, masked_value)
            if masked_value != value:  # a function replacement may leave a match as it was
                log[key] = masked_value
                masked = True
        return MASKED if masked else None
