"""Submit latency: KubernetesBackend vs `kubectl create` of an equivalent bare Job.

Measures, in the same run on the same cluster, alternating (N rounds each):

* arkor-ops: from ``trainer.start()`` to the run's pod Running, and to the first event on the
  stream (``job.phase`` or a trainer event);
* bare, the same objects: from one ``kubectl create -f`` of the very Job, ConfigMap and Secret
  that arkor-ops makes for the run (``build_run``, what ``arkor-ops render`` prints; the Job
  created running, no ownerReferences) to its pod Running: what our path adds (the ordering
  that keeps "no pod before its Secret" and "a failed submit leaves nothing") and nothing else;
* bare, the same objects in process: those three objects created at once (concurrently, no
  ordering) through the same API client, in this process: the floor without kubectl's process
  start, which the kubectl figures include;
* bare, one container: ``kubectl create`` of a one-container Job (same node pool, tolerations
  and requests): what the run's pod shape costs on this node (the sidecar, the volumes).

Prints the medians and the ratios of pod-running times (target: within 1.1x of the same
objects). The run has no
Secret, so its Job is created running; ``BENCH_SECRET=1`` gives it one (an HF token), so its Job
is created suspended and resumed once the Secret exists (one more round trip). The CPU
pre-flight (on by default for users) is off here, as this measures the GPU Job's submit;
``BENCH_PREFLIGHT=1`` puts it on the path (its pod and checks then count in ``start()``).

    .venv/bin/python -m bench.submit                 # starts a local control plane (root)
    ARKOR_TEST_KUBECONFIG=... ARKOR_TEST_HOST_IP=... .venv/bin/python -m bench.submit
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.backends.kubernetes.manifests import build_run
from arkor_ops.config import validate_config
from arkor_ops.errors import BackendError
from arkor_ops.settings import KubernetesSettings
from tests.fixtures.s3 import S3Server, free_port, start_moto

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECRET = os.environ.get("BENCH_SECRET") == "1"
PREFLIGHT = os.environ.get("BENCH_PREFLIGHT") == "1"


@contextmanager
def cluster() -> Iterator[tuple[Path, str, str]]:
    """(kubeconfig, host_ip, kubectl) of an external cluster or a fresh local one."""
    external = os.environ.get("ARKOR_TEST_KUBECONFIG")
    if external:
        kubectl = os.environ.get("ARKOR_KUBECTL") or shutil.which("kubectl") or "kubectl"
        yield Path(external), os.environ.get("ARKOR_TEST_HOST_IP", ""), kubectl
        return
    from tools.k8senv import cluster as cluster_mod
    from tools.k8senv import netns

    build = cluster_mod.ensure_binaries()
    net = netns.claim_net()
    local = cluster_mod.LocalCluster(
        cluster_mod.ClusterConfig.ephemeral(Path(tempfile.mkdtemp(prefix="arkor-bench-")), net),
        build.bin_dir,
    )
    try:
        local.start()
        yield local.kubeconfig, local.host_ip, str(build.bin_dir / "kubectl")
    finally:
        local.stop()
        netns.release_net(net)


def kubectl(kc: tuple[Path, str, str], *args: str, stdin: str | None = None) -> str:
    """Run kubectl; its stdout."""
    done = subprocess.run(
        [kc[2], f"--kubeconfig={kc[0]}", *args], input=stdin, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return done.stdout


def bare_job(name: str, namespace: str, settings: KubernetesSettings) -> dict[str, Any]:
    """A one-container Job with the run's node pool, tolerations and requests."""
    requests = {"cpu": settings.cpu_request, "memory": settings.memory_request}
    if settings.gpu_count:
        requests[settings.gpu_resource] = str(settings.gpu_count)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": dict(settings.node_selector),
                    "tolerations": [dict(t) for t in settings.tolerations],
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox",
                            "command": ["sh", "-c", "sleep 60"],
                            "resources": {"requests": requests, "limits": dict(requests)},
                        }
                    ],
                }
            },
        },
    }


def same_objects(name: str, settings: KubernetesSettings, config: dict[str, Any]) -> str:
    """The run's own Job, ConfigMap and Secret under ``name``, as one List for ``kubectl``."""
    objs = build_run(
        validate_config(config), settings, name=name, storage_uri=settings.storage_uri or ""
    )
    objs.job["spec"]["suspend"] = False  # one create holds them all: nothing to wait for
    items = [o for o in (objs.secret, objs.config_map, objs.job) if o is not None]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


async def pod_running(backend: KubernetesBackend, job: str, start: float) -> float:
    """Seconds from ``start`` until a pod of ``job`` is Running."""
    while True:
        pods = await backend.api.job_pods(job)
        if any((p.get("status") or {}).get("phase") == "Running" for p in pods):
            return time.monotonic() - start
        await asyncio.sleep(0.02)


async def gone(backend: KubernetesBackend, job: str) -> None:
    """Delete ``job`` and wait until none of its pods is left: a round's workers must not eat
    the CPU of the next round."""
    with contextlib.suppress(BackendError):
        await backend.api.delete("jobs", job)
    for _ in range(600):
        if not await backend.api.job_pods(job):
            return
        await asyncio.sleep(0.1)


async def arkor_round(settings: KubernetesSettings, config: dict[str, Any]) -> tuple[float, float]:
    """(pod running, first event) seconds for one run through the trainer API."""
    backend = KubernetesBackend(settings)
    first_event = asyncio.get_running_loop().create_future()

    def on_any(ctx: Any) -> None:
        if not first_event.done():
            first_event.set_result(time.monotonic())

    callbacks = {"on_phase": on_any, "on_started": on_any}
    trainer = create_async_trainer(**config, backend=backend, callbacks=callbacks)
    start = time.monotonic()
    job_id = (await trainer.start()).job_id
    waiting = asyncio.create_task(trainer.wait())
    try:
        running = await pod_running(backend, job_id, start)
        first = await asyncio.wait_for(first_event, timeout=120) - start
    finally:
        waiting.cancel()
        await backend.cancel(job_id)
        await backend.aclose()
    return running, first


