"""One real Prefect server for the session, and helpers to run flows against it.

The environment is set when this file is imported, before any test imports Prefect (Prefect
reads its settings at import): ``PREFECT_API_URL`` points at a free loopback port and
``PREFECT_HOME`` at a fresh temporary directory; runner subprocesses inherit both. The server
itself (``prefect server start``) starts on first use of ``prefect_server``. It listens on all
addresses (as the S3 server does), so flow-run pods of the local cluster reach it at the pods'
gateway (``pods_api_url``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.cluster import K8sCluster
from tests.fixtures.s3 import free_port

_PORT = free_port()
_HOME = Path(tempfile.mkdtemp(prefix="arkor-prefect-"))
API_URL = f"http://127.0.0.1:{_PORT}/api"
UI_URL = f"http://127.0.0.1:{_PORT}"

os.environ.update(
    {
        "PREFECT_API_URL": API_URL,
        "PREFECT_HOME": str(_HOME / "client"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
        "DO_NOT_TRACK": "1",
    }
)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _flush_prefect_logs() -> None:
    if "prefect" in sys.modules:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all()
        EventsWorker.drain_all()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """The session's Prefect server (API, UI, scheduler, triggers); yields the API URL."""
    env = dict(
        os.environ,
        PREFECT_HOME=str(_HOME / "server"),
        PREFECT_SERVER_API_HOST="0.0.0.0",
        PREFECT_SERVER_API_PORT=str(_PORT),
        PREFECT_SERVER_UI_API_URL=API_URL,  # what the UI's JavaScript calls
    )
    env.pop("PREFECT_API_URL")
    log = open(_HOME / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "0.0.0.0",
            "--port",
            str(_PORT),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while not _healthy(API_URL + "/health"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            raise RuntimeError(
                "prefect server did not start:\n" + (_HOME / "server.log").read_text()[-3000:]
            )
        time.sleep(0.3)
    try:
        yield API_URL
    finally:
        _flush_prefect_logs()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture
def ui_url(prefect_server: str) -> str:
    """Base URL of the Prefect UI."""
    return UI_URL


@pytest.fixture
def pods_api_url(prefect_server: str, k8s_cluster: K8sCluster) -> str:
    """The server's API URL as the local cluster's pods reach it (their gateway)."""
    return f"http://{k8s_cluster.host_ip}:{_PORT}/api"
