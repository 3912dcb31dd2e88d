"""Patterns for processors, compiled with RE2 (google-re2).

RE2 matches in time linear in the text, whatever the pattern, so a pattern in
a user's config cannot stall the agent on a hostile line (Python's ``re``
backtracks: ``(a+)+b`` on 30 ``a`` takes seconds). The price: RE2 has no
backreferences and no look-around; such a pattern is refused at ``check``.
RE2 is imported only when a config has patterns, so an agent without
processors does not carry it. Patterns are compiled for ``bytes`` (UTF-8), the
form values have on the way to the wire, so no line is decoded to be matched.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


class PatternError(ValueError):
    """The pattern cannot be used; the message says why."""


@lru_cache(maxsize=None)
def _options() -> Any:
    import re2

    options = re2.Options()
    options.log_errors = False  # the config error says it; RE2 would also print to stderr
    return options


_META = frozenset("\\.^$|?*+()[]{}")


def literal_of(pattern: str) -> bytes | None:
    """The pattern's text if it has no special characters (then ``in`` finds it, faster), else None."""
    return None if _META.intersection(pattern) else pattern.encode()


@lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> Any:
    """The compiled RE2 pattern for UTF-8 ``bytes`` (``search``, ``sub``, ``groupindex`` as in ``re``),
    or PatternError."""
    import re2

    try:
        return re2.compile(pattern.encode(), options=_options())
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(f"not a pattern RE2 accepts ({detail}); RE2 has no backreferences or look-around") from None
