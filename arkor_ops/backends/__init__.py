"""Backends: where runs execute (Kubernetes, local processes) behind :class:`Backend`."""

from __future__ import annotations

import importlib
from typing import Any

from arkor_ops.backends.base import Backend
from arkor_ops.errors import BackendError
from arkor_ops.settings import BACKEND_ENV, default_backend

_BACKENDS = {
    "local": ("arkor_ops.backends.local", "LocalBackend"),
    "kubernetes": ("arkor_ops.backends.kubernetes", "KubernetesBackend"),
}

__all__ = ["BACKEND_ENV", "Backend", "resolve_backend"]


def resolve_backend(name: str | None = None, **overrides: Any) -> Backend:
    """The backend called ``name``, built from the environment: the one factory of backends.

    Args:
        name: ``"local"`` or ``"kubernetes"``; default: ``$ARKOR_BACKEND``, else ``"local"``.
        **overrides: passed to the backend's :meth:`~Backend.from_env`: its settings
            (``namespace=``, ``active_deadline_seconds=`` on Kubernetes; ``runs_dir=`` locally)
            and ``flow_run_id=``, the Prefect flow run its jobs belong to.

    Returns:
        A new backend, made with its ``from_env()`` constructor; close it (``async with``).

    Raises:
        BackendError: the name is unknown, that backend is not available in this install, or
            an override is not one of its settings.
    """
    chosen = (name or default_backend("local")).strip().lower()
    if chosen not in _BACKENDS:
        known = ", ".join(sorted(_BACKENDS))
        source = "" if name else f" (from ${BACKEND_ENV})"
        raise BackendError(f"unknown backend {chosen!r}{source}; choose one of: {known}")
    module_name, class_name = _BACKENDS[chosen]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise BackendError(
            f"the {chosen!r} backend is not available: {module_name} is missing from this install"
        ) from exc
    cls: type[Backend] = getattr(module, class_name)
    return cls.from_env(**overrides)
