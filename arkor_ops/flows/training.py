"""The three tasks that wrap the trainer, and the clean-up the flow's hooks and the reaper share.

* ``start_training`` submits the run; its idempotency key is the flow run id, so a retried task
  (or a retried flow run) adopts the job it created before instead of creating a second one.
* ``wait_for_training`` follows the run's events into the flow run's logs and artifacts and
  returns the result; a failed training raises :class:`TrainingFailed` with the trainer's error.
* ``cancel_training`` stops the run.

``stop_flow_run`` is what the flow's cancellation and crash hooks call: it stops the training
run and every other job that records the flow run (its evaluation jobs), still going.

While it follows the run, ``wait_for_training`` also checks the flow run's own state (every
``ARKOR_FLOW_CANCEL_CHECK_SECONDS``, default 1; 0 turns the check off). A runner cancels a flow
run by SIGTERM, which Prefect turns into an exception raised wherever the process happens to be;
when that is inside an asyncio socket write or callback, asyncio logs it and carries on ("Fatal
write error on socket transport"), the process runs until the runner's SIGKILL 30 s later, and the
cancellation hooks only run after that. The check stops the training within about a second of the
request whatever happened to the signal, and also for a flow called without a runner, which
Prefect never signals at all; the flow run then ends ``Cancelled``.

When the signal does arrive first (a runner or ``prefect flow-run execute`` in a flow-run pod
sends SIGTERM right after it sees the request, before that check comes round), Prefect cancels
the task on its way out. That termination path stops the job too (:func:`_stop_if_cancelling`),
before the process exits: the cancellation hooks run only after the process is gone and the
flow is loaded again (seconds; in a flow-run pod, after the flow-run Job is already gone and the
training Job would be left to the hook). The flow run's state decides: a SIGTERM that is not a
cancel (an evicted flow-run pod, a reschedule) leaves the training going, for the retried flow
run to adopt.

All of them build the backend from :class:`~.settings.BackendSettings`, so they work in the
flow run's process and in the runner's (where the cancellation hooks run).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from uuid import UUID

from prefect import State, runtime, task
from prefect.logging import get_run_logger
from prefect.states import Cancelled

from arkor_ops.backends import resolve_backend
from arkor_ops.backends.base import Backend
from arkor_ops.config import (
    FileDataset,
    HuggingFaceDataset,
    S3Dataset,
    TrainerConfig,
    validate_config,
)
from arkor_ops.errors import BackendError, PreflightFailedError
from arkor_ops.flows.jobs import run_is_active
from arkor_ops.flows.reporting import RunReporter
from arkor_ops.flows.settings import BackendSettings
from arkor_ops.results import Callback, TrainingResult
from arkor_ops.settings import FlowSettings, read
from arkor_ops.storage import RunLayout, Storage
from arkor_ops.trainer import AsyncTrainer

if TYPE_CHECKING:
    from arkor_ops.backends.base import Backend
    from arkor_ops.trainer import AsyncTrainer

logger = logging.getLogger(__name__)
R_co = TypeVar("R_co", covariant=True)


class TrainingFailed(Exception):  # noqa: N818 - reads as the flow run's failure reason
    """The training run ended in ``failed``; the message is the trainer's error."""


def with_dataset(config: TrainerConfig, dataset_uri: str | None) -> TrainerConfig:
    """``config`` training on ``dataset_uri`` instead (s3://, hf://datasets/…, or a file path).

    Raises:
        ValueError: the URI has a ``.``/``..`` segment (it could leave a watched ``prefix/``).
    """
    if not dataset_uri:
        return config
    if any(part in (".", "..") for part in dataset_uri.split("/")):
        raise ValueError(
            f"dataset_uri {dataset_uri!r} has a '.' or '..' path segment: name the object itself"
        )
    dataset: Any
    if dataset_uri.startswith("s3://"):
        dataset = S3Dataset(type="s3", uri=dataset_uri)
    elif dataset_uri.startswith("hf://datasets/"):
        dataset = HuggingFaceDataset(type="huggingface", name=dataset_uri[len("hf://datasets/") :])
    else:
        dataset = FileDataset(type="file", path=dataset_uri.removeprefix("file://"))
    return config.model_copy(update={"dataset": dataset})


def cancel_check_seconds() -> float:
    """Seconds between two checks of the flow run's state (``ARKOR_FLOW_CANCEL_CHECK_SECONDS``).

    Raises:
        SettingsError: (a ``ValueError``) the variable is not a number of seconds >= 0.
    """
    return read(FlowSettings, what="flow settings").flow_cancel_check_seconds


def _flow_run_id() -> str | None:
    flow_run_id = runtime.flow_run.id
    return str(flow_run_id) if flow_run_id else None


