"""Evaluate an adapter: ``create_evaluator(...)`` → ``start()`` / ``wait()`` / ``cancel()``.

The evaluation twin of :mod:`arkor_ops.trainer`, kept small: the config is validated here
(every bad field named before any job exists), the backend runs the job
(:meth:`~arkor_ops.backends.base.Backend.submit_evaluation`), and ``wait()`` follows its event
stream with the trainer's reconnect policy, awaiting each callback before the next event:
``on_started``, ``on_progress`` and then one of ``on_completed``, ``on_failed``,
``on_cancelled``, each given the typed event. While the job waits (queued, unschedulable, pulling
the image, …) ``on_phase`` gets the trainer's :class:`~arkor_ops.results.PhaseContext` for each
``job.phase`` update, so a pending evaluation is never silent. A failed evaluation returns a
result whose status is ``failed`` (as a failed run does); a callback that raises makes
``wait()`` raise it.

``evaluator.samples()`` reads the committed per-sample results (``samples.jsonl``) back, so a
person can see which answers missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from arkor_ops.backends import BackendSlot
from arkor_ops.backends.base import Backend, TrainingJob
from arkor_ops.blocking import BlockingTwin
from arkor_ops.checkpoints import check_adapter_ref
from arkor_ops.closing import AsyncClosing
from arkor_ops.errors import StreamError
from arkor_ops.evaluation import EvaluationConfig, validate_evaluation_config
from arkor_ops.events import (
    EvaluationCancelled,
    EvaluationCompleted,
    EvaluationFailed,
    EvaluationProgress,
    EvaluationStarted,
    Event,
    JobPhase,
)
from arkor_ops.follow import follow
from arkor_ops.reconnect import ReconnectPolicy
from arkor_ops.results import OnPhase, PhaseContext
from arkor_ops.storage import join_uri

logger = logging.getLogger(__name__)
T = TypeVar("T")
#: One callback per event: each gets that event, and may return an awaitable to be awaited.
OnEvaluationStarted = Callable[[EvaluationStarted], Awaitable[None] | None]
OnEvaluationProgress = Callable[[EvaluationProgress], Awaitable[None] | None]
OnEvaluationCompleted = Callable[[EvaluationCompleted], Awaitable[None] | None]
OnEvaluationFailed = Callable[[EvaluationFailed], Awaitable[None] | None]
OnEvaluationCancelled = Callable[[EvaluationCancelled], Awaitable[None] | None]
#: Any of them, or the trainer's ``on_phase`` (``callbacks=`` maps ``on_started`` …
#: ``on_cancelled`` and ``on_phase`` to these).
EvaluationCallback = (
    OnEvaluationStarted
    | OnEvaluationProgress
    | OnEvaluationCompleted
    | OnEvaluationFailed
    | OnEvaluationCancelled
    | OnPhase
)
#: The callback names, snake_case → camelCase (either is accepted, as the trainer's are).
CALLBACK_NAMES = {
    "on_started": "onStarted",
    "on_progress": "onProgress",
    "on_completed": "onCompleted",
    "on_failed": "onFailed",
    "on_cancelled": "onCancelled",
    "on_phase": "onPhase",
}
_SNAKE = {camel: snake for snake, camel in CALLBACK_NAMES.items()}


def _named(callbacks: Mapping[str, EvaluationCallback] | None) -> dict[str, EvaluationCallback]:
    """``callbacks`` by snake_case name.

    Raises:
        ValueError: a name is unknown, or given twice (``on_phase`` and ``onPhase``).
    """
    named: dict[str, EvaluationCallback] = {}
    for key, fn in (callbacks or {}).items():
        name = _SNAKE.get(key, key)
        if name not in CALLBACK_NAMES:
            raise ValueError(f"unknown callback {key}; one of {tuple(CALLBACK_NAMES)}")
        if name in named:
            raise ValueError(f"callback {name} given twice ({key})")
        named[name] = fn
    return named


@dataclass(frozen=True)
class EvaluationResult:
    """How an evaluation ended: the job (its ``status``), the metrics and where results are."""

    job: TrainingJob
    metrics: dict[str, float | None] = field(default_factory=dict)
    samples: int | None = None
    uri: str | None = None
    error: str | None = None

    @property
    def status(self) -> str:
        """``completed``, ``failed`` or ``cancelled``."""
        return self.job.status


class AsyncEvaluator(AsyncClosing):
    """One evaluation job. Made by :func:`create_async_evaluator`.

    An async context manager that closes the backend it resolved itself (:meth:`aclose`), as
    :class:`~arkor_ops.trainer.AsyncTrainer` does.
    """

    def __init__(
        self,
        config: EvaluationConfig,
        *,
        backend: Backend | None = None,
        callbacks: Mapping[str, EvaluationCallback] | None = None,
        idempotency_key: str | None = None,
        reconnect: ReconnectPolicy | None = None,
    ) -> None:
        self._config = config
        self._backend = BackendSlot(backend)
        self._callbacks = _named(callbacks)
        self._idempotency_key = idempotency_key
        self._reconnect = reconnect or ReconnectPolicy()
        self._job: TrainingJob | None = None
        self._lock = asyncio.Lock()

    @property
    def config(self) -> EvaluationConfig:
        """The validated config."""
        return self._config

    @property
    def job_id(self) -> str | None:
        """The job id (``None`` before ``start()``)."""
        return None if self._job is None else self._job.id

    @property
    def backend(self) -> Backend:
        """The backend, resolved on first use from ``$ARKOR_BACKEND`` when none was given."""
        return self._backend.get()

    async def aclose(self) -> None:
        """Close the backend if this evaluator resolved it itself (a backend given to it is the
        giver's to close). The job is left alone; a later call resolves a new backend."""
        await self._backend.aclose()

    async def start(self) -> str:
        """Submit the job once; later calls return the same job id.

        Raises:
            CheckpointError: ``adapter`` names no committed adapter, or another base model's
                (checked here when the backend's storage is reachable, before any job exists).
            BackendError: the backend could not create the job, or runs no evaluations.
        """
        async with self._lock:
            if self._job is None:
                adapter = self._config.adapter
                if adapter is not None:  # no job for a ref to nothing or to another model's
                    await check_adapter_ref(
                        self.backend, adapter, self._config.model, self._config.revision, "adapter"
                    )
                self._job = await self.backend.submit_evaluation(
                    self._config, idempotency_key=self._idempotency_key
                )
                logger.info("submitted evaluation %s as job %s", self._config.name, self._job.id)
            return self._job.id

    async def cancel(self, *, wait: bool = True) -> None:
        """Ask the backend to stop the job; a no-op before ``start()`` (``wait``: as for
        ``Backend.cancel``)."""
        if self._job is None:
            return
        if wait:
            await self.backend.cancel(self._job.id)
        else:
            await self.backend.cancel(self._job.id, wait=False)

    async def wait(self) -> EvaluationResult:
        """Start if needed, follow the events, fire callbacks, return at the terminal event.

        Raises:
            StreamError: the stream failed with a fatal status.
            ReconnectGiveUpError: ``max_attempts`` consecutive stream failures.
            Exception: whatever a callback raised, unchanged.
        """
        job_id = await self.start()
        frames = follow(
            lambda after: self.backend.events(job_id, after),
            policy=self._reconnect,
            name="evaluation stream",
        )
        async with contextlib.aclosing(frames):
            async for frame in frames:
                if frame.is_end or not frame.data:
                    continue
                result = await self._dispatch(frame.parsed)
                if result is not None:
                    return result
        raise StreamError(f"the event stream of {job_id} ended before the evaluation did")

    async def _call(self, name: str, event: Any) -> None:
        callback = self._callbacks.get(name)
        if callback is not None:
            outcome = callback(event)
            if inspect.isawaitable(outcome):
                await outcome

    async def _dispatch(self, event: Event | None) -> EvaluationResult | None:
        if isinstance(event, EvaluationStarted):
            await self._call("on_started", event)
        elif isinstance(event, EvaluationProgress):
            await self._call("on_progress", event)
        elif isinstance(event, JobPhase) and self._job is not None:
            phase = PhaseContext(
                job=self._job,
                phase=event.phase,
                reason=event.reason,
                message=event.message,
                hint=event.hint,
            )
            await self._call("on_phase", phase)
        elif isinstance(event, EvaluationCompleted | EvaluationFailed | EvaluationCancelled):
            job = (await self.backend.describe(event.job_id or str(self.job_id))).job
            self._job = job
            if isinstance(event, EvaluationCompleted):
                await self._call("on_completed", event)
                return EvaluationResult(
                    job=job, metrics=event.metrics, samples=event.samples, uri=event.uri
                )
            if isinstance(event, EvaluationFailed):
                await self._call("on_failed", event)
                return EvaluationResult(job=job, error=event.error)
            await self._call("on_cancelled", event)
            return EvaluationResult(job=job, samples=event.done)
        return None

    async def samples(self) -> list[dict[str, Any]]:
        """The committed per-sample results: prompt, reference, answer, scores, loss.

        Raises:
            BackendError: no job yet, the backend keeps no storage, or nothing is committed.
        """
        from arkor_ops.errors import BackendError, StorageError

        if self._job is None:
            raise BackendError("the evaluation has not started")
        storage, layout = await self.backend.run_storage(self._job.id)
        try:
            blob = await asyncio.to_thread(
                storage.get_bytes, join_uri(layout.evaluation, "samples.jsonl")
            )
        except StorageError as exc:
            raise BackendError(f"no results committed for {self._job.id}: {exc}") from exc
        return [json.loads(line) for line in blob.decode("utf-8").splitlines() if line]


class Evaluator(BlockingTwin[AsyncEvaluator]):
    """Blocking twin of :class:`AsyncEvaluator` (its coroutines run on a private loop thread,
    as :class:`~arkor_ops.trainer.Trainer`'s do). Made by :func:`create_evaluator`; a context
    manager that closes it (:meth:`close`)."""

    def __init__(self, inner: AsyncEvaluator) -> None:
        super().__init__(inner, "arkor-ops-evaluator-loop")

    @property
    def job_id(self) -> str | None:
        """The job id (``None`` before ``start()``)."""
        return self._inner.job_id

    @property
    def async_evaluator(self) -> AsyncEvaluator:
        """The :class:`AsyncEvaluator` this object drives."""
        return self._inner

    def start(self) -> str:
        """Blocking :meth:`AsyncEvaluator.start`."""
        return self._run(self._inner.start())

    def wait(self) -> EvaluationResult:
        """Blocking :meth:`AsyncEvaluator.wait`."""
        return self._run(self._inner.wait())

    def cancel(self) -> None:
        """Blocking :meth:`AsyncEvaluator.cancel`."""
        self._run(self._inner.cancel())

    def samples(self) -> list[dict[str, Any]]:
        """Blocking :meth:`AsyncEvaluator.samples`."""
        return self._run(self._inner.samples())


def create_async_evaluator(
    *,
    backend: Backend | None = None,
    callbacks: Mapping[str, EvaluationCallback] | None = None,
    on_phase: OnPhase | None = None,
    idempotency_key: str | None = None,
    reconnect: ReconnectPolicy | None = None,
    **fields: Any,
) -> AsyncEvaluator:
    """An :class:`AsyncEvaluator` for the config ``fields`` (``name``, ``model``, ``adapter``,
    ``evaluation``; snake_case or camelCase).

    Args:
        backend: where the job runs; default: resolved on ``start()`` from ``$ARKOR_BACKEND``.
        callbacks: ``on_started``, ``on_progress``, ``on_completed``, ``on_failed``,
            ``on_cancelled`` (each given its event) and ``on_phase``, by name (or camelCase,
            ``onPhase``); plain functions or coroutine functions, each awaited in turn.
        on_phase: called on ``job.phase`` updates while the job waits (queued, unschedulable,
            pulling the image, …) with the trainer's :class:`~arkor_ops.results.PhaseContext`.
        idempotency_key: submitting again with the same key adopts the job made the first time.
        reconnect: the stream reconnect policy; default :class:`ReconnectPolicy()`.
        **fields: the config fields.

    Raises:
        ConfigError: naming every bad field, before any job is created.
        ValueError: a callback name is unknown, or ``on_phase`` is given twice.
    """
    config = validate_evaluation_config(fields)
    named = _named(callbacks)
    if on_phase is not None:
        if "on_phase" in named:
            raise ValueError("callback on_phase given both in callbacks= and as on_phase=")
        named["on_phase"] = on_phase
    return AsyncEvaluator(
        config,
        backend=backend,
        callbacks=named,
        idempotency_key=idempotency_key,
        reconnect=reconnect,
    )


def create_evaluator(
    *,
    backend: Backend | None = None,
    callbacks: Mapping[str, EvaluationCallback] | None = None,
    on_phase: OnPhase | None = None,
    idempotency_key: str | None = None,
    reconnect: ReconnectPolicy | None = None,
    **fields: Any,
) -> Evaluator:
    """The blocking :class:`Evaluator`; arguments as :func:`create_async_evaluator`.

    Raises:
        ConfigError: naming every bad field, before any job is created.
        ValueError: a callback name is unknown, or ``on_phase`` is given twice.
    """
    return Evaluator(
        create_async_evaluator(
            backend=backend,
            callbacks=callbacks,
            on_phase=on_phase,
            idempotency_key=idempotency_key,
            reconnect=reconnect,
            **fields,
        )
    )
