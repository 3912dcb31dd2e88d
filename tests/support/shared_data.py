"""Files the tests take from the project's shared folder, ``../shared`` beside the repository.

Each is read from there when it is present, and otherwise from its copy in ``tests/data/``,
so a clone without ``../shared`` runs (and skips) nothing less. The copies are pinned by
SHA-256 here; ``tests/e2e/test_rsyslog_harness.py`` checks both places against the pin, so a
copy that drifts from the shared file fails a test instead of going unnoticed.
"""

from __future__ import annotations

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]
SHARED_DIR = TESTS_DIR.parent.parent / "shared"
VENDORED_DIR = TESTS_DIR / "data"

# path under ../shared -> (name in tests/data, SHA-256 of its bytes)
FILES = {
    "rsyslog/80-logtail.conf": (
        "80-logtail.conf",
        "ff7ab68ef8daeec5574a2d0ef2f0f12f0499148417d4198613b1299f30ba9a57",
    ),
    "samples/rsyslog-8.2302-captured.bin": (
        "rsyslog-8.2302-captured.bin",
        "3a7d495436cce50211160a5968c27b98486ffdb1670b3c1f90000d2d058417ac",
    ),
}

TUTORIAL_BLOCK = "rsyslog/80-logtail.conf"
CAPTURED_SAMPLES = "samples/rsyslog-8.2302-captured.bin"


def shared_path(name: str) -> Path:
    return SHARED_DIR / name


def vendored_path(name: str) -> Path:
    return VENDORED_DIR / FILES[name][0]


def path(name: str) -> Path:
    """``../shared/<name>`` if it is there, else its copy in ``tests/data/``."""
    shared = shared_path(name)
    return shared if shared.is_file() else vendored_path(name)


def read_bytes(name: str) -> bytes:
    return path(name).read_bytes()


def sample_lines() -> list[bytes]:
    """The 50 lines rsyslog 8.2302 sent with the tutorial's block, without their LFs."""
    return read_bytes(CAPTURED_SAMPLES).split(b"\n")[:-1]
