"""Processors: change logs on the host, after parsing and before batching.

A processor sees one log as an ordered ``dict[str, str]`` of its contents (the
built-in keys ``hostname`` … ``msg``, or a user format's, plus any key an
earlier processor added) and may change it, or drop it. Processors run in the
order of ``[[processors]]`` in the config; each has a ``name`` (its metric
label) and optional ``tags``: only lines whose tag is listed go through it
(Logtail's tags, as ``[[routes]]`` use them); no ``tags`` means every line.

Kinds (``type``), each with its options and defaults in :mod:`.options`:

* ``drop`` / ``keep``: drop, or keep only, logs whose ``key`` equals a value,
  matches a pattern, or is present or absent (:mod:`.filters`);
* ``mask``: replace what a pattern or a named preset finds in ``keys``
  (:mod:`.mask`, presets in :mod:`.presets`);
* ``add_fields``, ``rename``, ``remove`` (:mod:`.fields`);
* ``parse_json``, ``parse_regex``, ``parse_kv``: turn a key's text into keys
  (:mod:`.parsers`).

Every outcome worth knowing is counted by ``(processor, result)`` with
``result`` one of ``dropped``, ``masked``, ``parsed``, ``unmatched``,
``error``; a log is never dropped without a count. A processor that raises
is counted as ``error`` and the log goes on to the next processor as it is.

Patterns are RE2 (google-re2): matching takes time linear in the text, so no
pattern can be catastrophically slow. RE2 has no backreferences or
look-around; a pattern that uses them is a config error naming the key.

Pure: no I/O, no asyncio, no clocks. May import :mod:`agent.pipeline.parse`
(key names) and nothing else of the agent.
"""

from .chain import HEAD_KEYS, Chain, ChainSet, build_chain_set
from .model import DROPPED, ERROR, MASKED, PARSED, RESULTS, UNMATCHED
from .options import OPTIONS_BY_TYPE, ProcessorConfig

__all__ = [
    "DROPPED", "ERROR", "HEAD_KEYS", "MASKED", "OPTIONS_BY_TYPE", "PARSED", "RESULTS", "UNMATCHED",
    "Chain", "ChainSet", "ProcessorConfig", "build_chain_set",
]
