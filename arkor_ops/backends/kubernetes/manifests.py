"""Pure builder: (trainer config, settings) → the Job of one run and the objects it needs.

Nothing here talks to a cluster. The result is plain camelCase dicts, exactly what
``kubectl get -o yaml`` would show, so tests assert on them directly.

Objects of one run ``{job}`` (all in ``settings.namespace``):

* Job ``{job}``: trainer container + the sidecar as a native sidecar (init container with
  ``restartPolicy: Always``) sharing an ``emptyDir`` at ``/var/run/arkor``.
* ConfigMap ``{job}-config``: ``config.json`` (the wire config, no secrets), mounted read-only.
* a ``downwardAPI`` volume with the pod's annotations at ``/etc/arkor-pod/annotations``
  (trainer only): the client cancels by annotating the pod, kubelet refreshes the file.
* Secret ``{job}-secrets``: only when the run has secrets (dataset token, HF token); referenced
  by ``secretKeyRef`` (optional: it is deleted when the run ends), never copied into the Job.
  S3 keys come from an existing Secret (``settings.s3_secret_name``).

A training run's CPU pre-flight (:func:`build_preflight`) is the same objects under
``{job}-preflight`` (Job, ``-config``, ``-secrets``), reshaped for the CPU pool.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from arkor_ops.backends.kubernetes import images
from arkor_ops.config import TrainerConfig
from arkor_ops.evaluation import EvaluationConfig
from arkor_ops.settings import CANCEL_ANNOTATION as CANCEL_ANNOTATION  # noqa: PLC0414 - re-export
from arkor_ops.settings import KubernetesSettings

MANAGED_BY = "app.kubernetes.io/managed-by"
APP_NAME = "app.kubernetes.io/name"
RUN_NAME_LABEL = "arkor-ops.dev/run-name"
#: On an evaluation job's objects: ``kubectl get jobs -l arkor-ops.dev/stage=evaluation``.
STAGE_LABEL = "arkor-ops.dev/stage"
#: What a Job runs: a training run, or an evaluation (the same image and worker, its own stage).
JobConfig = TrainerConfig | EvaluationConfig
FLOW_RUN_LABEL = "arkor-ops.dev/flow-run-id"
IDEMPOTENCY_LABEL = "arkor-ops.dev/idempotency-key"
CONFIG_HASH_ANNOTATION = "arkor-ops.dev/config-hash"
#: Set on the Job once its run's Secret is deleted (see :mod:`.run_secret`).
SECRET_DELETED_ANNOTATION = "arkor-ops.dev/secret-deleted"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
TRAINER = "trainer"
SIDECAR = "sidecar"
RUN_DIR = images.RUN_DIR
PODINFO_DIR = "/etc/arkor-pod"
POD_ANNOTATIONS_FILE = f"{PODINFO_DIR}/annotations"
CACHE_DIR = images.CACHE_DIR
CONFIG_DIR = "/etc/arkor"
TMP_DIR = images.TMP_DIR
#: The model cache (base models, Hub downloads): per pod, or a node's hostPath when configured.
MODEL_CACHE_DIR = images.TRAINER_PATH_ENV["ARKOR_MODEL_CACHE"]
SHM_DIR = "/dev/shm"  # noqa: S108 - a pod-private memory emptyDir
RUN_USER_ID = images.RUN_UID
RUN_GROUP_ID = images.RUN_GID
EXIT_NEVER_RETRY = 2
SELECTOR = f"{MANAGED_BY}=arkor-ops"
#: The pre-flight Job of run ``{job}`` is ``{job}{PREFLIGHT_SUFFIX}``.
PREFLIGHT_SUFFIX = "-preflight"
#: The run Jobs (training and evaluation), without their pre-flight Jobs.
RUNS_SELECTOR = f"{SELECTOR},{STAGE_LABEL}!=preflight"

_NAME_MAX = 40
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class RunObjects:
    """What one run creates: the Job, its ConfigMap and (when needed) its Secret."""

    job: dict[str, Any]
    config_map: dict[str, Any]
    secret: dict[str, Any] | None


def dns_name(name: str, max_length: int = _NAME_MAX) -> str:
    """``name`` as a DNS-1123 label prefix: lower case, ``[a-z0-9-]``, at most ``max_length``.

    Args:
        name: any run name, e.g. ``"Support Bot v1"``.
        max_length: longest result.

    Returns:
        A non-empty DNS-safe string (``"run"`` when nothing usable is left).
    """
    out = re.sub(r"[^a-z0-9-]+", "-", name.lower())
    out = re.sub(r"-{2,}", "-", out).strip("-")[:max_length].strip("-")
    return out or "run"


def key_hash(idempotency_key: str) -> str:
    """A label-safe digest of an idempotency key (32 hex characters)."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def job_name(run_name: str, idempotency_key: str | None = None) -> str:
    """The Job name of a run: DNS-safe run name plus a suffix.

    Args:
        run_name: the config's ``name``.
        idempotency_key: when given, the suffix is derived from it, so the same key always
            names the same Job; otherwise the suffix is random.

    Returns:
        A DNS-1123 label of at most 49 characters (room for the pod's random suffix).
    """
    suffix = key_hash(idempotency_key)[:8] if idempotency_key else secrets.token_hex(4)
    return f"{dns_name(run_name)}-{suffix}"


