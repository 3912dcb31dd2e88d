"""Each processor kind's options, typed, with every default visible.

``[[processors]]`` tables are read into :class:`ProcessorConfig`: ``name``,
``type`` and ``tags`` are common; every other key of the table belongs to the
kind's options class below (an unknown key is a config error, as everywhere).
``problems()`` checks what types alone cannot: exactly one condition, a
pattern RE2 compiles, a known preset, keys SLS accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .patterns import PatternError, compile_pattern
from .multiline import PRESETS as MULTILINE_PRESETS
from .presets import MASK_PRESETS

CONFLICT_POLICIES = ("skip", "overwrite")


def key_problem(key: str) -> str | None:
    """Why SLS would not take ``key`` as a content key, or None."""
    if not key:
        return "must not be empty"
    if key.startswith("__"):
        return "must not begin with '__' (SLS reserves those: __time__, __source__, __topic__, __tag__:…)"
    if len(key.encode()) > 128:
        return "must be at most 128 bytes"
    return None


def _check_pattern(where: str, pattern: str, problems: list[str], *, named_groups: bool = False) -> None:
    try:
        compiled = compile_pattern(pattern)
    except PatternError as exc:
        problems.append(f"{where}: {exc}")
        return
    if named_groups and not compiled.groupindex:
        problems.append(f"{where}: needs at least one named group, (?P<name>...): each becomes a key")


def _check_keys(where: str, keys: tuple[str, ...] | list[str], problems: list[str]) -> None:
    for i, key in enumerate(keys):
        why = key_problem(key)
        if why:
            problems.append(f"{where}[{i}]: {why}")


@dataclass(frozen=True)
class FilterOptions:
    """``drop`` / ``keep``: give exactly one of ``equals``, ``matches``, ``present``."""

    key: str
    equals: str | None = None  # the value, exactly
    matches: str | None = None  # an RE2 pattern, searched in the value
    present: bool | None = None  # true: the key is there; false: it is not

    def problems(self, where: str) -> list[str]:
        problems: list[str] = []
        given = [name for name in ("equals", "matches", "present") if getattr(self, name) is not None]
        if len(given) != 1:
            problems.append(f"{where.rstrip('.')}: give exactly one of equals, matches, present (got {', '.join(given) or 'none'})")
        if self.matches is not None:
            _check_pattern(f"{where}matches", self.matches, problems)
        return problems


@dataclass(frozen=True)
class MaskOptions:
    """``mask``: a ``pattern`` and its ``replacement``, or ``presets`` by name, or both."""

    keys: tuple[str, ...] = ("msg",)
    pattern: str | None = None  # RE2; the replacement may use \\1 or \\g<name>
    replacement: str = "***"
    presets: tuple[str, ...] = ()  # names from MASK_PRESETS: password, bearer_token, ...

    def problems(self, where: str) -> list[str]:
        problems: list[str] = []
        if self.pattern is None and not self.presets:
            problems.append(f"{where.rstrip('.')}: give a pattern or presets")
        if self.pattern is not None:
            _check_pattern(f"{where}pattern", self.pattern, problems)
        for i, name in enumerate(self.presets):
            if name not in MASK_PRESETS:
                problems.append(f"{where}presets[{i}]: unknown preset {name!r}; known: {', '.join(MASK_PRESETS)}")
        if not self.keys:
            problems.append(f"{where}keys: must name at least one key")
        return problems


@dataclass(frozen=True)
class AddFieldsOptions:
    """``add_fields``: static keys and values."""

    fields: dict[str, str]
    overwrite: bool = False  # false: a key the log already has keeps its value

    def problems(self, where: str) -> list[str]:
        problems: list[str] = []
        _check_keys(f"{where}fields", list(self.fields), problems)
        return problems


@dataclass(frozen=True)
class RenameOptions:
    """``rename``: old key = new key. A new key the log already has is replaced."""

    fields: dict[str, str]

    def problems(self, where: str) -> list[str]:
        problems: list[str] = []
        _check_keys(f"{where}fields", list(self.fields.values()), problems)
        return problems


@dataclass(frozen=True)
class RemoveOptions:
    """``remove``: keys to delete."""

    keys: tuple[str, ...]

    def problems(self, where: str) -> list[str]:
        return [] if self.keys else [f"{where}keys: must name at least one key"]


@dataclass(frozen=True, kw_only=True)
class ParserOptions:
    """What the three parsers share: where the text is, and how its pairs become keys."""

    key: str = "msg"
    prefix: str = ""  # put before every new key, e.g. "json."
    keep_original: bool = True  # false: the source key is removed once parsed
    on_conflict: str = "skip"  # a new key the log already has: "skip" (keep the log's) or "overwrite"

    def problems(self, where: str) -> list[str]:
        problems: list[str] = []
        if not self.key:
            problems.append(f"{where}key: must not be empty")
        if self.prefix and (why := key_problem(self.prefix + "x")):
            problems.append(f"{where}prefix: {why}")
        if self.on_conflict not in CONFLICT_POLICIES:
            problems.append(f"{where}on_conflict: must be one of {', '.join(CONFLICT_POLICIES)}")
        return problems


@dataclass(frozen=True, kw_only=True)
class ParseJsonOptions(ParserOptions):
    """``parse_json``: a JSON object's top-level members become keys.

    Strings are taken as they are; numbers, true/false/null and nested objects
    and arrays are kept as their compact JSON text.
    """


@dataclass(frozen=True, kw_only=True)
class ParseRegexOptions(ParserOptions):
    """``parse_regex``: the named groups of an RE2 pattern become keys."""

    pattern: str

    def problems(self, where: str) -> list[str]:
        problems = super().problems(where)
        _check_pattern(f"{where}pattern", self.pattern, problems, named_groups=True)
        return problems


@dataclass(frozen=True, kw_only=True)
class ParseKvOptions(ParserOptions):
    """``parse_kv``: ``k=v`` pairs become keys.

    Pairs are separated by ``pair_separator`` (runs of it count as one); a
    value that starts with ``quote`` runs to the next unescaped ``quote``,
    and inside it a backslash escapes the quote or a backslash. Words without
    ``kv_separator`` are skipped.
    """

    pair_separator: str = " "
    kv_separator: str = "="
    quote: str = '"'

    def problems(self, where: str) -> list[str]:
        problems = super().problems(where)
        for name in ("pair_separator", "kv_separator", "quote"):
            if len(getattr(self, name)) != 1:
                problems.append(f"{where}{name}: must be one character")
        if len({self.pair_separator, self.kv_separator, self.quote}) != 3:
            problems.append(f"{where.rstrip('.')}: pair_separator, kv_separator and quote must differ")
        return problems


@dataclass(frozen=True)
class MultilineOptions:
    """``multiline``: join a source's lines that make one event (a stack trace) into one log.

    Give a ``preset``, or a ``continuation`` pattern and optionally a ``start``
    pattern (:mod:`.multiline` says how they are used).
    """

    preset: str | None = None  # java, python, go
    continuation: str | None = None  # RE2, searched: a line it matches joins its source's open group
    start: str | None = None  # RE2, searched: a line it matches starts a group; unset: any line may
    apps: tuple[str, ...] = ()  # only lines whose app-name is listed; () = every line
    flush_ms: int = 1000  # a group ships this long after its last line, if nothing ended it before
    max_lines: int = 500  # a group is cut (and counted) at this many lines ...
    max_bytes: int = 262144  # ... or when its message would pass this many bytes

    def problems(self, where: str) -> list[str]:
        problems: list[str] = []
        if (self.preset is None) == (self.continuation is None):
            problems.append(f"{where.rstrip('.')}: give a preset or a continuation pattern (one of them)")
        if self.preset is not None and self.preset not in MULTILINE_PRESETS:
            problems.append(f"{where}preset: unknown preset {self.preset!r}; known: {', '.join(MULTILINE_PRESETS)}")
        if self.start is not None and self.continuation is None:
            problems.append(f"{where}start: needs a continuation pattern too")
        for name in ("continuation", "start"):
            if getattr(self, name) is not None:
                _check_pattern(f"{where}{name}", getattr(self, name), problems)
        for name, lowest in (("flush_ms", 1), ("max_lines", 2), ("max_bytes", 1024)):
            if getattr(self, name) < lowest:
                problems.append(f"{where}{name}: must be at least {lowest}")
        return problems


Options = Union[
    FilterOptions, MaskOptions, AddFieldsOptions, RenameOptions, RemoveOptions,
    ParseJsonOptions, ParseRegexOptions, ParseKvOptions, MultilineOptions,
]

OPTIONS_BY_TYPE: dict[str, type] = {
    "drop": FilterOptions,
    "keep": FilterOptions,
    "mask": MaskOptions,
    "add_fields": AddFieldsOptions,
    "rename": RenameOptions,
    "remove": RemoveOptions,
    "parse_json": ParseJsonOptions,
    "parse_regex": ParseRegexOptions,
    "parse_kv": ParseKvOptions,
    "multiline": MultilineOptions,
}


@dataclass(frozen=True)
class ProcessorConfig:
    name: str  # its label in slsfwd_processor_events_total
    type: str  # a key of OPTIONS_BY_TYPE
    tags: tuple[str, ...] = ()  # only lines with one of these tags; () = every line
    options: Options = field(default=None)  # type: ignore[assignment]  # the kind's options, filled in by the loader
