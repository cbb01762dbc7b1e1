"""Endpoints on Kubernetes: a Deployment and a Service serving a base model and one adapter.

An endpoint ``NAME`` is these objects in the run namespace, all labelled
``arkor-ops.dev/endpoint=NAME`` (``kubectl get all,cm,secret -l arkor-ops.dev/endpoint=NAME``):

- ``Deployment/endpoint-NAME``: one pod of the serving image running
  ``python -m arkor_ops.serving.pod`` (:mod:`arkor_ops.serving.pod`): llama-server and the
  gateway on port 8000, ``/health`` as its readiness probe (ready once a version serves);
- ``Service/endpoint-NAME``: port 80 to the pod's 8000;
- ``ConfigMap/endpoint-NAME``: ``target.json``, the version the endpoint serves and its
  committed adapter. The pod reads it every few seconds and hot-swaps when it changes
  (:meth:`arkor_ops.serving.endpoint.LocalEndpoint.deploy`): changing the target never
  restarts the pod, so requests keep being answered during a swap;
- ``Secret/endpoint-NAME-keys``: ``keys.jsonl``, the sha256 of each API key (never a key: a
  key is shown once, by :func:`create_key`); the pod reads it through the API too, so a revoked
  key is refused within seconds, without the minute a kubelet takes to refresh a mounted Secret;
- ``ServiceAccount``, ``Role`` and ``RoleBinding`` ``endpoint-NAME``: the pod may read only that
  ConfigMap, that Secret and its Deployment, and write Events (a refused adapter is a Warning
  Event on the Deployment, a swap a Normal one).

Targets are resolved here, where the registry is reachable: ``champion`` or a version number of
a registered model becomes the version's ``arkor-ops.final_adapter`` (:func:`resolve_target`);
an endpoint that targets ``champion`` is labelled with its model, and
:func:`follow_promotion` (called by ``arkor-ops models promote`` and the retrain flows after they
move the alias) rewrites its target. The pod itself needs no registry credentials.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from typing import Any

from arkor_ops.backends.kubernetes.client import load_configuration
from arkor_ops.backends.kubernetes.manifests import (
    SHM_DIR,
    affinity_for,
    hub_env,
    secret_env,
    security_context,
)
from arkor_ops.errors import ServingError
from arkor_ops.models import describe_model
from arkor_ops.registry import RegistrySettings
from arkor_ops.serving.keys import KeyRecord, add_record, drop_record, dump_records, parse_records
from arkor_ops.settings import KubernetesSettings

ENDPOINT_LABEL = "arkor-ops.dev/endpoint"
#: On endpoints that follow a registered model's champion: the model's name.
CHAMPION_OF_LABEL = "arkor-ops.dev/champion-of"
PORT = 8000
#: Where the vLLM container answers, inside the pod.
VLLM_PORT = 8001
#: ``llama.cpp``: the CPU engine, in the pod's one container; ``vllm``: the GPU engine, a
#: container of its own beside the gateway.
ENGINES = ("llama.cpp", "vllm")
TARGET_KEY = "target.json"
KEYS_KEY = "keys.jsonl"
_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
_CACHE = "/var/cache/arkor"
#: The adapters the gateway fetched (an emptyDir; the vLLM container reads them there too).
_ADAPTERS = "/var/run/arkor-endpoint"
#: The base model the vLLM init container links for vLLM (on the cache volume).
_VLLM_BASE = f"{_CACHE}/base"
#: llama.cpp in the serving image.
LLAMA_CPP_DIR = "/opt/llama.cpp"
_TMP = "/tmp"  # noqa: S108 - the pod's own emptyDir


def check_name(name: str) -> str:
    """``name`` if it can name an endpoint's objects (a DNS label of at most 40 characters).

    Raises:
        ServingError: it cannot.
    """
    if not _NAME.match(name):
        raise ServingError(
            f"endpoint name {name[:80]!r}: use 1-40 lowercase letters, digits and '-', "
            "starting with a letter (it names a Service)"
        )
    return name


def object_name(name: str) -> str:
    """The name of the endpoint's Deployment, Service, ConfigMap and RBAC objects."""
    return f"endpoint-{name}"