def label_value(value: str) -> str | None:
    """``value`` if it is a valid label value, else None (it then goes into an annotation)."""
    return value if len(value) <= 63 and _LABEL_VALUE.match(value) else None


def labels(
    config: JobConfig, *, idempotency_key: str | None, flow_run_id: str | None
) -> dict[str, str]:
    """The labels of every object of a run (selectable with ``kubectl -l``)."""
    out = {
        MANAGED_BY: "arkor-ops",
        APP_NAME: "arkor-ops-run",
        RUN_NAME_LABEL: dns_name(config.name, 63),
    }
    if isinstance(config, EvaluationConfig):
        out[STAGE_LABEL] = "evaluation"
    if flow_run_id and label_value(flow_run_id):
        out[FLOW_RUN_LABEL] = flow_run_id
    if idempotency_key:
        out[IDEMPOTENCY_LABEL] = key_hash(idempotency_key)
    return out


def secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    """An environment variable read from a Secret's key."""
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _storage_env(job: str, storage_uri: str, settings: KubernetesSettings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "ARKOR_JOB_ID", "value": job},
        {"name": "ARKOR_STORAGE_URI", "value": storage_uri},
        {"name": "ARKOR_EVENT_LOG", "value": images.EVENT_LOG},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if storage_uri.startswith("s3://"):
        if settings.s3_endpoint_url:
            env.append({"name": "ARKOR_S3_ENDPOINT_URL", "value": settings.s3_endpoint_url})
        env.append({"name": "AWS_REGION", "value": settings.s3_region})
        if settings.s3_secret_name:
            env.append(
                secret_env("AWS_ACCESS_KEY_ID", settings.s3_secret_name, "AWS_ACCESS_KEY_ID")
            )
            env.append(
                secret_env(
                    "AWS_SECRET_ACCESS_KEY", settings.s3_secret_name, "AWS_SECRET_ACCESS_KEY"
                )
            )
    return env


def security_context() -> dict[str, Any]:
    """Every container's: non-root, read-only root filesystem, no capabilities."""
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _resources(settings: KubernetesSettings) -> dict[str, Any]:
    requests: dict[str, str] = {"cpu": settings.cpu_request, "memory": settings.memory_request}
    limits: dict[str, str] = {}
    if settings.cpu_limit:
        limits["cpu"] = settings.cpu_limit
    if settings.memory_limit:
        limits["memory"] = settings.memory_limit
    requests["ephemeral-storage"] = settings.ephemeral_storage_request
    limits["ephemeral-storage"] = settings.ephemeral_storage_limit
    if settings.gpu_count:
        requests[settings.gpu_resource] = str(settings.gpu_count)
        limits[settings.gpu_resource] = str(settings.gpu_count)
    return {"requests": requests, "limits": limits}


def _mounts(*names: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"name": name, "mountPath": path} for name, path in names]


def hub_env(settings: KubernetesSettings) -> list[dict[str, str]]:
    """Where pods reach the hub, and the setting a user fixes when the hub refuses the token."""
    env = [{"name": "ARKOR_HF_TOKEN_SETTING", "value": "ARKOR_K8S_HF_TOKEN"}]
    if settings.hf_endpoint:
        env.append({"name": "HF_ENDPOINT", "value": settings.hf_endpoint})
    if settings.hub_offline:
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    return env


