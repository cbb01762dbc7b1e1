"""Helpers of the tests in tests/kubernetes/ (their fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.settings import KubernetesSettings
from arkor_ops.storage import join_uri, open_storage
from tests.fixtures.cluster import K8sCluster
from tests.fixtures.images import built_tag
from tests.fixtures.s3 import S3Server

HF_TOKEN = "hf_kube_test_secret_value_0123456789"


S3_SECRET = "arkor-ops-s3"


K8S = Path(__file__).resolve().parents[2] / "k8s"


BASE_NAMESPACE = "arkor-ops"


@dataclass(frozen=True)
class RunInputs:
    """Where the tiny model and its data are in the test's bucket."""

    bucket: str
    model: str
    data: str

    def dataset(self) -> dict[str, str]:
        """The trainer's ``dataset`` field for the data."""
        return {"type": "s3", "uri": self.data}


def upload_run_inputs(bucket: str, files: Path) -> RunInputs:
    """Put the tiny model (``files/model``) and its data (``files/train.jsonl``) in ``bucket``
    (``s3://name``), where pods of the images read them as a cluster's would."""
    inputs = RunInputs(
        bucket, join_uri(bucket, "inputs", "model"), join_uri(bucket, "inputs", "train.jsonl")
    )
    storage = open_storage(bucket)
    storage.upload_dir(inputs.model, files / "model")
    storage.put_bytes(inputs.data, (files / "train.jsonl").read_bytes())
    return inputs


