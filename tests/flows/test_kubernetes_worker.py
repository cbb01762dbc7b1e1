"""The production path: a Kubernetes work pool, ``prefect deploy`` from prefect.yaml and the
``prefect-kubernetes`` worker (``prefect worker start --type kubernetes``) against the local
cluster.

The worker (a process of this machine, with the token of its ServiceAccount from k8s/prefect)
creates each flow run's Job
from k8s/prefect/base-job-template.json; the flow-run pod runs ``prefect flow-run execute`` with
the client ServiceAccount of k8s/base and no kubeconfig, so it creates the training Job in-cluster
with its ServiceAccount token and follows it through the API server's pod proxy. The S3 keys reach
it from the Secret (``envFrom``), never as a parameter or job variable. The pods reach the Prefect
and S3 servers at their gateway (``k8s_cluster.host_ip``).

The node agent runs every pod from this checkout's images with runc (their users, read-only
roots, the templates' volumes and the pods' network): the flow-run pod in the flows image, the
training pod it creates in the trainer and sidecar images, which read the tiny model and its data
from S3 as a cluster's pods would (docs/local-cluster.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from arkor_ops.backends.kubernetes.manifests import FLOW_RUN_LABEL
from tests.fixtures.cluster import K8sCluster
from tests.fixtures.s3 import S3Server
from tests.flows.helpers import by_key, eventually, latest, run_artifacts, tiny_config, wait_final
from tests.kubernetes.helpers import S3_SECRET, service_account_kubeconfig, upload_run_inputs

pytestmark = [
    pytest.mark.prefect,
    pytest.mark.cluster,
    pytest.mark.s3,
    pytest.mark.train,
    pytest.mark.timeout(900),
]

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "k8s" / "prefect" / "base-job-template.json"
PREFECT_FLOW_RUN_LABEL = "prefect.io/flow-run-id"  # what the worker labels its Jobs with


@dataclass
class Pool:
    """A work pool with its deployment and a running worker."""

    name: str
    namespace: str
    storage_uri: str
    worker_log: Path


def prefect(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The ``prefect`` command line (from the repository root, where prefect.yaml is)."""
    proc = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture
def pool(  # noqa: PLR0917
    prefect_server: str,
    pods_api_url: str,
    k8s_cluster: K8sCluster,
    applied_base: str,
    s3_server: S3Server,
    s3_prefix: str,
    flows_image: str,
    trainer_image: str,
    sidecar_image: str,
    tmp_path: Path,
) -> Iterator[Pool]:
    """What an operator does: the work pool from the base job template (its defaults set for
    this cluster: image, where runs go), ``prefect deploy --name fine-tune``, and a worker."""
    name = f"arkor-ops-{uuid.uuid4().hex[:6]}"
    template = json.loads(TEMPLATE.read_text())
    props = template["variables"]["properties"]
    props["image"]["default"] = flows_image
    props["namespace"]["default"] = applied_base
    props["s3_secret_name"]["default"] = S3_SECRET
    # where training runs go: non-secret settings only (the S3 keys come from the Secret)
    props["env"]["default"] = {
        "ARKOR_K8S_IMAGE": trainer_image,
        "ARKOR_K8S_SIDECAR_IMAGE": sidecar_image,
        "ARKOR_K8S_STORAGE_URI": s3_prefix,
        "ARKOR_K8S_S3_ENDPOINT_URL": s3_server.endpoint(k8s_cluster.host_ip),
        "ARKOR_K8S_S3_CLIENT_ENDPOINT_URL": s3_server.endpoint(k8s_cluster.host_ip),
        "ARKOR_K8S_SERVICE_ACCOUNT": "arkor-ops-run",
        "ARKOR_K8S_CPU_REQUEST": "100m",
        "ARKOR_K8S_MEMORY_REQUEST": "256Mi",
        "ARKOR_K8S_MEMORY_LIMIT": "4Gi",
        "ARKOR_K8S_CANCEL_GRACE_SECONDS": "3",
        "ARKOR_K8S_ENV": json.dumps(
            {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        ),
        "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
    }
    template_file = tmp_path / "base-job-template.json"
    template_file.write_text(json.dumps(template))

    env = {k: v for k, v in os.environ.items() if not k.startswith("ARKOR_")}
    env["PREFECT_API_URL"] = prefect_server
    prefect("work-pool", "create", name, "--type", "kubernetes",
            "--base-job-template", str(template_file), env=env)  # fmt: skip
    prefect("--no-prompt", "deploy", "--name", "fine-tune", "--pool", name, env=env)

    # the worker: on this machine, as the ServiceAccount k8s/prefect gives it (its token, not
    # the admin kubeconfig); flow-run pods get its API URL
    k8s_cluster.kubectl("apply", "-k", str(REPO / "k8s" / "prefect"))
    kubeconfig = service_account_kubeconfig(
        k8s_cluster, "arkor-ops-prefect-worker", tmp_path / "worker.kubeconfig"
    )
    worker_env = dict(
        env,
        PREFECT_API_URL=pods_api_url,
        KUBECONFIG=str(kubeconfig),
        PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES=applied_base,
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="1",
    )
    worker_log = tmp_path / "worker.log"
    with worker_log.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", name,
             "--type", "kubernetes", "--name", f"{name}-worker"],
            env=worker_env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield Pool(name, applied_base, s3_prefix, worker_log)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        k8s_cluster.kubectl(
            "delete", "jobs", "-n", applied_base, "-l", PREFECT_FLOW_RUN_LABEL,
            "--wait=false", check=False,
        )  # fmt: skip
        # and the training Jobs its flow runs created: the namespace is shared with later
        # tests (tests/kubernetes/test_rbac.py lists the client's Jobs there)
        k8s_cluster.kubectl(
            "delete", "jobs", "-n", applied_base, "-l", FLOW_RUN_LABEL,
            "--cascade=foreground", "--timeout=120s", check=False,
        )  # fmt: skip


