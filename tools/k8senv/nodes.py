"""Node registration and heartbeats for the node agent (the part of kubelet that owns Node objects).

Two nodes are registered: a CPU pool node and a GPU pool node with ``nvidia.com/gpu`` capacity,
GPU product labels and the ``nvidia.com/gpu=present:NoSchedule`` taint. Their ``InternalIP`` is the
pod network's gateway, where the agent serves the kubelet endpoint (``daemonEndpoints``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

logger = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10.0
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}


@dataclass(frozen=True)
class NodeSpec:
    """What one registered node looks like."""

    name: str
    pool: str
    extra_capacity: dict[str, str] = field(default_factory=dict)
    extra_labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()

    @property
    def capacity(self) -> dict[str, str]:
        """Capacity (also used as allocatable)."""
        base = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        return {**base, **self.extra_capacity}

    @property
    def labels(self) -> dict[str, str]:
        """Labels, including the well-known ones kubelet sets."""
        return {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "arkor-ops.dev/pool": self.pool,
            **self.extra_labels,
        }


DEFAULT_NODES = (
    NodeSpec(name="arkor-cpu-0", pool="cpu"),
    NodeSpec(
        name="arkor-gpu-0",
        pool="gpu",
        extra_capacity={GPU_RESOURCE: "2"},
        extra_labels={
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
            "nvidia.com/gpu.count": "2",
            "nvidia.com/gpu.memory": "81559",
        },
        taints=(GPU_TAINT,),
    ),
)


def now() -> str:
    """RFC 3339 time in seconds, as Kubernetes ``Time`` fields want it."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _conditions(transition: str) -> list[dict[str, Any]]:
    beat = now()
    rows = [
        ("Ready", "True", "KubeletReady", "arkor node agent is posting ready status"),
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "no PID pressure"),
        ("NetworkUnavailable", "False", "PodNetworkReady", "pod network bridge is up"),
    ]
    return [
        {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": beat,
            "lastTransitionTime": transition,
        }
        for kind, status, reason, message in rows
    ]


class NodeRegistrar:
    """Creates the nodes, then keeps their Ready condition and Leases fresh."""

    def __init__(
        self, api: client.ApiClient, specs: tuple[NodeSpec, ...], host_ip: str, port: int
    ) -> None:
        """Args: API client, the nodes, the kubelet endpoint address and port."""
        self.core = client.CoreV1Api(api)
        self.coord = client.CoordinationV1Api(api)
        self.specs = specs
        self.host_ip = host_ip
        self.port = port
        self._transition = now()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def names(self) -> set[str]:
        """Names of the registered nodes."""
        return {spec.name for spec in self.specs}

    def _status(self, spec: NodeSpec) -> dict[str, Any]:
        return {
            "capacity": spec.capacity,
            "allocatable": spec.capacity,
            "conditions": _conditions(self._transition),
            "addresses": [
                {"type": "InternalIP", "address": self.host_ip},
                {"type": "Hostname", "address": spec.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "machineID": spec.name,
                "systemUUID": spec.name,
                "bootID": self._transition,
                "kernelVersion": "",
                "osImage": "arkor-ops node agent (stand-in for kubelet)",
                "containerRuntimeVersion": "arkor-agent://0",
                "kubeletVersion": "v0.0.0-agent",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def register(self) -> None:
        """Create or update every node, and its Lease."""
        for spec in self.specs:
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": spec.name, "labels": spec.labels},
                "spec": {"taints": list(spec.taints)},
            }
            try:
                self.core.create_node(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                self.core.patch_node(
                    spec.name,
                    {
                        "metadata": {"labels": spec.labels},
                        **{"spec": {"taints": list(spec.taints)}},
                    },
                )
            self.core.patch_node_status(spec.name, {"status": self._status(spec)})
            self._renew_lease(spec.name)
        logger.info("registered nodes %s at %s:%d", sorted(self.names), self.host_ip, self.port)

    def wait_schedulable(self, timeout: float = 30.0) -> None:
        """Wait until the node lifecycle controller has no ``not-ready`` taint on our nodes.

        A node is briefly tainted ``node.kubernetes.io/not-ready`` between its creation and the
        controller seeing its Ready condition; tests should not start in that window.
        """
        deadline = time.monotonic() + timeout
        pending = set(self.names)
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                taints = self.core.read_node(name).spec.taints or []
                if not any(t.key.startswith("node.kubernetes.io/") for t in taints):
                    pending.discard(name)
            if pending:
                time.sleep(0.5)
        if pending:
            logger.warning("nodes still tainted not-ready after %.0fs: %s", timeout, pending)

    def _renew_lease(self, name: str) -> None:
        body = {
            "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
            "spec": {
                "holderIdentity": name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": _micro_now(),
            },
        }
        try:
            self.coord.patch_namespaced_lease(name, LEASE_NAMESPACE, body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coord.create_namespaced_lease(LEASE_NAMESPACE, body)

    def heartbeat_once(self) -> None:
        """Renew the Leases and post the conditions once."""
        for spec in self.specs:
            self._renew_lease(spec.name)
            self.core.patch_node_status(
                spec.name, {"status": {"conditions": _conditions(self._transition)}}
            )

    def start(self) -> None:
        """Start the heartbeat thread."""
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.heartbeat_once()
            except Exception:
                logger.exception("heartbeat failed")