def s3_secret_yaml(namespace: str, s3: S3Server) -> str:
    """The Secret with S3 keys that run pods reference (an operator creates it once)."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": S3_SECRET, "namespace": namespace},
            "stringData": {
                "AWS_ACCESS_KEY_ID": s3.access_key,
                "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            },
        }
    )


@contextlib.contextmanager
def base_applied(cluster: K8sCluster, s3: S3Server) -> Iterator[str]:
    """`kubectl apply -k` of an overlay of k8s/base (RBAC, admission policies, NetworkPolicy)
    as an operator does, plus the S3 Secret an operator adds; yields the namespace, deletes it
    all after. The overlay's one patch allows this checkout's trainer and sidecar images
    (when built) besides the defaults, as an operator's overlay names its registry's."""
    fields = KubernetesSettings.model_fields
    images = [fields["image"].default, fields["sidecar_image"].default]
    images += [t for t in (built_tag("trainer")[0], built_tag("sidecar")[0]) if t]
    overlay = Path(tempfile.mkdtemp(prefix="arkor-overlay-"))
    patch = [{"op": "replace", "path": "/data/images", "value": ",".join(images)}]
    target = {"kind": "ConfigMap", "name": "arkor-ops-admission"}
    (overlay / "kustomization.yaml").write_text(json.dumps({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "base", overlay)],
        "patches": [{"target": target, "patch": json.dumps(patch)}],
    }))  # fmt: skip
    cluster.kubectl("apply", "-k", str(overlay))
    cluster.kubectl("apply", "-f", "-", input=s3_secret_yaml(BASE_NAMESPACE, s3))
    wait_until_policies_enforced(cluster)
    try:
        yield BASE_NAMESPACE
    finally:
        cluster.kubectl("delete", "-k", str(overlay), "--wait=false", check=False)
        shutil.rmtree(overlay, ignore_errors=True)


def make_settings(
    cluster: K8sCluster, namespace: str, s3: S3Server, storage_uri: str, **overrides: Any
) -> KubernetesSettings:
    """Settings for runs on the local cluster (small requests; the GPU pool by default; no
    pre-flight unless ``preflight=True``: tests/kubernetes/test_preflight.py tests it)."""
    fields: dict[str, Any] = {
        "preflight": False,
        "namespace": namespace,
        "kubeconfig": str(cluster.kubeconfig),
        "storage_uri": storage_uri,
        "s3_endpoint_url": s3.endpoint(cluster.host_ip),
        "s3_client_endpoint_url": s3.endpoint(),
        "s3_secret_name": S3_SECRET,
        "cpu_request": "100m",
        "memory_request": "256Mi",
        "memory_limit": None,
        "cancel_grace_seconds": 10,
        "cancel_timeout_seconds": 90,
        "hf_token": HF_TOKEN,
        "env": {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
        },
    }
    fields.update(overrides)
    return KubernetesSettings(**fields)


_PROBE_POD = {
    "metadata": {"name": "arkor-ops-policy-probe", "labels": {"app": "probe"}},
    "spec": {
        "nodeSelector": {"arkor-ops.dev/pool": "nowhere"},
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "c",
                "image": "busybox",
                "command": ["true"],
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    },
}


def wait_until_policies_enforced(cluster: K8sCluster, timeout: float = 120.0) -> None:
    """Return once each of k8s/base's admission policies refuses the client ServiceAccount.

    kube-apiserver loads ValidatingAdmissionPolicies, their bindings and their parameter
    ConfigMap through informers, so `kubectl apply` returns before they are enforced (a second
    or so; longer on a loaded machine, where a CI run once saw six refusals admitted). Each
    policy is probed with a dry-run request it must refuse; the first refusal of each counts.
    """
    import time

    from kubernetes import client
    from kubernetes.client.rest import ApiException

    admin = client.CoreV1Api(cluster.api_client())
    admin.create_namespaced_pod(BASE_NAMESPACE, _PROBE_POD)
    bad_job = {
        "metadata": {"name": "arkor-ops-policy-probe"},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
        }}},
    }  # fmt: skip
    try:
        with client.ApiClient(service_account_configuration(cluster)) as api:
            core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
            probes: dict[str, Callable[[], Any]] = {
                "jobs": lambda: batch.create_namespaced_job(BASE_NAMESPACE, bad_job, dry_run="All"),
                "objects": lambda: core.delete_namespaced_secret(
                    S3_SECRET, BASE_NAMESPACE, dry_run="All"
                ),
                "pods": lambda: core.patch_namespaced_pod(
                    "arkor-ops-policy-probe",
                    BASE_NAMESPACE,
                    {"metadata": {"labels": {"app": "changed"}}},
                    dry_run="All",
                ),
            }
            deadline = time.monotonic() + timeout
            while probes:
                for name, probe in list(probes.items()):
                    try:
                        probe()
                    except ApiException as e:
                        # the jobs policy's message names the image only once its parameters
                        # are loaded too (without them it denies every Job)
                        want = "image not allowed" if name == "jobs" else "ValidatingAdmission"
                        if want in str(e.body):
                            del probes[name]
                if probes and time.monotonic() > deadline:
                    raise AssertionError(f"admission policies not enforced: {sorted(probes)}")
                if probes:
                    time.sleep(0.5)
    finally:
        admin.delete_namespaced_pod(
            "arkor-ops-policy-probe", BASE_NAMESPACE, grace_period_seconds=0
        )


def service_account_configuration(cluster: K8sCluster, name: str = "arkor-ops-client") -> Any:
    """The admin kubeconfig's server and CA, with a ServiceAccount's token (the client's)."""
    from kubernetes import client

    token = cluster.kubectl("create", "token", name, "-n", BASE_NAMESPACE).stdout.strip()
    admin = cluster.configuration()
    cfg = client.Configuration()
    cfg.host = admin.host
    cfg.ssl_ca_cert = admin.ssl_ca_cert
    cfg.verify_ssl = admin.verify_ssl
    cfg.api_key = {"BearerToken": token}
    cfg.api_key_prefix = {"BearerToken": "Bearer"}
    return cfg


def service_account_kubeconfig(cluster: K8sCluster, name: str, path: Path) -> Path:
    """Write a kubeconfig that authenticates as ServiceAccount ``name`` of the base namespace."""
    cfg = service_account_configuration(cluster, name)
    server = {"server": cfg.host, "certificate-authority": cfg.ssl_ca_cert}
    context = {"cluster": name, "user": name, "namespace": BASE_NAMESPACE}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": server}],
        "users": [{"name": name, "user": {"token": cfg.api_key["BearerToken"]}}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
    }
    path.write_text(json.dumps(config))
    return path


def job_yaml(cluster: K8sCluster, namespace: str, *args: str) -> str:
    """``kubectl get … -o yaml`` output."""
    return cluster.kubectl("get", "-n", namespace, *args, "-o", "yaml").stdout


async def ended_job_status(backend: KubernetesBackend, job_id: str) -> dict[str, Any]:
    """The Job's status once its pod has ended (succeeded or failed), or after 60 s."""
    status: dict[str, Any] = {}
    for _ in range(240):
        status = (await backend.api.get_job(job_id)).get("status") or {}
        if status.get("succeeded") or status.get("failed"):
            break
        await asyncio.sleep(0.25)
    return status


async def ended_run_events(backend: KubernetesBackend, job_id: str) -> list[dict[str, Any]]:
    """The run's log as persisted to storage, once its Job has succeeded (the sidecar persists
    it after the client has seen the terminal event, while the pod stops)."""
    from arkor_ops.eventlog import iter_log_lines

    status = await ended_job_status(backend, job_id)
    assert status.get("succeeded") == 1, status
    return list(iter_log_lines(backend.storage().get_bytes(backend.events_uri(job_id, None))))


def recorder() -> tuple[list[tuple[str, Any]], dict[str, Callable[[Any], None]]]:
    """Callbacks that record each call as ``(callback name, context)``, in order."""
    seen: list[tuple[str, Any]] = []

    def cb(name: str) -> Callable[[Any], None]:
        return lambda ctx: seen.append((name, ctx))

    names = ("on_phase", "on_started", "on_log", "on_checkpoint", "on_completed", "on_failed")
    return seen, {n: cb(n) for n in names}