def _containers(
    job: str, storage_uri: str, settings: KubernetesSettings, secret_keys: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    common = _storage_env(job, storage_uri, settings)
    paths = {k: v for k, v in images.TRAINER_PATH_ENV.items() if k != "ARKOR_EVENT_LOG"}
    if settings.shared_model_cache:  # Hub datasets too are then downloaded once per node
        paths["HF_HOME"] = f"{MODEL_CACHE_DIR}/huggingface"
    if settings.model_cache_max_bytes:
        paths["ARKOR_MODEL_CACHE_MAX_BYTES"] = str(settings.model_cache_max_bytes)
    trainer_env = [
        *common,
        *({"name": k, "value": v} for k, v in paths.items()),
        {"name": "ARKOR_CONFIG_FILE", "value": f"{CONFIG_DIR}/config.json"},
        {"name": "ARKOR_CANCEL_GRACE_SECONDS", "value": str(settings.cancel_grace_seconds)},
        {"name": "ARKOR_MAX_RESTARTS", "value": str(settings.max_pod_restarts)},
        *hub_env(settings),
        # SIGTERM means "cancelled" only once the pod has the cancel annotation (the client
        # patches it); otherwise it is a disruption (eviction, preemption): retry, resume.
        {"name": "ARKOR_POD_ANNOTATIONS", "value": POD_ANNOTATIONS_FILE},
        # Counted attempts the Job allows: only the last one's retryable failure is final.
        {"name": "ARKOR_MAX_ATTEMPTS", "value": str(settings.backoff_limit + 1)},
        *({"name": k, "value": v} for k, v in sorted(settings.env.items())),
        # optional: the Secret is deleted when the run ends, and a pod the Job starts after
        # that (the last one was lost while stopping) must still start, to find the run ended
        # in its log and exit (see run_secret.py)
        *(secret_env(key, f"{job}-secrets", key, optional=True) for key in secret_keys),
    ]
    trainer = {
        "name": TRAINER,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(settings.worker_command),
        "env": trainer_env,
        "resources": _resources(settings),
        "securityContext": security_context(),
        # /tmp last: a node agent that bind-mounts in order keeps the other sources reachable.
        "volumeMounts": [
            *_mounts(("run", RUN_DIR), ("cache", CACHE_DIR), ("dshm", SHM_DIR)),
            *(_mounts(("model-cache", MODEL_CACHE_DIR)) if settings.shared_model_cache else []),
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "podinfo", "mountPath": PODINFO_DIR, "readOnly": True},
            *_mounts(("tmp", TMP_DIR)),
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    port = settings.sidecar_port
    sidecar = {
        "name": SIDECAR,
        "image": settings.sidecar_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(settings.sidecar_command),
        "restartPolicy": "Always",
        "env": [
            *common,
            {"name": "HOME", "value": images.SIDECAR_PATH_ENV["HOME"]},
            {"name": "ARKOR_SIDECAR_PORT", "value": str(port)},
        ],
        "ports": [{"name": "events", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "events"}, "periodSeconds": 5},
        "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": security_context(),
        "volumeMounts": _mounts(("run", RUN_DIR), ("tmp", TMP_DIR)),
    }
    return trainer, sidecar


def affinity_for(settings: KubernetesSettings) -> dict[str, Any] | None:
    """The node affinity to the settings' GPU type (None without one)."""
    if not settings.gpu_type:
        return None
    term = {"key": settings.gpu_type_label, "operator": "In", "values": [settings.gpu_type]}
    required = {"nodeSelectorTerms": [{"matchExpressions": [term]}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}


def pod_failure_policy() -> dict[str, Any]:
    """Disruptions are retried for free; exit code 2 ("never retry") fails the Job at once."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": TRAINER,
                    "operator": "In",
                    "values": [EXIT_NEVER_RETRY],
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }


def _pod_spec(
    job: str, storage_uri: str, settings: KubernetesSettings, secret_keys: list[str]
) -> dict[str, Any]:
    trainer, sidecar = _containers(job, storage_uri, settings, secret_keys)
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.cancel_grace_seconds + 15,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_USER_ID,
            "runAsGroup": RUN_GROUP_ID,
            "fsGroup": RUN_GROUP_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [sidecar],
        "containers": [trainer],
        "volumes": [
            {"name": "run", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": settings.scratch_size_limit}},
            {"name": "cache", "emptyDir": {"sizeLimit": settings.cache_size_limit}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
            {"name": "config", "configMap": {"name": f"{job}-config"}},
            {
                "name": "podinfo",
                "downwardAPI": {
                    "items": [
                        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}
                    ]
                },
            },
        ],
    }
    if settings.model_cache_host_path:
        cache = {"path": settings.model_cache_host_path, "type": "DirectoryOrCreate"}
        spec["volumes"].append({"name": "model-cache", "hostPath": cache})
    elif settings.model_cache_claim:
        claim = {"claimName": settings.model_cache_claim}
        spec["volumes"].append({"name": "model-cache", "persistentVolumeClaim": claim})
    if settings.node_selector:
        spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        spec["tolerations"] = [dict(t) for t in settings.tolerations]
    affinity = affinity_for(settings)
    if affinity:
        spec["affinity"] = affinity
    if settings.priority_class:
        spec["priorityClassName"] = settings.priority_class
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    return spec


def secret_data(config: JobConfig, settings: KubernetesSettings) -> dict[str, str]:
    """The run's secret values by environment name (empty when the run has none)."""
    data = dict(config.secret_env())
    if settings.hf_token is not None:
        data["HF_TOKEN"] = settings.hf_token.get_secret_value()
    return data


def build_run(
    config: JobConfig,
    settings: KubernetesSettings,
    *,
    name: str,
    storage_uri: str,
    idempotency_key: str | None = None,
    flow_run_id: str | None = None,
) -> RunObjects:
    """Build every object of one run.

    Args:
        config: the validated trainer config, or an evaluation's (the same Job shape: the
            worker reads its stage from the config).
        settings: backend settings (namespace, images, node pool, resources, limits).
        name: the Job name (see :func:`job_name`).
        storage_uri: the storage prefix; the run lives under ``{storage_uri}/{name}/``.
        idempotency_key: labelled (hashed) so a second submit can find the Job.
        flow_run_id: the Prefect flow-run id, labelled when known.

    Returns:
        The Job, ConfigMap and Secret (None when the run has no secrets). The Job is suspended
        when the run has a Secret, so that no pod starts before it exists: the backend resumes
        it once the Secret and the ConfigMap exist. Without a Secret it is not (a pod waits for
        its ConfigMap volume), unless a Kueue queue is set: Kueue resumes it on admission.
    """
    import json

    meta_labels = labels(config, idempotency_key=idempotency_key, flow_run_id=flow_run_id)
    values = secret_data(config, settings)
    annotations = {
        "arkor-ops.dev/run-name": config.name,
        "arkor-ops.dev/model": config.model,
        "arkor-ops.dev/storage-uri": f"{storage_uri.rstrip('/')}/{name}",
        CONFIG_HASH_ANNOTATION: config.config_hash(),
    }
    if flow_run_id and FLOW_RUN_LABEL not in meta_labels:
        annotations["arkor-ops.dev/flow-run-id"] = flow_run_id
    job_labels = dict(meta_labels)
    if settings.kueue_queue:
        job_labels[KUEUE_QUEUE_LABEL] = settings.kueue_queue
    template_meta = {
        "labels": dict(meta_labels),
        "annotations": {"kubectl.kubernetes.io/default-container": TRAINER},
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": job_labels,
            "annotations": annotations,
        },
        "spec": {
            "suspend": bool(values) or bool(settings.kueue_queue),
            "backoffLimit": settings.backoff_limit,
            "activeDeadlineSeconds": settings.active_deadline_seconds,
            "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
            "podFailurePolicy": pod_failure_policy(),
            "template": {
                "metadata": template_meta,
                "spec": _pod_spec(name, storage_uri, settings, sorted(values)),
            },
        },
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{name}-config",
            "namespace": settings.namespace,
            "labels": meta_labels,
        },
        "data": {"config.json": json.dumps(config.to_wire(), indent=2, sort_keys=True)},
    }
    secret = None
    if values:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": f"{name}-secrets",
                "namespace": settings.namespace,
                "labels": meta_labels,
            },
            "stringData": values,
        }
    return RunObjects(job=job, config_map=config_map, secret=secret)


