"""What every processor shares: the log it changes, the results it reports, its interface."""

from __future__ import annotations

from typing import Protocol

# A log's contents in order: keys as text, values as the UTF-8 bytes that will be shipped (valid UTF-8:
# the transform repairs bad bytes before processors see them). Time, tag and source are not theirs.
Log = dict[str, bytes]

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
