"""Output: closed batches -> Log Service, with the error table carried out.

:mod:`.ship` runs one task per batch under a per-logstore in-flight limit and
retries, holds, splits, repairs or dead-letters as :mod:`.errors` (retriability
as data) and :mod:`.backoff` say; :mod:`.putlogs` is one signed PutLogs request
over :mod:`.http` (hand-written HTTP/1.1: a pure :mod:`.http.wire` and the
keep-alive :mod:`.http.client`); :mod:`.credentials` keeps keys, STS and the
ECS RAM role fresh; :mod:`.deadletter` keeps what the service refused for good;
:mod:`.console` is the sink without ``[sls]``; :mod:`.sdk` loads only the parts
of aliyun-log-python-sdk the agent uses.

May import: :mod:`agent.ops`, and :mod:`agent.pipeline` for batches, their
destinations and the LogGroup encoding.
"""
