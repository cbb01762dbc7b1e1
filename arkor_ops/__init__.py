"""arkor-ops: Arkor's trainer API in Python, on your own Kubernetes cluster.

The public API is :data:`__all__`; everything else is private. ``LocalBackend`` and
``KubernetesBackend`` are imported on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from arkor_ops.abort import AbortController, AbortError, AbortSignal
from arkor_ops.backends import resolve_backend
from arkor_ops.backends.base import Backend, JobDescription, TrainingJob
from arkor_ops.chat import AsyncChatStream, ChatStream
from arkor_ops.checkpoints import CheckpointInfo
from arkor_ops.config import TrainerConfig, config_json_schema, validate_config
from arkor_ops.errors import (
    ArkorOpsError,
    BackendError,
    CheckpointError,
    CheckpointUnavailableError,
    ConfigError,
    InferenceError,
    InferRequestError,
    JobNotFoundError,
    PermissionDeniedError,
    PreflightFailedError,
    QuotaExceededError,
    ReconnectGiveUpError,
    StorageError,
    StreamError,
)
from arkor_ops.evaluation import EvaluationConfig, validate_evaluation_config
from arkor_ops.evaluator import (
    AsyncEvaluator,
    EvaluationResult,
    Evaluator,
    create_async_evaluator,
    create_evaluator,
)
from arkor_ops.events import (
    Artifact,
    CheckpointSaved,
    CheckpointSkipped,
    EvaluationCancelled,
    EvaluationCompleted,
    EvaluationFailed,
    EvaluationProgress,
    EvaluationStarted,
    Event,
    JobPhase,
    Metrics,
    PreflightPassed,
    TrainingCancelled,
    TrainingCompleted,
    TrainingFailed,
    TrainingLog,
    TrainingResumed,
    TrainingStarted,
    parse_event,
)
from arkor_ops.inference import ChatCompletion, ChatCompletionChunk
from arkor_ops.trainer import (
    AsyncTrainer,
    CancelledContext,
    CheckpointContext,
    CompletedContext,
    FailedContext,
    LogContext,
    PhaseContext,
    ReconnectPolicy,
    ResumedContext,
    StartedContext,
    StartResult,
    Trainer,
    TrainingResult,
    create_async_trainer,
    create_trainer,
)

__version__ = "0.1.0"

_LAZY = {
    "LocalBackend": "arkor_ops.backends.local",
    "KubernetesBackend": "arkor_ops.backends.kubernetes",
}

__all__ = [
    "AbortController",
    "AbortError",
    "AbortSignal",
    "ArkorOpsError",
    "Artifact",
    "AsyncChatStream",
    "AsyncEvaluator",
    "AsyncTrainer",
    "Backend",
    "BackendError",
    "CancelledContext",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatStream",
    "CheckpointContext",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointSaved",
    "CheckpointSkipped",
    "CheckpointUnavailableError",
    "CompletedContext",
    "ConfigError",
    "EvaluationCancelled",
    "EvaluationCompleted",
    "EvaluationConfig",
    "EvaluationFailed",
    "EvaluationProgress",
    "EvaluationResult",
    "EvaluationStarted",
    "Evaluator",
    "Event",
    "FailedContext",
    "InferRequestError",
    "InferenceError",
    "JobDescription",
    "JobNotFoundError",
    "JobPhase",
    "KubernetesBackend",
    "LocalBackend",
    "LogContext",
    "Metrics",
    "PermissionDeniedError",
    "PhaseContext",
    "PreflightFailedError",
    "PreflightPassed",
    "QuotaExceededError",
    "ReconnectGiveUpError",
    "ReconnectPolicy",
    "ResumedContext",
    "StartResult",
    "StartedContext",
    "StorageError",
    "StreamError",
    "Trainer",
    "TrainerConfig",
    "TrainingCancelled",
    "TrainingCompleted",
    "TrainingFailed",
    "TrainingJob",
    "TrainingLog",
    "TrainingResult",
    "TrainingResumed",
    "TrainingStarted",
    "__version__",
    "config_json_schema",
    "create_async_evaluator",
    "create_async_trainer",
    "create_evaluator",
    "create_trainer",
    "parse_event",
    "resolve_backend",
    "validate_config",
    "validate_evaluation_config",
]


def __getattr__(name: str) -> Any:
    """Import the backends on first access, so ``import arkor_ops`` stays light."""
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