def owner_reference(job: dict[str, Any]) -> dict[str, Any]:
    """An ownerReference to a created Job (so deleting the Job deletes its objects).

    Args:
        job: the Job as returned by the API server (it must have a ``uid``).

    Returns:
        The reference, for ``metadata.ownerReferences``.
    """
    meta = job["metadata"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": False,
    }


def preflight_name(job: str) -> str:
    """The name of run ``job``'s pre-flight Job."""
    return f"{job}{PREFLIGHT_SUFFIX}"


def _preflight_pod(pod: dict[str, Any], job: str, settings: KubernetesSettings) -> None:
    """Reshape the run's pod spec (a copy) for the CPU pool, in place."""
    name = preflight_name(job)
    for key in ("initContainers", "tolerations", "affinity", "priorityClassName"):
        pod.pop(key, None)  # no sidecar: the pre-flight's log goes to storage when it ends
    pod["terminationGracePeriodSeconds"] = 15
    if settings.preflight_node_selector:
        pod["nodeSelector"] = dict(settings.preflight_node_selector)
    else:
        pod.pop("nodeSelector", None)
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "model-cache"]
    for volume in pod["volumes"]:
        if volume["name"] == "config":
            volume["configMap"]["name"] = f"{name}-config"
    trainer = pod["containers"][0]
    trainer["volumeMounts"] = [m for m in trainer["volumeMounts"] if m["name"] != "model-cache"]
    env = []
    for var in trainer["env"]:
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref is not None and ref["name"] == f"{job}-secrets":
            ref["name"] = f"{name}-secrets"
        if var["name"] in ("ARKOR_MAX_ATTEMPTS", "ARKOR_MODEL_CACHE_MAX_BYTES"):
            continue
        if var["name"] == "HF_HOME":  # the node cache's is not mounted here
            env.append({"name": "HF_HOME", "value": images.TRAINER_PATH_ENV["HF_HOME"]})
        else:
            env.append(var)
    env.append({"name": "ARKOR_PREFLIGHT", "value": "1"})
    if settings.gpu_type:  # what the pre-flight checks the model's memory against
        env.append({"name": "ARKOR_GPU_TYPE", "value": settings.gpu_type})
    if settings.gpu_memory_gib:
        env.append({"name": "ARKOR_GPU_MEMORY_GIB", "value": str(settings.gpu_memory_gib)})
    trainer["env"] = env
    trainer["resources"] = {
        "requests": {
            "cpu": settings.preflight_cpu_request,
            "memory": settings.preflight_memory_request,
            "ephemeral-storage": "2Gi",
        },
        "limits": {"memory": settings.preflight_memory_limit, "ephemeral-storage": "20Gi"},
    }


