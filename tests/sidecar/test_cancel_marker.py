"""``POST /v1/jobs/{job_id}/cancel`` leaves the cancel marker the trainer checks on SIGTERM."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.sidecar.conftest import JOB_ID, Sidecars

pytestmark = [pytest.mark.timeout(60)]


def test_cancel_writes_the_marker_for_this_job_only(
    sidecars: Sidecars, log_path: Path, storage_uri: str, tmp_path: Path
) -> None:
    marker = tmp_path / "run" / "cancel-requested"
    sc = sidecars.start(log_path, storage_uri, ARKOR_CANCEL_MARKER=str(marker))

    other = httpx.post(f"{sc.base}/v1/jobs/someone-else/cancel", timeout=5)
    assert other.status_code == 404
    assert "not found" in other.json()["error"]
    assert not marker.exists()

    resp = httpx.post(f"{sc.base}/v1/jobs/{JOB_ID}/cancel", timeout=5)
    assert resp.status_code == 202
    assert resp.json() == {"jobId": JOB_ID, "cancelMarker": str(marker)}
    assert marker.is_file()
    again = httpx.post(f"{sc.base}/v1/jobs/{JOB_ID}/cancel", timeout=5)  # idempotent
    assert again.status_code == 202
    assert httpx.get(f"{sc.base}/v1/jobs/{JOB_ID}/cancel", timeout=5).status_code == 405
    assert sc.stop() == 0


def test_cancel_without_a_configured_marker_is_a_conflict(
    sidecars: Sidecars, log_path: Path, storage_uri: str
) -> None:
    sc = sidecars.start(log_path, storage_uri)
    resp = httpx.post(f"{sc.base}/v1/jobs/{JOB_ID}/cancel", timeout=5)
    assert resp.status_code == 409
    assert "ARKOR_CANCEL_MARKER" in resp.json()["error"]
    assert sc.stop() == 0
