"""Why a run is waiting, or why it failed: a pure function of the Job, its Pods and Events.

Inputs are plain camelCase dicts (what ``kubectl get -o json`` shows), so every case is tested
with literal dicts. The backend turns a :class:`Diagnosis` into a ``job.phase`` event while the
trainer is not running yet, and into the failure message when the Job fails without a terminal
event from the trainer.

Phases: ``queued``, ``pending``, ``create-failed``, ``unschedulable``, ``pulling``,
``image-pull-error``, ``config-error``, ``starting``, ``crash-loop``, ``oom-killed``,
``retrying``, ``running``, ``cancelling``, ``completed``, ``failed``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from arkor_ops.backends.kubernetes.manifests import (
    CANCEL_ANNOTATION,
    KUEUE_QUEUE_LABEL,
    SIDECAR,
    TRAINER,
)
from arkor_ops.events import Phase

_IMAGE_ERRORS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "RegistryUnavailable",
    }
)
_CONFIG_ERRORS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)


@dataclass(frozen=True)
class Diagnosis:
    """The run's state as the cluster explains it.

    Attributes:
        phase: short state (see the module docstring).
        reason: machine-readable reason from Kubernetes, e.g. ``Unschedulable``.
        message: what the cluster says, for a person.
        hint: what to do about it (None when nothing is needed).
        terminal: the Job has finished (completed or failed) and will not run again.
    """

    phase: Phase
    reason: str | None = None
    message: str | None = None
    hint: str | None = None
    terminal: bool = False


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    conds = (obj.get("status") or {}).get("conditions") or []
    return {c.get("type", ""): c for c in conds if c.get("status") == "True"}


def _events_for(events: Iterable[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    picked = [
        e
        for e in events
        if (e.get("involvedObject") or {}).get("kind") == kind
        and (e.get("involvedObject") or {}).get("name") == name
    ]
    return sorted(picked, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))


def _last_event(events: list[dict[str, Any]], *reasons: str) -> dict[str, Any] | None:
    for event in reversed(events):
        if event.get("reason") in reasons:
            return dict(event)
    return None


def _statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def _trainer_status(pod: dict[str, Any]) -> dict[str, Any]:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == TRAINER:
            return dict(cs)
    return {}


def trainer_exit_code(pod: dict[str, Any]) -> int | None:
    """The exit code of the pod's trainer container once it has terminated, else None."""
    code = ((_trainer_status(pod).get("state") or {}).get("terminated") or {}).get("exitCode")
    return int(code) if code is not None else None


def _oom(pod: dict[str, Any]) -> bool:
    for cs in _statuses(pod):
        for state in (cs.get("state") or {}, cs.get("lastState") or {}):
            if (state.get("terminated") or {}).get("reason") == "OOMKilled":
                return True
    return False


def _pod_created_at(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("creationTimestamp") or "")


