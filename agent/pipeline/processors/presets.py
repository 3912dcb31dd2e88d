"""Named mask patterns for the common secrets, each with its replacement.

Each preset is an RE2 pattern and a replacement (text with ``\\1`` references,
or a function of the match). They are written to keep what helps a reader
(the key's name, an e-mail's domain, a card's last four digits) and to hide the
secret itself. ``tests/unit/pipeline/test_processors.py`` holds the cases each
one must mask and must leave alone.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

_ASSIGN = r"""(["']?\s*[=:]\s*["']?)"""  # between a key and its value: = or :, quotes and spaces


class MaskPreset(NamedTuple):
    pattern: str
    replacement: str | Callable[[Any], str]


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _mask_card(match: Any) -> str:
    text = match.group(0)
    digits = "".join(ch for ch in text if ch.isdigit())
    if not 13 <= len(digits) <= 19 or not _luhn_ok(digits):
        return text  # an order number or a timestamp, not a card
    return "****" + digits[-4:]


MASK_PRESETS: dict[str, MaskPreset] = {
    # password=hunter2, "passwd": "x", pwd: y, secret=..., token=...
    "password": MaskPreset(r"(?i)\b(password|passwd|pwd|passphrase|secret|token)" + _ASSIGN + r"""[^\s"'&,;]+""", r"\1\2***"),
    # Authorization: Bearer eyJ..., Basic dXNlcjpwYXNz
    "bearer_token": MaskPreset(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]{8,}=*", r"\1 ***"),
    # AccessKeySecret=..., access_key_secret: "...", SecurityToken=...; AccessKey IDs (LTAI...)
    "aliyun_access_key": MaskPreset(
        r"(?i)\b(access[_-]?key[_-]?secret|secret[_-]?access[_-]?key|security[_-]?token|sts[_-]?token)"
        + _ASSIGN + r"[A-Za-z0-9/+=._-]{8,}|\bLTAI[A-Za-z0-9]{12,24}\b",
        lambda m: f"{m.group(1)}{m.group(2)}***" if m.group(1) else "LTAI***",
    ),
    # jane.doe@example.com -> j***@example.com
    "email": MaskPreset(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})\b", r"\1***@\2"),
    # 4111 1111 1111 1111 -> ****1111 (13-19 digits passing the Luhn check)
    "card_number": MaskPreset(r"\b\d(?:[ -]?\d){12,18}\b", _mask_card),
}
