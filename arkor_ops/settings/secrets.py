"""The variables whose values are secrets, and their values (for redaction)."""

from __future__ import annotations

from collections.abc import Mapping

from arkor_ops.settings._common import environ
from arkor_ops.settings.run import DATASET_TOKEN_ENV, DATASET_URL_ENV

#: Variables whose values are secrets: never logged, scrubbed from every event, never sent to
#: MLflow.
SECRET_ENV = (
    DATASET_TOKEN_ENV,
    DATASET_URL_ENV,
    "HF_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)


def secret_values(min_len: int = 1, env: Mapping[str, str] | None = None) -> list[str]:
    """The values of the :data:`SECRET_ENV` variables that are set, longest first.

    Args:
        min_len: shorter values are left out (too short to redact without mangling text).
        env: the variables; default this process's environment.

    Returns:
        Distinct values, longest first (so a secret that contains another is replaced whole).
    """
    env = environ() if env is None else env
    values = {env.get(name) or "" for name in SECRET_ENV}
    return sorted((v for v in values if len(v) >= max(min_len, 1)), key=len, reverse=True)
