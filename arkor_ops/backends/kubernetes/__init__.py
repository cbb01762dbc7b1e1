"""The Kubernetes backend (:class:`KubernetesBackend`) and its building blocks.

| module | owns |
|---|---|
| ``backend`` | :class:`KubernetesBackend`: the :class:`~arkor_ops.backends.Backend` on a cluster |
| ``manifests`` | pure builder: trainer config + settings → Job, Secret, ConfigMap |
| ``diagnostics`` | pure function: Job + Pods + Events → why the run is waiting or failed |
| ``errors`` | ``ApiException`` → :mod:`arkor_ops.errors`, with hints |
| ``client`` | API clients from a kubeconfig, and an httpx client with the same credentials |
| ``stream`` | the event stream of one run, whatever state it is in |
| ``cancel`` | the record of a cancel every process reads; ended runs are left alone |
| ``run_secret`` | the run's Secret ends with the run (terminal event, cancel, or a sweep) |
| ``adoption`` | whether a Job found by idempotency key may be adopted, and what it still needs |

Its settings (``ARKOR_K8S_*``) are :class:`arkor_ops.settings.KubernetesSettings`.
The backend is imported on first use, so the worker and the sidecar can read ``manifests`` and
``images`` (the Job's shape) without loading the Kubernetes client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arkor_ops.backends.kubernetes.backend import KubernetesBackend

__all__ = ["KubernetesBackend"]


def __getattr__(name: str) -> Any:
    if name == "KubernetesBackend":
        from arkor_ops.backends.kubernetes.backend import KubernetesBackend

        return KubernetesBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
