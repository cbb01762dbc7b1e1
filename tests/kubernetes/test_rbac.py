"""k8s/ applies to the cluster, and its Role is exactly enough: a client with the
ServiceAccount's token runs a whole run in its namespace and is forbidden elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.config import validate_config
from arkor_ops.errors import PermissionDeniedError
from tests.fixtures.cluster import K8sCluster
from tests.fixtures.s3 import S3Server
from tests.kubernetes.helpers import K8S, make_settings, service_account_configuration

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.train, pytest.mark.timeout(600)]


def test_every_kustomization_is_accepted(applied_base: str, k8s_cluster: K8sCluster) -> None:
    for rel in ("overlays/gpu-pool", "minio", "prefect"):
        k8s_cluster.kubectl("apply", "-k", str(K8S / rel), "--dry-run=server")


async def test_service_account_runs_a_whole_run_and_is_forbidden_elsewhere(  # noqa: PLR0917
    applied_base: str,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    s3_server: S3Server,
    s3_prefix: str,
    run_config: Callable[..., dict[str, Any]],
    trainer_image: str,
    sidecar_image: str,
) -> None:
    cfg = service_account_configuration(k8s_cluster)
    settings = make_settings(
        k8s_cluster, applied_base, s3_server, s3_prefix, service_account="arkor-ops-run",
        image=trainer_image, sidecar_image=sidecar_image,
    )  # fmt: skip
    backend = KubernetesBackend(settings, configuration=cfg)
    try:
        trainer = create_async_trainer(**run_config(max_steps=2, save_steps=1), backend=backend)
        result = await trainer.wait()
        assert result.job.status == "completed"
        # the run's Secret went with the run's end: the Role and policies let the client
        # delete it (and mark its Job), though not any other Secret
        names = k8s_cluster.kubectl("get", "secrets", "-n", applied_base, "-o", "name").stdout
        assert f"secret/{result.job.id}-secrets" not in names.split()
        job = await backend.api.get_job(result.job.id)
        assert "arkor-ops.dev/secret-deleted" in job["metadata"]["annotations"]
        described = await backend.describe(result.job.id)
        assert described.job.status == "completed"
        listed = await backend.list_jobs()
        assert [d.job.id for d in listed] == [result.job.id]
        await backend.cancel(result.job.id)  # finished: harmless
    finally:
        await backend.aclose()

    elsewhere = KubernetesBackend(
        make_settings(k8s_cluster, k8s_namespace, s3_server, s3_prefix), configuration=cfg
    )
    try:
        with pytest.raises(PermissionDeniedError) as info:
            await elsewhere.submit(validate_config(run_config()))
        assert info.value.status == 403
        assert f"{k8s_namespace}" in str(info.value) and "arkor-ops-client" in str(info.value)
    finally:
        await elsewhere.aclose()
