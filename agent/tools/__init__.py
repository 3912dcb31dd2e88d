"""Tools: the commands besides ``run`` that work on the agent's config, spool and dead letters.

``check --live`` (:mod:`.livecheck`), ``import-logtail`` (:mod:`.import_logtail`),
``dead-letter replay`` (:mod:`.replay`). (``spool verify`` is the spool's own
read-only scan, :func:`agent.spool.verify`.) May import any room; nothing
imports them but :mod:`agent.cli`.
"""
