"""The reaper: stop training runs whose flow run has ended.

The backstop for a cancellation hook that failed or never ran (a runner killed with SIGKILL, a
lost connection): it lists the backend's runs that carry a flow-run id (the
``arkor-ops.dev/flow-run-id`` label on Kubernetes; the idempotency key of a local run), reads
each flow run from the Prefect API, and stops the run when the flow run is in a terminal state
(or no longer exists).
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.logging import get_run_logger

from flows.settings import BackendSettings, make_backend

DEFAULT_BACKEND = BackendSettings()


async def flow_run_ended(client: Any, flow_run_id: str) -> bool:
    """Whether the flow run is in a terminal state, or does not exist."""
    try:
        run = await client.read_flow_run(uuid.UUID(flow_run_id))
    except (ObjectNotFound, ValueError):
        return True
    return run.state is not None and run.state.is_final()


async def runs_by_flow_run(backend: Any) -> dict[str, str]:
    """``{job_id: flow_run_id}`` for the backend's runs that a flow run started."""
    raise NotImplementedError("waiting for the backends' listing by flow run")


@flow(name="reap-orphaned-runs")
async def reap_orphans(backend: BackendSettings = DEFAULT_BACKEND) -> list[str]:
    """Stop every training run whose flow run has ended; returns the stopped job ids."""
    log = get_run_logger()
    runner = make_backend(backend)
    reaped: list[str] = []
    try:
        runs = await runs_by_flow_run(runner)
        async with get_client() as client:
            for job_id, flow_run_id in sorted(runs.items()):
                if not await flow_run_ended(client, flow_run_id):
                    continue
                log.warning("Flow run %s has ended; stopping its run %s", flow_run_id, job_id)
                await runner.cancel(job_id)
                reaped.append(job_id)
    finally:
        await runner.aclose()
    log.info("Reaped %d run(s)", len(reaped))
    return reaped
