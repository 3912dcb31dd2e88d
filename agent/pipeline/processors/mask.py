"""``mask``: replace what patterns find in some keys' values."""

from __future__ import annotations

from typing import Any, Callable

from .model import MASKED, Log
from .options import MaskOptions
from .patterns import compile_pattern
from .presets import MASK_PRESETS


class Mask:

    def __init__(self, name: str, options: MaskOptions) -> None:
        self.name = name
        self.keys = options.keys
        self.reads = self.writes = frozenset(options.keys)
        rules: list[tuple[Any, str | Callable[[Any], str]]] = []
        if options.pattern is not None:
            rules.append((compile_pattern(options.pattern), options.replacement))
        for preset in options.presets:
            pattern, replacement = MASK_PRESETS[preset]
            rules.append((compile_pattern(pattern), replacement))
        self._rules = rules

    def apply(self, log: Log) -> str | None:
        masked = False
        for key in self.keys:
            value = log.get(key)
            if value is None:
                continue
            masked_value = value
            for pattern, replacement in self._rules:
                masked_value = pattern.sub(replacement, masked_value)
            if masked_value != value:  # a function replacement may leave a match as it was
                log[key] = masked_value
                masked = True
        return MASKED if masked else None
