"""The local backend: worker and sidecar as local processes (:class:`LocalBackend`)."""

from arkor_ops.backends.local.backend import LocalBackend, LocalSettings, job_id_for

__all__ = ["LocalBackend", "LocalSettings", "job_id_for"]
