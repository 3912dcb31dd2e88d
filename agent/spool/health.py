"""``slsfwd spool verify``: what the next start would find in a spool, read-only.

The same ledger read, segment scan and fate as recovery (:mod:`agent.spool.scan`,
tallied by :class:`agent.spool.report.RecoveryReport`), with nothing deleted,
moved or counted in metrics. It also says what ``quarantine/`` holds.
"""

from __future__ import annotations

from pathlib import Path

from . import format as fmt
from .ledger import read_slots
from .quarantine import quarantine_dir, quarantined_files
from .recovery import SpoolError, read_segment, segment_paths
from .report import RecoveryReport
from .scan import REFUSE, fate
from .tuning import QUEUE_DIR


def verify(spool_dir: Path) -> RecoveryReport:
    """Raises SpoolError for a spool of a newer format, as the agent refuses it."""
    queue = Path(spool_dir) / QUEUE_DIR
    report = RecoveryReport()
    try:
        acked = report.add_ledger(read_slots(queue / "ledger"))
    except fmt.OtherVersionError as exc:
        raise SpoolError(str(exc)) from None
    for path in segment_paths(queue):
        scan = read_segment(path)
        action, _ = fate(scan, acked)
        if action == REFUSE:
            raise SpoolError(str(fmt.other_version_error(str(path), scan.header.version, fmt.SEGMENT_VERSION)))
        report.add_segment(scan, action)
    report.quarantine_files = quarantined_files(quarantine_dir(spool_dir))
    return report

