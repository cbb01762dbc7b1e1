"""Fixtures for KubernetesBackend tests against the real local control plane.

The Jobs of these tests name the default images (not under ``localhost/``), so the node agent runs
their pods as processes of this machine, in the project's env, and the tiny model's path on disk
works as ``model``; test_image_run.py runs in this checkout's images instead, with the model in
S3. Run pods mount a private ``emptyDir`` over ``/tmp``, so the model and dataset are copied
somewhere else first (pytest's temp dirs live under /tmp).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.settings import KubernetesSettings
from tests.fixtures.cluster import K8sCluster
from tests.fixtures.s3 import S3Server
from tests.kubernetes.helpers import (
    make_settings,
    s3_secret_yaml,
)


@pytest.fixture
def kube_settings(
    k8s_cluster: K8sCluster, k8s_namespace: str, s3_server: S3Server, s3_prefix: str
) -> KubernetesSettings:
    """Settings for this test's namespace, whose S3 Secret exists."""
    k8s_cluster.kubectl("apply", "-f", "-", input=s3_secret_yaml(k8s_namespace, s3_server))
    return make_settings(k8s_cluster, k8s_namespace, s3_server, s3_prefix)


@pytest.fixture
async def backend(kube_settings: KubernetesSettings) -> AsyncIterator[KubernetesBackend]:
    """A KubernetesBackend on the test's namespace."""
    b = KubernetesBackend(kube_settings)
    yield b
    await b.aclose()


@pytest.fixture
def run_config(run_files: Path) -> Callable[..., dict[str, Any]]:
    """Trainer fields for a small run; keyword arguments override them."""

    def make(**extra: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "name": "Kube Run",
            "model": str(run_files / "model"),
            "dataset": {"type": "file", "path": str(run_files / "train.jsonl")},
            "max_steps": 6,
            "save_steps": 3,
            "logging_steps": 1,
            "batch_size": 2,
            "lora": {"r": 4, "alpha": 8, "max_length": 64},
        }
        fields.update(extra)
        return fields

    return make
