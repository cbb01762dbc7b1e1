"""The trainer: ``create_trainer`` → ``start()`` / ``wait()`` / ``cancel()``, as in Arkor.

- ``asynchronous``: :class:`AsyncTrainer` and :func:`create_async_trainer` (submit once, follow
  the stream, dispatch the callbacks, reconnect);
- ``blocking``: :class:`Trainer` and :func:`create_trainer`, the blocking twin, derived from the
  async one.

The abort scope that turns an :class:`~arkor_ops.abort.AbortSignal` into a prompt cancellation of
``wait()`` lives with the signal, in :mod:`arkor_ops.abort`.
"""

from arkor_ops.reconnect import ReconnectPolicy
from arkor_ops.results import (
    CancelledContext,
    CheckpointContext,
    CompletedContext,
    FailedContext,
    LogContext,
    PhaseContext,
    ResumedContext,
    StartedContext,
    StartResult,
    TrainingResult,
)
from arkor_ops.trainer.asynchronous import AsyncTrainer, create_async_trainer
from arkor_ops.trainer.blocking import Trainer, create_trainer

__all__ = [
    "AsyncTrainer",
    "CancelledContext",
    "CheckpointContext",
    "CompletedContext",
    "FailedContext",
    "LogContext",
    "PhaseContext",
    "ReconnectPolicy",
    "ResumedContext",
    "StartResult",
    "StartedContext",
    "Trainer",
    "TrainingResult",
    "create_async_trainer",
    "create_trainer",
]
