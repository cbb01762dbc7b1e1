"""Backends: where runs execute (Kubernetes, local processes) behind :class:`Backend`."""

from __future__ import annotations

import importlib

from arkor_ops.backends.base import Backend
from arkor_ops.errors import BackendError
from arkor_ops.settings import BACKEND_ENV, default_backend

_BACKENDS = {
    "local": ("arkor_ops.backends.local", "LocalBackend"),
    "kubernetes": ("arkor_ops.backends.kubernetes", "KubernetesBackend"),
}

__all__ = ["BACKEND_ENV", "Backend", "resolve_backend"]


def resolve_backend(name: str | None = None) -> Backend:
    """The backend called ``name``, built from the environment.

    Args:
        name: ``"local"`` or ``"kubernetes"``; default: ``$ARKOR_BACKEND``, else ``"local"``.

    Returns:
        A new backend, made with its ``from_env()`` constructor.

    Raises:
        BackendError: the name is unknown, or that backend is not available in this install.
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
    cls = getattr(module, class_name)
    backend: Backend = cls.from_env()
    return backend
