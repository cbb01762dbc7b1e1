"""Find a flow run's training run on a backend, without creating one.

Both backends name a keyed run deterministically from (run name, idempotency key), and the flow
run id is the key. So a process that only has the flow run (the runner running a cancellation
hook, the reaper) can name its run. On Kubernetes, Jobs also carry the flow run id as the label
``arkor-ops.dev/flow-run-id``, which lets the reaper find Jobs of flow runs it never heard of.
"""

from __future__ import annotations

from typing import Any

from arkor_ops.config import TrainerConfig


def job_id_for(backend: Any, config: TrainerConfig, idempotency_key: str) -> str | None:
    """The id ``backend`` gives the run of ``config`` submitted with ``idempotency_key``."""
    from arkor_ops.backends.kubernetes import KubernetesBackend
    from arkor_ops.backends.local import backend as local

    if isinstance(backend, KubernetesBackend):
        from arkor_ops.backends.kubernetes import manifests

        return manifests.job_name(config.name, idempotency_key)
    if isinstance(backend, local.LocalBackend):
        return local.job_id_for(config.name, idempotency_key)
    fixed = getattr(backend, "job_id", None)  # single-job backends (the test fake)
    return fixed if isinstance(fixed, str) else None


async def labelled_jobs(backend: Any) -> dict[str, str]:
    """``{job name: flow run id}`` of the Kubernetes Jobs labelled with a flow run id."""
    from arkor_ops.backends.kubernetes import KubernetesBackend

    if not isinstance(backend, KubernetesBackend):
        return {}
    from arkor_ops.backends.kubernetes import manifests

    selector = f"{manifests.SELECTOR},{manifests.FLOW_RUN_LABEL}"
    jobs = await backend.api.list_jobs(selector)
    return {j["metadata"]["name"]: j["metadata"]["labels"][manifests.FLOW_RUN_LABEL] for j in jobs}


async def run_is_active(backend: Any, job_id: str) -> bool:
    """Whether the run exists and has not ended."""
    from arkor_ops.errors import JobNotFoundError

    try:
        description = await backend.describe(job_id)
    except JobNotFoundError:
        return False
    return description.job.status not in ("completed", "failed", "cancelled")
