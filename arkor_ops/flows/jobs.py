"""Whether a run found on a backend is still going (what the reaper and the hooks ask).

Both backends name a keyed run deterministically from (run name, idempotency key), and the flow
run id is the key, so a process that only has the flow run (the runner running a cancellation
hook, the reaper) can name its run: :meth:`~arkor_ops.backends.base.Backend.job_id_for`. Runs
also record their flow run (:meth:`~arkor_ops.backends.base.Backend.jobs_by_flow_run`; on
Kubernetes the label ``arkor-ops.dev/flow-run-id``), which lets the reaper find runs of flow
runs it never heard of.
"""

from __future__ import annotations

from arkor_ops.backends.base import TERMINAL_STATUSES, Backend
from arkor_ops.errors import JobNotFoundError


async def run_is_active(backend: Backend, job_id: str) -> bool:
    """Whether the run exists and has not ended."""
    try:
        description = await backend.describe(job_id)
    except JobNotFoundError:
        return False
    return description.job.status not in TERMINAL_STATUSES
