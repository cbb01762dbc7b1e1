"""The run's Secret ends with the run, not with its Job.

The Secret ``{job}-secrets`` (dataset token, blob URL credentials, HF token) is read only when a
trainer container starts, so it has no use once the run has ended; left to the Job's
``ttlSecondsAfterFinished`` it would outlive the run by days. Run pods cannot delete it (they
get no ServiceAccount token), so the clients do, whichever comes first:

* a follower of the run (``wait()``, the flow's wait task, ``arkor-ops logs``) when its stream
  delivers a terminal event (:meth:`~arkor_ops.backends.kubernetes.KubernetesBackend.events`);
* ``cancel()``, once no pod is left;
* the reaper's sweep over finished Jobs (:func:`release_finished`), for runs nobody followed.

A terminal event comes before the Job is ``Complete``: the pod still stops its sidecar, and if
it is deleted or lost meanwhile, the Job starts a replacement. That pod must not depend on the
deleted Secret, or it would wait for it forever (``CreateContainerConfigError``) and so would
every client following the run. So the trainer references the run's Secret with
``optional: true`` (:mod:`.manifests`): a replacement starts without it, finds
the terminal event in the log it seeds from storage and exits at once (see
:mod:`arkor_ops.worker.run`). A deleted Secret is marked on its Job
(:data:`~.manifests.SECRET_DELETED_ANNOTATION`), so the sweep skips the Job and
an adopting submit does not create the Secret again (:mod:`.adoption`).
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime

from arkor_ops.backends.kubernetes import manifests as m
from arkor_ops.backends.kubernetes.client import KubeApi
from arkor_ops.backends.kubernetes.diagnostics import diagnose
from arkor_ops.errors import JobNotFoundError

log = logging.getLogger(__name__)


def secret_name(job_id: str) -> str:
    """The name of the run's Secret."""
    return f"{job_id}-secrets"


async def release(api: KubeApi, job_id: str) -> None:
    """Delete the run's Secret and mark its Job; a run without either is fine.

    Raises:
        PermissionDeniedError: the credentials may not delete Secrets or patch Jobs.
    """
    with contextlib.suppress(JobNotFoundError):
        await api.delete("secrets", secret_name(job_id))
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    with contextlib.suppress(JobNotFoundError):
        patch = {"metadata": {"annotations": {m.SECRET_DELETED_ANNOTATION: stamp}}}
        await api.patch_job(job_id, patch)
    log.info("deleted the Secret of run %s/%s", api.namespace, job_id)


async def release_finished(api: KubeApi) -> list[str]:
    """Release the Secret of every finished run not released yet; returns their job ids.

    Raises:
        PermissionDeniedError: the credentials may not list Jobs, delete Secrets or patch Jobs.
    """
    released = []
    for job in await api.list_jobs(m.SELECTOR):
        meta = job.get("metadata") or {}
        if m.SECRET_DELETED_ANNOTATION in (meta.get("annotations") or {}):
            continue
        if diagnose(job, [], []).terminal and not meta.get("deletionTimestamp"):
            await release(api, str(meta["name"]))
            released.append(str(meta["name"]))
    return released
