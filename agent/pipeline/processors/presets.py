"""Named mask patterns for the common secrets, each with its replacement.

Each preset is an RE2 pattern, a replacement (bytes with group references,
or a function of the match), and a prefilter that most messages fail, so
they are not searched at all: words one of which the value in lower case must
contain, or a cheap test of it. A search costs about 2 µs a line through the
binding; the prefilter a fraction of that (a mask looks for all its presets'
words in one pass). They are written to keep what helps a
reader (the key's name, an e-mail's domain, a card's last four digits) and to
hide the secret itself. ``tests/unit/pipeline/test_processors.py`` holds the
cases each one must mask and must leave alone.
"""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple

_ASSIGN = r"""(["']?\s*[=:]\s*["']?)"""  # between a key and its value: = or :, quotes and spaces


class MaskPreset(NamedTuple):
    pattern: str
    replacement: bytes | Callable[[Any], bytes]
    words: tuple[bytes, ...] = ()  # the value in lower case contains one of these, or is not searched
    worth_searching: Callable[[bytes], bool] | None = None  # or this test of the value in lower case


# Eight digits in a row, with at most one space or dash: Python's re, but no nested quantifier,
# so linear. IP addresses, times and sizes fail it; a card number cannot.
_enough_digits = re.compile(rb"\d{4}[ -]?\d{4}").search


def _luhn_ok(digits: bytes) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ch - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _mask_card(match: Any) -> bytes:
    text = match.group(0)
    digits = bytes(ch for ch in text if 48 <= ch <= 57)
    if not 13 <= len(digits) <= 19 or not _luhn_ok(digits):
        return text  # an order number or a timestamp, not a card
    return b"****" + digits[-4:]


def _mask_access_key(match: Any) -> bytes:
    if match.group(1) is not None:
        return match.group(1) + match.group(2) + b"***"
    return b"LTAI***"


MASK_PRESETS: dict[str, MaskPreset] = {
    # password=hunter2, "passwd": "x", pwd: y, secret=..., token=...
    "password": MaskPreset(
        r"(?i)\b(password|passwd|pwd|passphrase|secret|token)" + _ASSIGN + r"""[^\s"'&,;]+""", rb"\1\2***",
        words=(b"pass", b"pwd", b"secret", b"token"),
    ),
    # Authorization: Bearer eyJ..., Basic dXNlcjpwYXNz
    "bearer_token": MaskPreset(
        r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]{8,}=*", rb"\1 ***", words=(b"bearer", b"basic"),
    ),
    # AccessKeySecret=..., access_key_secret: "...", SecurityToken=...; AccessKey IDs (LTAI...)
    "aliyun_access_key": MaskPreset(
        r"(?i)\b(access[_-]?key[_-]?secret|secret[_-]?access[_-]?key|security[_-]?token|sts[_-]?token)"
        + _ASSIGN + r"[A-Za-z0-9/+=._-]{8,}|\bLTAI[A-Za-z0-9]{12,24}\b",
        _mask_access_key,
        words=(b"secret", b"token", b"ltai"),
    ),
    # jane.doe@example.com -> j***@example.com
    "email": MaskPreset(
        r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})\b", rb"\1***@\2",
        words=(b"@",),
    ),
    # 4111 1111 1111 1111 -> ****1111 (13-19 digits passing the Luhn check)
    "card_number": MaskPreset(r"\b\d(?:[ -]?\d){12,18}\b", _mask_card, worth_searching=_enough_digits),
}
