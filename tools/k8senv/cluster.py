"""A real Kubernetes control plane on this machine, plus the node agent that stands in for kubelet.

Starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler (upstream binaries built
by ``tools/k8s-testenv/build.sh``), writes an admin kubeconfig, waits for ``/readyz`` and then
starts :mod:`tools.k8senv.node_agent`. Every process runs in its own process group with a pid
file under ``<state_dir>/pids``, so :meth:`LocalCluster.stop` and ``down`` from another process
stop all of it.

Used as a library by the pytest fixtures and as a script::

    python -m tools.k8senv.cluster up     # prints `export KUBECONFIG=...`
    python -m tools.k8senv.cluster down
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tools.k8senv import netns, oci, procs
from tools.k8senv.pki import Pki, create_pki

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tools" / "k8s-testenv" / "build.sh"
CACHE_ROOT = Path(os.environ.get("ARKOR_K8S_CACHE", Path.home() / ".cache" / "arkor-ops"))
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
COMPONENTS = ["node-agent", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]


def free_port() -> int:
    """A TCP port that is free on all addresses right now."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class BuildResult:
    """Where the binaries are and how they were obtained."""

    bin_dir: Path
    message: str


def ensure_binaries() -> BuildResult:
    """Build (or reuse) the pinned control-plane binaries.

    ``ARKOR_K8S_BIN_DIR`` points at prebuilt binaries and skips the build.

    Returns:
        The bin directory and a one-line summary (``built in Ns`` or ``cached``).

    Raises:
        subprocess.CalledProcessError: The build failed; its output is logged.
    """
    override = os.environ.get("ARKOR_K8S_BIN_DIR")
    if override:
        return BuildResult(Path(override), f"k8s binaries: from ARKOR_K8S_BIN_DIR={override}")
    done = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        logger.error("k8s build failed:\n%s", done.stderr[-4000:])
        done.check_returncode()
    summary = [line for line in done.stderr.splitlines() if line.startswith("k8s binaries")]
    return BuildResult(Path(done.stdout.strip().splitlines()[-1]), "; ".join(summary))


@dataclass
class ClusterConfig:
    """Where and how the cluster runs.

    Attributes:
        state_dir: Data, certificates, logs and pid files.
        net: The pod network (its gateway is ``host_ip``).
        apiserver_port: Secure port; the API server listens on all addresses.
        etcd_port: etcd client port (loopback).
        etcd_peer_port: etcd peer port (loopback).
        kubelet_port: The node agent's kubelet endpoint on ``host_ip``.
    """

    state_dir: Path
    net: netns.NetConfig
    apiserver_port: int = 6443
    etcd_port: int = 23790
    etcd_peer_port: int = 23800
    kubelet_port: int = 10250

    @classmethod
    def ephemeral(cls, state_dir: Path, net: netns.NetConfig) -> ClusterConfig:
        """A config with free ports, for tests."""
        return cls(
            state_dir=state_dir, net=net, apiserver_port=free_port(), etcd_port=free_port(),
            etcd_peer_port=free_port(), kubelet_port=free_port(),
        )  # fmt: skip


