"""The local backend: worker and sidecar as local processes (:class:`LocalBackend`)."""

from arkor_ops.backends.local.backend import LocalBackend, job_id_for
from arkor_ops.settings import LocalSettings

__all__ = ["LocalBackend", "LocalSettings", "job_id_for"]
