"""The node cache on the cluster: two runs started at once on one node, whose model is an
``s3://`` folder, download it once (counted in the S3-protocol server's own request log: the
server the pods reach at the cluster's gateway address), and a third run on the node downloads
nothing and trains on the tokenized data the first two left. The runs' pods run in this
checkout's trainer and sidecar images; the cache is a hostPath directory of the node."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.storage import join_uri, open_storage
from tests.fixtures.cluster import K8sCluster
from tests.fixtures.s3 import LoggedS3
from tests.kubernetes.helpers import ended_run_events, make_settings, s3_secret_yaml

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.train, pytest.mark.timeout(900)]


async def _started(backend: KubernetesBackend, job_id: str) -> dict[str, Any]:
    events = await ended_run_events(backend, job_id)
    return dict(next(e for e in events if e["type"] == "training.started")["metadata"])


async def test_runs_started_together_on_a_node_download_the_model_once(  # noqa: PLR0917 - pytest fixtures
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    logged_s3: LoggedS3,
    run_files: Path,
    node_cache: Path,
    trainer_image: str,
    sidecar_image: str,
) -> None:
    server = logged_s3.server
    k8s_cluster.kubectl("apply", "-f", "-", input=s3_secret_yaml(k8s_namespace, server))
    bucket = f"s3://{logged_s3.bucket}"
    model_uri = join_uri(bucket, "models", "tiny")
    data_uri = join_uri(bucket, "data", "train.jsonl")
    storage = open_storage(bucket)
    storage.upload_dir(model_uri, run_files / "model")
    storage.put_bytes(data_uri, (run_files / "train.jsonl").read_bytes())
    settings = make_settings(
        k8s_cluster,
        k8s_namespace,
        server,
        join_uri(bucket, "runs"),
        model_cache_host_path=str(node_cache),
        image=trainer_image,
        sidecar_image=sidecar_image,
    )
    config: dict[str, Any] = {
        "name": "Node Cache",
        "model": model_uri,
        "dataset": {"type": "s3", "uri": data_uri},
        "max_steps": 2,
        "logging_steps": 1,
        "batch_size": 2,
        "lora": {"r": 4, "alpha": 8, "max_length": 64},
    }
    backend = KubernetesBackend(settings)
    try:
        pair = await asyncio.gather(
            *(create_async_trainer(**config, backend=backend).wait() for _ in range(2))
        )
        assert [r.job.status for r in pair] == ["completed", "completed"], [r.job for r in pair]
        weights = join_uri(model_uri, "model.safetensors")
        assert logged_s3.downloads(weights) == 1, "two runs at once on one node: one download"
        sources = sorted([(await _started(backend, r.job.id))["modelSource"] for r in pair])
        assert sources == ["already in the node cache, from S3", "downloaded from S3"]

        third = await create_async_trainer(**config, backend=backend).wait()
        assert third.job.status == "completed", third.job
        assert logged_s3.downloads(weights) == 1, "a later run on the node downloads nothing"
        metadata = await _started(backend, third.job.id)
        assert metadata["modelSource"] == "already in the node cache, from S3"
        assert metadata["tokenizedData"] == "from the node cache"
    finally:
        await backend.aclose()
