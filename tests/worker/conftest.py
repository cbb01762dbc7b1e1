"""Helpers for the worker tests: datasets in every format, a bearer-token HTTP server, runs.

Runs go through the real worker, against the real S3-protocol server (moto) on loopback, with
the tiny random model. In-process runs (``run_inprocess``) share one import of torch and TRL;
subprocess runs (``start_worker``) are used where signals, exit codes or stderr matter.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.worker.helpers import (
    RunDir,
    _BlobHandler,
    _BlobServer,
)


@pytest.fixture
def run_dir(tmp_path: Path, s3_prefix: str) -> RunDir:
    """A run in a fresh S3 bucket on the moto server."""
    return RunDir(tmp_path / "run", "job-1", s3_prefix)


@pytest.fixture
def blob_server() -> Iterator[_BlobServer]:
    """A small HTTP server on loopback that serves files and checks a bearer token."""
    srv = _BlobServer(("127.0.0.1", 0), _BlobHandler)
    srv.files, srv.requests = {}, []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
