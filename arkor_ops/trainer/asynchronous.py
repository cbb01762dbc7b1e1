"""The async trainer: ``create_async_trainer`` → ``start()`` / ``wait()`` / ``cancel()``.

:func:`create_async_trainer` validates the config locally and contacts nothing; the backend is
resolved and reached on ``start()``. :class:`AsyncTrainer` is the implementation;
:class:`~arkor_ops.trainer.blocking.Trainer` is its blocking twin.

Semantics (Arkor's, see the port notes in ``docs``):

- ``start()`` submits once and returns the same :class:`StartResult` afterwards; two concurrent
  calls share one submission.
- ``wait()`` starts if needed, follows the event stream, awaits each callback before reading on,
  and returns a :class:`TrainingResult` on ``training.completed`` / ``failed`` / ``cancelled`` or an
  ``end`` frame. A failed run *returns*; a raising callback makes ``wait()`` raise that same
  exception (never retried); an aborted signal makes it raise at once without cancelling the run.
- Reconnects follow :class:`ReconnectPolicy` (:func:`arkor_ops.follow.follow` reads the stream):
  resume with ``Last-Event-ID``; a clean close after progress reconnects after exactly
  ``base_delay_seconds`` without counting; other failures wait ``delay(attempt)``;
  401/403/410/426 are fatal.
- ``cancel()`` does nothing before a job exists; otherwise it asks the backend to stop the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Unpack, cast

from arkor_ops.abort import AbortScope, AbortSignal
from arkor_ops.backends import BackendSlot
from arkor_ops.backends.base import Backend, TrainingJob
from arkor_ops.chat import CheckpointChat
from arkor_ops.checkpoints import CheckpointInfo, check_init_adapter, list_checkpoints
from arkor_ops.closing import AsyncClosing
from arkor_ops.config import TrainerConfig, validate_config
from arkor_ops.errors import JobNotFoundError
from arkor_ops.events import (
    CheckpointSaved,
    Event,
    JobPhase,
    TrainingCancelled,
    TrainingCompleted,
    TrainingFailed,
    TrainingLog,
    TrainingResumed,
    TrainingStarted,
)
from arkor_ops.follow import follow
from arkor_ops.reconnect import ReconnectPolicy
from arkor_ops.results import (
    CALLBACK_NAMES,
    CAMEL_TO_SNAKE,
    Callback,
    CancelledContext,
    CheckpointContext,
    CompletedContext,
    FailedContext,
    LogContext,
    Observers,
    OnCancelled,
    OnCheckpoint,
    OnCompleted,
    OnFailed,
    OnLog,
    OnPhase,
    OnResumed,
    OnStarted,
    PhaseContext,
    ResumedContext,
    StartedContext,
    StartResult,
    TrainingResult,
)

logger = logging.getLogger(__name__)

__all__ = ["AsyncTrainer", "create_async_trainer"]


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # mark as retrieved; the caller that awaited it got it


class AsyncTrainer(AsyncClosing):
    """One training run, driven with coroutines. Made by :func:`create_async_trainer`.

    An async context manager: ``async with create_async_trainer(...) as trainer:`` closes, on
    the way out, the backend it resolved itself (see :meth:`aclose`).
    """

    def __init__(
        self,
        config: TrainerConfig,
        *,
        backend: Backend | None = None,
        callbacks: Mapping[str, Callback] | None = None,
        abort_signal: AbortSignal | None = None,
        idempotency_key: str | None = None,
        reconnect: ReconnectPolicy | None = None,
    ) -> None:
        self._config = config
        self._backend = BackendSlot(backend)
        self._callbacks: dict[str, Callback] = dict(callbacks or {})
        self._abort_signal = abort_signal
        # Without a key of the caller's, one of the trainer's own: a start() that failed after
        # the job was made adopts it on the next try, and cancel() knows the job id in advance
        # (it stops a run still in its pre-flight instead of waiting for the GPU job).
        self._idempotency_key = idempotency_key or f"trainer-{uuid.uuid4().hex}"
        self._reconnect = reconnect or ReconnectPolicy()
        self._job: TrainingJob | None = None
        self._submitting: asyncio.Future[TrainingJob] | None = None
        self._observers: list[dict[str, Callback]] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, job_id={self.job_id!r})"

    @property
    def name(self) -> str:
        """The run name from the config."""
        return self._config.name

    @property
    def config(self) -> TrainerConfig:
        """The validated config."""
        return self._config

    @property
    def job(self) -> TrainingJob | None:
        """The latest job snapshot (``None`` before ``start()``)."""
        return self._job

    @property
    def job_id(self) -> str | None:
        """The job id (``None`` before ``start()``)."""
        return None if self._job is None else self._job.id

    @property
    def backend(self) -> Backend:
        """The backend, resolved on first use from ``$ARKOR_BACKEND`` when none was given.

        Raises:
            BackendError: the configured backend is unknown or unavailable.
        """
        return self._backend.get()

    # -- closing -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the backend if this trainer resolved it itself (a backend given to it is the
        giver's to close). The run is left alone; a later call resolves a new backend."""
        await self._backend.aclose()

    # -- start ---------------------------------------------------------------------------

    async def start(self) -> StartResult:
        """Submit the run once; later calls return the same job id without a request.

        Concurrent calls share one submission.

        Returns:
            The job id.

        Raises:
            CheckpointError: ``init_adapter`` names no committed adapter, or one trained on
                another base model or LoRA rank (no job is created).
            BackendError: the backend could not create the job (a later call tries again).
        """
        if self._job is not None:
            return StartResult(self._job.id)
        if self._submitting is None:
            self._submitting = asyncio.ensure_future(self._submit())
            self._submitting.add_done_callback(_retrieve)
        fut = self._submitting
        try:
            job = await asyncio.shield(fut)
        except BaseException:
            if fut.done() and self._submitting is fut:
                self._submitting = None  # failed: let the next start() try again
            raise
        return StartResult(job.id)

    async def _submit(self) -> TrainingJob:
        await check_init_adapter(self.backend, self._config)  # no job for a ref that cannot fit
        job = await self.backend.submit(self._config, idempotency_key=self._idempotency_key)
        self._job = job
        logger.info("submitted run %s as job %s", self.name, job.id)
        return job

    # -- cancel --------------------------------------------------------------------------

    async def cancel(self, *, wait: bool = True) -> None:
        """Ask the backend to stop the run; a no-op when no job was created.

        A submission still in flight is awaited first, so a run being created is cancelled too.
        Where the backend knows the job id in advance (every run is keyed: by the caller, or by
        the trainer), the run is asked to stop before that: one still in its Kubernetes
        pre-flight stops there, and its submission fails without a GPU Job.
        ``wait=False`` returns once the stop is requested (see ``Backend.cancel``).

        Raises:
            BackendError: the backend refused or failed (errors propagate).
        """
        if self._job is None and self._submitting is not None:
            job_id = self.backend.job_id_for(self._config, self._idempotency_key)
            if job_id is not None and not self._submitting.done():
                with contextlib.suppress(JobNotFoundError):
                    await self.backend.cancel(job_id, wait=False)
            with contextlib.suppress(Exception):
                await asyncio.shield(self._submitting)
        if self._job is None:
            return
        if wait:
            await self.backend.cancel(self._job.id)
        else:
            await self.backend.cancel(self._job.id, wait=False)

    # -- checkpoints -----------------------------------------------------------------------

    async def checkpoints(self) -> list[CheckpointInfo]:
        """The run's committed checkpoints, oldest first, then its final adapter once committed;
        each with its step, train and eval loss at that step, size, URI and commit time.
        ``info.ref()`` is what another run's ``init_adapter`` takes. Empty before ``start()``.

        Raises:
            BackendError: the backend keeps no run storage, or could not be reached.
        """
        if self._job is None:
            return []
        return await list_checkpoints(self.backend, self._job.id)

    # -- observers -----------------------------------------------------------------------

    @contextlib.contextmanager
    def observing(self, **callbacks: Unpack[Observers]) -> Iterator[None]:
        """Also call ``callbacks`` (``on_log=…``, the same names and contexts as the run's own)
        after the run's own, while the block runs: how a progress display follows the stream
        the run already reads, with no second connection or polling.

        Raises:
            TypeError: an unknown callback name.
        """
        known = ", ".join(CALLBACK_NAMES)
        for name, fn in callbacks.items():
            if name not in CALLBACK_NAMES:
                raise TypeError(f"unknown callback {name!r}; expected one of: {known}")
            if not callable(fn):
                raise TypeError(f"callback {name!r} is not callable")
        observer = dict(cast(Mapping[str, Callback], callbacks))
        self._observers.append(observer)
        try:
            yield
        finally:
            self._observers.remove(observer)

    # -- wait ----------------------------------------------------------------------------

    async def wait(self) -> TrainingResult:
        """Start if needed, follow the run's events, fire callbacks, return at the end.

        Returns:
            The result; ``result.job.status`` says how the run ended (a failed run returns).

        Raises:
            AbortError: the abort signal fired (or the abort reason, if it is an exception);
                the run keeps going.
            StreamError: the stream failed with a fatal status (401, 403, 410, 426).
            ReconnectGiveUpError: ``max_attempts`` consecutive failures.
            Exception: whatever a callback raised, unchanged.
        """
        with AbortScope(self._abort_signal) as scope:
            scope.check()  # an already aborted signal submits nothing
            await self.start()
            return await self._follow(scope)

    async def _follow(self, scope: AbortScope) -> TrainingResult:
        job_id = self._snapshot().id
        cursor = _Cursor()
        frames = follow(
            lambda after: self.backend.events(job_id, after),
            policy=self._reconnect,
            name="Trainer SSE stream",
        )
        async with contextlib.aclosing(frames):
            while True:
                with scope.interruptible():  # reading and the reconnect delays
                    frame = await anext(frames, None)
                if frame is None or frame.is_end:  # with a policy, follow() ends only at `end`
                    return TrainingResult(job=self._snapshot())
                event = frame.parsed
                if event is None:
                    logger.debug("skipping a frame that is no event known here: %.200r", frame.data)
                    continue
                result = await self._dispatch(event, cursor)
                if result is not None:
                    return result

    def _snapshot(self) -> TrainingJob:
        assert self._job is not None
        return self._job

    def _patch(self, **changes: Any) -> TrainingJob:
        self._job = self._snapshot().model_copy(update=changes)
        return self._job

    async def _call(self, name: str, ctx: Any) -> None:
        first = self._callbacks.get(name)
        chain = (
            [first, *(o.get(name) for o in list(self._observers))] if self._observers else [first]
        )
        for callback in chain:
            if callback is None:
                continue
            outcome = callback(ctx)
            if outcome is not None and inspect.isawaitable(outcome):
                await outcome

    async def _dispatch(self, event: Event, cursor: _Cursor) -> TrainingResult | None:
        if isinstance(event, TrainingLog):  # first: the most frequent by far
            ctx = LogContext(
                job=self._snapshot(),
                step=event.step,
                loss=event.loss,
                eval_loss=event.eval_loss,
                learning_rate=event.learning_rate,
                epoch=event.epoch,
                samples_per_second=event.samples_per_second,
            )
            await self._call("on_log", ctx)
        elif isinstance(event, TrainingStarted):
            if cursor.started:  # a replacement pod whose log lost the first start: not news
                logger.debug("skipping a second training.started (id %s)", event.id)
                return None
            cursor.started = True
            job = self._patch(status="running", started_at=event.timestamp)
            await self._call("on_started", StartedContext(job=job))
        elif isinstance(event, TrainingResumed):
            job = self._patch(status="running")
            resumed = ResumedContext(
                job=job, step=event.step, reason=event.reason, attempt=event.attempt
            )
            await self._call("on_resumed", resumed)
        elif isinstance(event, CheckpointSaved):
            job = self._snapshot()
            adapter = {"kind": "checkpoint", "jobId": job.id, "step": event.step}
            ckpt = CheckpointContext(
                job=job,
                step=event.step,
                artifacts=list(event.artifacts),
                adapter=adapter,
                _chat=CheckpointChat(self.backend, job.id, event.step),
            )
            await self._call("on_checkpoint", ckpt)
        elif isinstance(event, JobPhase):
            phase = PhaseContext(
                job=self._snapshot(),
                phase=event.phase,
                reason=event.reason,
                message=event.message,
                hint=event.hint,
            )
            await self._call("on_phase", phase)
        elif isinstance(event, TrainingCompleted):
            job = self._patch(status="completed", completed_at=event.timestamp)
            artifacts = list(event.artifacts)
            await self._call(
                "on_completed",
                CompletedContext(job=job, artifacts=artifacts, metrics=event.metrics),
            )
            return TrainingResult(job=job, artifacts=artifacts, metrics=event.metrics)
        elif isinstance(event, TrainingFailed):
            job = self._patch(status="failed", error=event.error, completed_at=event.timestamp)
            await self._call(
                "on_failed", FailedContext(job=job, error=event.error, step=event.step)
            )
            return TrainingResult(job=job)
        elif isinstance(event, TrainingCancelled):
            job = self._patch(status="cancelled", completed_at=event.timestamp)
            cancelled = CancelledContext(job=job, step=event.step, checkpoint=event.checkpoint)
            await self._call("on_cancelled", cancelled)
            artifacts = [event.checkpoint] if event.checkpoint is not None else []
            return TrainingResult(job=job, artifacts=artifacts)
        return None


