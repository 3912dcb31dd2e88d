"""What the tests share: the real agent as a process (:mod:`.agent_proc`), the PutLogs and ECS
metadata stand-ins, the real rsyslog harness, the kill -9 scenario, a RELP client, and the files
taken from ``../shared`` (:mod:`.shared_data`). ``failure_injection/`` makes one part of the real
agent fail on purpose."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
