"""Settings of the local backend: where runs live and how their processes start."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from arkor_ops.settings.run import ENV_PREFIX


class LocalSettings(BaseSettings):
    """Where local runs live and how their processes start (``ARKOR_*`` variables)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    runs_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "arkor-ops" / "runs",
        description="One folder per run: config, state, event log, process logs.",
    )
    storage_uri: str | None = Field(
        default=None,
        pattern=r"^(s3|file)://",
        description="Run storage; default `file://{runs_dir}/storage`.",
    )
    python: str = Field(default=sys.executable, description="Python that runs worker and sidecar.")
    worker_module: str = Field(
        default="arkor_ops.worker",
        description="Module run as the worker (`python -m`); tests swap in a scripted one.",
    )
    cancel_timeout_seconds: float = Field(
        default=60, gt=0, description="How long cancel() waits for `training.cancelled`."
    )
    sidecar_linger_seconds: float = Field(
        default=30, ge=0, description="The sidecar exits this long after the run ends."
    )
    start_timeout_seconds: float = Field(
        default=30, gt=0, description="How long submit() waits for the sidecar to answer."
    )
