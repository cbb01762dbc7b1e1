"""Run one pod bound to an agent node: network, volumes, init containers, sidecars, containers.

A :class:`PodWorker` thread owns one pod from binding to removal, like kubelet's pod worker:

1. create the pod's network namespace, check its images and create its volumes (a missing
   Secret/ConfigMap keeps the pod Pending with ``CreateContainerConfigError``, a missing image
   with ``ErrImagePull`` then ``ImagePullBackOff``; both are retried with a backoff);
2. start native sidecars (init containers with ``restartPolicy: Always``) and run plain init
   containers to completion, in order. A container whose image is in the node's store
   (``localhost/…``, built by ``scripts/build-images.sh``) runs from it through runc, as kubelet
   and a CRI runtime run it (:mod:`tools.k8senv.oci`: the image's root filesystem and config,
   the pod's network namespace and volumes, its security context and memory limit, OOM →
   ``OOMKilled``); any other runs as a process of this machine in the pod's network (the stand-in
   the control plane's self-tests use, :mod:`tools.k8senv.pod_setup`);
3. run the containers, restarting them per the pod's ``restartPolicy``;
4. when every container has ended for good: stop the sidecars, set phase Succeeded or Failed and
   remove the network namespace;
5. on a ``deletionTimestamp``: SIGTERM, wait the grace period, SIGKILL, remove the namespace and
   delete the pod with ``gracePeriodSeconds=0``.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from tools.k8senv import oci, pod_setup
from tools.k8senv.containers import ContainerProc
from tools.k8senv.netns import PodNet, PodNetworks
from tools.k8senv.nodes import now

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 10.0
SIDECAR_GRACE_SECONDS = 5.0
#: Images under this registry name are the node's own: buildah's store (:mod:`tools.k8senv.oci`),
#: filled by ``scripts/build-images.sh``. Their containers run from the image through runc. The
#: node reaches no registry, so one that is not in the store cannot be pulled. (Containers of
#: other images run as processes of this machine: docs/local-cluster.md says which tests.)
LOCAL_REGISTRY = "localhost/"


def runs_from_image(container: dict[str, Any]) -> bool:
    """Whether the container runs from its image (one of the node's store), not as a process."""
    return str(container.get("image") or "").startswith(LOCAL_REGISTRY)


def missing_image(image: str) -> str | None:
    """Why ``image`` cannot be pulled onto this node, or None when it can (or is not checked)."""
    if not image.startswith(LOCAL_REGISTRY):
        return None
    try:
        oci.image_config(image)
    except oci.ImageNotFoundError:
        return (
            f'Failed to pull image "{image}": it is not in the node\'s image store ({oci.STORE}) '
            "and this node reaches no registry; build it with scripts/build-images.sh"
        )
    except FileNotFoundError:
        return f'Failed to pull image "{image}": buildah is not installed, so the node has no store'
    return None


class PodWorker(threading.Thread):
    """Owns one pod's processes and reports its status."""

    def __init__(
        self,
        api: client.ApiClient,
        pod: dict[str, Any],
        *,
        node_name: str,
        networks: PodNetworks,
        pods_dir: Path,
        apiserver_port: int,
    ) -> None:
        """Args: API client, the pod as a dict, its node, the pod network, state dir, API port."""
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.core = client.CoreV1Api(api)
        self.resolver = pod_setup.Resolver(api)
        self.pod = pod
        self.node_name = node_name
        self.networks = networks
        self.apiserver_port = apiserver_port
        self.pod_dir = pods_dir / meta["uid"]
        self.net: PodNet | None = None
        self.delete_grace: float | None = None
        self.done = threading.Event()
        self.phase = "Pending"
        self.start_time = now()
        self.message: dict[str, str] = {}
        spec = pod["spec"]
        logs = self.pod_dir / "logs"
        self.inits = [
            ContainerProc(c, logs / f"{c['name']}.log", sidecar=c.get("restartPolicy") == "Always")
            for c in spec.get("initContainers") or []
        ]
        self.mains = [ContainerProc(c, logs / f"{c['name']}.log") for c in spec["containers"]]
        self.restart_policy = spec.get("restartPolicy", "Always")
        self._envs: dict[str, dict[str, str]] = {}
        self._argvs: dict[str, list[str]] = {}
        self._oci_specs: dict[str, oci.ContainerSpec] = {}
        self._last_status: dict[str, Any] | None = None
        self._ctx: pod_setup.PodContext | None = None
        self._meta_lock = threading.Lock()
        self._transitions: dict[tuple[str, bool], str] = {}

    # -- public ----------------------------------------------------------------------------------

    @property
    def ref(self) -> str:
        """``namespace/name``."""
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    def request_delete(self, grace_seconds: float) -> None:
        """Ask the worker to stop the pod and delete it."""
        if self.delete_grace is None or grace_seconds < self.delete_grace:
            self.delete_grace = grace_seconds

    def update_metadata(self, meta: dict[str, Any]) -> None:
        """The pod's labels/annotations changed on the API server: refresh downwardAPI files."""
        with self._meta_lock:
            old = self.pod["metadata"]
            keys = ("labels", "annotations")
            if all((old.get(k) or {}) == (meta.get(k) or {}) for k in keys):
                return
            self.pod = {**self.pod, "metadata": {**old, **{k: meta.get(k) or {} for k in keys}}}
            if self._ctx is not None:
                self._ctx.pod = self.pod
                pod_setup.refresh_downward_volumes(self._ctx)

    def container(self, name: str) -> ContainerProc | None:
        """A container (init or main) by name, for the log server."""
        return next((c for c in [*self.inits, *self.mains] if c.name == name), None)

    def kill_all(self) -> None:
        """SIGKILL every container, remove them and the network (agent shutdown)."""
        for c in [*self.mains, *self.inits]:
            c.signal(signal.SIGKILL)
            c.remove()
        self._teardown_net()

    # -- lifecycle -------------------------------------------------------------------------------

    def run(self) -> None:
        """Drive the pod to completion or deletion."""
        try:
            if self._setup() and self._run_inits():
                self._run_mains()
            if self.delete_grace is not None:
                self._terminate()
            else:
                self._teardown_net()
                self._report()
                while self.delete_grace is None:
                    time.sleep(TICK_SECONDS)
            self._finish_delete()
        except Exception:
            logger.exception("%s: pod worker failed", self.ref)
            self.kill_all()
        finally:
            self.done.set()

    def _setup(self) -> bool:
        """Network, volumes and env; retried while a referenced object is missing."""
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        self.net = self.networks.create()
        delay = 1.0
        pull_reason = "ErrImagePull"
        while self.delete_grace is None:
            if self._images_missing(pull_reason):
                pull_reason = "ImagePullBackOff"  # kubelet's reason between two tries
                self._sleep_unless_deleted(delay)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                continue
            ctx = pod_setup.PodContext(
                pod=self.pod, node_name=self.node_name, pod_ip=self.net.address,
                host_ip=self.networks.config.gateway, apiserver_port=self.apiserver_port,
                pod_dir=self.pod_dir,
            )  # fmt: skip
            try:
                volumes = pod_setup.materialize_volumes(ctx, self.resolver)
                for c in [*self.inits, *self.mains]:
                    self._prepare(ctx, c, volumes)
            except pod_setup.ConfigError as exc:
                logger.warning("%s: %s", self.ref, exc)
                for c in [*self.inits, *self.mains]:
                    c.fail_to_start("CreateContainerConfigError", str(exc))
                self._report()
                self._sleep_unless_deleted(delay)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                continue
            with self._meta_lock:  # metadata may have changed meanwhile
                self._ctx = ctx
                ctx.pod = self.pod
                pod_setup.refresh_downward_volumes(ctx)
            self._report()
            return True
        return False

    def _images_missing(self, reason: str) -> bool:
        """Mark each container whose image cannot be pulled as waiting with ``reason``."""
        missing = False
        for c in [*self.inits, *self.mains]:
            why = missing_image(str(c.spec.get("image") or ""))
            if why is not None:
                logger.warning("%s: %s", self.ref, why)
                c.fail_to_start(reason, why)
                missing = True
        if missing:
            self._report()
        return missing

    def _prepare(
        self, ctx: pod_setup.PodContext, c: ContainerProc, volumes: dict[str, Path]
    ) -> None:
        """What starting ``c`` takes: its OCI spec (an image of the node's store) or its
        command line (a process, for the control plane's self-tests).

        Raises:
            pod_setup.ConfigError: A referenced object, key or volume is missing.
        """
        assert self.net is not None
        from_image = runs_from_image(c.spec)
        env = pod_setup.container_env(ctx, c.spec, self.resolver, image=from_image)
        if not from_image:
            self._envs[c.name] = env
            self._argvs[c.name] = pod_setup.command_line(ctx, c.spec, env, volumes, self.net.path)
            return
        try:
            self._oci_specs[c.name] = oci.spec_from_pod(
                self.pod["spec"], c.spec, env, volumes, netns=self.net.path, hostname=ctx.name
            )
        except KeyError as exc:
            raise pod_setup.ConfigError(f"volume {exc} not found") from exc

    def _start(self, c: ContainerProc) -> None:
        spec = self._oci_specs.get(c.name)
        if spec is None:
            c.start(self._argvs[c.name], self._envs[c.name], self.pod_dir / f"{c.name}.pid")
            return
        try:
            assert self.net is not None
            c.start_image(spec, self.pod_dir / "containers", prefix=self.net.name)
        except ValueError as exc:  # the image and the spec disagree (runAsNonRoot, USER)
            logger.warning("%s: %s: %s", self.ref, c.name, exc)
            c.fail_to_start("CreateContainerConfigError", str(exc))
        except RuntimeError as exc:
            logger.warning("%s: %s: %s", self.ref, c.name, exc)
            c.fail_to_start("CreateContainerError", str(exc))

    def _run_inits(self) -> bool:
        """Sidecars start; plain init containers run to completion. False: stop the pod."""
        for c in self.inits:
            if c.sidecar:
                self._start(c)
                self._report()
                continue
            delay = 1.0
            while True:
                self._start(c)
                self._report()
                while not c.poll():
                    if self.delete_grace is not None:
                        return False
                    self._keep_sidecars()
                    time.sleep(TICK_SECONDS)
                if c.exit_code == 0:
                    break
                if self.restart_policy == "Never":
                    self.phase = "Failed"
                    self._stop_sidecars()
                    return False
                c.backoff_waiting()
                self._report()
                if self._sleep_unless_deleted(delay):
                    return False
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
        return True

    def _run_mains(self) -> bool:
        for c in self.mains:
            self._start(c)
        self.phase = "Running"
        self._report()
        restart_at: dict[str, float] = {}
        delays: dict[str, float] = {}
        while self.delete_grace is None:
            changed = self._keep_sidecars()
            for c in self.mains:
                if c.poll():
                    changed = True
                    if self._should_restart(c):
                        c.backoff_waiting()
                        delays[c.name] = min(delays.get(c.name, 0.5) * 2, MAX_BACKOFF_SECONDS)
                        restart_at[c.name] = time.monotonic() + delays[c.name]
                if c.name in restart_at and time.monotonic() >= restart_at[c.name]:
                    del restart_at[c.name]
                    self._start(c)
                    changed = True
            if all(c.exit_code is not None and c.name not in restart_at for c in self.mains):
                self._stop_sidecars()
                failed = any(c.exit_code != 0 for c in self.mains)
                self.phase = "Failed" if failed else "Succeeded"
                return True
            if changed:
                self._report()
            time.sleep(TICK_SECONDS)
        return False

    def _should_restart(self, c: ContainerProc) -> bool:
        if self.restart_policy == "Always":
            return True
        return self.restart_policy == "OnFailure" and c.exit_code != 0

    def _keep_sidecars(self) -> bool:
        changed = False
        for c in self.inits:
            if c.sidecar and c.poll():
                self._start(c)
                changed = True
        return changed

    def _stop_sidecars(self) -> None:
        sidecars = [c for c in reversed(self.inits) if c.sidecar]
        self._signal_and_wait(sidecars, SIDECAR_GRACE_SECONDS)

    def _signal_and_wait(self, procs: list[ContainerProc], grace: float) -> None:
        for c in procs:
            c.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(c.running for c in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        for c in procs:
            c.signal(signal.SIGKILL)
        for c in procs:
            c.wait(timeout=5)

    def _sleep_unless_deleted(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.delete_grace is not None:
                return True
            time.sleep(TICK_SECONDS)
        return False

    def _terminate(self) -> None:
        """Graceful stop: main containers first, then sidecars, SIGKILL after the grace period."""
        grace = self.delete_grace or 0.0
        started = time.monotonic()
        logger.info("%s: terminating with grace %.0fs", self.ref, grace)
        self._signal_and_wait(self.mains, grace)
        remaining = max(0.0, grace - (time.monotonic() - started))
        self._signal_and_wait(
            [c for c in reversed(self.inits) if c.sidecar or c.running], remaining
        )
        if self.phase in ("Pending", "Running"):
            failed = any(c.exit_code != 0 for c in self.mains)
            self.phase = "Failed" if failed else "Succeeded"
        self._teardown_net()
        self._report()

    def _teardown_net(self) -> None:
        if self.net is not None:
            self.networks.delete(self.net)

    def _finish_delete(self) -> None:
        meta = self.pod["metadata"]
        try:
            self.core.delete_namespaced_pod(
                meta["name"], meta["namespace"], grace_period_seconds=0,
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )  # fmt: skip
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
        shutil.rmtree(self.pod_dir, ignore_errors=True)
        logger.info("%s: deleted", self.ref)

    # -- status ----------------------------------------------------------------------------------

    def _report(self) -> None:
        status = self._status()
        if status == self._last_status:
            return
        meta = self.pod["metadata"]
        try:
            self.core.patch_namespaced_pod_status(
                meta["name"], meta["namespace"], {"status": status}
            )
            self._last_status = status
        except ApiException as exc:
            if exc.status != 404:
                logger.warning("%s: status update failed: %s", self.ref, exc.reason)

    def _status(self) -> dict[str, Any]:
        images = {c["name"]: c.get("image", "") for c in self.pod["spec"]["containers"]}
        images.update(
            {c["name"]: c.get("image", "") for c in self.pod["spec"].get("initContainers") or []}
        )
        init_done = all((c.sidecar and c.running) or c.exit_code == 0 for c in self.inits)
        mains_ready = self.phase == "Running" and all(c.running for c in self.mains)
        sidecars_ready = all(c.running for c in self.inits if c.sidecar)
        ready = mains_ready and sidecars_ready
        terminal = self.phase in ("Succeeded", "Failed")

        def cond(kind: str, ok: bool, reason: str = "") -> dict[str, Any]:
            since = self._transitions.setdefault((kind, ok), now())
            row: dict[str, Any] = {
                "type": kind,
                "status": "True" if ok else "False",
                "lastProbeTime": None,
                "lastTransitionTime": since,
            }
            if reason and not ok:
                row["reason"] = reason
            return row

        status: dict[str, Any] = {
            "phase": self.phase,
            "hostIP": self.networks.config.gateway,
            "hostIPs": [{"ip": self.networks.config.gateway}],
            "startTime": self.start_time,
            "conditions": [
                cond("PodReadyToStartContainers", self.net is not None and not terminal),
                cond("Initialized", init_done or terminal, "ContainersNotInitialized"),
                cond("ContainersReady", ready, "ContainersNotReady"),
                cond("Ready", ready, "ContainersNotReady"),
            ],
            "containerStatuses": [c.status(images[c.name]) for c in self.mains],
        }
        if self.inits:
            status["initContainerStatuses"] = [c.status(images[c.name]) for c in self.inits]
        if self.net is not None:
            status["podIP"] = self.net.address
            status["podIPs"] = [{"ip": self.net.address}]
        return status
