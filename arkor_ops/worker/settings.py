"""The worker's environment: read and checked before anything heavy is imported.

Every variable the worker reads is listed in :mod:`arkor_ops.worker.__main__` and
``docs/contracts.md``. A missing or malformed one raises :class:`SettingsError` naming it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from arkor_ops.backends.kubernetes.manifests import CANCEL_ANNOTATION
from arkor_ops.config import DATASET_TOKEN_ENV, DATASET_URL_ENV, TrainerConfig
from arkor_ops.errors import ArkorOpsError
from arkor_ops.evaluation import EvaluationConfig, is_evaluation

BackendChoice = Literal["auto", "unsloth", "trl"]

DEFAULT_EVENT_LOG = "/var/run/arkor/events.jsonl"
DEFAULT_WORK_DIR = "/tmp/arkor-work"  # noqa: S108 - the documented default scratch dir
DEFAULT_GRACE_SECONDS = 20.0
DEFAULT_MAX_DATASET_BYTES = 2 << 30  # 2 GiB: rows are held in memory; see docs/worker.md
DEFAULT_HUB_ENDPOINT = "https://huggingface.co"
_TRUE = frozenset({"1", "true", "yes", "on"})

#: Variables whose values are secrets: never logged, scrubbed from every event.
SECRET_ENV = (
    DATASET_TOKEN_ENV,
    DATASET_URL_ENV,
    "HF_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


class SettingsError(ArkorOpsError):
    """The worker's environment is missing a variable or holds a bad value (names it)."""


