"""pytest plugin: a real Kubernetes control plane for tests marked ``@pytest.mark.cluster``.

Fixtures:
    k8s_cluster (session): a :class:`K8sCluster` handle. By default the local control plane of
        :mod:`tests.k8senv.cluster` with the node agent; with ``ARKOR_TEST_KUBECONFIG`` set, that
        cluster instead (nothing is built or started; ``ARKOR_TEST_HOST_IP`` gives the address
        its pods reach this machine at).
    k8s_namespace (function): a fresh namespace (its ``default`` ServiceAccount exists), deleted
        after the test.

The build and start times are printed in the terminal summary ("k8s binaries: ...",
"control plane ready in ...").
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.k8senv import cluster as cluster_mod
from tests.k8senv import netns

_REPORT: list[str] = []
_BUILD: list[cluster_mod.BuildResult] = []


@dataclass
class K8sCluster:
    """What a test needs to talk to the cluster.

    Attributes:
        kubeconfig: Admin kubeconfig path.
        host_ip: Address pods use to reach servers on this machine (bind test servers there or
            on 0.0.0.0).
        kubectl_path: The kubectl binary.
        local: The local cluster when this session started one, else None.
    """

    kubeconfig: Path
    host_ip: str
    kubectl_path: str
    local: cluster_mod.LocalCluster | None = None
    _clients: list[client.ApiClient] = field(default_factory=list)

    def configuration(self) -> client.Configuration:
        """A new client Configuration for the admin kubeconfig."""
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        return cfg

    def api_client(self) -> client.ApiClient:
        """A new ApiClient (closed at session end)."""
        api = client.ApiClient(self.configuration())
        self._clients.append(api)
        return api

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the cluster.

        Raises:
            AssertionError: ``check`` is set and kubectl failed (stderr in the message).
        """
        done = subprocess.run(
            [self.kubectl_path, f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    def close(self) -> None:
        """Close the ApiClients handed out."""
        for api in self._clients:
            api.close()


def _external(kubeconfig: str) -> K8sCluster:
    host_ip = os.environ.get("ARKOR_TEST_HOST_IP", "")
    kubectl = os.environ.get("ARKOR_KUBECTL") or shutil.which("kubectl") or "kubectl"
    _REPORT.append(f"k8s cluster: external, ARKOR_TEST_KUBECONFIG={kubeconfig}")
    return K8sCluster(kubeconfig=Path(kubeconfig), host_ip=host_ip, kubectl_path=kubectl)


def _can_run_local() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _build() -> cluster_mod.BuildResult:
    started = time.monotonic()
    build = cluster_mod.ensure_binaries()
    _note(f"{build.message} (build step took {time.monotonic() - started:.1f}s)")
    _BUILD.append(build)
    return build


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the binaries before any test runs when a selected test needs the local cluster.

    Building here keeps a cold build (minutes) out of the per-test timeout.
    """
    if os.environ.get("ARKOR_TEST_KUBECONFIG") or not _can_run_local():
        return
    if session.config.option.collectonly:
        return
    if any("k8s_cluster" in getattr(item, "fixturenames", ()) for item in session.items):
        _build()


def _note(line: str) -> None:
    _REPORT.append(line)
    sys.stderr.write(f"\n{line}\n")


@pytest.fixture(scope="session")
def k8s_cluster() -> Iterator[K8sCluster]:
    """The cluster for this session (see the module docstring)."""
    external = os.environ.get("ARKOR_TEST_KUBECONFIG")
    if external:
        handle = _external(external)
        yield handle
        handle.close()
        return
    if not _can_run_local():
        message = "the local cluster's node agent needs root and iproute2"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must run the cluster tests, not skip them")
        pytest.skip(message)
    build = _BUILD[0] if _BUILD else _build()
    state_dir = Path(tempfile.mkdtemp(prefix="arkor-k8s-"))
    net = netns.claim_net()
    local = cluster_mod.LocalCluster(
        cluster_mod.ClusterConfig.ephemeral(state_dir, net), build.bin_dir
    )
    try:
        local.start()
    except Exception:
        local.stop()
        netns.release_net(net)
        raise
    _note(f"control plane ready in {local.ready_seconds:.1f}s (state in {state_dir})")
    handle = K8sCluster(
        kubeconfig=local.kubeconfig,
        host_ip=local.host_ip,
        kubectl_path=str(build.bin_dir / "kubectl"),
        local=local,
    )
    try:
        yield handle
    finally:
        handle.close()
        local.stop()
        netns.release_net(net)
        if not os.environ.get("ARKOR_K8S_KEEP_STATE"):
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def k8s_namespace(k8s_cluster: K8sCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new namespace named after the test, with its default ServiceAccount ready."""
    stem = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"t-{stem}-{uuid.uuid4().hex[:5]}"
    api = k8s_cluster.api_client()
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the build and start times of the control plane."""
    if _REPORT:
        terminalreporter.section("kubernetes test cluster")
        for line in _REPORT:
            terminalreporter.write_line(line)
