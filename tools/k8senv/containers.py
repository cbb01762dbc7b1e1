"""One container as a local process: start, signal, reap, and its Kubernetes status."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.k8senv.nodes import now

logger = logging.getLogger(__name__)


@dataclass
class ContainerProc:
    """State of one container across restarts.

    Attributes:
        spec: The container spec from the pod.
        log_path: stdout and stderr of every run, appended.
        sidecar: An init container with ``restartPolicy: Always``.
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

    @property
    def name(self) -> str:
        """Container name."""
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.popen is not None and self.popen.poll() is None

    def start(self, argv: list[str], env: dict[str, str], pid_file: Path) -> None:
        """Start a (new) run of the container in its own process group."""
        if self.popen is not None:
            self.restart_count += 1
            if "terminated" in self.state:
                self.last_state = self.state
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,
            )  # fmt: skip
        pid_file.write_text(str(self.popen.pid))
        self.started_at = now()
        self.exit_code = None
        self.state = {"running": {"startedAt": self.started_at}}
        logger.info("container %s started (pid %d)", self.name, self.popen.pid)

    def fail_to_start(self, reason: str, message: str) -> None:
        """Record a container that could not be created (config error)."""
        self.state = {"waiting": {"reason": reason, "message": message}}

    def poll(self) -> bool:
        """Reap the process if it ended; returns True exactly once per ended run."""
        if self.popen is None or self.exit_code is not None:
            return False
        code = self.popen.poll()
        if code is None:
            return False
        self.exit_code = 128 - code if code < 0 else code
        terminated: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": "Completed" if self.exit_code == 0 else "Error",
            "startedAt": self.started_at,
            "finishedAt": now(),
            "containerID": self.container_id,
        }
        if code < 0:
            terminated["signal"] = -code
        self.state = {"terminated": terminated}
        # Whatever the container left in its process group dies with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        logger.info("container %s exited with %d", self.name, self.exit_code)
        return True

    def signal(self, signum: int) -> None:
        """SIGTERM goes to the main process (like PID 1); SIGKILL to the whole group."""
        if not self.running or self.popen is None:
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
        if self.popen is not None:
            out["containerID"] = self.container_id
        return out
