"""Flow parameters that are not the trainer config: which backend runs the training.

:class:`BackendSettings` is a flow parameter, so the Prefect UI renders it as a small typed form
next to the trainer config. Everything it leaves unset comes from the environment of the process
that runs the flow (``ARKOR_BACKEND``, ``KUBECONFIG``, ``ARKOR_STORAGE_URI``, …, all read by
:mod:`arkor_ops.settings`), exactly as for ``create_trainer(backend=None)``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from arkor_ops.errors import BackendError
from arkor_ops.settings import KubernetesSettings, default_backend, read


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


def make_backend(settings: BackendSettings, flow_run_id: str | None = None) -> Any:
    """Build the backend that ``settings`` names, from the environment plus its overrides.

    ``flow_run_id`` labels the run's Job (also for flows called directly, without a runner).
    """
    name = settings.resolved_name()
    if name == "kubernetes":
        from arkor_ops.backends.kubernetes import KubernetesBackend

        overrides: dict[str, Any] = {}
        if settings.namespace:
            overrides["namespace"] = settings.namespace
        if settings.active_deadline_seconds:
            overrides["active_deadline_seconds"] = settings.active_deadline_seconds
        what = "Kubernetes settings"
        k8s = read(KubernetesSettings, error=BackendError, what=what, **overrides)
        return KubernetesBackend(k8s, flow_run_id=flow_run_id)
    from arkor_ops.backends import resolve_backend

    return resolve_backend(name)