def keys_secret(name: str) -> str:
    """The name of the endpoint's key Secret."""
    return f"endpoint-{name}-keys"


@dataclass(frozen=True)
class Target:
    """What an endpoint serves: a version name and its committed adapter (None: the base).

    ``source`` says where it came from: ``champion`` (of ``model``), ``version`` (of
    ``model``), ``uri`` (an adapter given as is) or ``base``. ``request`` tells one request
    for it from another (set anew each time the target is written): the pod names it in the
    Event that answers it, which is how :meth:`Endpoints.wait_serving` finds that answer.
    """

    version: str
    adapter: str | None
    source: str = "uri"
    model: str | None = None
    request: str = ""

    def to_json(self) -> str:
        """As ``target.json``."""
        return json.dumps(asdict(self), sort_keys=True)

    def requested(self) -> Target:
        """The same target, as a new request."""
        return replace(self, request=uuid.uuid4().hex[:12])

    @classmethod
    def from_json(cls, text: str) -> Target:
        """From ``target.json``.

        Raises:
            ServingError: it is not a target.
        """
        try:
            data = json.loads(text)
            return cls(
                version=str(data["version"]),
                adapter=data.get("adapter"),
                source=str(data.get("source", "uri")),
                model=data.get("model"),
                request=str(data.get("request", "")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ServingError(f"the endpoint's {TARGET_KEY} is not a target: {exc}") from exc


@dataclass(frozen=True)
class EndpointSpec:
    """An endpoint to create: its name, base model (a Hub id or an ``s3://`` folder), target."""

    name: str
    base_model: str
    target: Target
    auth: str = "key"
    vocab_pre: str | None = None
    engine: str = "llama.cpp"
    max_lora_rank: int = 64

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.engine not in ENGINES:
            raise ServingError(f"engine {self.engine!r}: use one of {', '.join(ENGINES)}")
        if self.auth not in ("key", "none"):
            raise ServingError(f"auth {self.auth!r}: use 'key' or 'none'")
        if not self.base_model:
            raise ServingError("the endpoint needs a base model (--base)")


def resolve_target(registry: RegistrySettings, model: str, target: str) -> tuple[Target, str]:
    """``champion`` or a version number of registered ``model`` as a target, and its base model.

    Raises:
        ServingError: no such version, no champion, or the version has no committed adapter.
        RegistryError: the registry did not answer.
    """
    info = describe_model(registry, model)
    number = info.champion if target == "champion" else target
    if number is None:
        raise ServingError(
            f"model {model} has no champion yet: promote a version "
            f"('arkor-ops models promote {model} VERSION') or give a version"
        )
    version = next((v for v in info.versions if v.version == number), None)
    if version is None:
        known = ", ".join(v.version for v in info.versions) or "none"
        raise ServingError(f"model {model} has no version {number!r} (versions: {known})")
    lineage = version.lineage
    adapter, base = lineage.get("final_adapter"), lineage.get("base_model")
    if not adapter or not base:
        raise ServingError(
            f"{model} v{number} has no arkor-ops.final_adapter or base_model tag: register it "
            "with arkor_ops.registry.register_run (the retrain flows do) so its adapter is known"
        )
    source = "champion" if target == "champion" else "version"
    return Target(number, adapter, source, model), base


# -- manifests ---------------------------------------------------------------------------------


def _labels(spec: EndpointSpec) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/managed-by": "arkor-ops",
        "app.kubernetes.io/name": "arkor-ops-endpoint",
        ENDPOINT_LABEL: spec.name,
    }
    if spec.target.source == "champion" and spec.target.model:
        labels[CHAMPION_OF_LABEL] = _label_value(spec.target.model)
    return labels


def _label_value(text: str) -> str:
    value = re.sub(r"[^A-Za-z0-9._-]", "-", text)[:63].strip("-._")
    return value or "model"


def _env(spec: EndpointSpec, settings: KubernetesSettings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "ARKOR_ENDPOINT_NAME", "value": spec.name},
        {
            "name": "ARKOR_ENDPOINT_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        {"name": "ARKOR_ENDPOINT_BASE_MODEL", "value": spec.base_model},
        {"name": "ARKOR_ENDPOINT_AUTH", "value": spec.auth},
        {"name": "ARKOR_ENDPOINT_PORT", "value": str(PORT)},
        {"name": "ARKOR_ENDPOINT_WORKDIR", "value": f"{_ADAPTERS}/endpoint"},
        {"name": "HOME", "value": _CACHE},
        {"name": "XDG_CACHE_HOME", "value": _CACHE},
        {"name": "HF_HOME", "value": f"{_CACHE}/huggingface"},
        {"name": "ARKOR_MODEL_CACHE", "value": f"{_CACHE}/models"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        # where images/serving/Dockerfile puts llama.cpp (also its ENV; set here, as the Job
        # sets the trainer's paths, so the layout does not depend on the image's ENV)
        {"name": "ARKOR_LLAMA_CPP_HOME", "value": LLAMA_CPP_DIR},
        *hub_env(settings),
    ]
    if spec.vocab_pre:
        env.append({"name": "ARKOR_ENDPOINT_VOCAB_PRE", "value": spec.vocab_pre})
    if spec.engine == "vllm":
        env += [
            {"name": "ARKOR_ENDPOINT_ENGINE", "value": "vllm"},
            {"name": "ARKOR_ENDPOINT_ENGINE_URL", "value": f"http://127.0.0.1:{VLLM_PORT}"},
            {"name": "ARKOR_ENDPOINT_BASE_DIR", "value": _VLLM_BASE},
        ]
    if settings.s3_endpoint_url:
        env.append({"name": "ARKOR_S3_ENDPOINT_URL", "value": settings.s3_endpoint_url})
    env.append({"name": "AWS_REGION", "value": settings.s3_region})
    if settings.s3_secret_name:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.append(secret_env(key, settings.s3_secret_name, key))
    env.extend({"name": k, "value": v} for k, v in sorted(settings.env.items()))
    return env


def _deployment(spec: EndpointSpec, settings: KubernetesSettings) -> dict[str, Any]:
    name = object_name(spec.name)
    labels = _labels(spec)
    selector = {ENDPOINT_LABEL: spec.name}
    container = {
        "name": "engine",
        "image": settings.serving_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", "-m", "arkor_ops.serving.pod"],
        "env": _env(spec, settings),
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "tcpSocket": {"port": "http"},
            "initialDelaySeconds": 600,
            "periodSeconds": 20,
        },
        "resources": {
            "requests": {
                "cpu": settings.cpu_request,
                "memory": settings.memory_request,
                "ephemeral-storage": settings.ephemeral_storage_request,
            },
            "limits": {
                "memory": settings.memory_limit or "8Gi",
                "ephemeral-storage": settings.ephemeral_storage_limit,
                **({"cpu": settings.cpu_limit} if settings.cpu_limit else {}),
            },
        },
        "securityContext": security_context(),
        "volumeMounts": [
            {"name": "cache", "mountPath": _CACHE},
            {"name": "adapters", "mountPath": _ADAPTERS},
            {"name": "tmp", "mountPath": _TMP},
        ],
    }
    pod_spec: dict[str, Any] = {
        "serviceAccountName": name,
        "automountServiceAccountToken": True,  # it reads its target and keys through the API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "cache", "emptyDir": {"sizeLimit": settings.cache_size_limit}},
            {"name": "adapters", "emptyDir": {"sizeLimit": "10Gi"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": settings.scratch_size_limit}},
        ],
    }
    if spec.engine == "vllm":
        _with_vllm(pod_spec, spec, settings)
    if settings.node_selector:
        pod_spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in settings.tolerations]
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            # One pod at a time: a second engine would need a second copy of the model's memory.
            "strategy": {"type": "Recreate"},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }


