"""The pipeline: raw lines -> parsed logs -> processed logs -> encoded logs in batches.

:mod:`.parse` (the readable specification of a ``0.1`` line), :mod:`.processors`
(drop, mask, parse ... in the config's order), :mod:`.transform` (the hot path:
whole chunks at once, with caches, checked against the readable path),
:mod:`.encode` (hand-written LogGroup protobuf and LZ4), :mod:`.batch` (batches per
destination and source, and the tickets that acknowledge spool chunks).

Pure: nothing here does I/O, reads a clock of its own or imports asyncio. The app
feeds it chunks read back from the spool and hands the closed batches to the
output. May import nothing of the agent outside :mod:`agent.pipeline`.
"""
