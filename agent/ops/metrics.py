"""Every metric the agent exports, defined in one place.

Names follow ``slsfwd_<thing>_<unit>[_total]``; labels are low-cardinality
(reasons and result codes from fixed sets, never peers, tags or messages).
Drops and repairs are counted with a ``reason``. Hot paths do not touch
these per line: stages keep plain integer counters and publish them in bulk.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from agent import __version__

BUILD_INFO = Gauge("slsfwd_build_info", "Build information", ["version"])
BUILD_INFO.labels(version=__version__).set(1)

INPUT_CONNECTIONS = Gauge("slsfwd_input_connections", "Open input connections")
INPUT_LINES = Counter("slsfwd_input_lines_total", "Lines received")
INPUT_BYTES = Counter("slsfwd_input_bytes_total", "Bytes received")
INPUT_TRUNCATED = Counter(
    "slsfwd_input_truncated_lines_total", "Lines cut at input.max_line_bytes (the rest of the line is discarded)"
)
INPUT_DISCARDED_BYTES = Counter("slsfwd_input_discarded_bytes_total", "Bytes discarded from over-long lines")
INPUT_FRAMING_ERRORS = Counter("slsfwd_input_framing_errors_total", "Octet-counting errors (fell back to LF framing)")
INPUT_PAUSED_SECONDS = Counter(
    "slsfwd_input_backpressure_seconds_total", "Time input sockets were paused because the queue was full"
)

PARSE_ERRORS = Counter("slsfwd_parse_errors_total", "Lines that did not parse (shipped whole as msg)", ["reason"])
REPAIRS = Counter("slsfwd_parse_repairs_total", "Lines repaired before shipping", ["reason"])

SPOOL_BYTES = Gauge("slsfwd_spool_bytes", "Bytes received and not yet acknowledged by the service")
SPOOL_MAX_BYTES = Gauge("slsfwd_spool_max_bytes", "spool.max_bytes: the backlog at which input is paused")
SPOOL_OLDEST_AGE = Gauge(
    "slsfwd_spool_oldest_unacked_age_seconds", "Age of the oldest line not yet acknowledged (0 when none is pending)"
)
SPOOL_BACKLOG_LINES = Gauge("slsfwd_spool_backlog_lines", "Lines received and not yet acknowledged by the service")
SPOOL_BACKLOG_CHUNKS = Gauge("slsfwd_spool_backlog_chunks", "Spool records not yet acknowledged")
SPOOL_CORRUPT_RECORDS = Counter("slsfwd_spool_corrupt_records_total", "Spool records skipped because their CRC failed")
SPOOL_CORRUPT_BYTES = Counter(
    "slsfwd_spool_corrupt_bytes_total", "Spool bytes lost to corruption (crc) or torn writes (torn)", ["reason"]
)
SPOOL_WRITE_ERRORS = Counter(
    "slsfwd_spool_write_errors_total", "Spool write failures (disk_full, io_error); writes are retried", ["reason"]
)
SPOOL_WRITE_BLOCKED = Gauge("slsfwd_spool_write_blocked", "1 while the spool cannot be written (input paused)")
SPOOL_DROPPED_LINES = Counter(
    "slsfwd_spool_dropped_lines_total", "Lines dropped by spool.full_policy = drop_oldest", ["reason"]
)
SPOOL_DAMAGED_SEGMENT_HEADERS = Counter(
    "slsfwd_spool_damaged_segment_headers_total",
    "Spool segment headers found damaged at start (zeroed, corrupt); their records are still read",
    ["reason"],
)
SPOOL_QUARANTINED_SEGMENTS = Counter(
    "slsfwd_spool_quarantined_segments_total",
    "Spool segments moved to spool.dir/quarantine/ at start, nothing in them usable (no_records, unreadable, bad_name)",
    ["reason"],
)
SPOOL_DAMAGED_LEDGER_SLOTS = Counter(
    "slsfwd_spool_damaged_ledger_slots_total",
    "Spool ledger slots found damaged at start; with no valid slot left, every record in the spool is replayed",
)

SHIPPED_LOGS = Counter("slsfwd_shipped_logs_total", "Logs acknowledged by the service")
SHIPPED_BYTES = Counter("slsfwd_shipped_bytes_total", "Bytes shipped", ["stage"])
SHIP_REQUESTS = Counter("slsfwd_ship_requests_total", "PutLogs requests by result", ["result"])
SHIP_RETRIES = Counter("slsfwd_ship_retries_total", "Retries by error action", ["reason"])
SHIP_LATENCY = Histogram(
    "slsfwd_ship_latency_seconds",
    "PutLogs request latency",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SHIP_BLOCKED = Gauge(
    "slsfwd_ship_blocked", "1 while shipping is refused for a credential or configuration reason", ["reason"]
)
REPAIRED_LOGS = Counter("slsfwd_ship_repaired_logs_total", "Logs repaired after the service rejected them", ["reason"])
DEAD_LETTER_LOGS = Counter("slsfwd_dead_letter_logs_total", "Logs rejected for good and dead-lettered", ["reason"])
DEAD_LETTER_WRITE_ERRORS = Counter(
    "slsfwd_dead_letter_write_errors_total",
    "Dead-letter writes that failed (full disk, permissions); the logs stay in the spool and the write is retried",
)
LOST_LINES = Counter(
    "slsfwd_lost_lines_total", "Lines the agent could not keep (memory queue at shutdown)", ["reason"]
)
CREDENTIAL_REFRESH_FAILURES = Counter(
    "slsfwd_credential_refresh_failures_total", "Failed refreshes of RAM role credentials (the last good ones are kept)"
)

RELP_FRAMES = Counter("slsfwd_relp_frames_total", "RELP frames received, by command", ["command"])
RELP_FRAMING_ERRORS = Counter(
    "slsfwd_relp_framing_errors_total", "RELP sessions aborted for a framing or protocol error"
)
RELP_DUPLICATES = Counter(
    "slsfwd_relp_duplicates_total",
    "syslog frames recognised as resends of frames left unacknowledged by an earlier session (still shipped)",
)
RELP_SESSIONS = Gauge("slsfwd_relp_sessions", "Open RELP sessions")
RELP_ACK_TIMEOUTS = Counter(
    "slsfwd_relp_ack_timeouts_total",
    "RELP sessions closed unacknowledged because their data did not become durable in time (rsyslog resends)",
)

CONFIG_RELOADS = Counter("slsfwd_config_reloads_total", "Config reloads (SIGHUP, slsfwd reload) by result", ["result"])
CONFIG_LAST_RELOAD_OK = Gauge(
    "slsfwd_config_last_reload_successful", "1 if the last config reload (or the start) put the file in force, else 0"
)
CONFIG_LAST_RELOAD_SUCCESS_TS = Gauge(
    "slsfwd_config_last_reload_success_timestamp_seconds", "When the config file was last put in force (start or reload)"
)
CONFIG_RESTART_PENDING = Gauge(
    "slsfwd_config_restart_pending", "1 if a reload changed keys that take effect only after a restart (spool.*, metrics.*)"
)
PROCESSOR_EVENTS = Counter(
    "slsfwd_processor_events_total",
    "What processors did to logs, by processor name and result (dropped, masked, parsed, unmatched, error)",
    ["processor", "result"],
)
MULTILINE_GROUPS = Counter(
    "slsfwd_multiline_groups_total", "Logs a multiline processor joined from two lines or more", ["processor"]
)
MULTILINE_JOINED_LINES = Counter(
    "slsfwd_multiline_joined_lines_total", "Lines that went into those joined logs", ["processor"]
)
MULTILINE_CUT_GROUPS = Counter(
    "slsfwd_multiline_cut_groups_total",
    "Groups cut at a cap (max_lines or max_bytes); the rest of the event went on in a new log",
    ["processor", "reason"],
)
MULTILINE_TIMER_FLUSHES = Counter(
    "slsfwd_multiline_timer_flushes_total",
    "Joined logs shipped because flush_ms passed after their last line", ["processor"],
)
INTERNAL_ERRORS = Counter(
    "slsfwd_internal_errors_total",
    "Unexpected exceptions: where=task or callback stops the agent (systemd restarts it), "
    "where=connection closes that one connection",
    ["where"],
)


class TotalsMirror:
    """Publishes running totals that a hot path keeps as plain integers to their counters, as deltas."""

    def __init__(self) -> None:
        self._published: dict[tuple, int] = {}

    def publish(self, counter: Counter, total: int, **labels: str) -> None:
        key = (counter, *labels.items())
        seen = self._published.get(key, 0)
        if total != seen:
            counter.labels(**labels).inc(total - seen)
            self._published[key] = total


def _initialise_labels() -> None:
    """Known label values start at 0, so dashboards and alerts see the series before the first event."""
    for reason in ("unknown_version", "too_few_fields", "bad_timestamp"):
        PARSE_ERRORS.labels(reason=reason)
    for reason in ("invalid_utf8", "time_out_of_range"):
        REPAIRS.labels(reason=reason)
    for stage in ("raw", "compressed"):
        SHIPPED_BYTES.labels(stage=stage)
    SHIP_REQUESTS.labels(result="ok")
    DEAD_LETTER_LOGS.labels(reason="cap_exceeded")
    for reason in ("crc", "torn"):
        SPOOL_CORRUPT_BYTES.labels(reason=reason)
    for reason in ("disk_full", "io_error"):
        SPOOL_WRITE_ERRORS.labels(reason=reason)
    SPOOL_DROPPED_LINES.labels(reason="spool_full")
    for reason in ("zeroed", "corrupt"):
        SPOOL_DAMAGED_SEGMENT_HEADERS.labels(reason=reason)
    for reason in ("no_records", "unreadable", "bad_name"):
        SPOOL_QUARANTINED_SEGMENTS.labels(reason=reason)
    for reason in ("shutdown_deadline", "spool_write_error"):
        LOST_LINES.labels(reason=reason)
    for where in ("task", "callback", "connection"):
        INTERNAL_ERRORS.labels(where=where)
    for result in ("success", "failure"):
        CONFIG_RELOADS.labels(result=result)


_initialise_labels()