@dataclass
class _Cursor:
    """What ``wait()`` remembers across connections."""

    started: bool = False


def _merge_callbacks(
    callbacks: Mapping[str, Callback | None] | None, explicit: Mapping[str, Callback | None]
) -> dict[str, Callback]:
    merged: dict[str, Callback] = {}
    for key, fn in (callbacks or {}).items():
        name = CAMEL_TO_SNAKE.get(key, key)
        if name not in CALLBACK_NAMES:
            known = ", ".join(CALLBACK_NAMES)
            raise TypeError(f"unknown callback {key!r} in callbacks; expected one of: {known}")
        if name in merged:
            raise TypeError(f"callback {name!r} given twice in callbacks ({key!r})")
        if fn is not None:
            if not callable(fn):
                raise TypeError(f"callback {key!r} is not callable")
            merged[name] = fn
    for name, fn in explicit.items():
        if fn is None:
            continue
        if name in merged:
            raise TypeError(
                f"callback {name!r} given both in callbacks= and as {name}=; pass it once"
            )
        if not callable(fn):
            raise TypeError(f"callback {name!r} is not callable")
        merged[name] = fn
    return merged


def _build(
    config: TrainerConfig | Mapping[str, Any] | None,
    fields: Mapping[str, Any],
) -> TrainerConfig:
    if config is not None and fields:
        raise TypeError(
            "pass the config either as the first argument or as keyword fields, not both"
        )
    return validate_config(config if config is not None else dict(fields))


