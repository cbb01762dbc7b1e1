"""Fixtures for KubernetesBackend tests against the real local control plane.

Runs of ``kube_settings`` run in this checkout's trainer and sidecar images (the node agent runs
them with runc), so they read the tiny model and its data where a cluster's pods would: from S3
(``run_inputs``). Tests that build their own settings with ``make_settings`` and no image name the
default images, which the agent runs as processes of this machine (a model path on its disk works
there, outside /tmp, which run pods shadow with an ``emptyDir``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.settings import KubernetesSettings
from tests.fixtures.cluster import K8sCluster
from tests.fixtures.s3 import S3Server
from tests.kubernetes.helpers import RunInputs, make_settings, s3_secret_yaml


@pytest.fixture
def kube_settings(  # noqa: PLR0917
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    s3_server: S3Server,
    s3_prefix: str,
    trainer_image: str,
    sidecar_image: str,
) -> KubernetesSettings:
    """Settings for this test's namespace, whose S3 Secret exists; runs in this checkout's
    images."""
    k8s_cluster.kubectl("apply", "-f", "-", input=s3_secret_yaml(k8s_namespace, s3_server))
    return make_settings(
        k8s_cluster, k8s_namespace, s3_server, s3_prefix,
        image=trainer_image, sidecar_image=sidecar_image,
    )  # fmt: skip


@pytest.fixture
async def backend(kube_settings: KubernetesSettings) -> AsyncIterator[KubernetesBackend]:
    """A KubernetesBackend on the test's namespace."""
    b = KubernetesBackend(kube_settings)
    yield b
    await b.aclose()


@pytest.fixture
def run_config(run_inputs: RunInputs) -> Callable[..., dict[str, Any]]:
    """Trainer fields for a small run; keyword arguments override them."""

    def make(**extra: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "name": "Kube Run",
            "model": run_inputs.model,
            "dataset": run_inputs.dataset(),
            "max_steps": 6,
            "save_steps": 3,
            "logging_steps": 1,
            "batch_size": 2,
            "lora": {"r": 4, "alpha": 8, "max_length": 64},
        }
        fields.update(extra)
        return fields

    return make
