"""HTTP/1.1 for PutLogs: :mod:`.wire` (pure: request heads, an incremental response parser) and
:mod:`.client` (keep-alive connections, TLS, timeouts). Hand-written because it is on a measured path
(see the README's dependencies section). The ECS metadata calls (:mod:`agent.output.credentials`) use the
same client, so the agent has one. May import only :mod:`agent.ops.httphead` (the header grammar it shares
with the ``/metrics`` listener)."""
