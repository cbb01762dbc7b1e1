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

__all__ = ["BACKEND_ENV", "Backend", "BackendSlot", "resolve_backend"]


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


class BackendSlot:
    """A client's backend (the trainer's, the evaluator's): the one it was given, which the giver
    closes, or one resolved on first use from ``$ARKOR_BACKEND``, which the slot owns and closes
    in :meth:`aclose`."""

    def __init__(self, backend: Backend | None = None) -> None:
        self._backend = backend
        self._owned: Backend | None = None

    def get(self) -> Backend:
        """The backend, resolving it now when none was given.

        Raises:
            BackendError: the configured backend is unknown or unavailable.
        """
        if self._backend is None:
            self._backend = self._owned = resolve_backend()
        return self._backend

    async def aclose(self) -> None:
        """Close the backend if the slot resolved it; a later :meth:`get` resolves a new one."""
        owned, self._owned = self._owned, None
        if owned is not None:
            self._backend = None
            await owned.aclose()