@dataclass
class LocalCluster:
    """The running control plane and node agent."""

    config: ClusterConfig
    bin_dir: Path
    pki: Pki | None = None
    processes: dict[str, procs.Managed] = field(default_factory=dict)
    ready_seconds: float = 0.0

    @property
    def host_ip(self) -> str:
        """Address of the host on the pod network: pods reach host servers here."""
        return self.config.net.gateway

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (server on 127.0.0.1)."""
        return self.config.state_dir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        """API server URL on loopback."""
        return f"https://127.0.0.1:{self.config.apiserver_port}"

    def _write_kubeconfig(self, path: Path, user: str, cert: Path, key: Path) -> None:
        assert self.pki is not None
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "arkor-local",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.pki.ca.cert),
                    },
                }
            ],
            "users": [
                {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
            ],
            "contexts": [
                {"name": "arkor-local", "context": {"cluster": "arkor-local", "user": user}}
            ],
            "current-context": "arkor-local",
        }
        path.write_text(json.dumps(doc, indent=2) + "\n")

    def start(self, timeout: float = 120.0) -> None:
        """Start everything and wait until the API server is ready and the nodes are Ready.

        Raises:
            RuntimeError: A component exited or readiness timed out; the logs are named.
        """
        cfg = self.config
        self.stop_leftovers()
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        netns.ensure_bridge(cfg.net)
        started = time.monotonic()
        self.pki = create_pki(
            cfg.state_dir / "pki", host_ips=["127.0.0.1", self.host_ip], service_ip=SERVICE_IP
        )
        pki = self.pki
        self._write_kubeconfig(self.kubeconfig, "admin", pki.admin.cert, pki.admin.key)
        kcm_kc = cfg.state_dir / "controller-manager.kubeconfig"
        sched_kc = cfg.state_dir / "scheduler.kubeconfig"
        self._write_kubeconfig(
            kcm_kc,
            "kube-controller-manager",
            pki.controller_manager.cert,
            pki.controller_manager.key,
        )
        self._write_kubeconfig(sched_kc, "kube-scheduler", pki.scheduler.cert, pki.scheduler.key)
        b = self.bin_dir
        etcd_url = f"http://127.0.0.1:{cfg.etcd_port}"
        peer_url = f"http://127.0.0.1:{cfg.etcd_peer_port}"
        self._spawn("etcd", [
            str(b / "etcd"), "--name=arkor", f"--data-dir={cfg.state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=arkor={peer_url}", "--unsafe-no-fsync=true", "--log-level=warn",
        ])  # fmt: skip
        self._spawn("kube-apiserver", [
            str(b / "kube-apiserver"), f"--etcd-servers={etcd_url}",
            "--bind-address=0.0.0.0", f"--advertise-address={self.host_ip}",
            f"--secure-port={cfg.apiserver_port}",
            f"--tls-cert-file={pki.apiserver.cert}", f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC", "--allow-privileged=true",
            f"--kubelet-client-certificate={pki.kubelet_client.cert}",
            f"--kubelet-client-key={pki.kubelet_client.key}",
            f"--kubelet-certificate-authority={pki.ca.cert}",
            "--kubelet-preferred-address-types=InternalIP",
            "--profiling=false", "--v=1",
        ])  # fmt: skip
        self._wait_ready(timeout, started)
        self._spawn("kube-controller-manager", [
            str(b / "kube-controller-manager"), f"--kubeconfig={kcm_kc}",
            f"--authentication-kubeconfig={kcm_kc}", f"--authorization-kubeconfig={kcm_kc}",
            f"--service-account-private-key-file={pki.sa_key}", f"--root-ca-file={pki.ca.cert}",
            "--use-service-account-credentials=true", "--controllers=*",
            "--leader-elect=false", "--secure-port=0", "--profiling=false", "--v=1",
        ])  # fmt: skip
        self._spawn("kube-scheduler", [
            str(b / "kube-scheduler"), f"--kubeconfig={sched_kc}",
            f"--authentication-kubeconfig={sched_kc}", f"--authorization-kubeconfig={sched_kc}",
            "--leader-elect=false", "--secure-port=0", "--profiling=false", "--v=1",
        ])  # fmt: skip
        self.start_agent()
        self.ready_seconds = time.monotonic() - started
        logger.info("control plane ready in %.1fs", self.ready_seconds)

    def agent_argv(self) -> list[str]:
        """Command line of the node agent."""
        assert self.pki is not None
        cfg = self.config
        return [
            sys.executable, "-m", "tools.k8senv.node_agent",
            f"--kubeconfig={self.kubeconfig}", f"--state-dir={cfg.state_dir / 'agent'}",
            f"--net-tag={cfg.net.tag}", f"--net-cidr={cfg.net.cidr}",
            f"--port={cfg.kubelet_port}",
            f"--tls-cert={self.pki.kubelet_serving.cert}",
            f"--tls-key={self.pki.kubelet_serving.key}",
        ]  # fmt: skip

    def start_agent(self, timeout: float = 60.0) -> None:
        """Start the node agent and wait until its nodes are Ready."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self._spawn("node-agent", self.agent_argv(), env=env)
        ready_file = self.config.state_dir / "agent" / "ready"
        deadline = time.monotonic() + timeout
        while not ready_file.exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("node agent not ready; see " + str(self._log("node-agent")))
            time.sleep(0.2)

    def kill_agent(self) -> None:
        """SIGKILL the node agent (simulates a crash: nothing is cleaned up)."""
        proc = self.processes.pop("node-agent")
        proc.popen.kill()
        proc.popen.wait()
        (self.config.state_dir / "agent" / "ready").unlink(missing_ok=True)

    def _log(self, name: str) -> Path:
        return self.config.state_dir / "logs" / f"{name}.log"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.processes[name] = procs.start(name, argv, self.config.state_dir, env=env)

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if not proc.alive():
                tail = proc.log_file.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited ({proc.popen.returncode}); log tail:\n{tail}")

    def _wait_ready(self, timeout: float, started: float) -> None:
        assert self.pki is not None
        context = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        context.load_cert_chain(str(self.pki.admin.cert), str(self.pki.admin.key))
        url = f"{self.server}/readyz"
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, context=context, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError, ssl.SSLError):
                pass
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"kube-apiserver not ready; see {self._log('kube-apiserver')}")
            time.sleep(0.3)

    def stop(self) -> None:
        """Stop every process (agent first), then remove the pod network's leftovers."""
        for name in COMPONENTS:
            proc = self.processes.pop(name, None)
            if proc is not None:
                proc.stop()
        self.stop_leftovers()

    def stop_leftovers(self) -> None:
        """Stop processes named by pid files, sweep the pod network and the agent's runc containers
        (crash recovery)."""
        pid_dir = self.config.state_dir / "pids"
        for name in COMPONENTS:
            procs.stop_from_pid_file(pid_dir / f"{name}.pid")
        netns.sweep(self.config.net)
        oci.sweep(self.config.net.prefix + "-")
        _unmount_agent_leftovers(self.config.state_dir / "agent")


