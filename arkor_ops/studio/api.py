"""The studio's JSON routes: runs, one run, its checkpoints, cancel.

Each handler is one call on the :class:`~arkor_ops.backends.base.Backend` the server holds;
nothing here knows which backend it is. A run is sent as :func:`run_row`: the fields the pages
show, never the whole config (a blob dataset's URL may carry a signed query string).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from arkor_ops.backends.base import TERMINAL_STATUSES, Backend, JobDescription
from arkor_ops.checkpoints import list_checkpoints
from arkor_ops.errors import ArkorOpsError, BackendError, JobNotFoundError


def backend_of(request: Request) -> Backend:
    """The backend the server was started with."""
    backend: Backend = request.app.state.backend
    return backend


def error(status: int, message: str, code: str | None = None) -> JSONResponse:
    """``{"error": message}`` (plus ``code``) with ``status``."""
    body = {"error": message} if code is None else {"error": message, "code": code}
    return JSONResponse(body, status_code=status)


def failure(exc: ArkorOpsError) -> JSONResponse:
    """The response for a backend's error: 404 for a missing run, else 502 (or its status)."""
    if isinstance(exc, JobNotFoundError):
        return error(404, str(exc))
    status = getattr(exc, "status", None)
    return error(status if isinstance(status, int) and 400 <= status < 600 else 502, str(exc))


def dataset_label(dataset: Any) -> str | None:
    """A dataset as one line: its type and name, path or ``s3://`` URI (a blob URL is left
    out: it may be a signed URL)."""
    if not isinstance(dataset, dict):
        return None
    kind = str(dataset.get("type", "?"))
    where = {"huggingface": "name", "file": "path", "s3": "uri"}.get(kind)
    return f"{kind}: {dataset.get(where)}" if where and dataset.get(where) else kind


def run_row(d: JobDescription) -> dict[str, Any]:
    """What the pages show of a run."""
    job = d.job
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "terminal": job.status in TERMINAL_STATUSES,
        "phase": d.phase,
        "message": d.message,
        "step": d.step,
        "loss": d.loss,
        "error": job.error,
        "createdAt": job.created_at,
        "startedAt": job.started_at,
        "completedAt": job.completed_at,
        "model": job.config.get("model"),
        "dataset": dataset_label(job.config.get("dataset")),
        "maxSteps": job.config.get("maxSteps"),
        "saveSteps": job.config.get("saveSteps"),
    }


async def runs(request: Request) -> JSONResponse:
    """``GET /api/runs``: every run, newest first."""
    try:
        rows = await backend_of(request).list_jobs()
    except ArkorOpsError as exc:
        return failure(exc)
    return JSONResponse({"runs": [run_row(d) for d in rows]})


async def run(request: Request) -> JSONResponse:
    """``GET /api/runs/{job_id}``: one run."""
    try:
        d = await backend_of(request).describe(request.path_params["job_id"])
    except ArkorOpsError as exc:
        return failure(exc)
    return JSONResponse(run_row(d))


async def checkpoints(request: Request) -> JSONResponse:
    """``GET /api/runs/{job_id}/checkpoints``: committed checkpoints (and the final adapter),
    oldest first; ``note`` says why there are none when the backend keeps no run storage."""
    job_id = request.path_params["job_id"]
    try:
        found = await list_checkpoints(backend_of(request), job_id)
    except JobNotFoundError as exc:
        return failure(exc)
    except BackendError as exc:
        return JSONResponse({"checkpoints": [], "note": str(exc)})
    except ArkorOpsError as exc:
        return failure(exc)
    rows = [c.model_dump(mode="json", by_alias=True) for c in found]
    return JSONResponse({"checkpoints": rows})


async def cancel(request: Request) -> JSONResponse:
    """``POST /api/runs/{job_id}/cancel``: the backend's cancel (returns once the run stopped),
    then the run as it is now."""
    job_id = request.path_params["job_id"]
    backend = backend_of(request)
    try:
        await backend.cancel(job_id)
        d = await backend.describe(job_id)
    except ArkorOpsError as exc:
        return failure(exc)
    return JSONResponse(run_row(d))
