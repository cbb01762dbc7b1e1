"""Start and stop long-running processes, each in its own process group, with pid files."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass
class Managed:
    """A process started by :func:`start`.

    Attributes:
        name: Short name (``etcd``, ``kube-apiserver``, ``node-agent``...).
        popen: The child; its pid is also its process-group id.
        pid_file: Where the pid is recorded for :func:`stop_from_pid_file`.
        log_file: Combined stdout and stderr.
    """

    name: str
    popen: subprocess.Popen[bytes]
    pid_file: Path
    log_file: Path

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` seconds."""
        _stop_group(self.popen.pid, timeout, self.popen)
        self.pid_file.unlink(missing_ok=True)


def start(
    name: str, argv: list[str], state_dir: Path, env: dict[str, str] | None = None
) -> Managed:
    """Start ``argv`` in a new session, logging to ``state_dir/logs/<name>.log``.

    Args:
        name: Short name, also the pid and log file stem.
        argv: Command line.
        state_dir: Run directory; ``pids/`` and ``logs/`` are created in it.
        env: Environment; the current one when None.

    Returns:
        The started process.
    """
    (state_dir / "pids").mkdir(parents=True, exist_ok=True)
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    log_file = state_dir / "logs" / f"{name}.log"
    pid_file = state_dir / "pids" / f"{name}.pid"
    with log_file.open("ab") as log:
        popen = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )  # fmt: skip
    pid_file.write_text(f"{popen.pid}\n{argv[0]}\n")
    logger.info("started %s (pid %d)", name, popen.pid)
    return Managed(name=name, popen=popen, pid_file=pid_file, log_file=log_file)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_group(pgid: int, timeout: float, popen: subprocess.Popen[bytes] | None = None) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen is not None:
            popen.poll()
        if not _group_exists(pgid):
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5)


def stop_from_pid_file(pid_file: Path, timeout: float = 10.0) -> bool:
    """Stop the process group recorded in ``pid_file`` if it still runs the recorded program.

    Returns:
        True when a process was signalled.
    """
    try:
        pid_text, program = pid_file.read_text().splitlines()[:2]
        pid = int(pid_text)
    except (OSError, ValueError):
        pid_file.unlink(missing_ok=True)
        return False
    signalled = False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        cmdline = ""
    if cmdline == program and _exists(pid):
        _stop_group(pid, timeout)
        signalled = True
    pid_file.unlink(missing_ok=True)
    return signalled
