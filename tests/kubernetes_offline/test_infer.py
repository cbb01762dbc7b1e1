"""`infer()` on the Kubernetes backend without a cluster: which pod's sidecar it asks and how
refusals read. The API server is a stand-in that lists one pod (what cannot run here); the
sidecar is the fake backend's real HTTP server, reached as an in-cluster client reaches a pod
(``events_via=direct``). Through the API server's pod proxy: tests/kubernetes/ (the cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.errors import CheckpointUnavailableError, JobNotFoundError
from arkor_ops.inference import infer_request
from arkor_ops.settings import KubernetesSettings
from arkor_ops.testing import FakeBackend, scripted_events

JOB = "tiny-infer-abc123"
REQUEST = infer_request({"messages": [{"role": "user", "content": "hi"}], "stream": False})


def _running_pod() -> dict[str, Any]:
    return {
        "metadata": {"name": f"{JOB}-xyz", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "containerStatuses": [{"name": "trainer", "state": {"running": {}}}],
            "initContainerStatuses": [{"name": "sidecar", "state": {"running": {}}}],
        },
    }


class StandInApi:
    """The two reads infer() makes of the API server."""

    namespace = "ml"

    def __init__(self, pods: list[dict[str, Any]] | None) -> None:
        self.pods = pods

    async def job_pods(self, job: str) -> list[dict[str, Any]]:
        if self.pods is None:
            raise JobNotFoundError(f"jobs.batch {job!r} not found in ml")
        return self.pods

    async def get_job(self, name: str) -> dict[str, Any]:
        raise JobNotFoundError(f"jobs.batch {name!r} not found in ml")


@pytest.fixture
def sidecar() -> Iterator[FakeBackend]:
    fake = FakeBackend(scripted_events(JOB, steps=4, outcome=None), job_id=JOB, infer_text="ok!")
    yield fake
    fake.close()


def _backend(sidecar: FakeBackend, pods: list[dict[str, Any]] | None) -> KubernetesBackend:
    port = int(sidecar.url.rsplit(":", 1)[1])
    settings = KubernetesSettings(namespace="ml", events_via="direct", sidecar_port=port)
    backend = KubernetesBackend(settings)
    backend._api = StandInApi(pods)  # type: ignore[assignment]
    return backend


async def test_infer_asks_the_runs_pod_for_that_step(sidecar: FakeBackend) -> None:
    backend = _backend(sidecar, [_running_pod()])
    (reply,) = [item async for item in backend.infer(JOB, 4, REQUEST)]
    assert reply["choices"][0]["message"]["content"] == "ok!"
    assert reply["model"] == f"{JOB}@step-4"
    (post,) = [r for r in sidecar.requests if r.method == "POST"]
    assert post.path == f"/v1/jobs/{JOB}/checkpoints/4/chat/completions"
    assert post.body["stream"] is False


async def test_a_step_the_worker_does_not_hold_is_checkpoint_unavailable(
    sidecar: FakeBackend,
) -> None:
    backend = _backend(sidecar, [_running_pod()])
    with pytest.raises(CheckpointUnavailableError) as err:
        [item async for item in backend.infer(JOB, 3, REQUEST)]
    assert err.value.reason == "checkpoint_not_held" and err.value.status == 409


async def test_a_run_whose_job_is_gone_has_ended(sidecar: FakeBackend) -> None:
    backend = _backend(sidecar, None)
    with pytest.raises(CheckpointUnavailableError, match=f"run {JOB} has ended") as err:
        [item async for item in backend.infer(JOB, 4, REQUEST)]
    assert err.value.reason == "run_ended"
