"""Small helpers for cluster tests: pod/job manifests and polling."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.rest import ApiException

T = TypeVar("T")

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 60, interval: float = 0.25
) -> T:
    """Poll ``probe`` until it returns something truthy.

    Raises:
        AssertionError: Timed out; ``what`` names the condition.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def container(name: str, script: str, **extra: Any) -> dict[str, Any]:
    """A container running ``sh -c script`` (its image is not under ``localhost/``, so the node
    agent runs it as a process of this machine)."""
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script], **extra}


def pod_manifest(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    """A bare pod with ``restartPolicy: Never`` unless overridden."""
    body: dict[str, Any] = {"restartPolicy": "Never", "containers": containers, **spec}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": body}


def job_manifest(name: str, pod_spec: dict[str, Any], **job_spec: Any) -> dict[str, Any]:
    """A Job around ``pod_spec``."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": pod_spec}, **job_spec},
    }


def read_pod(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, Any] | None:
    """The pod as a plain dict, or None when it does not exist."""
    try:
        resp = core.read_namespaced_pod(name, namespace, _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return dict(json.loads(resp.data))


def pod_phase(core: client.CoreV1Api, namespace: str, name: str) -> str | None:
    """The pod's phase, or None when it does not exist."""
    pod = read_pod(core, namespace, name)
    return None if pod is None else str(pod.get("status", {}).get("phase"))


def wait_running(core: client.CoreV1Api, namespace: str, name: str, timeout: float = 60) -> dict:
    """Wait until the pod is Running with a pod IP; returns it."""

    def probe() -> dict[str, Any] | None:
        pod = read_pod(core, namespace, name)
        status = (pod or {}).get("status", {})
        if status.get("phase") in ("Failed", "Succeeded"):
            raise AssertionError(f"pod {name} ended: {json.dumps(status)[:2000]}")
        return pod if status.get("phase") == "Running" and status.get("podIP") else None

    return wait_for(f"pod {namespace}/{name} Running", probe, timeout)


def job_pods(core: client.CoreV1Api, namespace: str, job: str) -> list[dict[str, Any]]:
    """Pods of a Job, as dicts."""
    resp = core.list_namespaced_pod(
        namespace, label_selector=f"job-name={job}", _preload_content=False
    )
    return list(json.loads(resp.data)["items"])
