"""The run environment every process of one run shares: which run, where it lives, its log.

The worker, the sidecar and the backends that start them all use these names and defaults, so
a default (the event-log path, the sidecar port) is written once.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Where the trainer writes the event log and the sidecar reads it (a shared ``emptyDir``).
DEFAULT_EVENT_LOG = Path("/var/run/arkor/events.jsonl")
#: The sidecar's HTTP port, in the pod and locally.
DEFAULT_SIDECAR_PORT = 8377
#: Pod annotation that turns the next SIGTERM into a cancel (read by the worker, set by cancel()).
CANCEL_ANNOTATION = "arkor-ops.dev/cancel-requested"
#: Variables that carry the blob dataset's secrets to a run (never in the wire config).
DATASET_TOKEN_ENV = "ARKOR_DATASET_TOKEN"
DATASET_URL_ENV = "ARKOR_DATASET_URL"
#: Prefix of every arkor-ops variable.
ENV_PREFIX = "ARKOR_"


class RunSettings(BaseSettings):
    """The run a process belongs to: its id, storage, event log and cancel marker."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    job_id: str = Field(min_length=1, description="The run's id (the Job name on Kubernetes).")
    storage_uri: str = Field(
        pattern=r"^(s3|file)://",
        description="`s3://bucket/prefix` or `file:///path`; the run lives under "
        "`{uri}/{job_id}/` and its log is persisted to `{uri}/{job_id}/events.jsonl`.",
    )
    event_log: Path = Field(
        default=DEFAULT_EVENT_LOG,
        description="The event log (JSON Lines) the trainer alone writes and the sidecar serves.",
    )
    cancel_marker: Path | None = Field(
        default=None,
        description="A file whose presence makes the worker's SIGTERM a cancel (local runs; "
        "Kubernetes uses the pod annotation).",
    )
