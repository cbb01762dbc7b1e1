"""The Arkor docs' minimal trainer on the cluster, in this checkout's trainer and sidecar images,
the local hub reached from pods at the cluster's gateway address (the real Hub only from a
cluster whose pods reach the internet: ``ARKOR_TEST_KUBECONFIG``); and a run whose branch moves
mid-run keeps its commit across an eviction (local hub only: it moves the branch)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.backends.kubernetes.diagnostics import current_pod
from arkor_ops.settings import KubernetesSettings
from arkor_ops.storage import MANIFEST_NAME, RunLayout, join_uri
from tests.fixtures.cluster import K8sCluster
from tests.fixtures.hub import DATASET_ID, HubTarget
from tests.fixtures.images import built_image
from tests.fixtures.s3 import S3Server
from tests.hub.test_local import ARKOR_MINIMAL
from tests.kubernetes.helpers import ended_run_events, make_settings, s3_secret_yaml

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.s3,
    pytest.mark.train,
    pytest.mark.hub,
    pytest.mark.timeout(900),
]
MOVING_ID = "arkorlab/moving-tiny"


def _pod_endpoint(hub: HubTarget, k8s_cluster: K8sCluster) -> str | None:
    """``HF_ENDPOINT`` for the run's pods (None: unset, huggingface.co)."""
    if hub.server is not None:
        return hub.server.endpoint(k8s_cluster.host_ip)
    if k8s_cluster.local is not None:
        pytest.skip(
            "the local cluster's pods reach nothing beyond this machine (tools/k8senv/netns.py): "
            "the real-Hub leg on a cluster needs ARKOR_TEST_KUBECONFIG"
        )
    return None


def _settings(
    k8s_cluster: K8sCluster,
    namespace: str,
    s3_server: S3Server,
    s3_prefix: str,
    hub: HubTarget,
    **overrides: Any,
) -> KubernetesSettings:
    endpoint = _pod_endpoint(hub, k8s_cluster)
    # the local cluster runs this checkout's images; another cluster, the settings' (its registry)
    images = (
        {"image": built_image("trainer"), "sidecar_image": built_image("sidecar")}
        if k8s_cluster.local is not None
        else {}
    )
    k8s_cluster.kubectl("apply", "-f", "-", input=s3_secret_yaml(namespace, s3_server))
    return make_settings(
        k8s_cluster,
        namespace,
        s3_server,
        s3_prefix,
        hf_token=None,
        hf_endpoint=endpoint,
        env={"OMP_NUM_THREADS": "1"},
        **images,
        **overrides,
    )


async def test_arkor_minimal_example_on_the_cluster_downloads_once_per_node(  # noqa: PLR0917
    hub: HubTarget,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    s3_server: S3Server,
    s3_prefix: str,
    node_cache: Path,
) -> None:
    settings = _settings(
        k8s_cluster,
        k8s_namespace,
        s3_server,
        s3_prefix,
        hub,
        model_cache_host_path=str(node_cache),
    )
    config = hub.arkor_config(ARKOR_MINIMAL)
    server = hub.server  # None on the real Hub: its requests cannot be seen from here
    backend = KubernetesBackend(settings)
    try:
        before = server.mark() if server else 0
        first = await create_async_trainer(**config, backend=backend).wait()
        assert first.job.status == "completed", first.job
        if server is not None:
            got = server.requests()[before:]
            files = {r["path"].rsplit("/", 1)[1] for r in got if r["method"] == "GET"}
            assert {"config.json", "model.safetensors", "train.jsonl"} <= files
        events = await ended_run_events(backend, first.job.id)
        started = next(e for e in events if e["type"] == "training.started")
        assert started["metadata"]["modelRevision"] == hub.head("model", hub.model_id)
        assert started["metadata"]["datasetRevision"] == hub.head("dataset", hub.dataset["name"])

        again = server.mark() if server else 0
        second = await create_async_trainer(**config, backend=backend).wait()
        assert second.job.status == "completed", second.job
        if server is not None:
            fetched = [
                r["path"]
                for r in server.requests()[again:]
                if r["method"] == "GET" and "/resolve/" in r["path"]
            ]
            assert fetched == [], "the second run on the node must download nothing"
        else:
            events = await ended_run_events(backend, second.job.id)
            started = next(e for e in events if e["type"] == "training.started")
            assert "already in the model cache" in started["metadata"]["modelSource"]
    finally:
        await backend.aclose()


