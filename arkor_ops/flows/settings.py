"""Flow parameters that are not the trainer config: which backend runs the training.

Tasks build their backend with ``resolve_backend(settings.backend, **settings.overrides(...))``.

:class:`BackendSettings` is a flow parameter, so the Prefect UI renders it as a small typed form
next to the trainer config. Everything it leaves unset comes from the environment of the process
that runs the flow (``ARKOR_BACKEND``, ``KUBECONFIG``, ``ARKOR_STORAGE_URI``, …, all read by
:mod:`arkor_ops.settings`), exactly as for ``create_trainer(backend=None)``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from arkor_ops.settings import default_backend


class BackendSettings(BaseModel):
    """Where a flow's training runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["local", "kubernetes"] | None = Field(
        default=None,
        description="`local` (worker + sidecar as local processes) or `kubernetes` (a Job); "
        "default: `ARKOR_BACKEND`, else `local`.",
    )
    namespace: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Kubernetes namespace of the Job; default from the backend's settings.",
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        gt=0,
        description="Kubernetes Job deadline: the cluster stops the run after this many seconds, "
        "a backstop should every other cleanup fail.",
    )

    def resolved_name(self) -> str:
        """The backend name after applying the environment default."""
        return self.backend or default_backend("local")

    def overrides(self, flow_run_id: str | None = None) -> dict[str, Any]:
        """What :func:`~arkor_ops.backends.resolve_backend` gets besides the name: the fields
        set here that the chosen backend has (the Kubernetes ones on Kubernetes), and
        ``flow_run_id``, which labels the run's Job (also for flows called directly, without a
        runner)."""
        found: dict[str, Any] = {}
        if self.resolved_name() == "kubernetes":
            if self.namespace:
                found["namespace"] = self.namespace
            if self.active_deadline_seconds:
                found["active_deadline_seconds"] = self.active_deadline_seconds
        if flow_run_id:
            found["flow_run_id"] = flow_run_id
        return found
