"""One container of a pod: start, signal, reap, and its Kubernetes status.

A container runs either from its image, through runc (:mod:`tools.k8senv.oci`: the image's root
filesystem, user, limits and the pod's volumes), or, for any other image name (the control
plane's self-tests, a few run tests with a model on this machine's disk), as a process of this
machine (:mod:`tools.k8senv.pod_setup` builds its command line).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.k8senv import oci
from tools.k8senv.nodes import now

logger = logging.getLogger(__name__)


@dataclass
class ContainerProc:
    """State of one container across restarts.

    Attributes:
        spec: The container spec from the pod.
        log_path: stdout and stderr of every run, appended.
        sidecar: An init container with ``restartPolicy: Always``.
        ctr: The current run's OCI container, when the container runs from its image.
    """

    spec: dict[str, Any]
    log_path: Path
    sidecar: bool = False
    popen: subprocess.Popen[bytes] | None = None
    restart_count: int = 0
    started_at: str | None = None
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "PodInitializing"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    ctr: oci.Container | None = None

    @property
    def name(self) -> str:
        """Container name."""
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        if self.ctr is not None:
            return self.ctr.poll() is None
        return self.popen is not None and self.popen.poll() is None

    @property
    def started(self) -> bool:
        """Whether a run was ever started."""
        return self.popen is not None or self.ctr is not None

    def _new_run(self) -> None:
        if self.started:
            self.restart_count += 1
            if "terminated" in self.state:
                self.last_state = self.state
        self.remove()
        self.ctr = None
        self.exit_code = None

    def _running(self, pid: int) -> None:
        self.started_at = now()
        self.exit_code = None
        self.state = {"running": {"startedAt": self.started_at}}
        logger.info("container %s started (pid %d)", self.name, pid)

    def start_image(self, spec: oci.ContainerSpec, state_dir: Path, prefix: str) -> None:
        """Start a (new) run of the container from its image with runc, named
        ``<prefix>-<container>-<random>`` (the agent sweeps its prefix's leftovers).

        Raises:
            ValueError: The image and the spec cannot run together (kubelet:
                ``CreateContainerConfigError``); nothing is left behind.
            RuntimeError: buildah could not make the root filesystem (``CreateContainerError``).
        """
        self._new_run()
        name = f"{prefix}-{self.name}-{uuid.uuid4().hex[:6]}"
        ctr = oci.Container(spec, state_dir, name=name, log_path=self.log_path)
        try:
            ctr.start()
        except BaseException:
            ctr.remove()
            raise
        self.ctr = ctr
        self._running(ctr.pid or 0)

    def start(self, argv: list[str], env: dict[str, str], pid_file: Path) -> None:
        """Start a (new) run of the container as a process, in its own process group."""
        self._new_run()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,
            )  # fmt: skip
        pid_file.write_text(str(self.popen.pid))
        self._running(self.popen.pid)

    def fail_to_start(self, reason: str, message: str) -> None:
        """Record a container that could not be created (config error)."""
        self.state = {"waiting": {"reason": reason, "message": message}}

    def poll(self) -> bool:
        """Reap the run if it ended; returns True exactly once per ended run."""
        if self.exit_code is not None:
            return False
        if self.ctr is not None:
            ended = self.ctr.poll()
            if ended is None:
                return False
            self.exit_code, reason, signum = ended.code, ended.reason, None
            # Its root filesystem, cgroup and runc state go now (kubelet keeps the exited
            # container for its logs; here the log file outlives it).
            self.ctr.remove()
        elif self.popen is not None:
            code = self.popen.poll()
            if code is None:
                return False
            self.exit_code = 128 - code if code < 0 else code
            reason = "Completed" if self.exit_code == 0 else "Error"
            signum = -code if code < 0 else None
            # Whatever the container left in its process group dies with it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        else:
            return False
        terminated: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": reason,
            "startedAt": self.started_at,
            "finishedAt": now(),
            "containerID": self.container_id,
        }
        if signum is not None:
            terminated["signal"] = signum
        self.state = {"terminated": terminated}
        logger.info("container %s exited with %d (%s)", self.name, self.exit_code, reason)
        return True

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the run to end, then reap it."""
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            time.sleep(0.05)
        self.poll()

    def remove(self) -> None:
        """Delete the run's OCI container (stopping it first if it runs); idempotent."""
        if self.ctr is not None:
            self.ctr.remove()

    def signal(self, signum: int) -> None:
        """SIGTERM goes to the main process (like PID 1); SIGKILL to the whole group."""
        if not self.running:
            return
        if self.ctr is not None:
            # runc kills every process of the container's cgroup with SIGKILL.
            self.ctr.kill("KILL" if signum == signal.SIGKILL else signal.Signals(signum).name[3:])
            return
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if signum == signal.SIGKILL:
                os.killpg(self.popen.pid, signum)
            else:
                os.kill(self.popen.pid, signum)

    def backoff_waiting(self) -> None:
        """Mark the container as waiting to be restarted."""
        self.last_state = self.state
        self.state = {"waiting": {"reason": "CrashLoopBackOff"}}

    @property
    def container_id(self) -> str:
        """A runtime-style container id."""
        if self.ctr is not None:
            return f"runc://{self.ctr.name}"
        pid = self.popen.pid if self.popen is not None else 0
        return f"arkor-agent://{self.name}-{pid}"

    def status(self, image: str) -> dict[str, Any]:
        """The ``containerStatuses`` entry."""
        out: dict[str, Any] = {
            "name": self.name,
            "image": image or "none",
            "imageID": "",
            "ready": "running" in self.state,
            "started": "running" in self.state,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.started:
            out["containerID"] = self.container_id
        return out
