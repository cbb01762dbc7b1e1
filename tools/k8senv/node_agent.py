"""Node agent: a test stand-in for kubelet plus a container runtime.

It registers a CPU node and a GPU node (see :mod:`tools.k8senv.nodes`), keeps them Ready, and runs
every pod bound to them as local processes (see :mod:`tools.k8senv.pod_runner`): images are not
run (an image under ``localhost/`` must be in the local image store, else ``ErrImagePull``),
commands run on this machine with the repository's ``.venv/bin`` first on ``PATH``, each
pod in its own network namespace (:mod:`tools.k8senv.netns`) and private mount namespace. It serves
container logs on the kubelet port (:mod:`tools.k8senv.log_server`).

Run by :mod:`tools.k8senv.cluster`; as root::

    python -m tools.k8senv.node_agent --kubeconfig admin.kubeconfig --state-dir DIR \
        --net-tag b --net-cidr 10.244.16.0/20 --port 10250 --tls-cert kubelet.crt \
        --tls-key kubelet.key
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client, config

from tools.k8senv import netns, oci
from tools.k8senv.log_server import LogSource, serve
from tools.k8senv.nodes import DEFAULT_NODES, NodeRegistrar
from tools.k8senv.pod_runner import PodWorker

logger = logging.getLogger(__name__)

SYNC_SECONDS = 0.5


class NodeAgent:
    """Watches pods bound to the agent's nodes and runs them."""

    def __init__(self, args: argparse.Namespace) -> None:
        """Args: parsed command line (see :func:`main`)."""
        self.args = args
        cfg = client.Configuration()
        config.load_kube_config(config_file=args.kubeconfig, client_configuration=cfg)
        self.api = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api)
        self.apiserver_port = urlsplit(cfg.host).port or 443
        self.net = netns.NetConfig(tag=args.net_tag, cidr=args.net_cidr)
        self.networks = netns.PodNetworks(self.net)
        self.state_dir = Path(args.state_dir)
        self.registrar = NodeRegistrar(self.api, DEFAULT_NODES, self.net.gateway, args.port)
        self.workers: dict[str, PodWorker] = {}
        self.stopping = threading.Event()

    def lookup(self, namespace: str, pod: str, container: str) -> LogSource | None:
        """Log source of a container, for the kubelet endpoint."""
        for worker in list(self.workers.values()):
            meta = worker.pod["metadata"]
            if meta["namespace"] == namespace and meta["name"] == pod:
                proc = worker.container(container)
                if proc is None:
                    return None

                def live(w: PodWorker = worker, name: str = container) -> bool:
                    c = w.container(name)
                    return (
                        not w.done.is_set()
                        and c is not None
                        and (c.running or c.exit_code is None or w.phase in ("Pending", "Running"))
                    )

                return LogSource(proc.log_path, live)
        return None

    def run(self) -> None:
        """Set up, then sync pods until SIGTERM/SIGINT."""
        netns.sweep(self.net)
        oci.sweep(self.net.prefix + "-")
        netns.ensure_bridge(self.net)
        (self.state_dir / "pods").mkdir(parents=True, exist_ok=True)
        self.registrar.register()
        self.registrar.start()
        cert = Path(self.args.tls_cert)
        server, _ = serve(
            self.net.gateway,
            self.args.port,
            cert=cert,
            key=Path(self.args.tls_key),
            client_ca=cert.parent / "ca.crt",
            lookup=self.lookup,
        )
        self.registrar.wait_schedulable()
        (self.state_dir / "ready").write_text("ready\n")
        try:
            while not self.stopping.is_set():
                try:
                    self.sync()
                except Exception:
                    logger.exception("pod sync failed")
                self.stopping.wait(SYNC_SECONDS)
        finally:
            server.stopping.set()
            server.shutdown()
            self.registrar.stop()
            for worker in self.workers.values():
                worker.kill_all()
            netns.sweep(self.net)
            oci.sweep(self.net.prefix + "-")
            (self.state_dir / "ready").unlink(missing_ok=True)
            logger.info("node agent stopped")

    def _list_pods(self) -> list[dict[str, Any]]:
        resp = self.core.list_pod_for_all_namespaces(
            field_selector="spec.nodeName!=", _preload_content=False
        )
        items = json.loads(resp.data)["items"]
        return [p for p in items if p["spec"].get("nodeName") in self.registrar.names]

    def sync(self) -> None:
        """Start workers for new pods, pass deletions on, forget removed pods."""
        seen: set[str] = set()
        for pod in self._list_pods():
            meta = pod["metadata"]
            uid = meta["uid"]
            seen.add(uid)
            worker = self.workers.get(uid)
            deleting = meta.get("deletionTimestamp") is not None
            grace = float(meta.get("deletionGracePeriodSeconds") or 0)
            if worker is not None:
                worker.update_metadata(meta)  # before a delete: a cancel annotates first
                if deleting:
                    worker.request_delete(grace)
                continue
            phase = (pod.get("status") or {}).get("phase", "Pending")
            if deleting and phase in ("Succeeded", "Failed"):
                self._delete_now(meta)
                continue
            if phase in ("Succeeded", "Failed"):
                continue
            if phase == "Running":
                self._mark_lost(pod)
                continue
            worker = PodWorker(
                self.api,
                pod,
                node_name=pod["spec"]["nodeName"],
                networks=self.networks,
                pods_dir=self.state_dir / "pods",
                apiserver_port=self.apiserver_port,
            )
            if deleting:
                worker.request_delete(grace)
            self.workers[uid] = worker
            worker.start()
        for uid in [u for u in self.workers if u not in seen and self.workers[u].done.is_set()]:
            del self.workers[uid]

    def _delete_now(self, meta: dict[str, Any]) -> None:
        try:
            self.core.delete_namespaced_pod(
                meta["name"], meta["namespace"], grace_period_seconds=0,
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )  # fmt: skip
        except client.ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def _mark_lost(self, pod: dict[str, Any]) -> None:
        """A Running pod without a worker: the agent restarted and its processes are gone."""
        meta = pod["metadata"]
        statuses = []
        for old in (pod.get("status") or {}).get("containerStatuses") or []:
            c = dict(old)
            c["ready"] = False
            c["state"] = {
                "terminated": {
                    "exitCode": 137,
                    "reason": "ContainerStatusUnknown",
                    "message": "the node agent restarted",
                }
            }
            statuses.append(c)
        body = {
            "status": {
                "phase": "Failed",
                "reason": "NodeAgentRestarted",
                "containerStatuses": statuses,
            }
        }
        self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], body)
        logger.warning(
            "%s/%s: marked Failed after an agent restart", meta["namespace"], meta["name"]
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring for the arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--net-tag", default=netns.LOCAL_NET.tag)
    parser.add_argument("--net-cidr", default=netns.LOCAL_NET.cidr)
    parser.add_argument("--port", type=int, default=10250)
    parser.add_argument("--tls-cert", required=True)
    parser.add_argument("--tls-key", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"
    )
    agent = NodeAgent(args)

    def stop(signum: int, _frame: object) -> None:
        logger.info("signal %d: stopping", signum)
        agent.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()
    time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
