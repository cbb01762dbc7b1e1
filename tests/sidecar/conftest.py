"""The real sidecar as a subprocess on a loopback port, a log writer, and an SSE reader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from arkor_ops.eventlog import EventLogWriter
from tests.sidecar.helpers import JOB_ID, Sidecars


@pytest.fixture
def sidecars(tmp_path: Path) -> Iterator[Sidecars]:
    """Start sidecars; all are stopped at the end of the test."""
    sc = Sidecars(tmp_path)
    try:
        yield sc
    finally:
        sc.stop_all()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    """Where the test's event log lives."""
    return tmp_path / "run" / "events.jsonl"


@pytest.fixture
def storage_uri(tmp_path: Path) -> str:
    """A file:// storage prefix for the test."""
    return f"file://{tmp_path}/storage"


@pytest.fixture
def writer(log_path: Path) -> EventLogWriter:
    """The single writer of the test's event log."""
    return EventLogWriter(log_path, JOB_ID)
