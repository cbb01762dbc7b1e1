"""A run on the local cluster in this checkout's trainer and sidecar images, as an operator's
cluster runs it: the node agent runs both containers from the images with runc (the image's root
filesystem, read-only, the Job's user, volumes and network), the model and data come from the
S3-protocol server at the cluster's gateway, and the client follows the sidecar's event stream."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.storage import join_uri, open_storage
from tests.fixtures.cluster import K8sCluster
from tests.fixtures.s3 import S3Server
from tests.kubernetes.helpers import make_settings, recorder, s3_secret_yaml, upload_run_inputs
from tools.k8senv import oci

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.images,
    pytest.mark.s3,
    pytest.mark.train,
    pytest.mark.timeout(600),
]


def _runc_containers() -> set[str]:
    """The ids of the containers runc knows on this node."""
    if not oci.RUNC_ROOT.exists():
        return set()
    out = subprocess.run(
        ["runc", "--root", str(oci.RUNC_ROOT), "list", "--format", "json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {c["id"] for c in json.loads(out or "null") or []}


async def _container_ids(cluster: K8sCluster, namespace: str, job_id: str) -> dict[str, str]:
    """Container name → containerID of the run's pod, once both of its containers run."""
    while True:
        pods = json.loads(
            cluster.kubectl(
                "get", "pods", "-n", namespace, "-l", f"job-name={job_id}", "-o", "json"
            ).stdout
        )["items"]  # fmt: skip
        for pod in pods:
            status = pod.get("status") or {}
            rows = [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]
            ids = {r["name"]: r.get("containerID", "") for r in rows if "running" in r["state"]}
            if len(ids) == 2:
                return ids
        await asyncio.sleep(0.5)


async def test_a_run_in_the_built_images_completes_with_its_events_and_checkpoints(  # noqa: PLR0917
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    s3_server: S3Server,
    s3_bucket: str,
    run_files: Path,
    trainer_image: str,
    sidecar_image: str,
) -> None:
    k8s_cluster.kubectl("apply", "-f", "-", input=s3_secret_yaml(k8s_namespace, s3_server))
    bucket = f"s3://{s3_bucket}"
    inputs = upload_run_inputs(bucket, run_files)
    settings = make_settings(
        k8s_cluster, k8s_namespace, s3_server, join_uri(bucket, "runs"),
        image=trainer_image, sidecar_image=sidecar_image,
    )  # fmt: skip
    seen, callbacks = recorder()
    config: dict[str, Any] = {
        "name": "Image Run",
        "model": inputs.model,
        "dataset": inputs.dataset(),
        "max_steps": 4,
        "save_steps": 2,
        "logging_steps": 1,
        "batch_size": 2,
        "lora": {"r": 4, "alpha": 8, "max_length": 64},
    }
    backend = KubernetesBackend(settings)
    try:
        trainer = create_async_trainer(**config, backend=backend, callbacks=callbacks)
        started = await trainer.start()
        ids = await asyncio.wait_for(
            _container_ids(k8s_cluster, k8s_namespace, started.job_id), 300
        )
        result = await trainer.wait()
    finally:
        await backend.aclose()

    assert result.job.status == "completed", [n for n, _ in seen]
    # Both containers ran from their images through runc, not as processes of this machine.
    assert sorted(ids) == ["sidecar", "trainer"], ids
    assert all(v.startswith("runc://") for v in ids.values()), ids
    # The client saw the run through the sidecar in its own image.
    order = [name for name, _ in seen if name != "on_phase"]
    assert order[0] == "on_started" and order[-1] == "on_completed", order
    assert {ctx.step for name, ctx in seen if name == "on_log"} == {1, 2, 3, 4}
    assert [ctx.step for name, ctx in seen if name == "on_checkpoint"] == [2, 4]
    final = [a for a in result.artifacts if a.kind == "final"]
    assert final and final[0].uri.startswith(f"{bucket}/runs/")
    assert open_storage(bucket).exists(join_uri(final[0].uri, "adapter_config.json"))

    # Deleting the pod leaves no container behind on the node.
    k8s_cluster.kubectl(
        "delete", "pods", "-n", k8s_namespace, "-l", f"job-name={started.job_id}", "--wait"
    )
    names = {v.removeprefix("runc://") for v in ids.values()}
    assert not names & _runc_containers()
    assert not any(n in oci.buildah("containers", "--format", "{{.ContainerName}}") for n in names)
