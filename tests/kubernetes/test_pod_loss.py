"""Runs that lose pods, on the local cluster: what the client sees must stay true.

- A retryable failure that the Job retries is not the end of the run: storage fails in the
  first attempt only (``ARKOR_TEST_FAULT_STORAGE_ATTEMPTS``, a test hook), the run completes,
  ``on_failed`` never fires, the Job agrees. Failing in every attempt, it fails once, at the end.
- The trainer process is SIGKILLed mid-run, then the replacement pod is force-deleted
  (``--grace-period=0``: its sidecar never persists). Every event id the client gets is new and
  increasing, it misses nothing of the final log, it sees one ``on_started`` and one
  ``on_resumed`` per resume, and the steps after each resume go on from the resumed step.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.backends.kubernetes.diagnostics import current_pod
from arkor_ops.eventlog import iter_log_lines
from arkor_ops.events import TERMINAL_TYPES, Frame
from arkor_ops.settings import KubernetesSettings
from tests.fixtures.cluster import K8sCluster

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.train, pytest.mark.timeout(900)]

MAX_STEPS = 900
HOOK = "ARKOR_TEST_FAULT_STORAGE_ATTEMPTS"
SAVE_STEPS = 30


def _backend(settings: KubernetesSettings, **changes: Any) -> KubernetesBackend:
    return KubernetesBackend(settings.model_copy(update=changes))


def _record_frames(backend: KubernetesBackend, seen: list[int]) -> None:
    """Keep the id of every event frame the trainer reads (a spy on the public method)."""
    events = backend.events

    async def recording(job_id: str, last_event_id: str | None = None) -> AsyncIterator[Frame]:
        async for frame in events(job_id, last_event_id):
            if frame.id is not None and not (frame.is_end or frame.is_ping):
                seen.append(int(frame.id))
            yield frame

    backend.events = recording  # type: ignore[method-assign]


async def _final_job_status(backend: KubernetesBackend, job_id: str) -> dict[str, Any]:
    status: dict[str, Any] = {}
    for _ in range(480):
        status = (await backend.api.get_job(job_id)).get("status") or {}
        if status.get("succeeded") or any(
            c.get("type") == "Failed" and c.get("status") == "True"
            for c in status.get("conditions") or []
        ):
            break
        await asyncio.sleep(0.25)
    return status


def _worker_pid(job_id: str) -> int | None:
    """The trainer process of the run's current pod (pods are processes of this machine)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"arkor_ops.worker" in cmdline and f"ARKOR_JOB_ID={job_id}".encode() in environ:
            return int(entry.name)
    return None


async def test_a_failure_in_every_attempt_fails_the_run_once(
    kube_settings: KubernetesSettings, run_config: Callable[..., dict[str, Any]]
) -> None:
    env = {**kube_settings.env, HOOK: "1,2"}
    backend = _backend(kube_settings, backoff_limit=1, env=env)
    seen: list[tuple[str, Any]] = []
    try:
        trainer = create_async_trainer(
            **run_config(),
            backend=backend,
            on_phase=lambda ctx: seen.append((f"phase:{ctx.phase}", ctx)),
            on_failed=lambda ctx: seen.append(("failed", ctx)),
        )
        result = await asyncio.wait_for(trainer.wait(), timeout=600)
        names = [n for n, _ in seen]
        assert result.job.status == "failed", (result.job, names)
        # the trainer's own retrying (with its error); the backend may add one without, while
        # the replacement pod is pending
        ours = [c for n, c in seen if n == "phase:retrying" and HOOK in (c.message or "")]
        assert len(ours) == 1 and names.count("failed") == 1, names
        assert "in attempt 2" in (result.job.error or "")
        status = await _final_job_status(backend, result.job.id)
        assert not status.get("succeeded") and status.get("failed") == 2, status
    finally:
        await backend.aclose()


