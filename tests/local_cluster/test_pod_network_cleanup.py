"""Pod namespaces, links and runc containers disappear on agent shutdown and after an agent
crash."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.fixtures.cluster import K8sCluster
from tests.local_cluster.helpers import container, pod_manifest, pod_phase, wait_for, wait_running
from tools.k8senv import netns, oci
from tools.k8senv.cluster import LocalCluster

pytestmark = pytest.mark.cluster


@pytest.fixture
def local(k8s_cluster: K8sCluster) -> Iterator[LocalCluster]:
    """The local cluster; its node agent is running again after the test."""
    if k8s_cluster.local is None:
        pytest.skip("needs the local cluster's node agent")
    yield k8s_cluster.local
    if "node-agent" not in k8s_cluster.local.processes:
        k8s_cluster.local.start_agent()


def _leftovers(net: netns.NetConfig) -> list[str]:
    return netns.list_netns(net) + netns.list_links(net)


def _run_pod(k8s_cluster: K8sCluster, namespace: str) -> tuple[str, int]:
    assert k8s_cluster.local is not None
    net = k8s_cluster.local.config.net
    core = client.CoreV1Api(k8s_cluster.api_client())
    core.create_namespaced_pod(
        namespace, pod_manifest("sleeper", [container("c", "while true; do sleep 0.1; done")])
    )
    pod = wait_running(core, namespace, "sleeper")
    names = netns.list_netns(net)
    assert names, "a running pod has a network namespace"
    pids = [int(p) for n in names for p in netns._ip("netns", "pids", n).stdout.split()]
    assert pids
    return pod["status"]["podIP"], pids[0]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left to an init that does not reap counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_agent_shutdown_removes_pod_namespaces_and_links(
    k8s_cluster: K8sCluster, local: LocalCluster, k8s_namespace: str
) -> None:
    _, pid = _run_pod(k8s_cluster, k8s_namespace)
    local.processes.pop("node-agent").stop()
    assert _leftovers(local.config.net) == []
    assert not _alive(pid)


def test_agent_crash_leftovers_are_swept(
    k8s_cluster: K8sCluster, local: LocalCluster, k8s_namespace: str
) -> None:
    _, pid = _run_pod(k8s_cluster, k8s_namespace)
    local.kill_agent()
    assert netns.list_netns(local.config.net), "SIGKILL leaves the namespaces behind"
    assert _alive(pid), "and the pod's processes"

    # The agent sweeps its leftovers when it starts; the lost pod is reported Failed.
    local.start_agent()
    assert not _alive(pid)
    assert netns.list_netns(local.config.net) == []
    assert netns.list_links(local.config.net) == [local.config.net.bridge]
    core = client.CoreV1Api(k8s_cluster.api_client())
    wait_for(
        "lost pod marked Failed", lambda: pod_phase(core, k8s_namespace, "sleeper") == "Failed"
    )

    # `local-cluster down` / session teardown sweep too (here: without a restart).
    core.delete_namespaced_pod("sleeper", k8s_namespace)
    wait_for("old pod gone", lambda: pod_phase(core, k8s_namespace, "sleeper") is None)
    _, pid = _run_pod(k8s_cluster, k8s_namespace)
    local.kill_agent()
    netns.sweep(local.config.net)
    assert _leftovers(local.config.net) == []
    assert not _alive(pid)


def _agent_containers(net: netns.NetConfig) -> list[str]:
    """runc's containers and buildah's working containers of this agent's pods (their names
    start with the pods' namespace prefix)."""
    listed = subprocess.run(
        ["runc", "--root", str(oci.RUNC_ROOT), "list", "--format", "json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    working = json.loads(oci.buildah("containers", "--json") or "null") or []
    found = [f"runc {c['id']}" for c in json.loads(listed or "null") or []]
    found += [f"buildah {c['containername']}" for c in working]
    return sorted(f for f in found if f.split()[1].startswith(net.prefix + "-"))


@pytest.mark.images
def test_agent_crash_leaves_no_container_of_an_image_pod_behind(
    k8s_cluster: K8sCluster, local: LocalCluster, k8s_namespace: str, sidecar_image: str
) -> None:
    core = client.CoreV1Api(k8s_cluster.api_client())
    sleeper = {"name": "c", "image": sidecar_image, "command": ["sleep", "600"]}
    core.create_namespaced_pod(k8s_namespace, pod_manifest("image-sleeper", [sleeper]))
    wait_running(core, k8s_namespace, "image-sleeper")
    net = local.config.net
    (working, runc) = _agent_containers(net)  # its root filesystem and the container
    assert runc.startswith("runc ") and working.startswith("buildah "), (runc, working)

    local.kill_agent()
    assert _agent_containers(net), "SIGKILL leaves the container behind"
    local.start_agent()
    assert _agent_containers(net) == []
    wait_for(
        "lost pod marked Failed",
        lambda: pod_phase(core, k8s_namespace, "image-sleeper") == "Failed",
    )
