"""`LocalBackend`: one run = the worker and the SSE sidecar as local processes.

The process and file handling of one run is :mod:`.run`.

Each run lives in ``{runs_dir}/{job_id}/``: ``config.json`` (the wire config, no secrets),
``state.json`` (pids, port, status, so a later process can describe, follow or cancel it),
``events.jsonl`` (the log the worker writes), ``work/``, ``worker.log`` and ``sidecar.log``.
Checkpoints, the final adapter and the persisted log go to the storage URI (``file://`` or
``s3://``), as on Kubernetes. Both processes run in their own session (process group), so a
Ctrl-C in the terminal that started them reaches neither.

Settings (environment, prefix ``ARKOR_``): see :class:`arkor_ops.settings.LocalSettings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from typing import Any, Self

import httpx

from arkor_ops import completions
from arkor_ops.backends.base import Backend, JobDescription, TrainingJob
from arkor_ops.backends.local import run as runs
from arkor_ops.config import TrainerConfig
from arkor_ops.errors import (
    BackendError,
    CheckpointUnavailableError,
    InferenceError,
    JobNotFoundError,
    StreamError,
)
from arkor_ops.evaluation import EvaluationConfig
from arkor_ops.events import EvaluationCancelled, Frame, TrainingCancelled, utc_now
from arkor_ops.inference import RUN_ENDED, InferRequest
from arkor_ops.polling import Backoff, poll
from arkor_ops.settings import DATASET_TOKEN_ENV, DATASET_URL_ENV, LocalSettings, read
from arkor_ops.sse import stream_frames
from arkor_ops.storage import RunLayout, Storage, open_storage

log = logging.getLogger(__name__)


def job_id_for(name: str, idempotency_key: str | None = None) -> str:
    """The run name made DNS-safe plus a short suffix (derived from the key when one is given)."""
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:50].strip("-") or "run"
    if idempotency_key:
        suffix = hashlib.sha256(idempotency_key.encode()).hexdigest()[:8]
    else:
        suffix = secrets.token_hex(4)
    return f"{base}-{suffix}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalBackend(Backend):
    """Runs training as local processes (worker + sidecar), with `file://` or `s3://` storage.

    Args:
        settings: where runs live and how processes start; default: from the environment.
        flow_run_id: the Prefect flow run the runs it submits belong to (kept in their state).
    """

    def __init__(
        self, settings: LocalSettings | None = None, *, flow_run_id: str | None = None
    ) -> None:
        self.settings = settings or LocalSettings()
        self.flow_run_id = flow_run_id
        self.runs_dir = self.settings.runs_dir.expanduser().resolve()
        self.storage_uri = self.settings.storage_uri or f"file://{self.runs_dir}/storage"
        self._children: dict[str, dict[str, subprocess.Popen[bytes]]] = {}

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """A backend configured from ``ARKOR_*`` environment variables.

        Args:
            **overrides: :class:`LocalSettings` fields that replace the environment's, and
                ``flow_run_id`` (recorded in each run's state, see :meth:`jobs_by_flow_run`).

        Raises:
            BackendError: a variable or override holds an invalid value, or names no setting.
        """
        flow_run_id = overrides.pop("flow_run_id", None)
        unknown = sorted(set(overrides) - set(LocalSettings.model_fields))
        if unknown:
            raise BackendError(f"the local backend has no setting {unknown[0]!r}")
        what = "local backend settings"
        settings = read(LocalSettings, error=BackendError, what=what, **overrides)
        return cls(settings, flow_run_id=flow_run_id)

    def _run(self, job_id: str) -> runs.LocalRun:
        return runs.LocalRun(self.runs_dir / job_id, job_id, self.storage_uri, self._children)

    # -- submit --------------------------------------------------------------------------

    async def submit(
        self, config: TrainerConfig, *, idempotency_key: str | None = None
    ) -> TrainingJob:
        """Start the sidecar, then the worker, for a new run (or adopt the keyed one).

        Raises:
            BackendError: a process did not start; nothing of the run is left behind.
        """
        return await self._submit(config, idempotency_key)

    async def submit_evaluation(
        self, config: EvaluationConfig, *, idempotency_key: str | None = None
    ) -> TrainingJob:
        """Start an evaluation job: the same two processes, the worker in its evaluation stage.

        Raises:
            BackendError: a process did not start; nothing of the job is left behind.
        """
        return await self._submit(config, idempotency_key)

    async def _submit(
        self, config: TrainerConfig | EvaluationConfig, idempotency_key: str | None
    ) -> TrainingJob:
        for _ in range(3):
            job_id = job_id_for(config.name, idempotency_key)
            run = self._run(job_id)
            try:
                run.dir.mkdir(parents=True)
                break
            except FileExistsError:
                if idempotency_key:
                    log.info("adopting run %s (same idempotency key)", job_id)
                    return (await self._adopt(run)).job
        else:
            raise BackendError(f"could not pick a free run id under {self.runs_dir}")
        try:
            await self._launch(run, config)
        except BaseException as exc:
            run.kill_all()
            shutil.rmtree(run.dir, ignore_errors=True)
            if isinstance(exc, BackendError | asyncio.CancelledError | KeyboardInterrupt):
                raise
            raise BackendError(f"could not start local run {job_id}: {exc}") from exc
        return run.describe().job

    async def _adopt(self, run: runs.LocalRun) -> JobDescription:
        async def described() -> JobDescription | None:
            return run.describe() if run.state_path.exists() else None

        try:  # a concurrent submit may still be writing the state
            return await poll(described, Backoff(0.05), timeout_seconds=5.0)
        except TimeoutError:
            raise BackendError(f"run {run.job_id} exists but has no state file") from None

    async def _launch(self, run: runs.LocalRun, config: TrainerConfig | EvaluationConfig) -> None:
        s = self.settings
        wire = config.to_wire()
        run.config_path.write_text(json.dumps(wire, indent=2), encoding="utf-8")
        layout = RunLayout(self.storage_uri, run.job_id)
        storage = open_storage(self.storage_uri)
        await asyncio.to_thread(storage.put_bytes, layout.config, json.dumps(wire).encode())
        inherited = os.environ.items()  # environment passed to a child process, not configuration
        base = {k: v for k, v in inherited if k not in (DATASET_TOKEN_ENV, DATASET_URL_ENV)}
        base.update(
            ARKOR_JOB_ID=run.job_id,
            ARKOR_STORAGE_URI=self.storage_uri,
            ARKOR_EVENT_LOG=str(run.log_path),
            PYTHONUNBUFFERED="1",
        )
        worker_env = {
            **base,
            **config.secret_env(),  # secrets only here: never in files or the sidecar's env
            "ARKOR_CONFIG_FILE": str(run.config_path),
            "ARKOR_WORK_DIR": str(run.dir / "work"),
            "ARKOR_MAX_ATTEMPTS": "1",  # a local run is never retried: every failure is final
        }
        worker = run.spawn("worker", [s.python, "-m", s.worker_module], worker_env)
        port = _free_port()
        sidecar_env = {
            **base,
            "ARKOR_SIDECAR_HOST": "127.0.0.1",
            "ARKOR_SIDECAR_PORT": str(port),
            "ARKOR_SIDECAR_LINGER_SECONDS": str(s.sidecar_linger_seconds),
            "ARKOR_SIDECAR_WORKER_PID": str(worker.pid),
        }
        sidecar = run.spawn("sidecar", [s.python, "-m", "arkor_ops.sidecar"], sidecar_env)
        state: dict[str, Any] = {
            "jobId": run.job_id,
            "name": config.name,
            "createdAt": utc_now(),
            "storageUri": self.storage_uri,
            "port": port,
            "status": "running",
            "flowRunId": self.flow_run_id,
            "worker": runs.proc_info(worker.pid),
            "sidecar": runs.proc_info(sidecar.pid),
        }
        run.save_state(state)
        await self._wait_healthy(run, port, sidecar)
        log.info("started run %s: worker pid %d, sidecar on port %d", run.job_id, worker.pid, port)

    async def _wait_healthy(
        self, run: runs.LocalRun, port: int, proc: subprocess.Popen[bytes]
    ) -> None:
        async with httpx.AsyncClient(timeout=2) as client:

            async def healthy() -> bool | None:
                if proc.poll() is not None:
                    raise BackendError(
                        f"the sidecar exited with code {proc.returncode}: "
                        f"{run.output_tail('sidecar')}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        return True
                return None

            timeout = self.settings.start_timeout_seconds
            try:
                await poll(healthy, Backoff(0.05), timeout_seconds=timeout)
            except TimeoutError:
                raise BackendError(f"the sidecar did not answer within {timeout} s") from None

    def job_id_for(self, config: TrainerConfig, idempotency_key: str) -> str | None:
        """The keyed run's id: derived from the run name and the key (:func:`job_id_for`)."""
        return job_id_for(config.name, idempotency_key)

    # -- list ----------------------------------------------------------------------------

    def _runs(self) -> list[runs.LocalRun]:
        if not self.runs_dir.is_dir():
            return []
        dirs = sorted(p for p in self.runs_dir.iterdir() if (p / "state.json").is_file())
        return [self._run(p.name) for p in dirs]

    async def list_jobs(self) -> list[JobDescription]:
        """Every run under the runs folder, newest first."""
        found = await asyncio.to_thread(lambda: [run.describe() for run in self._runs()])
        return sorted(found, key=lambda d: d.job.created_at or "", reverse=True)

    async def jobs_by_flow_run(self) -> dict[str, str]:
        """``{job id: flow run id}`` of the runs under the runs folder submitted with one."""

        def collect() -> dict[str, str]:
            ids = {run.job_id: run.load_state().get("flowRunId") for run in self._runs()}
            return {job_id: str(flow_run) for job_id, flow_run in ids.items() if flow_run}

        return await asyncio.to_thread(collect)

    # -- events, describe, cancel --------------------------------------------------------

    async def events(self, job_id: str, last_event_id: str | None = None) -> AsyncIterator[Frame]:
        """Frames from the run's sidecar; once it is gone (or no longer accepts connections), a
        replay of the log (then ``end``).

        Raises:
            StreamError: the stream broke off (``status=None``), or 410 when no such run exists
                here or in storage.
        """
        run = self._run(job_id)
        if not run.exists():
            raise StreamError(
                f"no local run {job_id!r} (in {self.runs_dir} or storage)", status=410
            )
        port = run.sidecar_port()
        if port is not None:
            url = f"http://127.0.0.1:{port}/v1/jobs/{job_id}/events/stream"
            watchdog = asyncio.create_task(run.watch_worker())
            try:
                async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
                    frames = stream_frames(client, url, last_event_id=last_event_id)
                    async with contextlib.aclosing(frames):  # type: ignore[type-var]
                        async for frame in frames:
                            if frame.id is not None and not frame.is_end:
                                last_event_id = frame.id
                            yield frame
                return
            except StreamError as exc:
                # Connection refused while the process lives: it is draining after its linger
                # (port closed, not yet exited). The log has everything it would have sent.
                refused = isinstance(exc.__cause__, httpx.ConnectError)
                if run.sidecar_port() is not None and not refused:
                    raise
                log.info("the sidecar of %s is gone; replaying its log", job_id)
            finally:
                watchdog.cancel()
        async with contextlib.aclosing(run.replay(last_event_id)) as replay:  # type: ignore[type-var]
            async for frame in replay:
                yield frame

    async def infer(
        self, job_id: str, step: int, request: InferRequest
    ) -> AsyncIterator[dict[str, Any]]:
        """POST to the run's sidecar on loopback, which hands the request to the worker.

        Raises:
            JobNotFoundError: no such run.
            CheckpointUnavailableError: the run ended (its log has a terminal event, or its
                processes are gone), or the worker no longer holds ``step``.
            InferenceError: the sidecar or worker failed.
        """
        run = self._run(job_id)
        if not run.exists():
            raise JobNotFoundError(f"no local run {job_id!r} (in {self.runs_dir} or storage)")
        port = await asyncio.to_thread(run.sidecar_port)
        ended = await asyncio.to_thread(run.terminal_event)
        if port is None or ended is not None:
            why = f"its log ends with {ended['type']}" if ended else "its processes are gone"
            raise CheckpointUnavailableError(job_id, step, RUN_ENDED, why)
        url = f"http://127.0.0.1:{port}/{completions.route(job_id, step)}"
        try:
            async with httpx.AsyncClient(timeout=completions.timeout()) as client:
                answer = completions.post(client, url, job_id, step, request.to_wire())
                async with contextlib.aclosing(answer):  # type: ignore[type-var]
                    async for item in answer:
                        yield item
        except InferenceError as exc:
            gone = exc.status is None and (
                run.terminal_event() is not None or not run.alive("worker")
            )
            if gone and not isinstance(exc, CheckpointUnavailableError):
                raise CheckpointUnavailableError(job_id, step, RUN_ENDED, str(exc)) from exc
            raise

    async def describe(self, job_id: str) -> JobDescription:
        """Status, step and loss of the run, read from its event log.

        Raises:
            JobNotFoundError: no such run here or in storage.
        """
        run = self._run(job_id)
        if not run.exists():
            raise JobNotFoundError(f"no local run {job_id!r} (in {self.runs_dir} or storage)")
        return await asyncio.to_thread(run.describe)

    async def run_storage(self, job_id: str) -> tuple[Storage, RunLayout]:
        """The backend's storage (``ARKOR_STORAGE_URI``, default under the runs folder).

        Raises:
            JobNotFoundError: no such run here or in storage.
        """
        if not self._run(job_id).exists():
            raise JobNotFoundError(f"no local run {job_id!r} (in {self.runs_dir} or storage)")
        return open_storage(self.storage_uri), RunLayout(self.storage_uri, job_id)

    async def adapter_storage(self, uri: str) -> Storage | None:
        """Any ``file://`` or ``s3://`` prefix: the worker runs here, with this environment."""
        return open_storage(uri)

    async def cancel(self, job_id: str, *, wait: bool = True) -> None:
        """SIGTERM the worker, wait (bounded) for its ``*.cancelled``, then stop the sidecar
        (``wait=False``: return once the worker has the signal; it writes its own event).

        Raises:
            JobNotFoundError: no such run.
        """
        run = self._run(job_id)
        if not run.state_path.exists():
            if run.exists():
                return  # only its persisted log is left: it ended long ago
            raise JobNotFoundError(f"no local run {job_id!r} in {self.runs_dir}")
        if run.terminal_event() is None and run.alive("worker"):
            run.signal("worker", signal.SIGTERM)
            if not wait:
                return

            async def stopped() -> bool | None:
                return True if run.terminal_event() is not None or not run.alive("worker") else None

            async def exited() -> bool | None:
                return None if run.alive("worker") else True

            timeout = self.settings.cancel_timeout_seconds
            with contextlib.suppress(TimeoutError):
                await poll(stopped, Backoff(0.1), timeout_seconds=timeout)
            with contextlib.suppress(TimeoutError):  # it wrote its terminal event: let it exit
                await poll(exited, Backoff(0.1), timeout_seconds=5.0)
            if run.alive("worker"):
                log.warning("worker of %s did not stop in time: killing it", job_id)
                run.signal("worker", signal.SIGKILL)
        if run.terminal_event() is None:
            gone: EvaluationCancelled | TrainingCancelled = (
                EvaluationCancelled(job_id=job_id)
                if run.is_evaluation()
                else TrainingCancelled(job_id=job_id, step=run.last_step())
            )
            run.write_post_mortem(gone)
        await asyncio.to_thread(run.stop_sidecar)
        run.update_state(status=run.describe().job.status)
