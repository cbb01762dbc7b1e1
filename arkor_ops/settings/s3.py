"""S3 access: the one place that knows ``ARKOR_S3_ENDPOINT_URL`` and the ``AWS_*`` names.

boto3 reads the credentials (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``) itself; they are listed in :data:`~arkor_ops.settings.SECRET_ENV`.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_S3_REGION = "us-east-1"


class S3Settings(BaseSettings):
    """Where S3 (MinIO, moto, AWS) is and which region; empty variables count as unset."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, env_ignore_empty=True)

    endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "ARKOR_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"
        ),
        description="S3 endpoint, e.g. `http://127.0.0.1:9000` for MinIO; default: AWS. "
        "Also read from `AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`.",
    )
    region: str | None = Field(
        default=None, validation_alias="AWS_REGION", description="S3 region."
    )
    default_region: str | None = Field(
        default=None,
        validation_alias="AWS_DEFAULT_REGION",
        description=f"S3 region when `AWS_REGION` is unset; both unset: `{DEFAULT_S3_REGION}`.",
    )

    def region_name(self) -> str:
        """The region boto3 is given."""
        return self.region or self.default_region or DEFAULT_S3_REGION
