"""Ops: what every room uses to be observed and run well, and nothing of the data path.

Metrics (every one defined in :mod:`.metrics`), the ``/metrics`` and
``/healthz`` listener, systemd's notify protocol, rate-limited self-logging,
the host's name and address, the shared timer grid, the supervision that lets
no background task die silently, and small file helpers.

May import: nothing of the agent outside :mod:`agent.ops` (and the version).
"""
