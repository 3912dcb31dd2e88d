"""HTTP/1.1 for PutLogs: :mod:`.wire` (pure: request heads, an incremental response parser) and
:mod:`.client` (keep-alive connections, TLS, timeouts). Hand-written because it is on a measured path
(see the README's dependencies section). May import nothing of the agent."""