def _unmount_agent_leftovers(agent_dir: Path) -> None:
    """Unmount tmpfs volumes a killed agent left behind (they live in its state dir)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    prefix = str(agent_dir) + "/"
    targets = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for target in sorted(targets, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


LOCAL_STATE_DIR = CACHE_ROOT / "cluster-run" / "local"


def _local_cluster(bin_dir: Path) -> LocalCluster:
    return LocalCluster(ClusterConfig(state_dir=LOCAL_STATE_DIR, net=netns.LOCAL_NET), bin_dir)


def main(argv: list[str] | None = None) -> int:
    """``up`` / ``down`` / ``status`` for a cluster that outlives this process."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = args[0] if args else "status"
    if command == "down":
        _local_cluster(Path()).stop_leftovers()
        print("local cluster stopped")
        return 0
    if command == "status":
        pids = sorted((LOCAL_STATE_DIR / "pids").glob("*.pid"))
        print("\n".join(p.stem for p in pids) or "not running")
        return 0
    if command != "up":
        print("usage: local-cluster up|down|status", file=sys.stderr)
        return 2
    build = ensure_binaries()
    print(build.message, file=sys.stderr)
    cluster = _local_cluster(build.bin_dir)
    try:
        cluster.start()
    except RuntimeError:
        cluster.stop()
        raise
    print(f"control plane ready in {cluster.ready_seconds:.1f}s", file=sys.stderr)
    print(f"# host_ip (pods reach host servers here): {cluster.host_ip}")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
