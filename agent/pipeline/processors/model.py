"""What every processor shares: the log it changes, the results it reports, its interface."""

from __future__ import annotations

from typing import Protocol

Log = dict[str, str]  # a log's contents in order; time, tag and source are not processors' business

DROPPED = "dropped"
MASKED = "masked"
PARSED = "parsed"
UNMATCHED = "unmatched"
ERROR = "error"
RESULTS = (DROPPED, MASKED, PARSED, UNMATCHED, ERROR)


class Processor(Protocol):
    name: str
    # The keys whose values decide what it does, and the keys it may change;
    # None: any key (a parser's new keys come from the data).
    reads: frozenset[str] | None
    writes: frozenset[str] | None

    def apply(self, log: Log) -> str | None:
        """Change ``log`` in place; the result to count (``DROPPED`` ends the chain), or None."""
        ...
