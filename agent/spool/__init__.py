"""The durable disk spool between receiving and shipping.

It implements :class:`agent.spool.queue.ChunkQueue` (which also has the
in-memory implementation, :class:`~agent.spool.queue.MemoryQueue`, for
``spool.type = "memory"``): the receiver appends chunks
(the complete lines of one socket read, with receive time and peer), the
shipping side takes them in order and acknowledges them once the service
accepted every log in them. After a crash or restart, everything not
acknowledged is handed out again (at-least-once delivery).

On-disk format (segment version 2, ledger version 1)
====================================================

Everything lives in ``<spool.dir>/queue/``::

    lock                      flock()ed by the running agent: one agent per spool
    ledger                    acknowledged position, two slots overwritten in place
    00000000000000000001.seg  segment files, named by their first record's seq
    00000000000000004711.seg

and segments that could not be used at all are moved to ``<spool.dir>/quarantine/``.

A **segment** starts with a 16-byte header, then records back to back::

    header  = b"SLSFWDSG" | u16 version (2) | u16 zero | u32 CRC-32 of the 12 bytes before it
    record  = u32 magic 0x534C5352 ("SLSR") | u32 body length | u32 CRC-32 of body | body
    body    = u64 seq | u32 received_at | u32 lines | u16 peer length | peer (UTF-8) | payload

All integers are little-endian. ``payload`` is LF-terminated lines. ``seq``
increases by one per record across segments.

Version 1 headers (slsfwd 0.1.0) are ``b"SLSFWDSG" | u16 1 | 6 zero bytes``,
without a checksum; their records are the same, and they are read as they are.
Every later version keeps magic, u16 version and the CRC-32 at bytes 12-15 in
its first 16 bytes, so a newer format can be told from damage. A header is
(:func:`agent.spool.format.read_segment_header`):

==================================================  =====================================
magic, version 2, CRC holds                         intact: read
magic, version 1, bytes 10-15 zero                  intact (version 1): read
magic, version above 2, CRC holds                   a newer format: the spool is refused
16 zero bytes                                       zeroed (a power loss): records read
anything else: a wrong magic, version 2 or above    corrupt: the records are read by their
with a failing CRC, version 1 with non-zero bytes   own CRCs, the header is counted
10-15, version 0
==================================================  =====================================

A one-byte change anywhere in a version 1 or 2 header is corrupt, never
another version. slsfwd 0.1.0 refuses a version 2 segment (a downgrade) with
its "newer format" message.

The **ledger** file holds two slots, at byte 0 and byte 4096 (zeros between),
each ``b"SLSFWDLG" | u16 version | u64 acked_seq | u32 CRC-32`` of the preceding
bytes: every record with ``seq < acked_seq`` is acknowledged, for the larger
``acked_seq`` of the valid slots. A ledger of one slot alone (22 bytes, as
slsfwd wrote it before) is read too, and rewritten with two. The file is
created whole (``ledger.tmp``, fsync, rename, directory fsync); after that a
new position overwrites one slot in place (:mod:`agent.spool.ledger`).

Invariants
==========

* Segments are append-only. After a restart the agent never appends to an
  old segment: it opens a new one, so only the newest segment of a running
  agent is ever written.
* A record is appended to the segment with ``write(2)`` as soon as its bytes
  were read from a socket, so a ``kill -9`` of the agent loses nothing that
  was read. Segments are fdatasync()ed at most ``spool.fsync_ms`` after the
  write (group commit), so a power loss loses at most that window: the first
  write after a quiet ``fsync_ms`` at once, later ones with the commit
  ``fsync_ms`` after the last began. The group commit also syncs the
  segments finished since the last one, then the directory. Up to 256 KiB of
  writes are synced on the event loop (cheaper than a thread hand-off), more
  in a thread, so rotating to a new segment never blocks the loop on a sync.
  (A power loss right after a rotation can leave a new segment whose header
  is zeros; recovery reads its records anyway.)
* A whole segment is deleted only after the ledger that acknowledges all of
  its records is durable.
* An acknowledgement is written to the ledger in the loop turn it happens
  (``pwrite(2)``: a ``kill -9`` keeps it). The ledger is fdatasynced by the
  next group commit, at most ``max(spool.fsync_ms, 1000)`` ms later, so a power
  loss replays at most that window of acknowledged records: duplicates, never
  loss. Only the slot written since the last sync can be torn by a power loss;
  the slots switch after a sync, so the other one is always durable and valid.
* Recovery (:mod:`agent.spool.recovery`, one scan shared with ``slsfwd spool
  verify``: :mod:`agent.spool.scan`): damage costs what it touches, never the
  agent's start. A record whose CRC does not match is skipped and counted (with
  its bytes) and reading resyncs on the next magic; an incomplete record (or
  garbage) at the end of a segment is cut off and counted as torn. A damaged
  segment header costs the header: the records are read by their own CRCs,
  and the header is counted and logged once. A segment of which nothing can
  be used (unreadable, a name that is not a seq, or a damaged header and not
  one intact record) is moved to ``quarantine/``, counted and logged, never
  deleted. Seqs lost to damage count as acknowledged (found as a jump in the
  seqs handed out), so the ledger never waits for them.
* A ledger slot that does not check out (or a file of the wrong size) costs
  that slot: the other is used. With no valid slot left, every record still
  in the segments is replayed (duplicates, never loss), counted and logged,
  and the file is written anew.
* A spool of a newer format version (its checksum intact) is refused with a
  clear message before anything is deleted or moved, never misread.
* Bounded: when the unacknowledged bytes reach ``spool.max_bytes`` the spool
  stops being writable and the receiver stops reading its sockets
  (backpressure), or, with ``spool.full_policy = "drop_oldest"``, the oldest
  segment is deleted and its lines are counted as dropped.
* A full disk (ENOSPC) or another write error behaves like a full spool:
  the chunk is kept in memory (at most one read per connection, since the
  sockets are paused), the partial record is truncated away, a metric is
  raised, it is logged once, and the write is retried every second.

May import: :mod:`agent.ops`. Knows nothing of lines, logs or shipping: a
chunk's payload is bytes to it.
"""

from .disk import DiskSpool
from .health import verify
from .recovery import SpoolError

__all__ = ["DiskSpool", "SpoolError", "verify"]