def _with_vllm(pod: dict[str, Any], spec: EndpointSpec, settings: KubernetesSettings) -> None:
    """The GPU engine: an init container fetches the base model, vLLM serves it with LoRA on
    (adapters loaded at runtime, from the folder the gateway fetches them into)."""
    (gateway,) = pod["containers"]
    fetch = {
        **gateway,
        "name": "fetch-base",
        "command": ["python", "-m", "arkor_ops.serving.pod", "fetch-base", _VLLM_BASE],
    }
    for key in ("ports", "readinessProbe", "livenessProbe"):
        fetch.pop(key)
    gpus = str(settings.gpu_count or 1)
    health = [
        "python3",
        "-c",
        f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{VLLM_PORT}/health', "
        "timeout=5)",
    ]
    vllm = {
        "name": "vllm",
        "image": settings.vllm_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["vllm", "serve", _VLLM_BASE],
        # --max-loras 2: the serving version and the one being swapped in
        "args": [
            *("--host", "127.0.0.1", "--port", str(VLLM_PORT)),
            *("--served-model-name", f"{spec.name}@base", "--enable-lora", "--max-loras", "2"),
            *("--max-lora-rank", str(spec.max_lora_rank)),
        ],
        "env": [
            # the gateway loads and unloads versions through vLLM's API (only from inside the
            # pod: vLLM listens on 127.0.0.1, the gateway with its keys is the way in)
            {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"},
            {"name": "HOME", "value": "/var/cache/vllm"},
            {"name": "XDG_CACHE_HOME", "value": "/var/cache/vllm"},
            {"name": "HF_HUB_OFFLINE", "value": "1"},  # the base is a local folder
        ],
        "resources": {
            "requests": {
                "cpu": settings.cpu_request,
                "memory": settings.memory_request,
                settings.gpu_resource: gpus,
            },
            "limits": {"memory": settings.memory_limit or "32Gi", settings.gpu_resource: gpus},
        },
        # vLLM listens on 127.0.0.1 only, which a kubelet's httpGet cannot reach: ask from inside
        "readinessProbe": {"exec": {"command": health}, "periodSeconds": 10},
        "livenessProbe": {
            "exec": {"command": health},
            "initialDelaySeconds": 900,  # loading and compiling a model takes minutes
            "periodSeconds": 30,
            "failureThreshold": 5,
        },
        "securityContext": security_context(),
        "volumeMounts": [
            {"name": "cache", "mountPath": _CACHE, "readOnly": True},
            {"name": "adapters", "mountPath": _ADAPTERS, "readOnly": True},
            {"name": "vllm-cache", "mountPath": "/var/cache/vllm"},
            {"name": "dshm", "mountPath": SHM_DIR},
            {"name": "tmp", "mountPath": _TMP},
        ],
    }
    gateway["resources"] = {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "4Gi"},
    }
    pod["initContainers"] = [fetch]
    pod["containers"] = [gateway, vllm]
    pod["volumes"] += [
        {"name": "vllm-cache", "emptyDir": {"sizeLimit": "20Gi"}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
    ]
    affinity = affinity_for(settings)
    if affinity:
        pod["affinity"] = affinity


def render(spec: EndpointSpec, settings: KubernetesSettings) -> list[dict[str, Any]]:
    """Every object of the endpoint, in creation order (no key in any of them)."""
    name = object_name(spec.name)

    def meta(called: str = name) -> dict[str, Any]:
        return {"name": called, "labels": _labels(spec)}

    rules = [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [name], "verbs": ["get"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [keys_secret(spec.name)],
            "verbs": ["get"],
        },
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "resourceNames": [name],
            "verbs": ["get"],
        },
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta()},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(),
            "data": {TARGET_KEY: spec.target.to_json()},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta(keys_secret(spec.name)),
            "type": "Opaque",
            "data": {KEYS_KEY: ""},
        },
        _deployment(spec, settings),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(),
            "spec": {
                "selector": {ENDPOINT_LABEL: spec.name},
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
            },
        },
    ]


