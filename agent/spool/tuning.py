"""The disk spool's inner sizes and timings. Those a user may want to change are config keys
(``spool.segment_bytes``, ``spool.read_ahead_bytes``) whose values the spool is given; these are its defaults
and the rest. A module of its own so that the spool's parts (and tests) read them at run time."""

QUEUE_DIR = "queue"
DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024
# Chunks kept in memory for the reader before it reads from disk. At full speed a smaller read-ahead
# sends the reader back to the files, and reading back costs the agent CPU it would spend shipping:
# 2 MiB made end-to-end throughput 12-30 % lower than 8 MiB, for 2 MB less at a backlog's peak.
READ_AHEAD_BYTES = 8 * 1024 * 1024
DISK_READ_BYTES = 1024 * 1024  # a reader behind the writer reads records back this much at a time
WRITE_RETRY_S = 1.0
# A group commit with at most this much written since the last one fdatasyncs on the loop
# (about a millisecond); more goes to a thread, so that the loop keeps receiving meanwhile.
INLINE_SYNC_BYTES = 256 * 1024
SYNC_RETRY_S = 0.1  # a failed sync is retried this long after at the soonest
# Acknowledgements reach the ledger file at once (a pwrite); its fdatasync rides on the next
# group commit, or waits at most this long when no data is written meanwhile.
LEDGER_SYNC_MS = 1000