def create_async_trainer(
    config: TrainerConfig | Mapping[str, Any] | None = None,
    /,
    *,
    backend: Backend | None = None,
    callbacks: Mapping[str, Callback | None] | None = None,
    on_started: OnStarted | None = None,
    on_log: OnLog | None = None,
    on_checkpoint: OnCheckpoint | None = None,
    on_completed: OnCompleted | None = None,
    on_failed: OnFailed | None = None,
    on_cancelled: OnCancelled | None = None,
    on_phase: OnPhase | None = None,
    on_resumed: OnResumed | None = None,
    abort_signal: AbortSignal | None = None,
    idempotency_key: str | None = None,
    reconnect: ReconnectPolicy | None = None,
    **fields: Any,
) -> AsyncTrainer:
    """Make an :class:`AsyncTrainer`. Validates locally; contacts nothing.

    Args:
        config: a :class:`TrainerConfig` or a mapping of fields; or leave it out and pass the
            fields as keywords (snake_case or Arkor camelCase: ``max_steps`` / ``maxSteps``).
        backend: where to run; default: resolved on ``start()`` from ``$ARKOR_BACKEND``.
        callbacks: callbacks by name, ``on_log`` or Arkor's ``onLog`` style; plain functions or
            coroutine functions, each awaited before the next event.
        on_started: called on ``training.started`` with a :class:`StartedContext`.
        on_log: called on ``training.log`` with a :class:`LogContext`.
        on_checkpoint: called on ``checkpoint.saved`` with a :class:`CheckpointContext`.
        on_completed: called on ``training.completed`` with a :class:`CompletedContext`.
        on_failed: called on ``training.failed`` with a :class:`FailedContext`.
        on_cancelled: called on ``training.cancelled`` with a :class:`CancelledContext`.
        on_phase: called on ``job.phase`` updates (pending diagnostics, ``retrying`` after a
            failure the Job retries) with a :class:`PhaseContext`.
        on_resumed: called on ``training.resumed`` (a later attempt took over the run; it
            replaces a second ``on_started``) with a :class:`ResumedContext`.
        abort_signal: an :class:`~arkor_ops.abort.AbortSignal`; aborting makes ``wait()`` raise
            at once and never cancels the run.
        idempotency_key: submitting again with the same key adopts the job made the first time.
        reconnect: the stream reconnect policy; default :class:`ReconnectPolicy()`.
        **fields: config fields, when ``config`` is not given.

    Returns:
        The trainer; nothing has been sent to a backend yet.

    Raises:
        ConfigError: the config is invalid (every bad field path is named).
        TypeError: a callback is unknown, not callable, or given twice; or both ``config``
            and keyword fields were passed.
    """
    cfg = _build(config, fields)
    merged = _merge_callbacks(
        callbacks,
        {
            "on_started": on_started,
            "on_log": on_log,
            "on_checkpoint": on_checkpoint,
            "on_completed": on_completed,
            "on_failed": on_failed,
            "on_cancelled": on_cancelled,
            "on_phase": on_phase,
            "on_resumed": on_resumed,
        },
    )
    return AsyncTrainer(
        cfg,
        backend=backend,
        callbacks=merged,
        abort_signal=abort_signal,
        idempotency_key=idempotency_key,
        reconnect=reconnect,
    )