async def bare_round(
    kc: tuple[Path, str, str], settings: KubernetesSettings, manifest: str
) -> float:
    """Seconds from `kubectl create` of ``manifest`` (whose Job is named in it) to its pod
    Running."""
    name = next(i for i in json.loads(manifest)["items"] if i["kind"] == "Job")["metadata"]["name"]
    backend = KubernetesBackend(settings)
    start = time.monotonic()
    await asyncio.to_thread(kubectl, kc, "create", "-f", "-", stdin=manifest)
    try:
        return await pod_running(backend, name, start)
    finally:
        await gone(backend, name)
        await backend.aclose()


async def api_round(settings: KubernetesSettings, manifest: str) -> float:
    """Seconds from creating ``manifest``'s objects concurrently through the API client to the
    Job's pod Running."""
    items = json.loads(manifest)["items"]
    kinds = {"Job": "jobs", "ConfigMap": "configmaps", "Secret": "secrets"}
    name = next(i for i in items if i["kind"] == "Job")["metadata"]["name"]
    backend = KubernetesBackend(settings)
    start = time.monotonic()
    await asyncio.gather(*(backend.api.create(kinds[i["kind"]], i) for i in items))
    try:
        return await pod_running(backend, name, start)
    finally:
        await gone(backend, name)
        await backend.aclose()


async def main() -> None:
    """Run the rounds and print the medians and the ratio."""
    from arkor_ops.worker.tiny import build_tiny_model

    port = free_port()
    moto = start_moto(port)
    s3 = S3Server(port=port)
    files = Path.home() / ".cache" / "arkor-ops" / "bench" / uuid.uuid4().hex[:8]
    try:
        build_tiny_model(files / "model")
        row = '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}'
        (files / "train.jsonl").write_text((row + "\n") * 32)
        for key, value in s3.env().items():
            os.environ[key] = value
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=s3.endpoint(), region_name="us-east-1").create_bucket(
            Bucket=bucket
        )
        with cluster() as kc:
            ns = f"bench-{uuid.uuid4().hex[:6]}"
            kubectl(kc, "create", "namespace", ns)
            secret = {
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "arkor-ops-s3", "namespace": ns},
                "stringData": {"AWS_ACCESS_KEY_ID": s3.access_key,
                               "AWS_SECRET_ACCESS_KEY": s3.secret_key},
            }  # fmt: skip
            kubectl(kc, "apply", "-f", "-", stdin=json.dumps(secret))
            settings = KubernetesSettings(
                namespace=ns, kubeconfig=str(kc[0]), storage_uri=f"s3://{bucket}/runs",
                s3_endpoint_url=s3.endpoint(kc[1]), s3_client_endpoint_url=s3.endpoint(),
                cpu_request="100m", memory_request="128Mi", memory_limit=None,
                cancel_grace_seconds=5, env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
                hf_token="hf_bench_not_a_token" if SECRET else None, preflight=PREFLIGHT,
            )  # fmt: skip
            config = {
                "name": "bench", "model": str(files / "model"), "max_steps": 2,
                "dataset": {"type": "file", "path": str(files / "train.jsonl")},
            }  # fmt: skip
            arkor, first, bare, same, api = [], [], [], [], []
            for _ in range(ROUNDS):
                one = f"bare-{uuid.uuid4().hex[:6]}"
                bare.append(await bare_round(kc, settings, json.dumps(
                    {"apiVersion": "v1", "kind": "List", "items": [bare_job(one, ns, settings)]}
                )))  # fmt: skip
                twin = same_objects(f"same-{uuid.uuid4().hex[:6]}", settings, config)
                same.append(await bare_round(kc, settings, twin))
                twin = same_objects(f"api-{uuid.uuid4().hex[:6]}", settings, config)
                api.append(await api_round(settings, twin))
                running, event = await arkor_round(settings, config)
                arkor.append(running)
                first.append(event)
            kubectl(kc, "delete", "namespace", ns, "--wait=false")
    finally:
        moto.terminate()
        shutil.rmtree(files, ignore_errors=True)
    a, b, f = statistics.median(arkor), statistics.median(bare), statistics.median(first)
    o, p = statistics.median(same), statistics.median(api)
    secret, pre = "with" if SECRET else "without", "with" if PREFLIGHT else "without"
    print(f"rounds: {ROUNDS}, the run {secret} a Secret, {pre} the pre-flight")
    print(f"kubectl create, one container -> pod Running:  {b:.3f}s  {[round(x, 3) for x in bare]}")
    print(f"kubectl create, the run's objects -> Running:  {o:.3f}s  {[round(x, 3) for x in same]}")
    print(
        f"arkor start() -> pod Running:                  {a:.3f}s  {[round(x, 3) for x in arkor]}"
    )
    print(
        f"arkor start() -> first event:                  {f:.3f}s  {[round(x, 3) for x in first]}"
    )
    print(f"ratio pod Running arkor/the same objects: {a / o:.2f}x (target <= 1.10x)")
    print(f"ratio pod Running arkor/the same objects in process: {a / p:.2f}x")
    print(f"ratio pod Running arkor/one container:    {a / b:.2f}x (the pod's shape included)")
    print("(medians of the rounds)")


if __name__ == "__main__":
    asyncio.run(main())
