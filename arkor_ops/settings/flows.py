"""Which backend runs a training, and the settings of the Prefect flows and deployments."""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from arkor_ops.settings.run import ENV_PREFIX

#: The variable that names the default backend.
BACKEND_ENV = "ARKOR_BACKEND"
#: Schedule of the nightly retrain deployment.
DEFAULT_CRON = "0 3 * * *"


class BackendChoiceSettings(BaseSettings):
    """Which backend ``create_trainer(backend=None)``, the CLI and the flows use."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, env_ignore_empty=True)

    backend: str | None = Field(
        default=None,
        validation_alias=BACKEND_ENV,
        description="`local` or `kubernetes`; unset: `local` (the operator commands: "
        "`kubernetes`).",
    )


def default_backend(fallback: str = "local") -> str:
    """``$ARKOR_BACKEND``, else ``fallback``."""
    return BackendChoiceSettings().backend or fallback


class FlowSettings(BaseSettings):
    """The Prefect flows and `python -m arkor_ops.flows.deploy` (``ARKOR_*`` variables)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, env_ignore_empty=True
    )

    flow_cancel_check_seconds: float = Field(
        default=1.0,
        ge=0,
        description="Seconds between two checks of the flow run's state while a run trains "
        "(0 turns the check off).",
    )
    retrain_config: Path | None = Field(
        default=None,
        description="YAML or JSON trainer config of the retrain deployments; unset: they are "
        "skipped.",
    )
    retrain_evaluation: Path | None = Field(
        default=None,
        description="YAML or JSON file with `evaluation` and `promotion`: retrain runs then "
        "evaluate and promote only what is better.",
    )
    watch_datasets: str = Field(
        default="", description="Comma-separated dataset URIs whose change starts a retrain."
    )
    retrain_cron: str = Field(
        default=DEFAULT_CRON, min_length=1, description="Schedule of the nightly retrain."
    )

    @field_validator("flow_cancel_check_seconds")
    @classmethod
    def _finite(cls, value: float) -> float:
        if math.isnan(value):
            raise ValueError("use a number of seconds >= 0 (0 turns the check off)")
        return value

    def watched(self) -> list[str]:
        """The dataset URIs of :attr:`watch_datasets`, blanks dropped."""
        return [u.strip() for u in self.watch_datasets.split(",") if u.strip()]


class FlowRunSettings(BaseSettings):
    """What Prefect tells the process of a flow run (no prefix; set by Prefect's runner)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, env_ignore_empty=True)

    flow_run_id: str | None = Field(
        default=None,
        validation_alias="PREFECT__FLOW_RUN_ID",
        description="The flow run this process executes; labels the run's Job.",
    )