# -- the API -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointInfo:
    """An endpoint as the cluster has it."""

    name: str
    namespace: str
    base_model: str
    target: Target | None
    ready: bool
    pod_ip: str | None
    keys: list[str]

    @property
    def url(self) -> str | None:
        """The OpenAI base URL at the pod's IP (inside the cluster, or on its nodes)."""
        return f"http://{self.pod_ip}:{PORT}/v1" if self.pod_ip else None


class Endpoints:
    """Create, read, retarget and delete endpoints in ``settings.namespace``."""

    def __init__(self, settings: KubernetesSettings) -> None:
        from kubernetes import client

        self.settings = settings
        self.namespace = settings.namespace
        self._api = client.ApiClient(load_configuration(settings))
        # Any: the client's models are read by attribute, and each may be None on paper
        self.core: Any = client.CoreV1Api(self._api)
        self.apps: Any = client.AppsV1Api(self._api)
        self.rbac: Any = client.RbacAuthorizationV1Api(self._api)

    def close(self) -> None:
        """Close the API connections."""
        self._api.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> Endpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            yield
        except ApiException as exc:
            reason = _reason(exc)
            if exc.status == 404:
                raise ServingError(f"{what}: not found ({reason})") from None
            if exc.status == 409:
                raise ServingError(f"{what}: it exists already ({reason})") from None
            if exc.status in (401, 403):
                raise ServingError(
                    f"{what}: the API server refused ({exc.status} {reason}); the account "
                    f"needs to manage Deployments, Services, ConfigMaps, Secrets and RBAC "
                    f"in namespace {self.namespace}"
                ) from None
            raise ServingError(f"{what}: the API server answered {exc.status} {reason}") from None
        except HTTPError as exc:
            raise ServingError(f"{what}: the API server did not answer ({exc})") from None

    def create(self, spec: EndpointSpec) -> str | None:
        """Create the endpoint's objects; return its first API key (None with ``auth none``).

        Raises:
            ServingError: it exists, or the API server refused (nothing is left behind).
        """
        ns = self.namespace
        if self._exists(spec.name):
            raise ServingError(
                f"endpoint {spec.name} exists in {ns}: delete it, or retarget it with "
                f"'arkor-ops endpoints target {spec.name} ...'"
            )
        key = None
        spec = replace(spec, target=spec.target.requested())
        objects = render(spec, self.settings)
        if spec.auth == "key":
            records, key = add_record([], "default")
            secret = next(o for o in objects if o["kind"] == "Secret")
            secret["data"][KEYS_KEY] = encode_data(dump_records(records))
        create = {
            "ServiceAccount": self.core.create_namespaced_service_account,
            "Role": self.rbac.create_namespaced_role,
            "RoleBinding": self.rbac.create_namespaced_role_binding,
            "ConfigMap": self.core.create_namespaced_config_map,
            "Secret": self.core.create_namespaced_secret,
            "Deployment": self.apps.create_namespaced_deployment,
            "Service": self.core.create_namespaced_service,
        }
        try:
            for obj in objects:
                with self._calls(f"creating {obj['kind']} {obj['metadata']['name']}"):
                    create[obj["kind"]](ns, obj)
        except ServingError:
            self.delete(spec.name, missing_ok=True)
            raise
        return key

    def _exists(self, name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.apps.read_namespaced_deployment(object_name(name), self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            with self._calls(f"reading endpoint {name}"):
                raise
        return True

    def delete(self, name: str, *, missing_ok: bool = False) -> None:
        """Delete every object of endpoint ``name`` (its pod stops; keys and target go).

        Raises:
            ServingError: there is no such endpoint (unless ``missing_ok``).
        """
        from kubernetes.client.exceptions import ApiException

        check_name(name)
        found = False
        obj, secret = object_name(name), keys_secret(name)
        calls = [
            (self.core.delete_namespaced_service, obj),
            (self.apps.delete_namespaced_deployment, obj),
            (self.core.delete_namespaced_secret, secret),
            (self.core.delete_namespaced_config_map, obj),
            (self.rbac.delete_namespaced_role_binding, obj),
            (self.rbac.delete_namespaced_role, obj),
            (self.core.delete_namespaced_service_account, obj),
        ]
        for call, object_ in calls:
            try:
                call(object_, self.namespace, propagation_policy="Background")
                found = True
            except ApiException as exc:
                if exc.status != 404:
                    with self._calls(f"deleting {object_}"):
                        raise
        if not found and not missing_ok:
            raise ServingError(f"no endpoint {name} in namespace {self.namespace}")

    def list_all(self) -> list[EndpointInfo]:
        """Every endpoint in the namespace."""
        with self._calls("listing endpoints"):
            deployments = self.apps.list_namespaced_deployment(
                self.namespace, label_selector=ENDPOINT_LABEL
            ).items
        return [self.show(d.metadata.labels[ENDPOINT_LABEL]) for d in deployments]

    def show(self, name: str) -> EndpointInfo:
        """Endpoint ``name``: its base model, target, readiness, pod IP and key names.

        Raises:
            ServingError: there is no such endpoint.
        """
        check_name(name)
        with self._calls(f"endpoint {name} in namespace {self.namespace}"):
            dep = self.apps.read_namespaced_deployment(object_name(name), self.namespace)
        env = {e.name: e.value for e in dep.spec.template.spec.containers[0].env or []}
        target = None
        with suppress(ServingError):
            target = self._target(name)
        with self._calls(f"the pods of endpoint {name}"):
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector=f"{ENDPOINT_LABEL}={name}"
            ).items
        ready_pod = next((p for p in pods if _ready(p)), None)
        return EndpointInfo(
            name=name,
            namespace=self.namespace,
            base_model=env.get("ARKOR_ENDPOINT_BASE_MODEL", ""),
            target=target,
            ready=ready_pod is not None,
            pod_ip=(ready_pod or (pods[0] if pods else None)) and _pod_ip(ready_pod or pods[0]),
            keys=[r.name for r in self._keys(name)],
        )

    def _target(self, name: str) -> Target:
        with self._calls(f"the target of endpoint {name}"):
            cm = self.core.read_namespaced_config_map(object_name(name), self.namespace)
        return Target.from_json((cm.data or {}).get(TARGET_KEY, ""))

    def set_target(self, name: str, target: Target) -> Target:
        """Point endpoint ``name`` at ``target``; its pod swaps to it without a restart.

        Returns:
            The target as written (with its ``request``, for :meth:`wait_serving`).

        Raises:
            ServingError: there is no such endpoint.
        """
        check_name(name)
        target = target.requested()
        labels: dict[str, str | None] = {CHAMPION_OF_LABEL: None}
        if target.source == "champion" and target.model:
            labels[CHAMPION_OF_LABEL] = _label_value(target.model)
        body = {"metadata": {"labels": labels}, "data": {TARGET_KEY: target.to_json()}}
        with self._calls(f"endpoint {name}'s target"):
            self.core.patch_namespaced_config_map(object_name(name), self.namespace, body)
        return target

    def wait_serving(self, name: str, target: Target, timeout: float = 600.0) -> None:
        """Return once endpoint ``name``'s pod serves ``target`` (as :meth:`set_target` wrote it).

        Raises:
            ServingError: the pod refused it (the Event's message says why: the old version
                keeps serving), or did not answer within ``timeout`` seconds.
        """
        tag = f"(request {target.request})"
        selector = f"involvedObject.kind=Deployment,involvedObject.name={object_name(name)}"
        deadline = time.monotonic() + timeout
        while True:
            with self._calls(f"the events of endpoint {name}"):
                events = self.core.list_namespaced_event(
                    self.namespace, field_selector=selector
                ).items
            for event in events:
                if tag not in (event.message or ""):
                    continue
                if event.reason == "Swapped":
                    return
                if event.reason == "AdapterRefused":
                    raise ServingError(f"endpoint {name}: {event.message}")
            if time.monotonic() > deadline:
                raise ServingError(
                    f"endpoint {name} did not report serving version {target.version} within "
                    f"{timeout:.0f} s (kubectl describe deployment {object_name(name)} -n "
                    f"{self.namespace}; kubectl logs deploy/{object_name(name)})"
                )
            time.sleep(1.0)

    def _keys(self, name: str) -> list[KeyRecord]:
        with self._calls(f"the keys of endpoint {name}"):
            secret = self.core.read_namespaced_secret(keys_secret(name), self.namespace)
        return parse_records(decode_data((secret.data or {}).get(KEYS_KEY, "")))

    def _write_keys(self, name: str, records: list[KeyRecord], version: str) -> None:
        body = {
            "metadata": {"resourceVersion": version},
            "data": {KEYS_KEY: encode_data(dump_records(records))},
        }
        with self._calls(f"the keys of endpoint {name}"):
            self.core.patch_namespaced_secret(keys_secret(name), self.namespace, body)

    def create_key(self, name: str, key_name: str) -> str:
        """Add a key named ``key_name`` to endpoint ``name``; return it (shown only now).

        Raises:
            ServingError: no such endpoint, a bad or taken key name.
        """
        check_name(name)
        with self._calls(f"the keys of endpoint {name}"):
            secret = self.core.read_namespaced_secret(keys_secret(name), self.namespace)
        records = parse_records(decode_data((secret.data or {}).get(KEYS_KEY, "")))
        records, key = add_record(records, key_name)
        self._write_keys(name, records, secret.metadata.resource_version)
        return key

    def revoke_key(self, name: str, key_name: str) -> None:
        """Remove key ``key_name`` of endpoint ``name`` (refused by the pod within seconds).

        Raises:
            ServingError: no such endpoint or key.
        """
        check_name(name)
        with self._calls(f"the keys of endpoint {name}"):
            secret = self.core.read_namespaced_secret(keys_secret(name), self.namespace)
        records = parse_records(decode_data((secret.data or {}).get(KEYS_KEY, "")))
        self._write_keys(name, drop_record(records, key_name), secret.metadata.resource_version)

    def following(self, model: str) -> list[str]:
        """The endpoints that follow ``model``'s champion."""
        selector = f"{CHAMPION_OF_LABEL}={_label_value(model)}"
        with self._calls("the endpoints that follow a champion"):
            maps = self.core.list_namespaced_config_map(
                self.namespace, label_selector=selector
            ).items
        return sorted(cm.metadata.labels[ENDPOINT_LABEL] for cm in maps)

    def follow_promotion(self, model: str, version: str, adapter: str) -> dict[str, Target]:
        """Point every endpoint that follows ``model``'s champion at ``version``.

        Returns:
            Each endpoint retargeted, by name, with its target as written.
        """
        return {
            name: self.set_target(name, Target(version, adapter, "champion", model))
            for name in self.following(model)
        }


def move_followers(
    settings: KubernetesSettings,
    registry: RegistrySettings,
    model: str,
    version: str,
    *,
    timeout: float = 600.0,
) -> dict[str, str]:
    """After ``model``'s ``version`` became the champion: retarget every endpoint that follows
    it and wait until each serves it.

    Returns:
        Each endpoint's outcome by name: ``serving``, or why not (its pod refused the adapter
        and the old version keeps serving, or it did not answer in time).

    Raises:
        ServingError, BackendError, RegistryError: the cluster or the registry could not be
            asked (then no endpoint was moved).
    """
    with Endpoints(settings) as endpoints:
        followers = endpoints.following(model)
        if not followers:
            return {}
        info = describe_model(registry, model)
        found = next((v for v in info.versions if v.version == version), None)
        adapter = found.lineage.get("final_adapter") if found else None
        if not adapter:
            raise ServingError(f"{model} v{version} has no arkor-ops.final_adapter tag")
        outcomes = {}
        for name, target in endpoints.follow_promotion(model, version, adapter).items():
            try:
                endpoints.wait_serving(name, target, timeout)
                outcomes[name] = "serving"
            except ServingError as exc:
                outcomes[name] = str(exc)
        return outcomes


def _reason(exc: Any) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def _ready(pod: Any) -> bool:
    conditions = (pod.status and pod.status.conditions) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _pod_ip(pod: Any) -> str | None:
    return pod.status.pod_ip if pod.status else None


def encode_data(text: str) -> str:
    """A Secret's ``data`` value for ``text``."""
    return base64.b64encode(text.encode()).decode()


def decode_data(text: str) -> str:
    """The text of a Secret's ``data`` value (empty for none)."""
    return base64.b64decode(text).decode() if text else ""
