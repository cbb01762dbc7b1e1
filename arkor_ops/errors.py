"""Errors raised by arkor-ops.

Every error the library raises on purpose derives from :class:`ArkorOpsError`::

    ArkorOpsError
    ├── ConfigError              a trainer config is invalid (names each bad field path)
    ├── InferRequestError        ``ctx.infer()``'s arguments are invalid (names each field;
    │                            also a ``ValueError``)
    ├── BackendError             a backend could not do what was asked
    │   ├── JobNotFoundError     the run does not exist (404)
    │   ├── PermissionDeniedError  the credentials may not do this (401/403)
    │   ├── QuotaExceededError   a quota or limit refused the request
    │   ├── StreamError          the event stream could not be opened or broke off
    │   └── InferenceError       ``ctx.infer()`` got no answer (the sidecar or worker failed)
    │       └── CheckpointUnavailableError  the worker no longer holds that checkpoint, or
    │                            the run ended (names the job and step, and what to do)
    ├── StorageError             reading or writing s3:// or file:// storage failed
    ├── CheckpointError          a checkpoint is missing, uncommitted or does not match the run
    ├── RegistryError            registering an adapter in MLflow failed (the adapter stays put)
    │   └── ModelNotFoundError   no such registered model or version
    ├── ServingError             an endpoint's engine could not start, load or swap a version
    │                            (the version serving before keeps serving)
    ├── ReconnectGiveUpError     wait() gave up after too many consecutive stream failures
    ├── SettingsError            an environment variable is missing or bad, named (in
    │                            :mod:`arkor_ops.settings`; also a ``ValueError``)
    └── AbortError               wait() stopped by its abort signal (in :mod:`arkor_ops.abort`)

Callback exceptions are never wrapped: ``wait()`` re-raises exactly what a callback raised.
"""

from __future__ import annotations

from collections.abc import Sequence


class ArkorOpsError(Exception):
    """Base class of every error arkor-ops raises on purpose."""


class ConfigError(ArkorOpsError, ValueError):
    """A trainer config failed validation.

    Attributes:
        problems: ``(field path, message)`` pairs, one per bad field,
            e.g. ``("lora.r", "must be > 0")``.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        lines = [f"  {path or '<root>'}: {msg}" for path, msg in self.problems]
        super().__init__("invalid trainer config:\n" + "\n".join(lines))


class InferRequestError(ArkorOpsError, ValueError):
    """``ctx.infer()``'s arguments failed validation (nothing was sent).

    Attributes:
        problems: ``(field path, message)`` pairs, e.g. ``("response_format.type", ...)``.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        lines = [f"  {path or '<root>'}: {msg}" for path, msg in self.problems]
        super().__init__("invalid infer() arguments:\n" + "\n".join(lines))


class BackendError(ArkorOpsError):
    """A backend (Kubernetes, local processes, fake) failed to do what was asked.

    Attributes:
        status: the HTTP status behind the failure, when there was one.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class JobNotFoundError(BackendError):
    """The run (Job, process, stream) does not exist."""


class PermissionDeniedError(BackendError):
    """The credentials in use may not perform this operation."""


class QuotaExceededError(BackendError):
    """A resource quota or limit refused the request."""


class PreflightFailedError(BackendError):
    """The run's CPU pre-flight found what would fail it (a bad row, a gated or missing model,
    a chat template that cannot mask): no GPU Job was created. Retrying cannot help."""


class StreamError(BackendError):
    """The event stream could not be opened or broke off.

    Attributes:
        retryable: whether the reconnect policy retries it (404/408/429/5xx and network errors)
            or treats it as fatal (401/403/410/426).
    """

    FATAL_STATUSES = frozenset({401, 403, 410, 426})

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.retryable = status not in self.FATAL_STATUSES


class InferenceError(BackendError):
    """``ctx.infer()`` got no answer: the sidecar or the worker refused or failed."""


class CheckpointUnavailableError(InferenceError):
    """The worker cannot answer for this checkpoint: the run ended (the worker that held the
    model is gone) or the worker no longer holds that step's weights (it keeps the last few).

    Attributes:
        job_id: the run.
        step: the checkpoint asked for.
        reason: ``run_ended`` or ``checkpoint_not_held``.
    """

    def __init__(
        self, job_id: str, step: int, reason: str, detail: str = "", *, status: int | None = None
    ) -> None:
        self.job_id = job_id
        self.step = step
        self.reason = reason
        if reason == "run_ended":
            what = f"run {job_id} has ended, so no worker holds checkpoint step {step} any more"
        else:
            what = f"the worker of run {job_id} no longer holds checkpoint step {step}"
        todo = (
            "infer() answers only while the run trains, for its newest checkpoints; to query "
            "this one later, evaluate its committed adapter (create_evaluator) or start a run "
            "from it (init_adapter)"
        )
        message = f"{what}: {todo}" + (f" ({detail})" if detail else "")
        super().__init__(message, status=status)


class StorageError(ArkorOpsError):
    """Reading or writing run storage (``s3://`` or ``file://``) failed."""


class CheckpointError(ArkorOpsError):
    """A checkpoint is missing, not committed, or was made for another config or dataset."""


class RegistryError(ArkorOpsError):
    """Registering a run's adapter in MLflow failed: the tracking server refused or could not
    be reached, or the adapter is not committed. The adapter in run storage is never touched."""


class ModelNotFoundError(RegistryError):
    """The registered model, or the version of it, does not exist in MLflow."""


class ServingError(ArkorOpsError):
    """An endpoint's engine could not start, load or swap a version (the old one keeps serving)."""


class ReconnectGiveUpError(ArkorOpsError):
    """``wait()`` gave up after ``max_reconnect_attempts`` consecutive stream failures."""
