"""The worker's environment (``python -m arkor_ops.worker``): the run's, plus these."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from arkor_ops.settings._common import environ
from arkor_ops.settings.run import DEFAULT_EVENT_LOG, ENV_PREFIX, RunSettings

BackendChoice = Literal["auto", "unsloth", "trl"]

DEFAULT_WORK_DIR = Path("/tmp/arkor-work")  # noqa: S108 - the documented default scratch dir
DEFAULT_GRACE_SECONDS = 20.0
DEFAULT_MAX_DATASET_BYTES = 2 << 30  # 2 GiB: rows are held in memory; see docs/worker.md
DEFAULT_HUB_ENDPOINT = "https://huggingface.co"
DEFAULT_HF_TOKEN_SETTING = "HF_TOKEN"
_TRUE = frozenset({"1", "true", "yes", "on"})


def default_model_cache(env: Mapping[str, str] | None = None) -> Path:
    """``~/.cache/arkor-ops/models`` (``$XDG_CACHE_HOME`` respected)."""
    env = environ() if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "arkor-ops" / "models"


def model_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$ARKOR_MODEL_CACHE``, else :func:`default_model_cache`."""
    env = environ() if env is None else env
    value = (env.get("ARKOR_MODEL_CACHE") or "").strip()
    return Path(value) if value else default_model_cache(env)


class HubEnvSettings(BaseSettings):
    """Where and how a process reaches the Hugging Face Hub (the worker's, an endpoint pod's)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, env_ignore_empty=True
    )

    hf_token_setting: str = Field(
        default=DEFAULT_HF_TOKEN_SETTING,
        description="The setting named in a gated/refused-token error.",
    )
    hub_endpoint: str = Field(
        default=DEFAULT_HUB_ENDPOINT,
        validation_alias="HF_ENDPOINT",
        pattern=r"^https?://",
        description="The Hugging Face Hub to download from (a mirror or private hub).",
    )
    hub_offline: bool = Field(
        default=False,
        validation_alias="HF_HUB_OFFLINE",
        description="`1`: never contact a hub; Hub ids must be in the model cache.",
    )
    hf_token: SecretStr | None = Field(
        default=None,
        validation_alias="HF_TOKEN",
        description="Hugging Face token (gated and private repos); a secret.",
    )


class WorkerEnvSettings(RunSettings, HubEnvSettings):
    """What the worker reads besides the run's variables; empty values count as unset."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
        env_ignore_empty=True,
        str_strip_whitespace=True,
    )

    job_id: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="The run's id (the Job name on Kubernetes): letters, digits, `.`, `-`, `_`.",
    )
    config_file: Path | None = Field(
        default=None,
        description="A JSON file with the config in wire form (`TrainerConfig.to_wire()`, no "
        "secrets); or set `ARKOR_CONFIG_JSON`.",
    )
    config_json: str | None = Field(
        default=None, description="The config's wire form itself, when there is no file."
    )
    work_dir: Path = Field(
        default=DEFAULT_WORK_DIR, description="Scratch: dataset, checkpoints before upload."
    )
    model_cache: Path | None = Field(
        default=None,
        description="Converted/downloaded base models; default `~/.cache/arkor-ops/models` "
        "(`$XDG_CACHE_HOME` respected).",
    )
    model_cache_max_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Bound on the node cache's entries (models from S3): past it, the least "
        "recently used entries no run is using are evicted after each download; default: "
        "unbounded.",
    )
    cancel_grace_seconds: float = Field(
        default=DEFAULT_GRACE_SECONDS,
        ge=0,
        description="Time after SIGTERM the worker may spend saving a checkpoint.",
    )
    trainer_backend: BackendChoice = Field(
        default="auto", description="`auto`, `unsloth` or `trl`: which training stack runs."
    )
    pod_annotations: Path | None = Field(
        default=None,
        description="The `downwardAPI` file of the pod's annotations (set on Kubernetes); the "
        "`arkor-ops.dev/cancel-requested` annotation makes SIGTERM a cancel.",
    )
    max_dataset_bytes: int = Field(
        default=DEFAULT_MAX_DATASET_BYTES,
        gt=0,
        description="Cap on the dataset file, counted after decoding a download (2 GiB).",
    )
    max_restarts: int | None = Field(
        default=None,
        ge=0,
        description="Pod restarts allowed (set on Kubernetes); each start is counted in "
        "`{run}/attempts.json` (`starts`), one more fails the run (exit 2).",
    )
    max_attempts: int = Field(
        default=1,
        ge=1,
        description="Counted attempts the Job allows (Kubernetes: `backoffLimit + 1`); a "
        "retryable failure is final only in the last one.",
    )
    preflight: bool = Field(
        default=False,
        description="`1`: run the pre-flight stage (on the CPU pool: rows, model access, chat "
        "template, token count), not the training; set by the pre-flight Job.",
    )
    gpu_memory_gib: float | None = Field(
        default=None,
        gt=0,
        description="Memory of one GPU of the run's type, GiB: the pre-flight checks that the "
        "model's weights fit and reports its estimate against it; set by the pre-flight Job.",
    )
    gpu_type: str | None = Field(
        default=None,
        description="The run's GPU product (`nvidia.com/gpu.product`), whose memory the "
        "pre-flight uses when `ARKOR_GPU_MEMORY_GIB` is unset; set by the pre-flight Job.",
    )
    test_fault_storage_attempts: str = Field(
        default="",
        pattern=r"^\s*(\d+\s*(,\s*\d+\s*)*)?,?\s*$",
        description="Tests only: attempt numbers (`1,2`) whose pipeline storage calls fail.",
    )
    test_hold_uploads: Path | None = Field(
        default=None,
        description="Tests only: checkpoint uploads wait until this file exists (uploads fall "
        "behind on purpose).",
    )

    @field_validator("trainer_backend", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("hub_offline", mode="before")
    @classmethod
    def _truthy(cls, value: Any) -> Any:
        return value.strip().lower() in _TRUE if isinstance(value, str) else value

    @field_validator("hub_endpoint")
    @classmethod
    def _no_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("storage_uri")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def fault_attempts(self) -> frozenset[int]:
        """The attempt numbers of :attr:`test_fault_storage_attempts`."""
        return frozenset(int(p) for p in self.test_fault_storage_attempts.split(",") if p.strip())


class WorkerFailureSettings(BaseSettings):
    """What a worker whose environment is invalid still reads, to log that failure as an event.

    Nothing here is required and nothing can be malformed: the same names as
    :class:`WorkerEnvSettings`, read leniently.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
        env_ignore_empty=True,
        str_strip_whitespace=True,
    )

    job_id: str | None = Field(default=None, description="The run's id, if set.")
    event_log: str = Field(default=str(DEFAULT_EVENT_LOG), description="The event log.")
    config_file: str | None = Field(default=None, description="The config file, if set.")
    config_json: str | None = Field(default=None, description="The config, if set.")
