"""The backend interface that the Kubernetes, local and fake backends implement.

A backend turns a validated :class:`~arkor_ops.config.TrainerConfig` into a running job and
serves that job's event stream; one that runs evaluations turns an
:class:`~arkor_ops.evaluation.EvaluationConfig` into a job the same way
(:meth:`Backend.submit_evaluation`), on the same worker. The reconnect policy lives in the trainer
(:mod:`arkor_ops.trainer`), not in the backends: :meth:`Backend.events` opens the stream once
and either yields frames or raises :class:`~arkor_ops.errors.StreamError` carrying the HTTP status
(or none, for network errors) so the trainer can decide whether to retry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from arkor_ops.closing import AsyncClosing
from arkor_ops.config import TrainerConfig
from arkor_ops.errors import BackendError, InferenceError
from arkor_ops.evaluation import EvaluationConfig
from arkor_ops.events import Frame, Phase
from arkor_ops.inference import InferRequest
from arkor_ops.storage import RunLayout, Storage

JobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


class TrainingJob(BaseModel):
    """A run as the backend knows it (Arkor's ``TrainingJob``)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    id: str = Field(description="Job id (the Kubernetes Job name, or the local run id).")
    name: str = Field(description="Run name from the config.")
    status: JobStatus = Field(
        default="queued", description="queued, running, completed, failed, cancelled."
    )
    config: dict[str, Any] = Field(
        default_factory=dict, description="The config as sent (no secrets)."
    )
    error: str | None = Field(default=None, description="Why it failed.")
    created_at: str | None = Field(default=None, description="ISO time the job was created.")
    started_at: str | None = Field(default=None, description="ISO time training started.")
    completed_at: str | None = Field(default=None, description="ISO time it ended.")


class JobDescription(BaseModel):
    """What :meth:`Backend.describe` reports: the job plus the backend's view of progress."""

    model_config = ConfigDict(extra="allow")

    job: TrainingJob
    step: int | None = Field(default=None, description="Last step seen in the event log.")
    loss: float | None = Field(default=None, description="Last training loss seen.")
    phase: Phase | str | None = Field(
        default=None, description="Backend phase, e.g. `unschedulable` (a newer one as text)."
    )
    message: str | None = Field(default=None, description="Why it is in that phase.")
    last_event_id: int | None = Field(
        default=None,
        description="Id of the last event seen (what `arkor-ops logs` without `-f` prints up to).",
    )


class Backend(AsyncClosing, ABC):
    """Runs training jobs and serves their events.

    A backend is an async context manager: ``async with resolve_backend() as backend:`` closes
    what it holds (:meth:`aclose`) on the way out. Callers never ask which backend they have:
    everything a caller may need is a method here, with a harmless default where a backend has
    nothing to offer.
    """

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """The backend configured by the environment, with ``overrides`` applied on top.

        Args:
            **overrides: settings of this backend (e.g. ``namespace=`` on Kubernetes), and
                ``flow_run_id=``, the Prefect flow run the jobs it submits belong to.

        Raises:
            BackendError: an override or a variable is invalid (named in the message), or this
                backend cannot be built from the environment.
        """
        raise BackendError(f"{cls.__name__} cannot be built from the environment")

    @abstractmethod
    async def submit(
        self, config: TrainerConfig, *, idempotency_key: str | None = None
    ) -> TrainingJob:
        """Create the job for ``config`` and return it.

        With an ``idempotency_key``, submitting again returns (adopts) the job created the first
        time instead of creating a second one.

        Raises:
            BackendError: the job could not be created (no job is left behind).
        """

    async def submit_evaluation(
        self, config: EvaluationConfig, *, idempotency_key: str | None = None
    ) -> TrainingJob:
        """Create the evaluation job for ``config`` and return it: a job like a run's (the same
        ``events``, ``describe`` and ``cancel``), whose worker scores instead of training.

        With an ``idempotency_key``, submitting again adopts the job created the first time.

        Raises:
            BackendError: the job could not be created, or this backend runs no evaluations.
        """
        raise BackendError(f"{type(self).__name__} does not run evaluation jobs yet")

    @abstractmethod
    def events(self, job_id: str, last_event_id: str | None = None) -> AsyncIterator[Frame]:
        """Open the job's event stream once, resuming after ``last_event_id``.

        Yields SSE frames as they arrive and returns when the server closes the stream.

        Raises:
            StreamError: the stream could not be opened (with ``status``) or broke off
                (``status=None``).
        """

    @abstractmethod
    async def cancel(self, job_id: str, *, wait: bool = True) -> None:
        """Ask the job to stop and return once the backend has confirmed it stopped.

        Cancelling a finished or already cancelled job is harmless. ``wait=False`` returns once
        the stop is requested and can no longer be lost (a process on its way out: the flow's
        termination path); a later ``cancel()`` waits for the rest and cleans up.
        """

    @abstractmethod
    async def describe(self, job_id: str) -> JobDescription:
        """The job's current state.

        Raises:
            JobNotFoundError: there is no such job.
        """

    def infer(self, job_id: str, step: int, request: InferRequest) -> AsyncIterator[dict[str, Any]]:
        """Ask checkpoint ``step`` of the running job (``ctx.infer()``): the worker that holds
        the model answers between two optimizer steps, through the run's sidecar
        (``POST /v1/jobs/{job_id}/checkpoints/{step}/chat/completions``).

        Yields each ``chat.completion.chunk`` (as JSON) until ``[DONE]`` when
        ``request.stream``, else the one ``chat.completion``.

        Raises:
            CheckpointUnavailableError: the run ended, or the worker no longer holds ``step``.
            InferenceError: the answer failed, or this backend answers no ``infer()``.
        """
        return _refuse(f"{type(self).__name__} does not answer infer() (job {job_id})")

    async def run_storage(self, job_id: str) -> tuple[Storage, RunLayout]:
        """Where the run's files (config, log, checkpoints, final adapter) are, as this client
        reaches them: what ``trainer.checkpoints()`` reads.

        Raises:
            BackendError: this backend keeps no run storage.
        """
        raise BackendError(f"{type(self).__name__} keeps no run storage (job {job_id})")

    async def adapter_storage(self, uri: str) -> Storage | None:
        """The storage client that reads the committed adapter at ``uri`` as this client
        reaches it, or None when this client cannot read it (the worker then checks it)."""
        return None

    async def release_finished(self) -> list[str]:
        """Free what finished runs hold but no longer need (the reaper's sweep).

        Returns:
            The ids of the runs something was freed for; none by default (nothing to free).
        """
        return []

    def job_id_for(self, config: TrainerConfig, idempotency_key: str) -> str | None:
        """The id that submitting ``config`` with ``idempotency_key`` gives (or gave) its job,
        without contacting anything; None when this backend cannot tell in advance."""
        return None

    async def list_jobs(self) -> list[JobDescription]:
        """Every run this backend knows, newest first (what ``arkor-ops list`` prints).

        Raises:
            BackendError: this backend cannot list its runs.
        """
        raise BackendError(f"{type(self).__name__} cannot list runs")

    async def jobs_by_flow_run(self) -> dict[str, str]:
        """``{job id: flow run id}`` of the runs that record the Prefect flow run they belong
        to (on Kubernetes, the ``arkor-ops.dev/flow-run-id`` label): how the reaper finds runs
        of flow runs it never heard of. Empty by default (no run records one)."""
        return {}

    async def aclose(self) -> None:
        """Release connections and processes held by the backend object itself."""


async def _refuse(message: str) -> AsyncIterator[dict[str, Any]]:
    raise InferenceError(message)
    yield {}  # an async generator that raises when first read
