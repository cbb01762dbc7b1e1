"""The public API is arkor_ops.__all__, pinned here; the core stays free of the ML stack."""

from __future__ import annotations

import subprocess
import sys

import pytest

import arkor_ops
from arkor_ops import BackendError
from arkor_ops.backends import resolve_backend

EXPECTED = [
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


def test_all_is_pinned_and_sorted():
    assert arkor_ops.__all__ == EXPECTED
    assert sorted(arkor_ops.__all__) == arkor_ops.__all__
    assert arkor_ops.__version__ == "0.1.0"


def test_every_eager_name_resolves():
    for name in set(EXPECTED) - {"LocalBackend", "KubernetesBackend"}:
        assert getattr(arkor_ops, name) is not None


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = arkor_ops.Nope


def test_importing_the_package_does_not_import_the_ml_stack_or_prefect():
    code = (
        "import sys, arkor_ops, arkor_ops.testing, arkor_ops.cli;"
        "bad = {'torch','transformers','trl','peft','datasets','unsloth','prefect','accelerate'};"
        "print(sorted(bad & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_resolve_backend_rejects_unknown_names(monkeypatch):
    with pytest.raises(BackendError, match="unknown backend 'slurm'; choose one of"):
        resolve_backend("slurm")
    monkeypatch.setenv("ARKOR_BACKEND", "nomad")
    with pytest.raises(BackendError, match=r"'nomad' \(from \$ARKOR_BACKEND\)"):
        resolve_backend()


def test_resolve_backend_explains_a_missing_backend_module(monkeypatch):
    from arkor_ops import backends

    monkeypatch.setitem(backends._BACKENDS, "local", ("arkor_ops.backends._absent", "X"))
    with pytest.raises(BackendError, match="'local' backend is not available"):
        resolve_backend("local")


def test_trainer_resolves_its_backend_lazily(monkeypatch):
    """create_trainer contacts nothing; the backend is resolved when first needed."""
    monkeypatch.setenv("ARKOR_BACKEND", "no-such-backend")
    trainer = arkor_ops.create_trainer(
        name="n", model="m", dataset={"type": "file", "path": "d.jsonl"}
    )
    with pytest.raises(BackendError, match="no-such-backend"):
        trainer.start()
