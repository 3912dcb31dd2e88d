"""RELP input (placeholder until the RELP receiver lands)."""

from __future__ import annotations


class RelpReceiver:
    def __init__(self, queue, *, max_connections: int) -> None:
        raise NotImplementedError("input.relp_listen is not available yet")
