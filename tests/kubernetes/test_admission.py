"""k8s/base's admission policies, with the client ServiceAccount's token on the real API server:
what RBAC alone allowed (a pod that prints any Secret, a service-account token Secret, deleting
any object) is refused; a run-shaped Job and the cancel annotation are not."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from arkor_ops.backends.kubernetes import manifests as m
from arkor_ops.config import validate_config
from tests.fixtures.cluster import K8sCluster
from tests.fixtures.s3 import S3Server
from tests.kubernetes.helpers import S3_SECRET, make_settings, service_account_configuration

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.timeout(300)]

NAME = "adm-run-0123abcd"


@pytest.fixture(scope="module")
def client_api(applied_base: str, k8s_cluster: K8sCluster) -> Iterator[client.ApiClient]:
    """An API client with the arkor-ops-client ServiceAccount's token."""
    with client.ApiClient(service_account_configuration(k8s_cluster)) as api:
        yield api


@pytest.fixture
def run_objects(
    applied_base: str, k8s_cluster: K8sCluster, s3_server: S3Server, s3_prefix: str
) -> tuple[m.RunObjects, m.RunObjects]:
    """The objects KubernetesBackend would create in k8s/base's namespace: the run's, and
    its pre-flight's."""
    settings = make_settings(
        k8s_cluster, applied_base, s3_server, s3_prefix, service_account="arkor-ops-run"
    )
    config = validate_config(
        {"name": "adm", "model": "m", "dataset": {"type": "file", "path": "/d"}, "maxSteps": 1}
    )
    run = m.build_run(config, settings, name=NAME, storage_uri=s3_prefix)
    return run, m.build_preflight(run, settings)


@pytest.fixture
def run_job(run_objects: tuple[m.RunObjects, m.RunObjects]) -> dict[str, Any]:
    """The run's Job."""
    return run_objects[0].job


def _refused(call: Callable[[], Any]) -> str:
    with pytest.raises(ApiException) as info:
        call()
    assert info.value.status in (403, 422), info.value.body
    assert "ValidatingAdmissionPolicy" in str(info.value.body), info.value.body
    return str(info.value.body)


def _create_job(api: client.ApiClient, ns: str, job: dict[str, Any]) -> Any:
    return client.BatchV1Api(api).create_namespaced_job(ns, job, dry_run="All")


def _trainer(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["spec"]["template"]["spec"]["containers"][0])


def test_a_run_shaped_job_is_admitted(
    client_api: client.ApiClient, applied_base: str, run_job: dict[str, Any]
) -> None:
    created = _create_job(client_api, applied_base, run_job)
    assert created.metadata.name == NAME


def test_a_preflight_job_and_its_objects_are_admitted(
    client_api: client.ApiClient, applied_base: str, run_objects: tuple[m.RunObjects, ...]
) -> None:
    pre = run_objects[1]
    assert pre.secret is not None
    created = _create_job(client_api, applied_base, pre.job)
    assert created.metadata.name == f"{NAME}-preflight"
    core = client.CoreV1Api(client_api)
    core.create_namespaced_secret(applied_base, pre.secret, dry_run="All")
    core.create_namespaced_config_map(applied_base, pre.config_map, dry_run="All")
    # It reads only its own Secret: the run's is refused to it.
    job = copy.deepcopy(pre.job)
    for var in _trainer(job)["env"]:
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref and ref["name"].endswith("-preflight-secrets"):
            ref["name"] = f"{NAME}-secrets"
    assert "may read only its own Secret" in _refused(
        lambda: _create_job(client_api, applied_base, job)
    )