def build_preflight(run: RunObjects, settings: KubernetesSettings) -> RunObjects:
    """The pre-flight objects of a training run: its CPU-pool Job, ConfigMap and Secret.

    The run's own objects, copied under :func:`preflight_name` (so the admission policy's
    "a Job reads only its own ConfigMap and Secret" holds for it too) and labelled
    ``arkor-ops.dev/stage=preflight``: the same image, worker and config, with
    ``ARKOR_PREFLIGHT=1`` and ``ARKOR_JOB_ID`` still the run's (the pre-flight writes the run's
    log); no sidecar, no GPU, no GPU toleration, affinity or priority, no node cache; the
    CPU pool's node selector, small requests and ``settings.preflight_timeout_seconds`` as its
    deadline. A failed check exits 2, which the pod failure policy makes final; any other
    failure is retried up to ``backoff_limit`` times.

    Args:
        run: what :func:`build_run` built for the run.
        settings: backend settings (``preflight_*``).

    Returns:
        The pre-flight's Job, ConfigMap and Secret (None when the run has none).
    """
    import copy

    job = run.job["metadata"]["name"]
    name = preflight_name(job)

    def relabel(meta: dict[str, Any]) -> None:
        meta["labels"] = {**meta.get("labels", {}), STAGE_LABEL: "preflight"}
        meta["labels"][APP_NAME] = "arkor-ops-preflight"
        meta["labels"].pop(KUEUE_QUEUE_LABEL, None)  # a CPU check waits in no GPU queue

    pre = copy.deepcopy(run.job)
    pre["metadata"]["name"] = name
    relabel(pre["metadata"])
    spec = pre["spec"]
    spec["suspend"] = run.secret is not None  # resumed once its Secret exists
    spec["activeDeadlineSeconds"] = settings.preflight_timeout_seconds
    relabel(spec["template"]["metadata"])
    _preflight_pod(spec["template"]["spec"], job, settings)
    config_map = copy.deepcopy(run.config_map)
    config_map["metadata"]["name"] = f"{name}-config"
    relabel(config_map["metadata"])
    secret = None
    if run.secret is not None:
        secret = copy.deepcopy(run.secret)
        secret["metadata"]["name"] = f"{name}-secrets"
        relabel(secret["metadata"])
    return RunObjects(job=pre, config_map=config_map, secret=secret)
