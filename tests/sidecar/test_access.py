"""What anyone who can reach the sidecar's port can do: read the run's events (bounded) and ask
a checkpoint (`infer()`, tests/sidecar/test_infer_route.py), never change the run. A cancel
travels as a pod annotation instead (see tests/kubernetes/test_cancel.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.sidecar.helpers import JOB_ID, Sidecars

pytestmark = [pytest.mark.timeout(60)]


def test_there_is_no_write_route(
    sidecars: Sidecars, log_path: Path, storage_uri: str, tmp_path: Path
) -> None:
    marker = tmp_path / "run" / "cancel-requested"
    sc = sidecars.start(log_path, storage_uri, ARKOR_CANCEL_MARKER=str(marker))
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        resp = httpx.request(method, f"{sc.base}/v1/jobs/{JOB_ID}/cancel", timeout=5)
        assert resp.status_code in (404, 405), (method, resp.status_code)
        resp = httpx.request(method, sc.stream_url, timeout=5)
        assert resp.status_code == 405, (method, resp.status_code)
    assert not marker.exists()
    assert sc.stop() == 0


async def test_streams_over_the_limit_get_503_with_retry_after(
    sidecars: Sidecars, log_path: Path, storage_uri: str
) -> None:
    sc = sidecars.start(log_path, storage_uri, ARKOR_SIDECAR_MAX_STREAMS="2")
    async with httpx.AsyncClient(timeout=10) as http:
        held = []
        for _ in range(2):
            resp = await http.send(http.build_request("GET", sc.stream_url), stream=True)
            assert resp.status_code == 200
            held.append(resp)
        extra = await http.get(sc.stream_url)
        assert extra.status_code == 503
        assert int(extra.headers["retry-after"]) > 0
        assert "too many streams" in extra.json()["error"]
        assert sc.health()["status"] == "ok"  # the health check is not a stream
        await held.pop().aclose()  # a slot frees when a client leaves
        for _ in range(100):
            again = await http.send(http.build_request("GET", sc.stream_url), stream=True)
            if again.status_code == 200:
                break
            await again.aclose()
            await asyncio.sleep(0.1)
        assert again.status_code == 200
        await again.aclose()
        for resp in held:
            await resp.aclose()
    assert sc.stop() == 0