@pytest.mark.hub_writes("moves the branch of a model repo during the run")
async def test_branch_moved_then_evicted_resumes_at_the_pinned_commit(  # noqa: PLR0917
    hub: HubTarget,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    s3_server: S3Server,
    s3_prefix: str,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    from arkor_ops.worker.tiny import build_tiny_model

    hub_server = hub.server
    assert hub_server is not None
    repo = hub_server.model_repo(MOVING_ID, tiny_model_dir)
    original = repo.head()
    retrained = build_tiny_model(tmp_path / "retrained", seed=7)
    settings = _settings(k8s_cluster, k8s_namespace, s3_server, s3_prefix, hub)
    past_first_save = asyncio.Event()

    def on_log(ctx: Any) -> None:
        if ctx.step > 30:
            past_first_save.set()

    fields = {
        "name": "moving-branch",
        "model": MOVING_ID,
        "revision": "main",
        "dataset": {"type": "huggingface", "name": DATASET_ID},
        "max_steps": 600,
        "save_steps": 30,
        "logging_steps": 1,
        "batch_size": 2,
        "lora": {"r": 4, "alpha": 8, "max_length": 64},
    }
    backend = KubernetesBackend(settings)
    try:
        trainer = create_async_trainer(**fields, backend=backend, callbacks={"on_log": on_log})
        job_id = (await trainer.start()).job_id
        waiting = asyncio.create_task(trainer.wait())
        try:
            await asyncio.wait_for(past_first_save.wait(), timeout=300)
            moved = repo.commit({"model.safetensors": retrained / "model.safetensors"}, "retrain")
            main = httpx.get(f"{hub_server.endpoint()}/api/models/{MOVING_ID}/revision/main")
            assert main.json()["sha"] == moved != original, "clients now see the moved branch"
            pod = current_pod(await backend.api.job_pods(job_id))
            assert pod is not None
            await backend.api.evict(pod["metadata"]["name"])
            result = await asyncio.wait_for(waiting, timeout=600)
        finally:
            waiting.cancel()
        assert result.job.status == "completed", result.job

        events = await ended_run_events(backend, job_id)
        starts = [e for e in events if e["type"] in ("training.started", "training.resumed")]
        assert [e["type"] for e in starts] == ["training.started", "training.resumed"], starts
        assert [s["metadata"]["modelRevision"] for s in starts] == [original, original]
        assert starts[1]["step"] > 0, "the replacement pod resumed from a checkpoint"
        storage = backend.storage()
        layout = RunLayout(settings.storage_uri or "", job_id)
        stored = json.loads(storage.get_bytes(layout.config))
        assert stored["resolved"]["model"] == {
            "id": MOVING_ID,
            "revision": "main",
            "commit": original,
        }
        manifests = [uri for uri in storage.list(layout.root) if uri.endswith("/" + MANIFEST_NAME)]
        assert join_uri(layout.final, MANIFEST_NAME) in manifests
        for uri in manifests:
            manifest = json.loads(storage.get_bytes(uri))
            assert manifest["base_model"] == f"{MOVING_ID}@{original}", uri
        paths = [r["path"] for r in hub_server.requests() if f"/{MOVING_ID}/resolve/" in r["path"]]
        assert not [p for p in paths if f"/resolve/{moved}/" in p], "never the moved branch"
        weights = [
            r
            for r in hub_server.requests()
            if r["method"] == "GET" and r["path"].endswith(f"/{original}/model.safetensors")
        ]
        assert len(weights) >= 2, "each pod fetched the pinned commit's weights"
    finally:
        await backend.aclose()
