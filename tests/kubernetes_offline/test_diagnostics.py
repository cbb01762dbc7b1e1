"""Why a run waits or failed, from plain Job/Pod/Event dicts."""

from __future__ import annotations

from typing import Any

from arkor_ops.backends.kubernetes.diagnostics import current_pod, diagnose, sidecar_ready


def job(**spec: Any) -> dict[str, Any]:
    conditions = spec.pop("conditions", [])
    labels = spec.pop("labels", {})
    meta = spec.pop("meta", {})
    return {
        "metadata": {"name": "run-1", "labels": labels, **meta},
        "spec": spec,
        "status": {"conditions": conditions},
    }


def cond(kind: str, reason: str = "", message: str = "", status: str = "True") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def pod(phase: str = "Pending", *, name: str = "run-1-abcde", **status: Any) -> dict[str, Any]:
    meta = status.pop("meta", {})
    return {
        "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z", **meta},
        "status": {"phase": phase, **status},
    }


def waiting(name: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"name": name, "state": {"waiting": {"reason": reason, "message": message}}}


def event(kind: str, name: str, reason: str, message: str) -> dict[str, Any]:
    return {
        "involvedObject": {"kind": kind, "name": name},
        "reason": reason,
        "message": message,
        "lastTimestamp": "2026-01-01T00:00:01Z",
    }


def test_suspended_by_kueue_is_queued_with_the_queue_message() -> None:
    j = job(suspend=True, labels={"kueue.x-k8s.io/queue-name": "team-a"})
    ev = event(
        "Job", "run-1", "Pending", "couldn't assign flavors to pod set main: insufficient quota"
    )
    d = diagnose(j, [], [ev])
    assert (d.phase, d.reason, d.terminal) == ("queued", "Suspended", False)
    assert "insufficient quota" in (d.message or "")
    assert "team-a" in (d.hint or "")


def test_no_pod_yet_and_failed_create_for_quota() -> None:
    assert diagnose(job(), [], []).phase == "pending"
    ev = event("Job", "run-1", "FailedCreate", 'pods "run-1-x" is forbidden: exceeded quota: gpu')
    d = diagnose(job(), [], [ev])
    assert (d.phase, d.reason) == ("create-failed", "FailedCreate")
    assert "resourcequota" in (d.hint or "").lower() or "quota" in (d.hint or "")


def test_unschedulable_names_the_scheduler_reason() -> None:
    msg = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    p = pod(conditions=[cond("PodScheduled", "Unschedulable", msg, status="False")])
    d = diagnose(job(), [p], [])
    assert (d.phase, d.reason, d.message) == ("unschedulable", "Unschedulable", msg)
    assert "GPU_TYPE" in (d.hint or "")


def test_unschedulable_falls_back_to_the_event() -> None:
    p = pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}])
    ev = event("Pod", "run-1-abcde", "FailedScheduling", "0/1 nodes: Insufficient nvidia.com/gpu")
    assert diagnose(job(), [p], [ev]).message == "0/1 nodes: Insufficient nvidia.com/gpu"


def test_image_pull_errors() -> None:
    for reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
        p = pod(initContainerStatuses=[waiting("sidecar", reason, "pull access denied")])
        d = diagnose(job(), [p], [])
        assert (d.phase, d.reason, d.message) == ("image-pull-error", reason, "pull access denied")
        assert "IMAGE" in (d.hint or "")


def test_pulling_and_config_error() -> None:
    p = pod(containerStatuses=[waiting("trainer", "ContainerCreating")])
    ev = event("Pod", "run-1-abcde", "Pulling", 'Pulling image "trainer:1"')
    assert diagnose(job(), [p], [ev]).phase == "pulling"
    p = pod(
        containerStatuses=[
            waiting("trainer", "CreateContainerConfigError", 'secret "s3" not found')
        ]
    )
    d = diagnose(job(), [p], [])
    assert (d.phase, d.message) == ("config-error", 'secret "s3" not found')


def test_crash_loop_of_the_sidecar() -> None:
    p = pod(
        "Running", initContainerStatuses=[waiting("sidecar", "CrashLoopBackOff", "back-off 40s")]
    )
    d = diagnose(job(), [p], [])
    assert (d.phase, d.reason) == ("crash-loop", "CrashLoopBackOff")
    assert "-c sidecar --previous" in (d.hint or "")


def test_oom_killed_pod_and_job_that_ran_out_of_retries() -> None:
    oom = {"name": "trainer", "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}
    p = pod("Failed", containerStatuses=[oom])
    d = diagnose(job(), [p], [])
    assert (d.phase, d.reason, d.terminal) == ("oom-killed", "OOMKilled", False)
    failed = job(
        conditions=[
            cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        ]
    )
    d = diagnose(failed, [p], [])
    assert (d.phase, d.reason, d.terminal) == ("failed", "OOMKilled", True)
    assert "MEMORY_LIMIT" in (d.hint or "")


def test_deadline_exceeded_and_never_retry_exit_code() -> None:
    d = diagnose(
        job(
            conditions=[
                cond("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
            ]
        ),
        [],
        [],
    )
    assert (d.phase, d.reason, d.terminal) == ("failed", "DeadlineExceeded", True)
    assert "ACTIVE_DEADLINE" in (d.hint or "")
    d = diagnose(job(conditions=[cond("FailureTarget", "PodFailurePolicy", "exit code 2")]), [], [])
    assert (d.phase, d.reason, d.terminal) == ("failed", "PodFailurePolicy", True)


def test_completed() -> None:
    d = diagnose(job(conditions=[cond("Complete")]), [pod("Succeeded")], [])
    assert (d.phase, d.terminal) == ("completed", True)
    assert diagnose(job(conditions=[cond("Complete", status="False")]), [], []).phase == "pending"


def test_running_and_starting() -> None:
    running = {"name": "trainer", "state": {"running": {"startedAt": "t"}}}
    side = {"name": "sidecar", "state": {"running": {"startedAt": "t"}}}
    p = pod("Running", containerStatuses=[running], initContainerStatuses=[side])
    assert diagnose(job(), [p], []).phase == "running"
    assert sidecar_ready(p)
    p2 = pod("Pending", containerStatuses=[waiting("trainer", "PodInitializing")])
    assert diagnose(job(), [p2], []).phase == "starting"
    assert not sidecar_ready(p2)


def test_evicted_pod_is_retried_and_the_replacement_preferred() -> None:
    disruption = cond("DisruptionTarget", "EvictionByEvictionAPI", "Eviction API: evicting")
    old = pod("Running", name="run-1-old", conditions=[disruption], meta={"deletionTimestamp": "t"})
    d = diagnose(job(), [old], [])
    assert (d.phase, d.reason) == ("retrying", "EvictionByEvictionAPI")
    new = pod("Pending", name="run-1-new")
    new["metadata"]["creationTimestamp"] = "2026-01-01T00:01:00Z"
    assert current_pod([new, old]) is new
    assert current_pod([]) is None


def test_cancelling() -> None:
    j = job(meta={"annotations": {"arkor-ops.dev/cancel-requested": "now"}})
    assert diagnose(j, [pod("Running")], []).phase == "cancelling"
    assert diagnose(job(meta={"deletionTimestamp": "t"}), [], []).phase == "cancelling"
