"""Errors of the worker, and which exit code each one maps to (see ``docs/contracts.md``).

Exit code 2 means the run can never succeed as configured, so Kubernetes must not retry it;
1 is anything else (retryable)::

    ArkorOpsError
    ├── ConfigError        (core)  bad config                                   -> 2
    ├── CheckpointError    (core)  checkpoint does not match the run            -> 2
    ├── StorageError       (core)  storage unreachable                          -> 1
    └── WorkerError                a worker failure                             -> 1
        ├── DatasetError           bad rows, dataset 401/403/404, bad format    -> 2
        ├── ModelError             the base model cannot be found or loaded     -> 2
        ├── RestartLimitError      the pod restarted more than allowed          -> 2
        └── HubAccessError         the hub refused: gated, no such repo, revision,
                                   split or subset, a refused token             -> 2
"""

from __future__ import annotations

from arkor_ops.errors import ArkorOpsError, CheckpointError, ConfigError

EXIT_OK = 0
EXIT_RETRYABLE = 1
EXIT_PERMANENT = 2
#: Longest error text a ``training.failed`` event (and the log line beside it) carries.
MAX_ERROR_CHARS = 2000


def excerpt(value: object, limit: int = 80, *, quote: bool = True) -> str:
    """``repr(value)`` (or ``str`` with ``quote=False``) cut to about ``limit`` characters.

    Errors quote rows and values through this, so a 2 MB bad row yields a short message.
    """
    text = repr(value) if quote else str(value)
    if len(text) <= limit:
        return text
    return f"{text[: max(limit - 30, 10)]}... ({len(text)} characters)"


class WorkerError(ArkorOpsError):
    """A failure of the training worker."""


class DatasetError(WorkerError):
    """The dataset cannot be fetched or holds bad rows; retrying will not help."""


class ModelError(WorkerError):
    """The base model cannot be resolved or loaded; retrying will not help."""


class RestartLimitError(WorkerError):
    """The run's pod was restarted more often than allowed (``ARKOR_MAX_RESTARTS``)."""


class HubAccessError(WorkerError):
    """The Hugging Face Hub refused the repo, revision or token; retrying will not help."""


def exit_code_for(exc: BaseException) -> int:
    """The worker's exit code for a failure."""
    from arkor_ops.worker.settings import SettingsError

    permanent = ConfigError | CheckpointError | DatasetError | ModelError | RestartLimitError
    if isinstance(exc, permanent | HubAccessError | SettingsError):
        return EXIT_PERMANENT
    return EXIT_RETRYABLE
