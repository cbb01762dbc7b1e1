"""What ``start()``/``wait()`` return and what each lifecycle callback receives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypedDict

from arkor_ops.backends.base import TrainingJob
from arkor_ops.events import Artifact, Metrics, Phase


@dataclass(frozen=True)
class StartResult:
    """What ``start()`` returns."""

    job_id: str


@dataclass(frozen=True)
class TrainingResult:
    """What ``wait()`` returns: the final job snapshot and what the run produced.

    Check ``job.status``: a failed run returns normally with ``status == "failed"``.
    """

    job: TrainingJob
    artifacts: list[Artifact] = field(default_factory=list)
    metrics: Metrics | None = None


@dataclass(frozen=True)
class StartedContext:
    """``on_started``: training began (``job.status`` is already ``running``)."""

    job: TrainingJob


@dataclass(frozen=True)
class ResumedContext:
    """``on_resumed``: a later attempt took over the run (a replacement pod after a loss, a
    disruption or a retried failure); ``on_started`` is not called again.

    ``step`` is the committed checkpoint it resumes from (0: from the start); ``on_log`` steps
    above it are re-done and replace the earlier values for those steps.
    """

    job: TrainingJob
    step: int
    reason: str
    attempt: int


@dataclass(frozen=True)
class LogContext:
    """``on_log``: step metrics; missing metrics are ``None``."""

    job: TrainingJob
    step: int
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    epoch: float | None = None
    samples_per_second: float | None = None


@dataclass(frozen=True)
class CheckpointContext:
    """``on_checkpoint``: a checkpoint was committed.

    ``adapter`` is ``{"kind": "checkpoint", "jobId": ..., "step": ...}``, bound to this checkpoint.
    """

    job: TrainingJob
    step: int
    artifacts: list[Artifact]
    adapter: dict[str, Any]


@dataclass(frozen=True)
class CompletedContext:
    """``on_completed``: the run finished (``job.status`` is ``completed``)."""

    job: TrainingJob
    artifacts: list[Artifact]
    metrics: Metrics | None = None


@dataclass(frozen=True)
class FailedContext:
    """``on_failed``: the run failed; ``step`` is None when training never began."""

    job: TrainingJob
    error: str
    step: int | None = None


@dataclass(frozen=True)
class CancelledContext:
    """``on_cancelled``: the run stopped because it was asked to."""

    job: TrainingJob
    step: int | None = None
    checkpoint: Artifact | None = None


@dataclass(frozen=True)
class PhaseContext:
    """``on_phase``: the backend explains why the run is not training (yet).

    ``phase`` is one of :data:`~arkor_ops.events.Phase`, or a newer server's phase as a str.
    """

    job: TrainingJob
    phase: Phase | str
    reason: str | None = None
    message: str | None = None
    hint: str | None = None


#: What a callback returns: nothing, or an awaitable that ``wait()`` awaits before reading on.
CallbackResult: TypeAlias = Awaitable[None] | None

OnStarted: TypeAlias = Callable[[StartedContext], CallbackResult]
OnLog: TypeAlias = Callable[[LogContext], CallbackResult]
OnCheckpoint: TypeAlias = Callable[[CheckpointContext], CallbackResult]
OnCompleted: TypeAlias = Callable[[CompletedContext], CallbackResult]
OnFailed: TypeAlias = Callable[[FailedContext], CallbackResult]
OnCancelled: TypeAlias = Callable[[CancelledContext], CallbackResult]
OnPhase: TypeAlias = Callable[[PhaseContext], CallbackResult]
OnResumed: TypeAlias = Callable[[ResumedContext], CallbackResult]

#: Any one of the callbacks above (a mapping of callbacks by name holds these).
Callback: TypeAlias = (
    OnStarted | OnLog | OnCheckpoint | OnCompleted | OnFailed | OnCancelled | OnPhase | OnResumed
)


class Observers(TypedDict, total=False):
    """The callbacks ``observing()`` takes, by name (each optional)."""

    on_started: OnStarted
    on_log: OnLog
    on_checkpoint: OnCheckpoint
    on_completed: OnCompleted
    on_failed: OnFailed
    on_cancelled: OnCancelled
    on_phase: OnPhase
    on_resumed: OnResumed


#: Callback names, snake_case → Arkor's camelCase.
CALLBACK_NAMES: dict[str, str] = {
    "on_started": "onStarted",
    "on_log": "onLog",
    "on_checkpoint": "onCheckpoint",
    "on_completed": "onCompleted",
    "on_failed": "onFailed",
    "on_cancelled": "onCancelled",
    "on_phase": "onPhase",
    "on_resumed": "onResumed",
}
CAMEL_TO_SNAKE = {camel: snake for snake, camel in CALLBACK_NAMES.items()}