def default_model_cache() -> Path:
    """``~/.cache/arkor-ops/models`` (``$XDG_CACHE_HOME`` respected)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "arkor-ops" / "models"


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
    max_restarts: int | None = None
    hub_endpoint: str = DEFAULT_HUB_ENDPOINT
    hub_offline: bool = False
    hf_token: str | None = field(default=None, repr=False)
    hf_token_setting: str = "HF_TOKEN"
    pod_annotations: Path | None = None
    max_attempts: int = 1
    test_fault_storage_attempts: frozenset[int] = frozenset()
    test_hold_uploads: Path | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def stage(self) -> Literal["training", "evaluation"]:
        """What this worker runs, from its config: ``kind: evaluation`` or a training run."""
        return "evaluation" if is_evaluation(self.config_data) else "training"

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


def _require(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"{name} is not set: {_HELP[name]}")
    return value


_HELP = {
    "ARKOR_JOB_ID": "the run's id (the Job name on Kubernetes)",
    "ARKOR_STORAGE_URI": "where the run lives, s3://bucket/prefix or file:///path",
    "ARKOR_CONFIG_FILE": (
        "set ARKOR_CONFIG_FILE (a JSON file) or ARKOR_CONFIG_JSON (the config's wire form)"
    ),
}


def _config_data(env: Mapping[str, str]) -> dict[str, Any]:
    path = env.get("ARKOR_CONFIG_FILE", "").strip()
    raw = env.get("ARKOR_CONFIG_JSON", "").strip()
    name = "ARKOR_CONFIG_FILE" if path else "ARKOR_CONFIG_JSON"
    if path:
        try:
            raw = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"ARKOR_CONFIG_FILE={path} cannot be read: {exc}") from None
    elif not raw:
        raise SettingsError(f"no config: {_HELP['ARKOR_CONFIG_FILE']}")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{name} must hold a JSON object, got {type(data).__name__}")
    return data


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 1:
        raise SettingsError(f"{name} must be at least 1, got {value}")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> WorkerSettings:
    """Read and check the worker's environment.

    Args:
        env: the environment (default ``os.environ``).

    Returns:
        The checked settings.

    Raises:
        SettingsError: naming the first missing or malformed variable.
    """
    env = dict(os.environ if env is None else env)
    job_id = _require(env, "ARKOR_JOB_ID")
    if not _JOB_ID.match(job_id):
        raise SettingsError(f"ARKOR_JOB_ID={job_id!r} is not a valid run id (letters, digits, .-_)")
    storage_uri = _require(env, "ARKOR_STORAGE_URI")
    if not storage_uri.startswith(("s3://", "file://")):
        raise SettingsError(
            f"ARKOR_STORAGE_URI must start with s3:// or file://, got {storage_uri!r}"
        )
    config_data = _config_data(env)
    grace_raw = env.get("ARKOR_CANCEL_GRACE_SECONDS", "").strip()
    try:
        grace = float(grace_raw) if grace_raw else DEFAULT_GRACE_SECONDS
    except ValueError:
        raise SettingsError(
            f"ARKOR_CANCEL_GRACE_SECONDS must be a number, got {grace_raw!r}"
        ) from None
    if grace < 0:
        raise SettingsError("ARKOR_CANCEL_GRACE_SECONDS must be >= 0")
    backend = env.get("ARKOR_TRAINER_BACKEND", "auto").strip().lower() or "auto"
    if backend not in ("auto", "unsloth", "trl"):
        raise SettingsError(f"ARKOR_TRAINER_BACKEND must be auto, unsloth or trl, got {backend!r}")
    max_raw = env.get("ARKOR_MAX_DATASET_BYTES", "").strip()
    if max_raw and not (max_raw.isdigit() and int(max_raw) > 0):
        raise SettingsError(
            f"ARKOR_MAX_DATASET_BYTES must be a positive number of bytes, got {max_raw[:40]!r}"
        )
    restarts_raw = env.get("ARKOR_MAX_RESTARTS", "").strip()
    if restarts_raw and not restarts_raw.isdigit():
        raise SettingsError(
            f"ARKOR_MAX_RESTARTS must be a whole number >= 0, got {restarts_raw[:40]!r}"
        )
    max_attempts = _positive_int(env, "ARKOR_MAX_ATTEMPTS", 1)
    faults = env.get("ARKOR_TEST_FAULT_STORAGE_ATTEMPTS", "").strip()
    try:
        fault_attempts = frozenset(int(p) for p in faults.split(",") if p.strip())
    except ValueError:
        raise SettingsError(
            f"ARKOR_TEST_FAULT_STORAGE_ATTEMPTS must be attempt numbers like 1,2; got {faults!r}"
        ) from None
    hold_uploads = env.get("ARKOR_TEST_HOLD_UPLOADS", "").strip()
    model_cache = env.get("ARKOR_MODEL_CACHE", "").strip()
    cancel_marker = env.get("ARKOR_CANCEL_MARKER", "").strip()
    pod_annotations = env.get("ARKOR_POD_ANNOTATIONS", "").strip()
    values = {env.get(name, "") for name in SECRET_ENV}
    values.add(urlsplit(env.get(DATASET_URL_ENV, "")).query)  # the signature alone, too
    secrets = tuple(sorted({v for v in values if len(v) >= 4}, key=len)[::-1])
    endpoint = env.get("HF_ENDPOINT", "").strip().rstrip("/") or DEFAULT_HUB_ENDPOINT
    if not endpoint.startswith(("http://", "https://")):
        raise SettingsError(f"HF_ENDPOINT must be an http(s) URL, got {endpoint!r}")
    return WorkerSettings(
        job_id=job_id,
        config_data=config_data,
        storage_uri=storage_uri.rstrip("/"),
        event_log=Path(env.get("ARKOR_EVENT_LOG", "").strip() or DEFAULT_EVENT_LOG),
        work_dir=Path(env.get("ARKOR_WORK_DIR", "").strip() or DEFAULT_WORK_DIR),
        model_cache=Path(model_cache) if model_cache else default_model_cache(),
        cancel_grace_seconds=grace,
        backend=backend,  # type: ignore[arg-type]
        cancel_marker=Path(cancel_marker) if cancel_marker else None,
        max_dataset_bytes=int(max_raw) if max_raw else DEFAULT_MAX_DATASET_BYTES,
        max_restarts=int(restarts_raw) if restarts_raw else None,
        hub_endpoint=endpoint,
        hub_offline=env.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE,
        hf_token=env.get("HF_TOKEN", "").strip() or None,
        hf_token_setting=env.get("ARKOR_HF_TOKEN_SETTING", "").strip() or "HF_TOKEN",
        pod_annotations=Path(pod_annotations) if pod_annotations else None,
        max_attempts=max_attempts,
        test_fault_storage_attempts=fault_attempts,
        test_hold_uploads=Path(hold_uploads) if hold_uploads else None,
        secrets=secrets,
        env=env,
    )
