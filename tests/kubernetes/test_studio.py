"""`arkor-ops studio --backend kubernetes` over a finished run on the cluster: the same API as
on the local backend, with the pod gone (the events are replayed from storage, the checkpoints
are read from S3)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.settings import KubernetesSettings
from tests.studio.helpers import Studio

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.train, pytest.mark.timeout(600)]


async def test_the_studio_shows_a_cluster_run(
    backend: KubernetesBackend,
    kube_settings: KubernetesSettings,
    run_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    fields = run_config(
        max_steps=2,
        save_steps=1,
        eval_steps=1,  # each step's eval-only training.log comes after its train loss
        dataset_split={"enabled": True, "test_size": 0.1},
    )
    trainer = create_async_trainer(**fields, backend=backend)
    result = await trainer.wait()
    job_id = result.job.id
    env = {
        "ARKOR_K8S_KUBECONFIG": kube_settings.kubeconfig or "",
        "ARKOR_K8S_STORAGE_URI": kube_settings.storage_uri or "",
        "ARKOR_K8S_S3_CLIENT_ENDPOINT_URL": kube_settings.s3_client_endpoint_url or "",
    }
    studio = Studio(
        tmp_path / "runs",
        tmp_path / "studio.log",
        args=["--backend", "kubernetes", "-n", kube_settings.namespace],
        env={**os.environ, **env},
    )
    try:
        headers = {"x-arkor-studio-token": studio.token}
        async with httpx.AsyncClient(base_url=studio.base, headers=headers, timeout=120) as c:
            rows = (await c.get("/api/runs")).json()["runs"]
            (row,) = [r for r in rows if r["id"] == job_id]
            assert row["status"] == "completed" and row["step"] == 2
            assert isinstance(row["loss"], float)  # the last training loss, not the eval log's

            checkpoints = (await c.get(f"/api/runs/{job_id}/checkpoints")).json()["checkpoints"]
            assert [(ck["kind"], ck["step"]) for ck in checkpoints] == [
                ("checkpoint", 1),
                ("checkpoint", 2),
                ("final", 2),
            ]
            assert all(ck["uri"].startswith("s3://") for ck in checkpoints)

            events = (await c.get(f"/api/runs/{job_id}/events")).text
            kinds = [line[7:] for line in events.splitlines() if line.startswith("event: ")]
            assert kinds[-2:] == ["training.completed", "end"]
            assert kinds.count("training.log") == 4  # a train and an eval log per step

            ended = await c.post(
                f"/api/runs/{job_id}/checkpoints/2/chat",
                json={"messages": [{"role": "user", "content": "hi"}]},
            )
            assert (ended.status_code, ended.json()["code"]) == (410, "run_ended")
    finally:
        assert studio.stop() == 0
