"""The MLflow registry: the tracking server, experiment, model name and the task's retries.

MLflow's client reads its own variables too (``MLFLOW_TRACKING_USERNAME``,
``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_HTTP_REQUEST_*``).
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class MlflowRegistrySettings(BaseSettings):
    """Where and under which names finished runs are registered in MLflow (the flows' process)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    tracking_uri: str | None = Field(
        default=None,
        validation_alias="MLFLOW_TRACKING_URI",
        description="MLflow tracking server, e.g. `http://mlflow:5000`; unset or empty: "
        "registration is skipped.",
    )
    experiment_name: str = Field(
        default="arkor-ops",
        min_length=1,
        validation_alias="MLFLOW_EXPERIMENT_NAME",
        description="Experiment that holds the runs (created when missing).",
    )
    model_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        pattern=r"^[^/:]+$",
        validation_alias="ARKOR_REGISTRY_MODEL_NAME",
        description="Registered model name; default: the run name, `/` and `:` and other odd "
        "characters replaced by `-`.",
    )
    retry_delays_seconds: list[float] = Field(
        default=[10.0, 30.0, 90.0],
        max_length=10,
        validation_alias="ARKOR_REGISTRY_RETRY_DELAYS_SECONDS",
        description="JSON list of seconds before each retry of a failed registration (the "
        "flow's task); the default makes four attempts.",
    )

    @field_validator("tracking_uri")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("retry_delays_seconds")
    @classmethod
    def _non_negative(cls, value: list[float]) -> list[float]:
        if any(not 0 <= d <= 3600 for d in value):
            raise ValueError("each delay must be between 0 and 3600 seconds")
        return value
