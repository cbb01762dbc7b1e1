"""The sidecar's environment (see docs/contracts.md), checked before anything starts."""

from __future__ import annotations

from pydantic import Field

from arkor_ops.settings.run import DEFAULT_SIDECAR_PORT, RunSettings


class SidecarSettings(RunSettings):
    """Environment of `python -m arkor_ops.sidecar`: the run's (above) plus these ``ARKOR_*``."""

    sidecar_host: str = Field(default="0.0.0.0", description="Address to listen on.")  # noqa: S104
    sidecar_port: int = Field(
        default=DEFAULT_SIDECAR_PORT, ge=0, le=65535, description="TCP port to listen on."
    )
    ping_seconds: float = Field(
        default=15.0, gt=0, le=3600, description="Seconds between `ping` keepalives when idle."
    )
    poll_seconds: float = Field(
        default=0.01,
        gt=0,
        le=5,
        description=(
            "Seconds between checks of the log for new lines where inotify is unavailable "
            "(with inotify the sidecar wakes on each write)."
        ),
    )
    shutdown_grace_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="On SIGTERM, how long connected clients may keep reading before the streams "
        "are cut.",
    )
    sidecar_linger_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Exit this long after the terminal event (local runs); unset: run until "
        "SIGTERM (Kubernetes stops a native sidecar itself).",
    )
    sidecar_max_streams: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Most event streams served at once; one more is answered 503 with "
        "`Retry-After` (a client retries it). Bounds the sidecar's memory and sockets.",
    )
    sidecar_worker_pid: int | None = Field(
        default=None,
        gt=0,
        description="Local runs: with a linger set, also stop once this worker process is gone "
        "(or the log's folder was removed), even without a terminal event.",
    )