def current_pod(pods: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The pod that matters now: the newest one not being deleted, else the newest one.

    Args:
        pods: the Job's pods.

    Returns:
        A pod, or None when there are none.
    """
    ordered = sorted(pods, key=_pod_created_at)
    alive = [p for p in ordered if not (p.get("metadata") or {}).get("deletionTimestamp")]
    picked = alive or ordered
    return picked[-1] if picked else None


def sidecar_ready(pod: dict[str, Any]) -> bool:
    """Whether the pod runs and its sidecar container is running (the event stream is up)."""
    if (pod.get("status") or {}).get("phase") != "Running":
        return False
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    for cs in _statuses(pod):
        if cs.get("name") == SIDECAR:
            return "running" in (cs.get("state") or {})
    return False


def _job_finished(job: dict[str, Any], pod: dict[str, Any] | None) -> Diagnosis | None:
    conds = _conditions(job)
    if "Complete" in conds or "SuccessCriteriaMet" in conds:
        return Diagnosis("completed", "Completed", "The Job completed.", terminal=True)
    failed = conds.get("Failed") or conds.get("FailureTarget")
    if failed is None:
        return None
    reason = failed.get("reason") or "Failed"
    message = failed.get("message") or "The Job failed."
    hint = None
    if reason == "DeadlineExceeded":
        hint = "The run hit activeDeadlineSeconds; raise ARKOR_K8S_ACTIVE_DEADLINE_SECONDS."
    elif reason == "PodFailurePolicy":
        hint = "The trainer exited with code 2 (never retried): see `kubectl logs` of the trainer."
    elif reason == "BackoffLimitExceeded":
        hint = "Every retry failed: see `kubectl logs` of the last pod (trainer container)."
        if pod is not None and _oom(pod):
            reason = "OOMKilled"
            message = "The trainer ran out of memory (OOMKilled) on every try."
            hint = "Raise ARKOR_K8S_MEMORY_LIMIT or lower batch_size / max_length."
    return Diagnosis("failed", reason, message, hint, terminal=True)


def _job_waiting(job: dict[str, Any], job_events: list[dict[str, Any]]) -> Diagnosis | None:
    spec = job.get("spec") or {}
    labels = (job.get("metadata") or {}).get("labels") or {}
    if spec.get("suspend"):
        queue = labels.get(KUEUE_QUEUE_LABEL)
        if queue:
            pending = _last_event(job_events, "Pending", "Suspended")
            message = (pending or {}).get("message") or f"Waiting for admission by queue {queue!r}."
            hint = (
                f"Kueue admits it when the ClusterQueue behind LocalQueue {queue!r} has quota: "
                "`kubectl get workloads` shows the queue position."
            )
            return Diagnosis("queued", "Suspended", message, hint)
        return Diagnosis("queued", "Suspended", "The Job is suspended.", "It starts when resumed.")
    failed_create = _last_event(job_events, "FailedCreate")
    if failed_create is not None:
        message = str(failed_create.get("message") or "The Job could not create its pod.")
        hint = "Check the namespace's ResourceQuota and LimitRange: `kubectl describe quota`."
        if "quota" not in message.lower():
            hint = "See `kubectl describe job` for the admission error."
        return Diagnosis("create-failed", "FailedCreate", message, hint)
    return None


def _unschedulable(pod: dict[str, Any], pod_events: list[dict[str, Any]]) -> Diagnosis | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            event = _last_event(pod_events, "FailedScheduling")
            message = cond.get("message") or (event or {}).get("message") or "No node fits."
            hint = (
                "No node matches the run's GPU type, node pool or resources: check "
                "ARKOR_K8S_GPU_TYPE / GPU_COUNT / NODE_SELECTOR / TOLERATIONS against "
                "`kubectl get nodes --show-labels`, or wait for the autoscaler."
            )
            return Diagnosis("unschedulable", cond.get("reason") or "Unschedulable", message, hint)
    return None


def _waiting(pod: dict[str, Any], pod_events: list[dict[str, Any]]) -> Diagnosis | None:
    for cs in _statuses(pod):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        name = cs.get("name")
        message = waiting.get("message") or f"Container {name} is waiting ({reason})."
        if reason in _IMAGE_ERRORS:
            hint = "Check ARKOR_K8S_IMAGE / SIDECAR_IMAGE and ARKOR_K8S_IMAGE_PULL_SECRETS."
            return Diagnosis("image-pull-error", reason, message, hint)
        if reason in _CONFIG_ERRORS:
            hint = "A referenced Secret or key is missing: check ARKOR_K8S_S3_SECRET_NAME."
            return Diagnosis("config-error", reason, message, hint)
        if reason == "CrashLoopBackOff":
            hint = f"See `kubectl logs <pod> -c {name} --previous`."
            return Diagnosis("crash-loop", reason, message, hint)
    pulling = _last_event(pod_events, "Pulling", "Pulled")
    if pulling is not None and pulling.get("reason") == "Pulling":
        return Diagnosis("pulling", "Pulling", pulling.get("message") or "Pulling the image.")
    return None


def diagnose(
    job: dict[str, Any], pods: list[dict[str, Any]], events: list[dict[str, Any]]
) -> Diagnosis:
    """Explain the state of one run.

    Args:
        job: the Job (camelCase dict).
        pods: the Job's pods.
        events: recent Events of the namespace (those about the Job and its pods are used).

    Returns:
        The diagnosis; ``terminal`` only when the Job itself has finished.
    """
    meta = job.get("metadata") or {}
    pod = current_pod(pods)
    finished = _job_finished(job, pod)
    if finished is not None:
        return finished
    if meta.get("deletionTimestamp") or CANCEL_ANNOTATION in (meta.get("annotations") or {}):
        return Diagnosis("cancelling", "CancelRequested", "The run is being cancelled.")
    job_events = _events_for(events, "Job", str(meta.get("name", "")))
    waiting = _job_waiting(job, job_events)
    if waiting is not None and (pod is None or waiting.phase == "queued"):
        return waiting
    if pod is None:
        return Diagnosis("pending", "Creating", "The Job has not created a pod yet.")
    return _pod_diagnosis(pod, events)


def _pod_diagnosis(pod: dict[str, Any], events: list[dict[str, Any]]) -> Diagnosis:
    pod_name = str((pod.get("metadata") or {}).get("name", ""))
    pod_events = _events_for(events, "Pod", pod_name)
    status = pod.get("status") or {}
    oom_hint = "Raise ARKOR_K8S_MEMORY_LIMIT or lower batch_size / max_length."
    if status.get("phase") == "Failed" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        if _oom(pod):
            message = "The trainer ran out of memory (OOMKilled)."
            return Diagnosis("oom-killed", "OOMKilled", message, oom_hint)
        disrupted = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "DisruptionTarget"),
            None,
        )
        reason = (disrupted or {}).get("reason") or status.get("reason") or "PodFailed"
        message = str(
            (disrupted or {}).get("message")
            or status.get("message")
            or f"Pod {pod_name} stopped; the Job starts a replacement."
        )
        return Diagnosis("retrying", reason, message, "It resumes from the last checkpoint.")
    found = _unschedulable(pod, pod_events) or _waiting(pod, pod_events)
    if found is not None:
        return found
    if _oom(pod):
        return Diagnosis("oom-killed", "OOMKilled", "The trainer was OOMKilled.", oom_hint)
    if status.get("phase") == "Running" and "running" in (_trainer_status(pod).get("state") or {}):
        return Diagnosis("running", "Running", f"Pod {pod_name} is running.")
    return Diagnosis("starting", "ContainerCreating", f"Pod {pod_name} is starting.")
