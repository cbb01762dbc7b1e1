"""The worker's environment: read and checked before anything heavy is imported.

The variables are :class:`arkor_ops.settings.WorkerEnvSettings` (listed in
``docs/contracts.md``, generated from it); this module turns them into :class:`WorkerSettings`,
which also knows how to re-validate the run's config. A missing or malformed variable raises
:class:`SettingsError` naming it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from arkor_ops.config import TrainerConfig
from arkor_ops.evaluation import EvaluationConfig, is_evaluation
from arkor_ops.settings import (
    CANCEL_ANNOTATION,
    DATASET_URL_ENV,
    DEFAULT_EVENT_LOG,
    SECRET_ENV,
    SettingsError,
    WorkerEnvSettings,
    default_model_cache,
    environ,
    read,
    secret_values,
)
from arkor_ops.settings.worker import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_HUB_ENDPOINT,
    DEFAULT_MAX_DATASET_BYTES,
    DEFAULT_WORK_DIR,
    BackendChoice,
)
from arkor_ops.worker.memory import gpu_memory_gib

__all__ = [
    "DEFAULT_EVENT_LOG",
    "DEFAULT_GRACE_SECONDS",
    "DEFAULT_HUB_ENDPOINT",
    "DEFAULT_MAX_DATASET_BYTES",
    "DEFAULT_WORK_DIR",
    "SECRET_ENV",
    "BackendChoice",
    "SettingsError",
    "WorkerSettings",
    "default_model_cache",
    "load_settings",
]


@dataclass(frozen=True)
class WorkerSettings:
    """The worker's environment, checked."""

    job_id: str
    config_data: dict[str, Any]
    storage_uri: str
    event_log: Path
    work_dir: Path
    model_cache: Path
    cancel_grace_seconds: float
    backend: BackendChoice
    cancel_marker: Path | None = None
    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES
    model_cache_max_bytes: int | None = None
    max_restarts: int | None = None
    hub_endpoint: str = DEFAULT_HUB_ENDPOINT
    hub_offline: bool = False
    hf_token: str | None = field(default=None, repr=False)
    hf_token_setting: str = "HF_TOKEN"
    pod_annotations: Path | None = None
    max_attempts: int = 1
    preflight: bool = False
    gpu_memory_gib: float | None = None
    test_fault_storage_attempts: frozenset[int] = frozenset()
    test_hold_uploads: Path | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def stage(self) -> Literal["training", "evaluation", "preflight"]:
        """What this worker runs: ``kind: evaluation`` in its config, the pre-flight of a
        training run (``ARKOR_PREFLIGHT``), or the training run."""
        if is_evaluation(self.config_data):
            return "evaluation"
        return "preflight" if self.preflight else "training"

    def evaluation_config(self) -> EvaluationConfig:
        """An evaluation job's config, re-validated with the core's model.

        Raises:
            ConfigError: naming every bad field.
        """
        return EvaluationConfig.from_wire(self.config_data, self.env)

    def config(self) -> TrainerConfig:
        """The run's config, re-validated with the core's model (secrets put back from env).

        Raises:
            ConfigError: naming every bad field.
        """
        return TrainerConfig.from_wire(self.config_data, self.env)

    @property
    def cancel_aware(self) -> bool:
        """Whether a SIGTERM can be told apart: a cancel only when :meth:`cancel_requested`."""
        return self.cancel_marker is not None or self.pod_annotations is not None

    def cancel_requested(self) -> bool:
        """Whether the client asked for a cancel.

        On Kubernetes: the pod has the cancel annotation, read from the ``downwardAPI`` file
        ``ARKOR_POD_ANNOTATIONS`` (kubelet's ``key="value"`` lines, refreshed when the
        annotations change). Elsewhere: the file ``ARKOR_CANCEL_MARKER`` exists.
        """
        if self.cancel_marker is not None and self.cancel_marker.exists():
            return True
        if self.pod_annotations is None:
            return False
        try:
            text = self.pod_annotations.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
        return any(line.startswith(f"{CANCEL_ANNOTATION}=") for line in text.splitlines())

    def scrub(self, text: str) -> str:
        """``text`` with every secret value replaced by ``***``."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def _config_data(s: WorkerEnvSettings) -> dict[str, Any]:
    name = "ARKOR_CONFIG_FILE" if s.config_file else "ARKOR_CONFIG_JSON"
    if s.config_file:
        try:
            raw = s.config_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(
                f"ARKOR_CONFIG_FILE={s.config_file} cannot be read: {exc}"
            ) from None
    elif s.config_json:
        raw = s.config_json
    else:
        raise SettingsError(
            "no config: set ARKOR_CONFIG_FILE (a JSON file) or ARKOR_CONFIG_JSON (the config's "
            "wire form)"
        )
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{name} must hold a JSON object, got {type(data).__name__}")
    return data


def load_settings(env: Mapping[str, str] | None = None) -> WorkerSettings:
    """Read and check the worker's environment.

    Args:
        env: the environment (default: this process's).

    Returns:
        The checked settings.

    Raises:
        SettingsError: naming each missing or malformed variable.
    """
    env = dict(environ() if env is None else env)
    s = read(WorkerEnvSettings, env, what="worker environment")
    config_data = _config_data(s)
    values = set(secret_values(4, env))
    values.add(urlsplit(env.get(DATASET_URL_ENV, "")).query)  # the signature alone, too
    secrets = tuple(sorted({v for v in values if len(v) >= 4}, key=len)[::-1])
    return WorkerSettings(
        job_id=s.job_id,
        config_data=config_data,
        storage_uri=s.storage_uri,
        event_log=s.event_log,
        work_dir=s.work_dir,
        model_cache=s.model_cache or default_model_cache(env),
        cancel_grace_seconds=s.cancel_grace_seconds,
        backend=s.trainer_backend,
        cancel_marker=s.cancel_marker,
        max_dataset_bytes=s.max_dataset_bytes,
        model_cache_max_bytes=s.model_cache_max_bytes,
        max_restarts=s.max_restarts,
        hub_endpoint=s.hub_endpoint,
        hub_offline=s.hub_offline,
        hf_token=s.hf_token.get_secret_value() if s.hf_token else None,
        hf_token_setting=s.hf_token_setting,
        pod_annotations=s.pod_annotations,
        max_attempts=s.max_attempts,
        preflight=s.preflight,
        gpu_memory_gib=s.gpu_memory_gib or gpu_memory_gib(s.gpu_type),
        test_fault_storage_attempts=s.fault_attempts(),
        test_hold_uploads=s.test_hold_uploads,
        secrets=secrets,
        env=env,
    )
