"""Helpers of the tests in tests/images/ (the images themselves: tests/fixtures/images.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from arkor_ops.backends.kubernetes.manifests import RunObjects
from tools.k8senv import oci
from tools.k8senv.pod_setup import PodContext, container_env, materialize_volumes


class StaticResolver:
    """Secrets and ConfigMaps of a run, from the objects themselves (no API server)."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, str]]) -> None:
        """Args: ``(kind, name)`` ("secret"/"configmap") to key → value."""
        self.objects = objects

    def data(self, kind: str, namespace: str, name: str, optional: bool) -> dict[str, bytes]:
        """Key to bytes, as the node agent's resolver returns them."""
        values = self.objects.get((kind, name))
        if values is None:
            if optional:
                return {}
            raise KeyError(f"{kind} {name} not found")
        return {k: v.encode() for k, v in values.items()}


@contextmanager
def job_container(
    objs: RunObjects, name: str, secrets: dict[str, dict[str, str]], pod_dir: Path
) -> Iterator[tuple[oci.Container, dict[str, Path]]]:
    """Container ``name`` of the run's Job, as kubelet would run it: its env (Secret and
    ConfigMap references resolved), its volumes on disk, its security context and limits.

    Yields:
        The container (not started) and the volume directories by name.
    """
    template: dict[str, Any] = objs.job["spec"]["template"]
    pod = {
        "metadata": {"name": f"{objs.job['metadata']['name']}-pod", "namespace": "default",
                     "uid": "0", **template["metadata"]},
        "spec": template["spec"],
    }  # fmt: skip
    resolver = StaticResolver(
        {("configmap", objs.config_map["metadata"]["name"]): objs.config_map["data"]}
        | {("secret", k): v for k, v in secrets.items()}
    )
    ctx = PodContext(pod, "node", "127.0.0.1", "127.0.0.1", 6443, pod_dir)
    volumes = materialize_volumes(ctx, resolver)  # type: ignore[arg-type]
    spec_containers = [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]
    container = next(c for c in spec_containers if c["name"] == name)
    env = container_env(ctx, container, resolver, image=True)  # type: ignore[arg-type]
    spec = oci.spec_from_pod(pod["spec"], container, env, volumes, hostname=pod["metadata"]["name"])
    with oci.Container(spec, pod_dir / "containers") as ctr:
        yield ctr, volumes
