"""Encoded logs read back, with the SDK's schema: for the console, dead letters and repairs.

Only the cold paths decode; the hot path never does.
"""

from __future__ import annotations

from .sdk import log_group_raw_class


def decode_logs(encoded_logs: list[bytes]) -> list[tuple[int, list[tuple[str, str]]]]:
    """Encoded ``LogGroup.Logs`` entries -> (time, contents).

    Invalid UTF-8 comes back escaped (``\\xNN``), so the text is always valid.
    """
    group = log_group_raw_class()()
    group.ParseFromString(b"".join(encoded_logs))
    return [(entry.Time, [(_text(c.Key), _text(c.Value)) for c in entry.Contents]) for entry in group.Logs]


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
