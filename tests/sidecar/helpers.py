"""Helpers of the tests in tests/sidecar/ (their fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from arkor_ops.eventlog import EventLogWriter
from arkor_ops.events import Frame, TrainingCompleted, TrainingLog, TrainingStarted
from arkor_ops.sse import stream_frames
from tests.fixtures.s3 import free_port

JOB_ID = "triage-abc123"


@dataclass
class SidecarProc:
    """A running `python -m arkor_ops.sidecar`."""

    proc: subprocess.Popen[bytes]
    port: int
    job_id: str
    output: Path

    @property
    def base(self) -> str:
        """The sidecar's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def stream_url(self) -> str:
        """The run's event stream."""
        return f"{self.base}/v1/jobs/{self.job_id}/events/stream"

    def health(self) -> dict[str, object]:
        """GET /healthz."""
        data: dict[str, object] = httpx.get(f"{self.base}/healthz", timeout=5).json()
        return data

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


@dataclass
class Sidecars:
    """Starts sidecars for one test and stops them afterwards."""

    tmp: Path
    started: list[SidecarProc] = field(default_factory=list)

    def start(
        self,
        log_path: Path,
        storage_uri: str,
        *,
        port: int | None = None,
        job_id: str = JOB_ID,
        **env: str,
    ) -> SidecarProc:
        """Start a sidecar serving ``log_path`` and wait until /healthz answers."""
        port = port or free_port()
        child_env = {
            **os.environ,
            "ARKOR_JOB_ID": job_id,
            "ARKOR_EVENT_LOG": str(log_path),
            "ARKOR_STORAGE_URI": storage_uri,
            "ARKOR_SIDECAR_HOST": "127.0.0.1",
            "ARKOR_SIDECAR_PORT": str(port),
            **env,
        }
        output = self.tmp / f"sidecar-{port}-{len(self.started)}.log"
        with output.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "arkor_ops.sidecar"],
                env=child_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        sc = SidecarProc(proc, port, job_id, output)
        self.started.append(sc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"sidecar exited: {output.read_text()}")
            try:
                sc.health()
                return sc
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("sidecar did not answer within 30 s")

    def stop_all(self) -> None:
        """Stop whatever is still running."""
        for sc in self.started:
            if sc.proc.poll() is None:
                sc.proc.kill()
                sc.proc.wait(timeout=10)


def write_logs(writer: EventLogWriter, count: int, start_step: int = 1) -> None:
    """Append ``count`` training.log events."""
    for step in range(start_step, start_step + count):
        writer.write(TrainingLog(job_id=JOB_ID, step=step, loss=1.0 / step))


def write_run(writer: EventLogWriter, steps: int) -> None:
    """A whole run: started, ``steps`` logs, completed."""
    writer.write(TrainingStarted(job_id=JOB_ID))
    write_logs(writer, steps)
    writer.write(TrainingCompleted(job_id=JOB_ID))


async def collect(
    url: str,
    *,
    last_event_id: str | None = None,
    stop: Callable[[list[Frame]], bool] | None = None,
    timeout: float = 20,
    pings: bool = False,
) -> list[Frame]:
    """Frames of one connection until the server closes it or ``stop(frames)`` is true."""
    frames: list[Frame] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
        source = stream_frames(client, url, last_event_id=last_event_id)
        async with asyncio.timeout(timeout), contextlib.aclosing(source):
            async for frame in source:
                if frame.is_ping and not pings:
                    continue
                frames.append(frame)
                if stop is not None and stop(frames):
                    break
    return frames


def ids(frames: list[Frame]) -> list[int]:
    """The ids of the event frames (``end`` repeats the last id, as SSE's last-event-id does)."""
    return [int(f.id) for f in frames if f.id is not None and not (f.is_end or f.is_ping)]