def _mutations() -> dict[str, Callable[[dict[str, Any]], None]]:
    def image(job: dict[str, Any]) -> None:
        job["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox"

    def command(job: dict[str, Any]) -> None:
        job["spec"]["template"]["spec"]["containers"][0]["command"] = ["sh", "-c", "env"]

    def args(job: dict[str, Any]) -> None:
        job["spec"]["template"]["spec"]["containers"][0]["args"] = ["-c", "print(1)"]

    def other_secret(job: dict[str, Any]) -> None:
        ref = {"secretKeyRef": {"name": "other-run-secrets", "key": "ARKOR_DATASET_TOKEN"}}
        job["spec"]["template"]["spec"]["containers"][0]["env"].append(
            {"name": "STOLEN", "valueFrom": ref}
        )

    def env_from(job: dict[str, Any]) -> None:
        job["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [
            {"secretRef": {"name": S3_SECRET}}
        ]

    def secret_volume(job: dict[str, Any]) -> None:
        spec = job["spec"]["template"]["spec"]
        spec["volumes"].append({"name": "s", "secret": {"secretName": "other-run-secrets"}})

    def host_path(job: dict[str, Any]) -> None:
        spec = job["spec"]["template"]["spec"]
        spec["volumes"].append({"name": "h", "hostPath": {"path": "/"}})

    def claim(job: dict[str, Any]) -> None:  # no model cache claim is named in the parameters
        spec = job["spec"]["template"]["spec"]
        pvc = {"claimName": "someone-elses-data"}
        spec["volumes"].append({"name": "model-cache", "persistentVolumeClaim": pvc})

    def token_volume(job: dict[str, Any]) -> None:
        spec = job["spec"]["template"]["spec"]
        sat = {"serviceAccountToken": {"path": "t", "expirationSeconds": 3600}}
        spec["volumes"].append({"name": "t", "projected": {"sources": [sat]}})

    def privileged(job: dict[str, Any]) -> None:
        sc = job["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        sc.update(privileged=True, allowPrivilegeEscalation=True)  # the API refuses one alone

    def capabilities(job: dict[str, Any]) -> None:
        sc = job["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        sc["capabilities"] = {"add": ["SYS_ADMIN"]}

    def escalation(job: dict[str, Any]) -> None:
        sc = job["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        sc.pop("allowPrivilegeEscalation")

    def host_network(job: dict[str, Any]) -> None:
        job["spec"]["template"]["spec"]["hostNetwork"] = True

    def service_account(job: dict[str, Any]) -> None:
        job["spec"]["template"]["spec"]["serviceAccountName"] = "arkor-ops-client"

    def automount(job: dict[str, Any]) -> None:
        job["spec"]["template"]["spec"]["automountServiceAccountToken"] = True

    def preload(job: dict[str, Any]) -> None:
        job["spec"]["template"]["spec"]["containers"][0]["env"].append(
            {"name": "PYTHONPATH", "value": "/etc/arkor"}
        )

    return {f.__name__: f for f in (
        image, command, args, other_secret, env_from, secret_volume, host_path, claim, token_volume,
        privileged, capabilities, escalation, host_network, service_account, automount, preload,
    )}  # fmt: skip


MUTATIONS = _mutations()


@pytest.mark.parametrize("change", sorted(MUTATIONS))
def test_a_job_not_shaped_like_ours_is_refused(
    client_api: client.ApiClient, applied_base: str, run_job: dict[str, Any], change: str
) -> None:
    job = copy.deepcopy(run_job)
    MUTATIONS[change](job)
    _refused(lambda: _create_job(client_api, applied_base, job))


def test_the_model_cache_claim_named_in_the_parameters_is_admitted_and_no_other(
    client_api: client.ApiClient,
    applied_base: str,
    run_job: dict[str, Any],
    k8s_cluster: K8sCluster,
) -> None:
    def with_claim(name: str) -> dict[str, Any]:
        job = copy.deepcopy(run_job)
        pvc = {"claimName": name}
        job["spec"]["template"]["spec"]["volumes"].append(
            {"name": "model-cache", "persistentVolumeClaim": pvc}
        )
        return job

    def set_claim(name: str) -> None:
        patch = f'{{"data": {{"modelCacheClaim": "{name}"}}}}'
        k8s_cluster.kubectl(
            "-n", applied_base, "patch", "configmap", "arkor-ops-admission", "-p", patch
        )

    set_claim("arkor-model-cache")
    try:
        deadline = time.monotonic() + 30  # the API server reads parameters through a watch
        while True:
            try:
                _create_job(client_api, applied_base, with_claim("arkor-model-cache"))
                break
            except ApiException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        _refused(lambda: _create_job(client_api, applied_base, with_claim("other-claim")))
    finally:
        set_claim("")


def test_only_opaque_run_secrets_and_run_config_maps_are_created(
    client_api: client.ApiClient, applied_base: str
) -> None:
    core = client.CoreV1Api(client_api)
    labels = {"app.kubernetes.io/managed-by": "arkor-ops"}
    token = {
        "metadata": {
            "name": f"{NAME}-secrets",
            "labels": labels,
            "annotations": {"kubernetes.io/service-account.name": "arkor-ops-client"},
        },
        "type": "kubernetes.io/service-account-token",
    }
    assert "Opaque" in _refused(
        lambda: core.create_namespaced_secret(applied_base, token, dry_run="All")
    )
    unlabelled = {"metadata": {"name": f"{NAME}-secrets"}, "type": "Opaque"}
    _refused(lambda: core.create_namespaced_secret(applied_base, unlabelled, dry_run="All"))
    ours = {"metadata": {"name": f"{NAME}-secrets", "labels": labels}, "type": "Opaque"}
    core.create_namespaced_secret(applied_base, ours, dry_run="All")
    odd = {"metadata": {"name": "arkor-ops-admission-2", "labels": labels}}
    _refused(lambda: core.create_namespaced_config_map(applied_base, odd, dry_run="All"))
    core.create_namespaced_config_map(
        applied_base, {"metadata": {"name": f"{NAME}-config", "labels": labels}}, dry_run="All"
    )


def test_deletes_only_of_run_owned_objects(
    client_api: client.ApiClient, applied_base: str, k8s_cluster: K8sCluster
) -> None:
    core = client.CoreV1Api(client_api)
    # the shared S3 keys and the policy's own parameters are not the client's to delete
    _refused(lambda: core.delete_namespaced_secret(S3_SECRET, applied_base, dry_run="All"))
    _refused(
        lambda: core.delete_namespaced_config_map(
            "arkor-ops-admission", applied_base, dry_run="All"
        )
    )
    k8s_cluster.kubectl(
        "create", "job", "not-a-run", "-n", applied_base, "--image=busybox", "--", "true"
    )
    try:
        _refused(
            lambda: client.BatchV1Api(client_api).delete_namespaced_job(
                "not-a-run", applied_base, dry_run="All"
            )
        )
    finally:
        k8s_cluster.kubectl("delete", "job", "not-a-run", "-n", applied_base, "--wait=false")


@pytest.fixture
def pending_pods(applied_base: str, k8s_cluster: K8sCluster) -> Iterator[dict[str, str]]:
    """A run pod and a pod of something else, both left Pending (no node matches)."""
    core = client.CoreV1Api(k8s_cluster.api_client())
    names = {"run": "adm-run-pod", "other": "adm-other-pod"}
    for kind, name in names.items():
        labels = {m.MANAGED_BY: "arkor-ops"} if kind == "run" else {"app": "other"}
        core.create_namespaced_pod(applied_base, {
            "metadata": {"name": name, "labels": labels, "annotations": {"note": "a"}},
            "spec": {
                "nodeSelector": {"arkor-ops.dev/pool": "nowhere"},
                "automountServiceAccountToken": False,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "c", "image": "busybox", "command": ["true"],
                                "securityContext": {"allowPrivilegeEscalation": False,
                                                    "capabilities": {"drop": ["ALL"]}}}],
            },
        })  # fmt: skip
    yield names
    for name in names.values():
        core.delete_namespaced_pod(name, applied_base, grace_period_seconds=0)


def test_the_only_pod_change_is_the_cancel_annotation_of_a_run_pod(
    client_api: client.ApiClient, applied_base: str, pending_pods: dict[str, str]
) -> None:
    core = client.CoreV1Api(client_api)
    run, other = pending_pods["run"], pending_pods["other"]

    def patch(name: str, meta: dict[str, Any]) -> Any:
        return core.patch_namespaced_pod(name, applied_base, {"metadata": meta})

    cancel = {"annotations": {m.CANCEL_ANNOTATION: "2026-12-01T10:00:00+00:00"}}
    _refused(lambda: patch(other, cancel))
    _refused(lambda: patch(run, {"labels": {m.MANAGED_BY: "someone"}}))
    _refused(lambda: patch(run, {"annotations": {"note": "b"}}))
    _refused(lambda: patch(run, {"annotations": {"extra": "x"}}))
    patched = patch(run, cancel)
    assert patched.metadata.annotations[m.CANCEL_ANNOTATION].startswith("2026-12-01")


@pytest.mark.train
@pytest.mark.timeout(600)
async def test_the_client_cancels_a_run_through_the_pod_annotation(  # noqa: PLR0917 - pytest fixtures
    applied_base: str,
    k8s_cluster: K8sCluster,
    s3_server: S3Server,
    s3_prefix: str,
    run_config: Callable[..., dict[str, Any]],
    trainer_image: str,
    sidecar_image: str,
) -> None:
    """With only the client's rights and the policies applied, a cancel reaches the trainer:
    the annotation on its pod shows up in its downwardAPI file, so SIGTERM is a cancel."""
    import asyncio
    import json

    from arkor_ops import create_async_trainer
    from arkor_ops.backends.kubernetes import KubernetesBackend

    settings = make_settings(
        k8s_cluster, applied_base, s3_server, s3_prefix, service_account="arkor-ops-run",
        image=trainer_image, sidecar_image=sidecar_image,
    )  # fmt: skip
    backend = KubernetesBackend(settings, configuration=service_account_configuration(k8s_cluster))
    logged = asyncio.Event()
    trainer = create_async_trainer(
        **run_config(name="adm-cancel", max_steps=1_000_000, save_steps=1000),
        backend=backend,
        callbacks={"on_log": lambda ctx: logged.set() if ctx.step >= 2 else None},
    )
    try:
        job_id = (await trainer.start()).job_id
        waiting = asyncio.create_task(trainer.wait())
        await asyncio.wait_for(logged.wait(), timeout=300)
        await trainer.cancel()
        result = await asyncio.wait_for(waiting, timeout=60)
    finally:
        await backend.aclose()
    assert result.job.status == "cancelled"
    bucket, _, prefix = s3_prefix.removeprefix("s3://").partition("/")
    body = s3_server.client().get_object(Bucket=bucket, Key=f"{prefix}/{job_id}/events.jsonl")
    types = [json.loads(line)["type"] for line in body["Body"].read().splitlines() if line]
    assert types[-1] == "training.cancelled"  # written by the trainer: not a disruption
