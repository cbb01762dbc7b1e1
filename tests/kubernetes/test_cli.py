"""`arkor-ops list/status/logs/cancel` against a finished run on the cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.settings import KubernetesSettings

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.train, pytest.mark.timeout(600)]


def cli(settings: KubernetesSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        {
            "ARKOR_BACKEND": "kubernetes",
            "ARKOR_K8S_KUBECONFIG": settings.kubeconfig or "",
            "ARKOR_K8S_STORAGE_URI": settings.storage_uri or "",
            "ARKOR_K8S_S3_CLIENT_ENDPOINT_URL": settings.s3_client_endpoint_url or "",
            "COLUMNS": "200",
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "arkor_ops.cli", *args, "-n", settings.namespace],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


async def test_operator_commands(
    backend: KubernetesBackend,
    kube_settings: KubernetesSettings,
    run_config: Callable[..., dict[str, Any]],
) -> None:
    trainer = create_async_trainer(**run_config(max_steps=2, save_steps=1), backend=backend)
    result = await trainer.wait()
    job_id = result.job.id

    listed = cli(kube_settings, "list")
    assert listed.returncode == 0, listed.stderr
    assert job_id in listed.stdout and "completed" in listed.stdout

    status = cli(kube_settings, "status", job_id)
    assert status.returncode == 0, status.stderr
    assert "completed" in status.stdout and "step" in status.stdout

    logs = cli(kube_settings, "logs", job_id)
    assert logs.returncode == 0, logs.stderr
    assert "training started" in logs.stdout and "step 2" in logs.stdout
    assert "completed: s3://" in logs.stdout

    missing = cli(kube_settings, "status", "no-such-run-00000000")
    assert missing.returncode == 1 and "no-such-run-00000000" in missing.stderr

    cancelled = cli(kube_settings, "cancel", job_id)  # finished: harmless
    assert cancelled.returncode == 0, cancelled.stderr
