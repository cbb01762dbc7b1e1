"""Cancelling a fine-tune flow run while its evaluation Job runs, on the local cluster.

A runner (``serve()`` in a subprocess, as operators run it) executes the flow: a short training
run, its registration in MLflow, then the evaluation of the new version, made long (every row,
256 new tokens each). Once the evaluation's pod runs, the flow run is cancelled from the Prefect
API. The evaluation Job, its pods, ConfigMap and Secret must be gone within
``CLEANUP_SECONDS``, the flow run must end ``Cancelled``, and nothing may be promoted (a first
version would promote itself had its evaluation completed).

Parametrized over how the runner stops the flow: as deployed (the runner's SIGTERM and the
flow's hooks, racing the flow's own cancel check) and with the flow's own check turned off, so
that the SIGTERM's path (the task stopping its job on the way out, then the hooks) has to.

The deadline: the runner runs the hooks only once the flow's process has exited (about 9 s
after its SIGTERM here), and the cancel returns once the pod is gone (its 5 s grace period, the
sidecar's flush); on this 2-core machine the Job was gone 34 to 36 s after the request.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from arkor_ops.backends.kubernetes.manifests import FLOW_RUN_LABEL, STAGE_LABEL
from tests.fixtures.cluster import K8sCluster
from tests.flows.helpers import eventually, serve_runner, tiny_config, wait_final
from tests.flows.test_kubernetes import backend_param, kube_env  # noqa: F401 - fixture
from tests.kubernetes.helpers import RunInputs

pytestmark = [
    pytest.mark.prefect,
    pytest.mark.cluster,
    pytest.mark.s3,
    pytest.mark.mlflow,
    pytest.mark.train,
    pytest.mark.timeout(900),
]

#: Seconds from the cancel request until nothing of the evaluation Job is left (see above).
CLEANUP_SECONDS = 60


@pytest.fixture
def runner(
    kube_env: dict[str, str],  # noqa: F811
    mlflow_env: dict[str, str],
    request: pytest.FixtureRequest,
) -> Iterator[str]:
    """A ``serve()`` runner with the cluster's and MLflow's environment; yields the suffix."""
    with serve_runner(dict(os.environ), request) as suffix:
        yield suffix


def _objects(cluster: K8sCluster, namespace: str, selector: str) -> list[str]:
    """``kind/name`` of the Jobs, pods, ConfigMaps and Secrets matching ``selector``."""
    out = cluster.kubectl(
        "get", "jobs,pods,configmaps,secrets", "-n", namespace, "-l", selector, "-o", "name"
    )
    return out.stdout.split()


def _running_pods(cluster: K8sCluster, namespace: str, selector: str) -> list[str]:
    out = cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", selector,
        "--field-selector=status.phase=Running", "-o", "name",
    )  # fmt: skip
    return out.stdout.split()


@pytest.mark.parametrize("runner", ["as-deployed", "hooks-only"], indirect=True)
async def test_cancelling_the_flow_run_during_evaluation_stops_the_evaluation_job(
    runner: str, k8s_cluster: K8sCluster, k8s_namespace: str, run_inputs: RunInputs
) -> None:
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    name = f"evalcancel-{uuid.uuid4().hex[:6]}"
    config = tiny_config(
        run_inputs.data, model=run_inputs.model, name=name, maxSteps=2,
        dataset=run_inputs.dataset(),
    )  # fmt: skip
    evaluation = {
        "dataset": run_inputs.dataset(),
        "metrics": ["loss", "exact_match"],
        "generation": {"maxNewTokens": 256},
    }
    async with get_client() as client:
        deployment = await eventually(
            lambda: _deployment(client, f"fine-tune/fine-tune{runner}"), timeout=60
        )
        run = await client.create_flow_run_from_deployment(
            deployment.id,
            parameters={
                "config": config,
                "backend": backend_param(k8s_namespace),
                "evaluation": evaluation,
            },
        )
        selector = f"{FLOW_RUN_LABEL}={run.id},{STAGE_LABEL}=evaluation"

        async def evaluating() -> list[str]:
            final = await client.read_flow_run(run.id)
            assert not (final.state and final.state.is_final()), final.state
            return _running_pods(k8s_cluster, k8s_namespace, selector)

        await eventually(evaluating, timeout=480, interval=1)
        assert any(
            o.startswith("job.batch/") for o in _objects(k8s_cluster, k8s_namespace, selector)
        )

        await client.set_flow_run_state(run.id, Cancelling(), force=True)
        asked = time.monotonic()

        async def gone() -> bool:
            return not _objects(k8s_cluster, k8s_namespace, selector)

        try:
            await eventually(gone, timeout=CLEANUP_SECONDS, interval=0.5)
        except AssertionError:
            left = _objects(k8s_cluster, k8s_namespace, selector)
            with contextlib.suppress(AssertionError):  # how long it took, for the message
                await eventually(gone, timeout=60, interval=0.5)
            after = time.monotonic() - asked
            later = "still there" if not await gone() else "gone"
            raise AssertionError(
                f"{CLEANUP_SECONDS} s after the cancel request the evaluation left {left} "
                f"({later} after {after:.0f} s); the flow run's log:\n"
                + "\n".join(await _log_lines(client, run.id))
            ) from None
        print(f"evaluation Job gone {time.monotonic() - asked:.1f} s after the cancel request")

        final = await wait_final(client, run.id, timeout=90)
        assert final.state.is_cancelled(), (final.state.type, final.state.message)

    registry = MlflowClient()
    (version,) = registry.search_model_versions(f"name='{name}'")  # registered, then evaluated
    assert registry.get_registered_model(name).aliases == {}, "nothing may be promoted"
    assert version.version == "1"


async def _log_lines(client: Any, flow_run_id: Any) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = await client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    )
    return [f"{log.timestamp:%H:%M:%S.%f} {log.message}" for log in logs][-20:]


async def _deployment(client: Any, name: str) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        return await client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None