async def start_run(client: Any, pool: Pool, files: Path, **extra: Any) -> Any:
    """A fine-tune run from the API, on the deployment prefect.yaml defines, of the tiny model
    and its data put in the pool's bucket (the training pod reads them there)."""
    deployment = await client.read_deployment_by_name("fine-tune/fine-tune")
    bucket = "s3://" + pool.storage_uri.removeprefix("s3://").partition("/")[0]
    inputs = upload_run_inputs(bucket, files)
    config = tiny_config(inputs.data, model=inputs.model, name="worker-run", **extra)
    config["dataset"] = inputs.dataset()
    return await client.create_flow_run_from_deployment(
        deployment.id, parameters={"config": config}
    )


def jobs(cluster: K8sCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The Jobs matching ``selector``."""
    out = cluster.kubectl("get", "jobs", "-n", namespace, "-l", selector, "-o", "json")
    return list(json.loads(out.stdout)["items"])


async def collect_container_ids(cluster: K8sCluster, namespace: str, into: set[str]) -> None:
    """Add the containerIDs of the pods in ``namespace`` to ``into`` each second, until
    cancelled (a finished flow-run Job goes at once: its pod is seen while it runs)."""
    while True:
        out = await asyncio.to_thread(
            cluster.kubectl, "get", "pods", "-n", namespace, "-o", "json", check=False
        )  # fmt: skip
        if out.returncode == 0:
            into |= {
                f"{pod['metadata']['name']}/{row['name']} {row['containerID']}"
                for pod in json.loads(out.stdout)["items"]
                for key in ("initContainerStatuses", "containerStatuses")
                for row in pod.get("status", {}).get(key, [])
                if row.get("containerID")
            }
        await asyncio.sleep(1)


def diagnose(cluster: K8sCluster, pool: Pool) -> str:
    """The worker's log and the namespace's pods, for a failed assertion."""
    pods = cluster.kubectl("get", "pods", "-n", pool.namespace, "-o", "wide", check=False)
    logs = cluster.kubectl(
        "logs", "-n", pool.namespace, "-l", PREFECT_FLOW_RUN_LABEL, "--tail=300", check=False
    )  # fmt: skip
    return (
        f"worker log:\n{pool.worker_log.read_text()[-3000:]}\npods:\n{pods.stdout}\n"
        f"flow-run pod log:\n{logs.stdout}{logs.stderr}"
    )


async def test_a_deployment_run_trains_in_a_flow_run_pod_of_the_kubernetes_worker(
    pool: Pool, k8s_cluster: K8sCluster, run_files: Path, s3_server: S3Server
) -> None:
    from prefect.client.orchestration import get_client

    ran: set[str] = set()  # "pod/container containerID" of each container seen
    collector = asyncio.create_task(collect_container_ids(k8s_cluster, pool.namespace, ran))
    async with get_client() as client:
        run = await start_run(client, pool, run_files)

        async def flow_run_job() -> list[dict[str, Any]]:
            return jobs(k8s_cluster, pool.namespace, f"{PREFECT_FLOW_RUN_LABEL}={run.id}")

        (flow_job,) = await eventually(flow_run_job, timeout=120)
        try:
            final = await wait_final(client, run.id, timeout=600)
        finally:
            collector.cancel()
        if not final.state.is_completed():
            pytest.fail(f"{final.state!r}\n{diagnose(k8s_cluster, pool)}")
        arts = by_key(await run_artifacts(client, run.id))

    # the worker ran the flow run as a Job of the pool's template: the flows image, the
    # client ServiceAccount, the S3 keys by Secret reference only
    pod_spec = flow_job["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    assert container["image"].startswith("localhost/arkor-ops/flows:")
    assert pod_spec["serviceAccountName"] == "arkor-ops-client"
    assert container["envFrom"] == [{"secretRef": {"name": S3_SECRET}}]
    env_names = {e["name"] for e in container["env"]}
    assert "KUBECONFIG" not in env_names and not env_names & {"AWS_SECRET_ACCESS_KEY"}
    assert s3_server.secret_key not in json.dumps(flow_job)
    assert s3_server.secret_key not in json.dumps(run.parameters)

    # ...whose pod created the training Job in-cluster (it has no kubeconfig), labelled with
    # the flow run, and followed it to the end: three artifacts and the curve in S3
    (train_job,) = jobs(k8s_cluster, pool.namespace, f"{FLOW_RUN_LABEL}={run.id}")
    job_id = train_job["metadata"]["name"]

    async def succeeded() -> bool:  # its pod ends a moment after the terminal event
        (job,) = jobs(k8s_cluster, pool.namespace, f"{FLOW_RUN_LABEL}={run.id}")
        return job["status"].get("succeeded") == 1

    await eventually(succeeded, timeout=60)
    assert sorted(arts) == [f"{job_id}-{w}" for w in ("checkpoints", "loss", "progress")]
    assert float(arts[f"{job_id}-progress"].data) == 100.0
    bucket, _, prefix = pool.storage_uri.removeprefix("s3://").partition("/")
    keys = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{job_id}/")
    names = {o["Key"].removeprefix(f"{prefix}/{job_id}/") for o in keys.get("Contents", [])}
    assert {"events.jsonl", "loss.png"} <= names, names
    # the four containers (flow run, the run's CPU pre-flight, trainer, sidecar) ran from the
    # images with runc, none as a process of this machine
    assert len(ran) == 4 and all(" runc://" in c for c in ran), ran
    assert [c for c in ran if c.startswith(f"{job_id}-preflight-")], ran


async def test_cancelling_the_flow_run_removes_the_flow_run_job_and_the_training_job(
    pool: Pool, k8s_cluster: K8sCluster, run_files: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    async with get_client() as client:
        run = await start_run(
            client, pool, run_files, maxSteps=1_000_000, saveSteps={"steps": 1000}
        )  # never ends by itself

        async def training() -> bool:  # a training.log event reached the progress artifact
            progress = latest(await run_artifacts(client, run.id), "progress")
            return bool(progress) and float(progress[0].data) > 0

        try:
            await eventually(training, timeout=480, interval=1)
        except AssertionError:
            raise AssertionError(diagnose(k8s_cluster, pool)) from None
        flow_runs = f"{PREFECT_FLOW_RUN_LABEL}={run.id}"
        trainings = f"{FLOW_RUN_LABEL}={run.id}"
        assert jobs(k8s_cluster, pool.namespace, flow_runs)
        assert jobs(k8s_cluster, pool.namespace, trainings)

        await client.set_flow_run_state(run.id, Cancelling(), force=True)

        cancelled_at = time.monotonic()
        removed: dict[str, float] = {}  # which Job went when, seconds after the cancel

        async def gone() -> bool:
            for what, selector in (("flow-run Job", flow_runs), ("training Job", trainings)):
                if what not in removed and not jobs(k8s_cluster, pool.namespace, selector):
                    removed[what] = time.monotonic() - cancelled_at
            return len(removed) == 2

        try:
            await eventually(gone, timeout=120, interval=0.5)
        except AssertionError:
            left = [j["metadata"]["name"] for j in jobs(k8s_cluster, pool.namespace, flow_runs)]
            left += [j["metadata"]["name"] for j in jobs(k8s_cluster, pool.namespace, trainings)]
            message = f"left after 120 s: {left}\n{diagnose(k8s_cluster, pool)}"
            raise AssertionError(message) from None
        took = max(removed.values())
        final = await wait_final(client, run.id, timeout=60)
        assert final.state.is_cancelled(), final.state
    # the issue's bound, on what the flow controls: its termination path stops the training run
    # before the flow-run pod's supervisor runs the hooks (docs/prefect.md); measured 4-8 s. The
    # flow-run Job goes when Prefect's supervisor has seen its child exit (8-21 s measured).
    training = removed["training Job"]
    assert training <= 15, f"training Job removed only after {training:.0f} s: {removed}"
    assert took <= 60, f"both Jobs removed only after {took:.0f} s: {removed}"
