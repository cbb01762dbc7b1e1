"""The CPU pre-flight on the cluster: its Job runs on the CPU node in this checkout's trainer
image; a bad row and a missing model fail there, before any GPU Job exists (every Job the
namespace ever had is seen through a watch); a passing one is followed by the GPU Job, whose
log starts with the pre-flight's events; a cancel during the pre-flight leaves nothing."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, watch

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.backends.kubernetes import manifests as m
from arkor_ops.errors import BackendError, PreflightFailedError
from arkor_ops.settings import KubernetesSettings
from arkor_ops.storage import join_uri, open_storage
from tests.fixtures.cluster import K8sCluster
from tests.kubernetes.helpers import RunInputs, ended_run_events

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.train, pytest.mark.timeout(900)]


class JobWatch:
    """Every Job added to or deleted from a namespace while it runs, in order, with the node
    of each pod that ran (a watch from the namespace's current state: nothing is missed)."""

    def __init__(self, cluster: K8sCluster, namespace: str) -> None:
        self.batch = client.BatchV1Api(cluster.api_client())
        self.core = client.CoreV1Api(cluster.api_client())
        self.namespace = namespace
        self.seen: list[tuple[str, str]] = []
        self.nodes: dict[str, str] = {}
        self._watch = watch.Watch()
        listed = self.batch.list_namespaced_job(namespace)
        self._version = listed.metadata.resource_version
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for event in self._watch.stream(
            self.batch.list_namespaced_job,
            self.namespace,
            resource_version=self._version,
            timeout_seconds=900,
        ):
            self.seen.append((event["type"], event["object"].metadata.name))

    def added(self) -> list[str]:
        return [name for kind, name in self.seen if kind == "ADDED"]

    def record_nodes(self) -> None:
        for pod in self.core.list_namespaced_pod(self.namespace).items:
            job = (pod.metadata.labels or {}).get(m.JOB_NAME_LABEL)
            if job and pod.spec.node_name:
                self.nodes[job] = pod.spec.node_name

    def stop(self) -> None:
        self._watch.stop()


@pytest.fixture
def jobs(k8s_cluster: K8sCluster, k8s_namespace: str) -> Iterator[JobWatch]:
    watcher = JobWatch(k8s_cluster, k8s_namespace)
    try:
        yield watcher
    finally:
        watcher.stop()


@pytest.fixture
async def checked(kube_settings: KubernetesSettings) -> AsyncIterator[KubernetesBackend]:
    """A backend whose training runs go through the pre-flight (as deployed)."""
    backend = KubernetesBackend(kube_settings.model_copy(update={"preflight": True}))
    yield backend
    await backend.aclose()


async def _nothing_left(cluster: K8sCluster, namespace: str) -> list[str]:
    """The run objects (Jobs, pods, ConfigMaps, Secrets) still in the namespace after up to
    30 s (owned objects go a moment after their Job)."""
    left: list[str] = []
    for _ in range(60):
        out = cluster.kubectl(
            "get", "jobs,pods,configmaps,secrets", "-n", namespace, "-l", m.SELECTOR, "-o", "name"
        )
        left = out.stdout.split()
        if not left:
            break
        await asyncio.sleep(0.5)
    return left


async def _pool_of_first_pod(jobs: JobWatch) -> str:
    """The node pool (``arkor-ops.dev/pool``) of the first Job's pod, once it is scheduled."""
    while not jobs.added():
        await asyncio.sleep(0.2)
    first = jobs.added()[0]
    for _ in range(300):
        jobs.record_nodes()
        if first in jobs.nodes:
            node = jobs.core.read_node(jobs.nodes[first])
            return str((node.metadata.labels or {}).get("arkor-ops.dev/pool"))
        await asyncio.sleep(0.2)
    raise AssertionError(f"the pod of {first} was never scheduled")


def _bad_data(inputs: RunInputs) -> dict[str, str]:
    """A dataset whose row 3 has a role no chat has."""
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    rows = [good, good, {"messages": [{"role": "robot", "content": "beep"}]}, good]
    uri = join_uri(inputs.bucket, "inputs", "bad.jsonl")
    open_storage(uri).put_bytes(uri, "".join(json.dumps(r) + "\n" for r in rows).encode())
    return {"type": "s3", "uri": uri}


async def test_bad_row_and_missing_model_fail_before_any_gpu_job(
    checked: KubernetesBackend,
    run_config: Callable[..., dict[str, Any]],
    run_inputs: RunInputs,
    jobs: JobWatch,
    k8s_cluster: K8sCluster,
) -> None:
    missing = join_uri(run_inputs.bucket, "models", "no-such-model")
    bad_row, no_model = await asyncio.gather(
        create_async_trainer(**run_config(name="Bad Row", dataset=_bad_data(run_inputs)),
                             backend=checked).start(),
        create_async_trainer(**run_config(name="No Model", model=missing), backend=checked)
        .start(),
        return_exceptions=True,
    )  # fmt: skip

    assert isinstance(bad_row, PreflightFailedError), bad_row
    assert "row 3: `messages[0].role` is 'robot'" in str(bad_row)
    assert "no GPU Job was created" in str(bad_row)
    assert isinstance(no_model, PreflightFailedError), no_model
    assert f"model {missing} does not exist" in str(no_model)
    added = jobs.added()
    assert len(added) == 2, jobs.seen
    assert all(name.endswith(m.PREFLIGHT_SUFFIX) for name in added), f"a GPU Job: {added}"
    assert await _nothing_left(k8s_cluster, jobs.namespace) == []


async def test_passing_preflight_then_the_gpu_job_continues_its_log(
    checked: KubernetesBackend, run_config: Callable[..., dict[str, Any]], jobs: JobWatch
) -> None:
    trainer = create_async_trainer(**run_config(name="Checked", max_steps=2), backend=checked)
    started = asyncio.ensure_future(trainer.start())
    pool = await _pool_of_first_pod(jobs)
    job_id = (await started).job_id
    result = await trainer.wait()
    assert result.job.status == "completed", result.job
    events = await ended_run_events(checked, job_id)

    preflight = m.preflight_name(job_id)
    assert jobs.added() == [preflight, job_id], jobs.seen
    assert ("DELETED", preflight) in jobs.seen, "the passed pre-flight's Job is deleted"
    assert pool == "cpu", "the pre-flight runs on the CPU pool"
    types = [e["type"] for e in events]
    assert types[:3] == ["job.phase", "preflight.passed", "training.started"], types
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    passed = events[1]
    assert passed["rows"] > 0 and passed["tokens"] > 0
    assert passed["preview"][0]["text"], passed


@pytest.mark.parametrize("key", ["cancel-in-preflight", None], ids=["keyed", "unkeyed"])
async def test_cancel_during_the_preflight_leaves_nothing(
    checked: KubernetesBackend,
    run_config: Callable[..., dict[str, Any]],
    jobs: JobWatch,
    k8s_cluster: K8sCluster,
    key: str | None,
) -> None:
    """With or without the caller's key, the cancel stops the run in its pre-flight."""
    trainer = create_async_trainer(
        **run_config(name="Cancelled Early"), backend=checked, idempotency_key=key
    )
    started = asyncio.ensure_future(trainer.start())
    while not jobs.added():
        await asyncio.sleep(0.2)
    await trainer.cancel()
    with pytest.raises(BackendError, match="deleted before it ended"):
        await started
    (preflight,) = jobs.added()
    job_id = preflight.removesuffix(m.PREFLIGHT_SUFFIX)
    assert key is None or job_id == m.job_name("Cancelled Early", key)
    described = await checked.describe(job_id)

    assert described.job.status == "cancelled", described
    assert jobs.added() == [m.preflight_name(job_id)], jobs.seen
    assert await _nothing_left(k8s_cluster, jobs.namespace) == []
