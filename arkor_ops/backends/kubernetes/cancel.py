"""Cancel of a run on Kubernetes: the record every process reads, and the pods it waits for.

Why a module of its own: a cancel is the one write to a run that more than one process acts
on (the flow's hooks, the reaper, ``arkor-ops cancel``), and what each of them later reads must
agree.

* **The record.** A cancel may never reach the trainer: the pod is still pending (no trainer
  yet), the pod patch with the cancel annotation is refused or lands after kubelet began
  stopping the pod. The trainer then takes SIGTERM for a disruption (or never runs) and writes
  no ``training.cancelled``, yet the run must read as ``cancelled`` in every process, not as
  ``failed``. While the Job exists its annotation ``arkor-ops.dev/cancel-requested`` is the
  record. ``cancel()`` deletes the Job, and the annotation with it, so it first writes
  :data:`CANCEL_RECORD` beside the run's event log in storage (``{run}/cancel-requested.json``:
  ``{"jobId", "requestedAt", "stage"}``, written by the client, never by the worker, unlike
  ``attempts.json``; ``stage`` is the Job's stage label, so a process that never saw the Job
  ends an evaluation's stream as one). A terminal event in the log always wins over either
  record.
* **Ended runs are left alone.** A run whose log holds a terminal event has ended, even while
  its pod still stops its sidecar and the Job has no ``Complete`` condition yet (right after
  ``wait()`` returned): :func:`log_ended` says so, and ``cancel()`` then changes nothing.
* **Pods.** The cancel annotation goes on each pod too (the trainer reads it through a
  ``downwardAPI`` file, so SIGTERM reads as a cancel), and ``cancel()`` returns once no pod is
  left (:func:`wait_gone`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from arkor_ops.backends.kubernetes import manifests as m
from arkor_ops.backends.kubernetes.client import KubeApi
from arkor_ops.errors import BackendError, JobNotFoundError, StorageError
from arkor_ops.events import TERMINAL_TYPES
from arkor_ops.polling import Backoff, poll
from arkor_ops.storage import Storage

log = logging.getLogger(__name__)

#: Beside the event log: written by ``cancel()`` before it deletes the Job.
CANCEL_RECORD = "cancel-requested.json"


def requested(job: dict[str, Any] | None) -> bool:
    """Whether the Job carries the cancel annotation (the record while the Job exists)."""
    annotations = ((job or {}).get("metadata") or {}).get("annotations") or {}
    return m.CANCEL_ANNOTATION in annotations


def record_uri(events_uri: str) -> str:
    """Where the cancel record of the run whose event log is ``events_uri`` lives."""
    return f"{events_uri.rsplit('/', 1)[0]}/{CANCEL_RECORD}"


def log_ended(events: Iterable[dict[str, Any]]) -> bool:
    """Whether a log (live or persisted) holds a terminal event: the run has ended."""
    return any(e.get("type") in TERMINAL_TYPES for e in events)


async def write_record(
    storage: Callable[[], Storage], events_uri: str, job: dict[str, Any], stamp: str
) -> None:
    """Write the cancel record; best effort, as the Job's annotation stays the record meanwhile.

    Without write access to the run's storage prefix the cancel still happens; once the Job
    is gone, other processes may then read the run as failed (logged as a warning).
    """
    metadata = job.get("metadata") or {}
    job_id = metadata.get("name")
    stage = (metadata.get("labels") or {}).get(m.STAGE_LABEL, "training")
    body = json.dumps({"jobId": job_id, "requestedAt": stamp, "stage": stage}).encode()
    try:
        await asyncio.to_thread(storage().put_bytes, record_uri(events_uri), body)
    except StorageError as exc:
        log.warning(
            "could not write the cancel record of %s (%s): once its Job is gone, other "
            "processes may read the run as failed",
            job_id,
            exc,
        )


async def recorded(storage: Callable[[], Storage], events_uri: str) -> dict[str, Any] | None:
    """The record a ``cancel()`` left beside the event log ``events_uri``, if any (``{}`` when it
    cannot be parsed: the cancel still happened)."""
    try:
        data = await asyncio.to_thread(storage().get_bytes, record_uri(events_uri))
    except StorageError as exc:  # none there (or unreadable: read as no cancel)
        log.debug("no cancel record beside %s: %s", events_uri, exc)
        return None
    try:
        record = json.loads(data)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


async def annotate_pods(api: KubeApi, job_id: str, stamp: str) -> None:
    """Best effort: put the cancel annotation on each live pod of the run.

    The trainer reads its pod's annotations through a ``downwardAPI`` volume (kubelet
    refreshes it), so the coming SIGTERM reads as a cancel (``training.cancelled``, exit 0)
    rather than a disruption to retry. Only principals allowed to patch pods can do this: the
    sidecar has no write route. Failures are logged, never raised (the Job's annotation and the
    record in storage say the run was cancelled).
    """
    patch = {"metadata": {"annotations": {m.CANCEL_ANNOTATION: stamp}}}
    for pod in await api.job_pods(job_id):
        name = pod["metadata"]["name"]
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        try:
            await api.patch_pod(name, patch)
        except BackendError as exc:
            log.debug("cancel annotation on pod %s failed: %s", name, exc)


async def wait_gone(api: KubeApi, job_id: str, timeout_seconds: float) -> None:
    """Return once neither the Job nor any pod of it is left.

    Raises:
        BackendError: pods were still there after ``timeout_seconds``.
    """
    pods: list[dict[str, Any]] = []

    async def gone() -> bool | None:
        nonlocal pods
        try:
            await api.get_job(job_id)
            job_left = True
        except JobNotFoundError:
            job_left = False
        pods = await api.job_pods(job_id)
        return True if not job_left and not pods else None

    try:
        await poll(gone, Backoff(0.2, 1.5, 1.0), timeout_seconds=timeout_seconds)
    except TimeoutError:
        raise BackendError(
            f"cancel of {api.namespace}/{job_id}: {len(pods)} pod(s) still terminating "
            f"after {timeout_seconds:.0f}s; see `kubectl get pods "
            f"-l batch.kubernetes.io/job-name={job_id}`"
        ) from None