def make_trainer(
    config: TrainerConfig,
    backend: Backend,
    idempotency_key: str,
    callbacks: Mapping[str, Callback] | None = None,
) -> AsyncTrainer:
    """An async trainer for ``config`` on ``backend`` (the caller closes the backend)."""
    from arkor_ops import create_async_trainer

    return create_async_trainer(
        config, backend=backend, idempotency_key=idempotency_key, callbacks=callbacks or {}
    )


async def run_storage(backend: Backend, job_id: str) -> tuple[Storage, RunLayout] | None:
    """The run's storage as this process reaches it, or None where the backend keeps none."""
    try:
        return await backend.run_storage(job_id)
    except BackendError as exc:  # the fake backend; or the Job is gone and no prefix is set
        logger.debug("no run storage for %s: %s", job_id, exc)
        return None


def _submit_retryable(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry a failed submit, except a failed pre-flight: the run can never pass as configured
    (Prefect hands the exception over as the Failed state's data)."""
    return not isinstance(getattr(state, "data", None), PreflightFailedError)


@task(
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=_submit_retryable,
    task_run_name="start-training",
)
async def start_training(
    config: TrainerConfig, settings: BackendSettings, idempotency_key: str
) -> str:
    """Submit the run (or adopt the one this key already created); returns its job id."""
    async with resolve_backend(settings.backend, **settings.overrides(_flow_run_id())) as backend:
        started = await make_trainer(config, backend, idempotency_key).start()
    get_run_logger().info(
        "Training job %s submitted to the %s backend", started.job_id, settings.resolved_name()
    )
    return str(started.job_id)


@task(task_run_name="wait-for-training")
async def wait_for_training(
    config: TrainerConfig, settings: BackendSettings, idempotency_key: str, job_id: str
) -> dict[str, Any] | State:
    """Follow the run to its end, mirroring events into logs and artifacts.

    Returns:
        The training result as JSON data (job, artifacts, metrics), or a ``Cancelled`` state
        when the flow run was cancelled meanwhile and the training was stopped for that.

    Raises:
        TrainingFailed: the run failed; the message is the trainer's error.
    """
    reporter = RunReporter(job_id, config.max_steps)
    async with resolve_backend(settings.backend, **settings.overrides(_flow_run_id())) as backend:
        trainer = make_trainer(config, backend, idempotency_key, reporter.callbacks())
        result = await _follow_unless_cancelled(trainer, prepare=reporter.begin)
        if result is None:
            log = get_run_logger()
            log.warning("Flow run cancelled: stopping training run %s", job_id)
            await trainer.cancel()
            message = f"Flow run cancelled: training run {job_id} stopped"
            log.info(message)
            return Cancelled(message=message)
        await reporter.finish(result, await run_storage(backend, job_id))
    job = result.job
    if job.status == "failed":
        raise TrainingFailed(job.error or f"training job {job.id} failed")
    get_run_logger().info("Training job %s ended: %s", job.id, job.status)
    return _result_data(result)


#: Seconds the termination path may spend stopping the job (the supervisor's SIGKILL comes 30 s
#: after its SIGTERM; the cancellation hooks remain the backstop).
STOP_ON_TERMINATION_SECONDS = 20.0


class _Waits(Protocol[R_co]):
    async def wait(self) -> R_co: ...

    async def cancel(self, *, wait: bool = True) -> object: ...


async def _follow_unless_cancelled(
    trainer: _Waits[R_co], prepare: Callable[[], Awaitable[object]] | None = None
) -> R_co | None:
    """``trainer.wait()``'s result, or None once the flow run is cancelling (see the module doc).

    ``prepare`` (the reporter's artifacts) runs first. The process being terminated meanwhile
    (this task cancelled, or Prefect's ``TerminationSignal`` raised in it) stops the job first
    when the flow run is cancelling, then lets the exit through.
    """
    interval = cancel_check_seconds()
    flow_run_id = runtime.flow_run.id
    if not flow_run_id:
        if prepare is not None:
            await prepare()
        return await trainer.wait()
    run_id = UUID(str(flow_run_id))
    try:
        if prepare is not None:
            await prepare()
        return await _wait_or_cancel_request(trainer, run_id, interval)
    except BaseException as exc:
        if not isinstance(exc, Exception):  # an exit (cancel, signal), not a failure
            await _stop_if_cancelling(run_id, trainer)
        raise


async def _wait_or_cancel_request(
    trainer: _Waits[R_co], run_id: UUID, interval: float
) -> R_co | None:
    follow = asyncio.ensure_future(trainer.wait())
    watches: list[asyncio.Future[Any]] = [follow]
    if interval:
        watches.append(asyncio.ensure_future(_cancel_requested(run_id, interval)))
    try:
        await asyncio.wait(watches, return_when=asyncio.FIRST_COMPLETED)
        return follow.result() if follow.done() else None
    finally:
        for pending in watches:
            pending.cancel()
        await asyncio.gather(*watches, return_exceptions=True)


async def _stop_if_cancelling(flow_run_id: UUID, job: _Waits[Any]) -> None:
    """Stop the job if the flow run is being cancelled; never raises, never waits for long.

    Runs while this task is being cancelled: the work goes in a task of its own, awaited again if
    a second cancel comes, up to :data:`STOP_ON_TERMINATION_SECONDS`.
    """

    async def stop() -> None:
        if await _is_cancelling(flow_run_id):  # the stop requested; the hooks wait for the rest
            await job.cancel(wait=False)
            logger.warning("Flow run %s cancelled: its job is stopping", flow_run_id)

    stopping = asyncio.ensure_future(asyncio.wait_for(stop(), STOP_ON_TERMINATION_SECONDS))
    while not stopping.done():
        try:
            await asyncio.shield(stopping)
        except asyncio.CancelledError:
            continue  # cancelled again: keep stopping (bounded by the timeout)
        except Exception as exc:  # the hooks and the reaper are the backstops
            logger.warning("Flow run %s: could not stop its job: %s", flow_run_id, exc)


async def _is_cancelling(flow_run_id: UUID, client: Any = None) -> bool:
    """Whether the flow run is ``Cancelling`` (or already ``Cancelled``)."""
    from prefect.client.orchestration import get_client

    if client is None:
        async with get_client() as own:
            return await _is_cancelling(flow_run_id, own)
    state = (await client.read_flow_run(flow_run_id)).state
    return state is not None and (state.is_cancelling() or state.is_cancelled())


async def _cancel_requested(flow_run_id: UUID, interval: float) -> None:
    """Return once the flow run is ``Cancelling`` (or already ``Cancelled``)."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        while True:
            await asyncio.sleep(interval)
            try:
                if await _is_cancelling(flow_run_id, client):
                    return
            except Exception as exc:  # an API blip must not end a training run
                logger.debug("could not read flow run %s: %s", flow_run_id, exc)


def _result_data(result: TrainingResult) -> dict[str, Any]:
    return {
        "job": result.job.model_dump(mode="json"),
        "artifacts": [a.model_dump(mode="json") for a in result.artifacts],
        "metrics": None if result.metrics is None else result.metrics.model_dump(mode="json"),
    }


@task(task_run_name="cancel-training")
async def cancel_training(
    config: TrainerConfig, settings: BackendSettings, idempotency_key: str
) -> bool:
    """Stop the run this key created, if any; returns whether there was one."""
    return await stop_run(config, settings, idempotency_key)


async def stop_flow_run(
    config: TrainerConfig | dict[str, Any], settings: BackendSettings, flow_run_id: str
) -> tuple[bool, list[str]]:
    """Stop what a flow run started: its training run and every job of it still going.

    The training run is named from the flow run id (its idempotency key); the other jobs (the
    evaluation jobs, whose keys derive from the model version being scored) are found because
    they record the flow run (``backend.jobs_by_flow_run()``). Never creates a job.

    Returns:
        Whether the training run was found, and the ids of the other jobs stopped.
    """
    found, stopped = await asyncio.gather(
        stop_run(config, settings, flow_run_id),  # both at once: each waits for its pods
        _stop_other_jobs(config, settings, flow_run_id),
    )
    return found, stopped


async def _stop_other_jobs(
    config: TrainerConfig | dict[str, Any], settings: BackendSettings, flow_run_id: str
) -> list[str]:
    stopped: list[str] = []
    async with resolve_backend(settings.backend, **settings.overrides()) as backend:
        training = backend.job_id_for(validate_config(config), flow_run_id)
        try:
            recorded = await backend.jobs_by_flow_run()
        except BackendError as exc:  # the reaper's label sweep is the backstop
            logger.warning("cannot list the jobs of flow run %s: %s", flow_run_id, exc)
            return stopped
        for job_id, owner in sorted(recorded.items()):
            if owner != flow_run_id or job_id == training:
                continue
            if await run_is_active(backend, job_id):
                await backend.cancel(job_id)
                stopped.append(job_id)
    return stopped


async def stop_run(
    config: TrainerConfig | dict[str, Any], settings: BackendSettings, idempotency_key: str
) -> bool:
    """Cancel the run created with ``idempotency_key`` (never creating one); True if found."""
    from arkor_ops.errors import JobNotFoundError

    async with resolve_backend(settings.backend, **settings.overrides()) as backend:
        job_id = backend.job_id_for(validate_config(config), idempotency_key)
        if job_id is None:
            return False
        try:
            await backend.cancel(job_id)
        except JobNotFoundError:
            return False
        return True
