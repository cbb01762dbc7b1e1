"""The fine_tune flow on the KubernetesBackend, against the real local cluster and Prefect server.

The flows build their backend from ``ARKOR_K8S_*`` (as a deployment would), so the fixture sets
those for this process and the runner subprocesses. Run pods run in this checkout's trainer and
sidecar images (the node agent runs them with runc), read the tiny model and its data from S3
(``run_inputs``) and reach the S3 server at ``k8s_cluster.host_ip``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from arkor_ops.backends.kubernetes.manifests import FLOW_RUN_LABEL
from arkor_ops.backends.kubernetes.manifests import SELECTOR as MANAGED
from tests.fixtures.cluster import K8sCluster
from tests.fixtures.s3 import S3Server
from tests.flows.helpers import (
    by_key,
    embedded_png,
    eventually,
    flow_process_pids,
    latest,
    png_info,
    run_artifacts,
    serve_runner,
    stop_logged,
    tiny_config,
    wait_final,
)
from tests.kubernetes.helpers import S3_SECRET, RunInputs, s3_secret_yaml

pytestmark = [
    pytest.mark.prefect,
    pytest.mark.cluster,
    pytest.mark.s3,
    pytest.mark.train,
    pytest.mark.timeout(600),
]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def kube_env(  # noqa: PLR0917
    prefect_server: str,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    s3_server: S3Server,
    s3_prefix: str,
    trainer_image: str,
    sidecar_image: str,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """``ARKOR_K8S_*`` for runs in this test's namespace (set here, inherited by runners)."""
    k8s_cluster.kubectl("apply", "-f", "-", input=s3_secret_yaml(k8s_namespace, s3_server))
    env = {
        "ARKOR_BACKEND": "kubernetes",
        "ARKOR_K8S_NAMESPACE": k8s_namespace,
        "ARKOR_K8S_KUBECONFIG": str(k8s_cluster.kubeconfig),
        "ARKOR_K8S_IMAGE": trainer_image,
        "ARKOR_K8S_SIDECAR_IMAGE": sidecar_image,
        "ARKOR_K8S_STORAGE_URI": s3_prefix,
        "ARKOR_K8S_S3_ENDPOINT_URL": s3_server.endpoint(k8s_cluster.host_ip),
        "ARKOR_K8S_S3_CLIENT_ENDPOINT_URL": s3_server.endpoint(),
        "ARKOR_K8S_S3_SECRET_NAME": S3_SECRET,
        "ARKOR_K8S_CPU_REQUEST": "100m",
        "ARKOR_K8S_MEMORY_REQUEST": "256Mi",
        "ARKOR_K8S_MEMORY_LIMIT": "4Gi",
        "ARKOR_K8S_CANCEL_GRACE_SECONDS": "5",
        "ARKOR_K8S_CANCEL_TIMEOUT_SECONDS": "60",
        # the flows' steps, not the pre-flight (tests/kubernetes/test_preflight.py; the
        # Prefect worker's deployment test runs with it, as deployed)
        "ARKOR_K8S_PREFLIGHT": "false",
        "ARKOR_K8S_ENV": json.dumps(
            {
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1",
                "OMP_NUM_THREADS": "1",
            }
        ),
        "PYTHONPATH": str(REPO),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def backend_param(namespace: str) -> dict[str, Any]:
    """The flow's ``backend`` parameter for this test's namespace."""
    return {"backend": "kubernetes", "namespace": namespace}


def run_objects(cluster: K8sCluster, namespace: str, selector: str) -> list[str]:
    """``kind/name`` of the Jobs and pods matching ``selector``."""
    out = cluster.kubectl("get", "jobs,pods", "-n", namespace, "-l", selector, "-o", "name")
    return out.stdout.split()


async def test_fine_tune_completes_on_the_cluster_and_a_retried_start_makes_one_job(  # noqa: PLR0917
    kube_env: dict[str, str],
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    run_inputs: RunInputs,
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One tiny run: artifacts in the flow run, and start_training's retry adopts its Job."""
    import arkor_ops.flows.training
    from arkor_ops.flows.fine_tune import fine_tune

    # Test-only failure injection: start_training's first attempt raises right after the Job
    # exists (an answer lost on the way back); Prefect retries the task.
    real_make_trainer = arkor_ops.flows.training.make_trainer
    started: list[str] = []

    def flaky_make_trainer(*args: Any, **kwargs: Any) -> Any:
        trainer = real_make_trainer(*args, **kwargs)
        if len(args) < 4 and "callbacks" not in kwargs:  # start_training's trainer
            real_start = trainer.start

            async def start() -> Any:
                result = await real_start()
                started.append(result.job_id)
                if len(started) == 1:
                    raise ConnectionError("lost the answer after the Job was created")
                return result

            trainer.start = start
        return trainer

    monkeypatch.setattr(arkor_ops.flows.training, "make_trainer", flaky_make_trainer)
    config = tiny_config(
        run_inputs.data, model=run_inputs.model, name="flow-kube", dataset=run_inputs.dataset()
    )
    state = await fine_tune(config=config, backend=backend_param(k8s_namespace), return_state=True)
    assert state.is_completed(), state.message
    result = await state.result()
    assert result["job"]["status"] == "completed"

    # the retry adopted the Job of the first attempt: one Job in the namespace
    assert len(started) == 2 and started[0] == started[1] == result["job"]["id"]
    jobs = k8s_cluster.kubectl("get", "jobs", "-n", k8s_namespace, "-l", MANAGED, "-o", "name")
    assert jobs.stdout.split() == [f"job.batch/{started[0]}"]
    # labelled with its flow run though no runner set $PREFECT__FLOW_RUN_ID: the reaper finds it
    flow_run_id = str(state.state_details.flow_run_id)
    labelled = k8s_cluster.kubectl(
        "get", "jobs", "-n", k8s_namespace, "-l", f"{FLOW_RUN_LABEL}={flow_run_id}", "-o", "name"
    )
    assert labelled.stdout.split() == [f"job.batch/{started[0]}"]

    from prefect.client.orchestration import get_client

    async with get_client() as client:
        arts = await run_artifacts(client, state.state_details.flow_run_id)
    job_id = result["job"]["id"]
    arts_by_key = by_key(arts)  # one card per artifact on the run page: three
    assert sorted(arts_by_key) == [f"{job_id}-{w}" for w in ("checkpoints", "loss", "progress")]
    assert float(arts_by_key[f"{job_id}-progress"].data) == 100.0
    loss = arts_by_key[f"{job_id}-loss"]
    rows = json.loads(loss.data)
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert all(r["loss"] not in ("", None) for r in rows)
    checkpoints = json.loads(arts_by_key[f"{job_id}-checkpoints"].data)
    assert [(r["step"], r["artifact"]) for r in checkpoints] == [
        ("2", "checkpoint"),
        ("4", "checkpoint"),
        ("4", "final adapter"),
    ]
    run_root = f"{kube_env['ARKOR_K8S_STORAGE_URI'].rstrip('/')}/{job_id}"
    assert all(r["uri"].startswith(f"{run_root}/") for r in checkpoints)
    # the curve is saved beside the final adapter in S3, the picture the loss table shows
    bucket, _, key = f"{run_root}/loss.png".removeprefix("s3://").partition("/")
    saved = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert png_info(saved)["Description"] == "train loss: 4 points; eval loss: 0 points"
    assert saved == embedded_png(loss.description)


@pytest.fixture
def runner(kube_env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[str]:
    """A ``serve()`` runner subprocess (Kubernetes env); yields the deployment suffix."""
    with serve_runner(dict(os.environ), request) as suffix:
        yield suffix


async def _start_run(client: Any, suffix: str, namespace: str, inputs: RunInputs) -> Any:
    """Start a long fine-tune run through the runner's deployment; returns the flow run."""
    from prefect.exceptions import ObjectNotFound

    async def deployment() -> Any:
        try:
            return await client.read_deployment_by_name(f"fine-tune/fine-tune{suffix}")
        except ObjectNotFound:
            return None

    config = tiny_config(
        inputs.data,
        model=inputs.model,
        name=f"cancel-{uuid.uuid4().hex[:6]}",
        maxSteps=1_000_000,  # never ends by itself: it is cancelled or reaped
        saveSteps={"steps": 1000},
        dataset=inputs.dataset(),
    )
    found = await eventually(deployment, 60)
    return await client.create_flow_run_from_deployment(
        found.id, parameters={"config": config, "backend": backend_param(namespace)}
    )


async def test_cancelling_the_flow_run_deletes_the_job_and_its_pods(
    runner: str, k8s_cluster: K8sCluster, k8s_namespace: str, run_inputs: RunInputs
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    async with get_client() as client:
        run = await _start_run(client, runner, k8s_namespace, run_inputs)
        selector = f"{FLOW_RUN_LABEL}={run.id}"

        async def training() -> bool:  # a training.log event reached the progress artifact
            progress = latest(await run_artifacts(client, run.id), "progress")
            return bool(progress) and float(progress[0].data) > 0

        await eventually(training, timeout=240, interval=1)
        objects = run_objects(k8s_cluster, k8s_namespace, selector)
        assert any(o.startswith("job.batch/") for o in objects), objects
        assert any(o.startswith("pod/") for o in objects), objects

        await client.set_flow_run_state(run.id, Cancelling(), force=True)

        async def gone() -> bool:
            return not run_objects(k8s_cluster, k8s_namespace, selector)

        await eventually(gone, timeout=120, interval=0.5)
        # ended by the runner after its hook, or by the flow's own check if the signal was lost
        final = await wait_final(client, run.id, timeout=60)
        assert final.state.is_cancelled(), final.state
        # the hook (in the runner) or the flow's own check says it stopped the run
        await eventually(lambda: stop_logged(client, run.id), timeout=15)


@pytest.mark.parametrize("runner", ["broken-hooks"], indirect=True)
async def test_reaper_deletes_the_job_when_the_hook_fails(
    runner: str, k8s_cluster: K8sCluster, k8s_namespace: str, run_inputs: RunInputs
) -> None:
    """The flow process killed (SIGKILL: no termination path runs) and its crash hook failing
    leave the Job; the reaper's label sweep deletes it."""
    import os
    import signal

    from prefect.client.orchestration import get_client

    from arkor_ops.flows.reaper import reap_orphans

    async with get_client() as client:
        run = await _start_run(client, runner, k8s_namespace, run_inputs)
        selector = f"{FLOW_RUN_LABEL}={run.id}"

        async def job() -> list[str]:
            return [o for o in run_objects(k8s_cluster, k8s_namespace, selector) if "job" in o]

        (job_ref,) = await eventually(job, timeout=120, interval=1)
        for pid in flow_process_pids(run.id):
            os.kill(pid, signal.SIGKILL)
        final = await wait_final(client, run.id, timeout=60)
    assert final.state.is_crashed(), final.state
    assert job_ref in run_objects(k8s_cluster, k8s_namespace, selector), "hook should have failed"

    # lookback 0: no ended flow run is looked at by name, so only the label sweep can find it
    reaped = await reap_orphans(backend=backend_param(k8s_namespace), lookback_hours=0)
    assert reaped == [job_ref.removeprefix("job.batch/")]
    assert run_objects(k8s_cluster, k8s_namespace, selector) == []


async def test_reaper_leaves_jobs_of_flow_runs_it_does_not_know_alone(
    kube_env: dict[str, str], k8s_cluster: K8sCluster, k8s_namespace: str, run_files: Path
) -> None:
    """A flow-run id this Prefect server does not know is another server's run (two servers
    sharing a namespace), or a label set by hand: never an orphan."""
    from arkor_ops.backends.kubernetes import KubernetesBackend
    from arkor_ops.config import validate_config
    from arkor_ops.flows.reaper import reap_orphans
    from arkor_ops.settings import KubernetesSettings

    settings = KubernetesSettings().model_copy(
        update={"node_selector": {"arkor-ops.dev/pool": "nowhere"}}  # its pod stays Pending
    )
    backend = KubernetesBackend(settings)
    data, model = str(run_files / "train.jsonl"), str(run_files / "model")
    theirs = None
    try:
        config = validate_config(tiny_config(data, model=model, name="theirs"))
        theirs = await backend.submit(config, flow_run_id=str(uuid.uuid4()))

        reaped = await reap_orphans(backend=backend_param(k8s_namespace), lookback_hours=0)

        assert reaped == []
        job = await backend.api.get_job(theirs.id)
        assert not job["metadata"].get("deletionTimestamp"), job["metadata"]
        assert (await backend.describe(theirs.id)).job.status not in ("cancelled", "failed")
    finally:
        if theirs is not None:
            await backend.cancel(theirs.id)
        await backend.aclose()


async def test_reaper_deletes_the_secret_of_a_run_that_ended_unfollowed(
    kube_env: dict[str, str], k8s_cluster: K8sCluster, k8s_namespace: str, run_files: Path
) -> None:
    """A run that ended while no client followed it keeps its Secret until the next sweep, not
    until the Job's TTL; a run still going keeps its Secret."""
    from pydantic import SecretStr

    from arkor_ops.backends.kubernetes import KubernetesBackend
    from arkor_ops.config import validate_config
    from arkor_ops.flows.reaper import reap_orphans
    from arkor_ops.settings import KubernetesSettings

    settings = KubernetesSettings().model_copy(
        update={
            "node_selector": {"arkor-ops.dev/pool": "nowhere"},  # pods stay Pending
            "hf_token": SecretStr("hf_reaper_test_secret_0123456789"),  # so runs have a Secret
        }
    )
    backend = KubernetesBackend(settings)
    data, model = str(run_files / "train.jsonl"), str(run_files / "model")
    going = ended = None
    try:
        going = await backend.submit(validate_config(tiny_config(data, model=model, name="going")))
        config = validate_config(tiny_config(data, model=model, name="ended"))
        ended = await backend.submit(config)
        # its deadline passes while it is pending, and nobody follows it
        k8s_cluster.kubectl(
            "patch", "job", ended.id, "-n", k8s_namespace, "--type=merge",
            "-p", '{"spec": {"activeDeadlineSeconds": 1}}',
        )  # fmt: skip
        k8s_cluster.kubectl(
            "wait", "--for=condition=Failed", f"job/{ended.id}", "-n", k8s_namespace,
            "--timeout=60s", timeout=90,
        )  # fmt: skip

        await reap_orphans(backend=backend_param(k8s_namespace), lookback_hours=0)

        secrets = k8s_cluster.kubectl("get", "secrets", "-n", k8s_namespace, "-o", "name").stdout
        assert f"secret/{ended.id}-secrets" not in secrets.split()
        assert f"secret/{going.id}-secrets" in secrets.split()  # still needed
    finally:
        for run in (going, ended):
            if run is not None:
                await backend.cancel(run.id)
        await backend.aclose()