async def test_a_failure_the_job_retries_is_not_the_end_of_the_run(
    kube_settings: KubernetesSettings, run_config: Callable[..., dict[str, Any]]
) -> None:
    env = {**kube_settings.env, HOOK: "1"}
    backend = _backend(kube_settings, backoff_limit=1, env=env)
    seen: list[tuple[str, Any]] = []

    def recorder(name: str) -> Callable[[Any], None]:
        return lambda ctx: seen.append((name, ctx))

    names = ("on_phase", "on_started", "on_resumed", "on_failed", "on_completed")
    callbacks = {name: recorder(name) for name in names}
    try:
        trainer = create_async_trainer(**run_config(), backend=backend, callbacks=callbacks)
        result = await asyncio.wait_for(trainer.wait(), timeout=600)
        names = [n for n, _ in seen]
        assert result.job.status == "completed", (result.job, names)
        retrying = [
            c
            for n, c in seen
            if n == "on_phase" and c.phase == "retrying" and HOOK in (c.message or "")
        ]
        assert len(retrying) == 1, names  # the trainer's, with the error it retries after
        assert "on_failed" not in names
        # the first attempt failed before training began: the retry starts, it does not resume
        assert names.count("on_started") == 1 and "on_resumed" not in names
        status = await _final_job_status(backend, result.job.id)
        assert status.get("succeeded") == 1, status
        assert status.get("failed") == 1, status  # the one retry the run spent
        log = list(
            iter_log_lines(backend.storage().get_bytes(backend.events_uri(result.job.id, None)))
        )
        assert [e["type"] for e in log if e["type"] in TERMINAL_TYPES] == ["training.completed"]
    finally:
        await backend.aclose()


async def test_a_killed_trainer_and_a_force_deleted_pod_never_repeat_an_event(
    kube_settings: KubernetesSettings,
    run_config: Callable[..., dict[str, Any]],
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
) -> None:
    backend = _backend(kube_settings, backoff_limit=3)
    ids: list[int] = []
    _record_frames(backend, ids)
    seen: list[tuple[str, Any]] = []
    checkpoint = asyncio.Event()
    progressed = asyncio.Event()

    def on_log(ctx: Any) -> None:
        seen.append(("log", ctx.step))
        resumes = [c for n, c in seen if n == "resumed"]
        if resumes and ctx.step >= resumes[-1].step + 5:
            progressed.set()

    def on_checkpoint(ctx: Any) -> None:
        seen.append(("checkpoint", ctx.step))
        checkpoint.set()

    trainer = create_async_trainer(
        **run_config(max_steps=MAX_STEPS, save_steps=SAVE_STEPS),
        backend=backend,
        on_started=lambda ctx: seen.append(("started", ctx)),
        on_resumed=lambda ctx: seen.append(("resumed", ctx)),
        on_log=on_log,
        on_checkpoint=on_checkpoint,
    )
    job_id = (await trainer.start()).job_id
    waiting = asyncio.create_task(trainer.wait())
    try:
        await asyncio.wait_for(checkpoint.wait(), timeout=300)
        pid = _worker_pid(job_id)
        assert pid is not None, "no trainer process found"
        os.kill(pid, signal.SIGKILL)  # exit 137; the pod's sidecar persists what it read

        await asyncio.wait_for(progressed.wait(), timeout=300)
        pod = current_pod(await backend.api.job_pods(job_id))
        assert pod is not None
        progressed.clear()
        k8s_cluster.kubectl(
            "delete", "pod", "-n", k8s_namespace, pod["metadata"]["name"],
            "--grace-period=0", "--force", "--wait=false",
        )  # fmt: skip
        result = await asyncio.wait_for(waiting, timeout=600)
    finally:
        waiting.cancel()
    try:
        assert result.job.status == "completed", result.job
        assert ids == sorted(set(ids)), "the client got an event id twice or out of order"
        log = list(iter_log_lines(backend.storage().get_bytes(backend.events_uri(job_id, None))))
        missed = sorted({e["id"] for e in log} - set(ids))
        assert not missed, f"the client skipped events {missed} of the persisted log"
        assert [e["id"] for e in log] == sorted({e["id"] for e in log})
        assert [e["type"] for e in log].count("training.started") == 1

        names = [n for n, _ in seen]
        assert names.count("started") == 1, names
        resumes = [c for n, c in seen if n == "resumed"]
        assert len(resumes) == 2, [(c.step, c.reason) for c in resumes]
        assert all(c.attempt >= 2 and c.reason for c in resumes)
        assert "killed" in resumes[0].reason or "lost" in resumes[0].reason
        # Steps: 1, 2, … up to the kill; after each resume from step s: s+1, s+2, … (re-done
        # steps), never a gap, up to MAX_STEPS.
        segment: list[int] = []
        start = 1
        for name, ctx in [*seen, ("resumed", None)]:
            if name == "log":
                segment.append(ctx)
            elif name == "resumed":
                assert segment == list(range(start, start + len(segment))), (start, segment)
                if ctx is not None:
                    assert ctx.step % SAVE_STEPS == 0 and ctx.step >= SAVE_STEPS
                    start, segment = ctx.step + 1, []
        assert segment and segment[-1] == MAX_STEPS
        status = await _final_job_status(backend, job_id)
        assert status.get("succeeded") == 1, status
    finally:
        await backend.aclose()
