"""The reaper: stop training runs whose flow run has ended.

The backstop for a cancellation hook that failed or never ran (a runner killed with SIGKILL, a
lost connection). Two sweeps, both ending in ``backend.cancel(job_id)``:

* active runs that record their flow run (``backend.jobs_by_flow_run()``: Kubernetes Jobs
  labelled ``arkor-ops.dev/flow-run-id``, local runs whose state names it) whose flow run this
  Prefect server reports in a terminal state; finished Jobs hold no pod and are left to their TTL;
* runs of recently ended ``fine-tune`` flow runs, named from the flow run id (their idempotency
  key, ``backend.job_id_for()``), that are still active: this covers runs that record none.

A flow-run id this server does not know is not an orphan: it may belong to another Prefect
server sharing the namespace, whose own reaper owns it, or be a label set by hand (see
``docs/prefect.md`` for how to scope reapers).

Each sweep also frees what finished runs no longer need (``backend.release_finished()``: on
Kubernetes, the Secret of every finished run that no client followed to its end; see
``docs/kubernetes.md``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound
from prefect.logging import get_run_logger

from arkor_ops.backends import resolve_backend
from arkor_ops.backends.base import Backend
from arkor_ops.config import TrainerConfig
from arkor_ops.flows.jobs import run_is_active
from arkor_ops.flows.settings import BackendSettings
from arkor_ops.flows.training import with_dataset

DEFAULT_BACKEND = BackendSettings()
FINAL_STATES = [StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED]


async def flow_run_ended(client: Any, flow_run_id: str) -> bool:
    """Whether this server knows the flow run and reports it in a terminal state.

    An id it does not know (another server's run, a hand-made label) is never reaped.
    """
    try:
        run = await client.read_flow_run(uuid.UUID(flow_run_id))
    except (ObjectNotFound, ValueError):
        return False
    return run.state is not None and run.state.is_final()


async def ended_flow_runs(client: Any, since: datetime) -> list[Any]:
    """``fine-tune`` flow runs that reached a terminal state after ``since``."""
    return list(
        await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["fine-tune"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=FINAL_STATES)),
                end_time=FlowRunFilterEndTime(after_=since),
            ),
            limit=200,
        )
    )


async def orphans(client: Any, backend: Backend, lookback: timedelta) -> dict[str, str]:
    """``{job_id: flow_run_id}`` of active runs whose flow run has ended."""
    found: dict[str, str] = {}
    for job_id, flow_run_id in (await backend.jobs_by_flow_run()).items():
        if await flow_run_ended(client, flow_run_id) and await run_is_active(backend, job_id):
            found[job_id] = flow_run_id
    for run in await ended_flow_runs(client, datetime.now(UTC) - lookback):
        params = run.parameters or {}
        try:
            config = with_dataset(
                TrainerConfig.model_validate(params["config"]), params.get("dataset_uri")
            )
        except (KeyError, ValueError):
            continue
        run_job = backend.job_id_for(config, str(run.id))
        if run_job and run_job not in found and await run_is_active(backend, run_job):
            found[run_job] = str(run.id)
    return found


@flow(name="reap-orphaned-runs")
async def reap_orphans(
    backend: BackendSettings = DEFAULT_BACKEND, lookback_hours: float = 24
) -> list[str]:
    """Stop every training run whose flow run has ended; returns the stopped job ids.

    Args:
        backend: the backend whose runs are swept.
        lookback_hours: how far back to look for ended flow runs (the label sweep has no limit).
    """
    log = get_run_logger()
    reaped: list[str] = []
    async with resolve_backend(backend.backend, **backend.overrides()) as runner:
        async with get_client() as client:
            found = await orphans(client, runner, timedelta(hours=lookback_hours))
        for job_id, flow_run_id in sorted(found.items()):
            log.warning("Flow run %s has ended; stopping its run %s", flow_run_id, job_id)
            await runner.cancel(job_id)
            reaped.append(job_id)
        for job_id in await runner.release_finished():
            log.info("Run %s has ended: freed what it no longer needs (its Secret)", job_id)
    log.info("Reaped %d run(s)", len(reaped))
    return reaped
