"""RELP input: rsyslog's ``omrelp`` -> framed chunks in the queue, acknowledged once durable.

Plain TCP (``agent/receive.py``) loses what is in flight when the agent dies: rsyslog
considers a line delivered once the kernel took it. RELP (the Reliable Event Logging
Protocol, librelp's ``doc/relp.md``) acknowledges every message at the application level,
and rsyslog resends whatever was not acknowledged when a session breaks. This module is a
RELP *server* for that one client.

Protocol subset (what librelp 1.11 / rsyslog 8.2302's omrelp speak without TLS)
-------------------------------------------------------------------------------
* Frame: ``TXNR SP COMMAND SP DATALEN [SP DATA] LF``. TXNR is 1..9 digits and must be
  1 on the first frame of a connection and one more than the previous one after that
  (after 999999999 comes 1). TXNR 0 (a client "hint") is not accepted. COMMAND is 1..32
  ASCII letters. DATALEN is 1..9 digits; 0 means no ``SP DATA``; more than 128 KiB (librelp's
  default limit) is refused. DATA may contain LF; the byte after DATA must be LF.
* Commands accepted from the client: ``open``, ``syslog``, ``close``. Anything else (``rsp``,
  ``serverclose``, ``starttls``, unknown words), a ``syslog`` before ``open``, a second
  ``open`` or any frame after ``close`` is a protocol error.
* ``open``: the offers must contain ``relp_version`` with a number and ``commands`` naming
  ``syslog``; unknown offers are ignored. The answer is
  ``TXNR rsp LEN 200 OK\\nrelp_version=0\\nrelp_software=slsfwd\\ncommands=syslog``
  (version 0 is what librelp speaks; a client rejects a higher one).
* ``syslog``: DATA is one ``ALI_LOG_FMT`` line. rsyslog's template ends it with LF; a message
  cut at rsyslog's size limit has lost it, and it is added back. Answer ``TXNR rsp 6 200 OK``.
* ``close``: answered with an empty ``rsp`` (``TXNR rsp 0``) once every earlier frame is
  answered; then the connection is closed.
* ``0 serverclose 0``: the hint sent to every session when the agent shuts down (and when a
  session is closed because its data did not become durable in time).
* A framing or protocol error aborts the connection at once (no answer; counted in
  ``slsfwd_relp_framing_errors_total``; logged, rate-limited). The frames of that read are
  dropped unacknowledged: rsyslog resends them.

The acknowledgement rule
------------------------
All ``syslog`` frames of one socket read become ONE chunk (one ``queue.append``: group
commit), and their ``rsp`` frames are sent only from ``queue.when_durable(seq)``: once the
disk spool has fsynced the chunk (the memory queue: once it was shipped). Responses go out
strictly in TXNR order, as RELP requires: an ``rsp`` waits behind every earlier unanswered
frame of its session. So an acknowledged line survives a ``kill -9`` or a power loss of the
agent, and a line that is not acknowledged is still held by rsyslog.

Throughput follows from it: a session has at most omrelp's ``windowSize`` frames unanswered,
and an answer waits for the spool's group commit (``spool.fsync_ms``, 200 ms), so one session
carries about ``windowSize / fsync_ms`` lines per second (256 / 0.2 s = 1,280/s, measured 1,200/s
with rsyslog 8.2302; ``windowSize="1024"``: 4,000/s). Raise ``windowSize`` (this server reads up
to ``max_unacked_frames``, 1024, per session) or lower ``fsync_ms`` for more. With
``spool.type = "memory"`` "durable" means "shipped": answers wait for the service, and a service
outage longer than ``ack_timeout_s`` closes sessions, whose frames rsyslog then resends
(duplicates); RELP is meant to be used with the disk spool.

Why the agent never answers ``500``
-----------------------------------
An error answer is final for that message: librelp removes the frame from its list of
unacknowledged frames (``src/scrsp.c``), so it is never resent, and rsyslog only logs the error.
Every situation in which the agent cannot take a line now is temporary (spool full, disk
full, shipping stalled), so instead of refusing, the agent stops reading
(backpressure: the kernel buffers fill and rsyslog queues on its side) and, if a chunk has
not become durable within ``ack_timeout_s`` (10 s), closes the session without acknowledging
it (with a ``serverclose`` hint). rsyslog reconnects and resends everything unacknowledged.

Delivery is at-least-once
-------------------------
A chunk appended but not acknowledged when a session breaks (agent killed, ack timeout,
network) is still shipped, and rsyslog resends it on its next session: that line arrives
twice. Within one agent process such resends are recognised where possible: the DATA of
frames left unacknowledged by a closed session is remembered per peer address for
``duplicate_window_s``; identical DATA arriving later from that peer is counted in
``slsfwd_relp_duplicates_total`` (and still shipped: two identical lines in one second are
legitimate too). Resends after an agent restart cannot be recognised (the memory is gone).

Limits
------
Per session, reading stops while ``max_unacked_frames`` (1024) frames or
``max_unacked_bytes`` (8 MiB) of DATA wait for their acknowledgement, and while our answers
are not being read by the client (the transport's write buffer is full); with the queue not
writable every session stops reading. Sessions beyond ``max_connections`` are closed at once.

Structure: the pure part, :mod:`.protocol` (frames and offers) and :mod:`.session` (one
session's answers and duplicates: bytes in, frames and responses out, no I/O, no clock), is
separate from the thin asyncio part, :mod:`.server` (:class:`RelpReceiver`, ``_RelpConnection``).

May import: :mod:`agent.ops`, :mod:`agent.spool` (the queue interface), :mod:`agent.input.listener`.
"""

from .server import RelpReceiver

__all__ = ["RelpReceiver"]
