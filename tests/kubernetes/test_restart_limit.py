"""A run whose pod keeps being evicted stops after ``ARKOR_K8S_MAX_POD_RESTARTS`` restarts with
a message, instead of being retried for free (podFailurePolicy Ignore) until its deadline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.backends.kubernetes.diagnostics import current_pod
from arkor_ops.settings import KubernetesSettings
from arkor_ops.storage import RunLayout, join_uri, open_storage

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.train, pytest.mark.timeout(600)]


async def _starts(settings: KubernetesSettings, job_id: str, at_least: int) -> None:
    """Wait until the run's workers have counted ``at_least`` pod starts in storage."""
    assert settings.storage_uri is not None
    storage = open_storage(settings.storage_uri)
    uri = join_uri(RunLayout(settings.storage_uri, job_id).root, "attempts.json")
    while True:
        if storage.exists(uri) and len(json.loads(storage.get_bytes(uri))["starts"]) >= at_least:
            return
        await asyncio.sleep(0.2)


async def _job_failed(backend: KubernetesBackend, job_id: str) -> dict[str, Any]:
    """The Job's ``Failed`` condition, once the job controller has set it."""
    while True:
        job = await backend.api.get_job(job_id)
        for condition in (job.get("status") or {}).get("conditions") or []:
            if condition["type"] == "Failed" and condition["status"] == "True":
                return dict(condition)
        await asyncio.sleep(0.5)


async def test_a_pod_evicted_again_and_again_fails_the_run_after_the_limit(
    kube_settings: KubernetesSettings, run_config: Callable[..., dict[str, Any]]
) -> None:
    settings = kube_settings.model_copy(update={"max_pod_restarts": 1})
    backend = KubernetesBackend(settings)
    try:
        # Long enough that only the evictions end a pod.
        trainer = create_async_trainer(**run_config(max_steps=100_000), backend=backend)
        job_id = (await trainer.start()).job_id
        waiting = asyncio.create_task(trainer.wait())
        try:
            for start in (1, 2):  # evict the first pod and its replacement
                await asyncio.wait_for(_starts(settings, job_id, start), timeout=240)
                pod = current_pod(await backend.api.job_pods(job_id))
                assert pod is not None
                await backend.api.evict(pod["metadata"]["name"])
            result = await asyncio.wait_for(waiting, timeout=300)
        finally:
            waiting.cancel()
        assert result.job.status == "failed", result.job
        assert "restarted 2 times" in (result.job.error or "")
        assert "ARKOR_K8S_MAX_POD_RESTARTS" in (result.job.error or "")
        failed = await asyncio.wait_for(_job_failed(backend, job_id), timeout=120)
        assert failed["reason"] == "PodFailurePolicy", failed
    finally:
        await backend.aclose()
