"""The event stream of one run on Kubernetes, whatever state the run is in.

* The pod's sidecar is up: relay its SSE stream through the API server's pod proxy (or the pod
  IP, for in-cluster clients).
* The trainer is not running yet: poll the Job, its pods and events and yield ``job.phase``
  frames (no id) whenever :func:`~.diagnostics.diagnose` changes its mind.
* The pod is gone or the Job finished: replay the event log the sidecar persisted to storage,
  then ``end``. A Job that failed without a terminal event (deadline while pending, OOMKilled
  on every try) ends with a synthesised ``training.failed``; a cancelled one (the Job's cancel
  annotation, or the cancel record beside the log once the Job is gone: see
  :mod:`.cancel`) with a synthesised ``training.cancelled``, whoever cancelled. An evaluation
  Job's synthesised ending is ``evaluation.failed`` / ``evaluation.cancelled`` instead, also when
  it ended before its log had a line (the Job's stage label, remembered once seen, or the
  cancel record's ``stage`` for a process that never saw the Job, says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

import httpx

from arkor_ops.backends.kubernetes import cancel as kube_cancel
from arkor_ops.backends.kubernetes import manifests as m
from arkor_ops.backends.kubernetes.client import KubeApi, bearer_header
from arkor_ops.backends.kubernetes.diagnostics import (
    Diagnosis,
    current_pod,
    diagnose,
    sidecar_ready,
)
from arkor_ops.errors import BackendError, JobNotFoundError, StorageError, StreamError
from arkor_ops.eventlog import iter_log_lines
from arkor_ops.events import (
    TERMINAL_TYPES,
    EvaluationCancelled,
    EvaluationFailed,
    Frame,
    JobPhase,
    TrainingCancelled,
    TrainingFailed,
    event_to_json,
)
from arkor_ops.follow import follow
from arkor_ops.polling import Backoff
from arkor_ops.sse import stream_frames
from arkor_ops.storage import Storage

log = logging.getLogger(__name__)

#: How long a starting sidecar may refuse connections before the stream reports an error.
SIDECAR_START_SECONDS = 60.0
_END = Frame(event="end")


def phase_frame(job_id: str, diagnosis: Diagnosis) -> Frame:
    """A ``job.phase`` frame (no id) for a diagnosis."""
    event = JobPhase(
        job_id=job_id,
        phase=diagnosis.phase,
        reason=diagnosis.reason,
        message=diagnosis.message,
        hint=diagnosis.hint,
    )
    return Frame(event="job.phase", data=event_to_json(event))


def replay_frames(
    job_id: str,
    data: bytes,
    last_event_id: str | None,
    *,
    fallback: Diagnosis | None,
    cancelled: bool,
    evaluation: bool = False,
) -> list[Frame]:
    """Frames of a persisted event log after ``last_event_id``, ending with ``end``.

    Args:
        job_id: the run.
        data: the ``events.jsonl`` content (may be empty).
        last_event_id: resume after this id.
        fallback: why the Job ended, used when the log has no terminal event.
        cancelled: the run was cancelled (the log may have lost its terminal event).
        evaluation: the run is an evaluation job (else only an ``evaluation.*`` line says so).

    Returns:
        The frames; always ends with a terminal event and ``end``.
    """
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    frames: list[Frame] = []
    terminal = False
    retry_error = None
    for obj in iter_log_lines(data):
        event_id = obj.get("id")
        terminal = terminal or obj.get("type") in TERMINAL_TYPES
        evaluation = evaluation or str(obj.get("type", "")).startswith("evaluation.")
        if obj.get("type") == "job.phase" and obj.get("phase") == "retrying":
            retry_error = obj.get("message")
        if isinstance(event_id, int) and event_id <= after:
            continue
        kind = str(obj.get("type", "message"))
        frames.append(Frame(event=kind, data=json.dumps(obj), id=str(event_id)))
    if not terminal:
        if cancelled:
            synth: Any = (EvaluationCancelled if evaluation else TrainingCancelled)(job_id=job_id)
        else:
            why = fallback.message if fallback and fallback.message else "the run's Job is gone"
            if retry_error:  # the Job gave up before the worker's own count said it would
                why = f"{why}; the last attempt failed: {retry_error}"
            synth = (EvaluationFailed if evaluation else TrainingFailed)(job_id=job_id, error=why)
        frames.append(Frame(event=synth.type, data=event_to_json(synth)))
    frames.append(_END)
    return frames


class RunStream:
    """Opens the event stream of one run, once (the trainer owns reconnects)."""

    def __init__(
        self,
        api: KubeApi,
        http: httpx.AsyncClient,
        storage: Callable[[], Storage],
        events_uri: Callable[[str, dict[str, Any] | None], str],
        *,
        port: int,
        direct: bool = False,
        poll_seconds: float = 0.25,
        cancelled: set[str] | None = None,
        evaluations: set[str] | None = None,
    ) -> None:
        self.api = api
        self.http = http
        self.storage = storage
        self.events_uri = events_uri
        self.port = port
        self.direct = direct
        self.poll_seconds = poll_seconds
        self.cancelled = cancelled if cancelled is not None else set()
        #: Jobs seen as evaluations (their stage label), so a gone one still ends as one.
        self.evaluations = evaluations if evaluations is not None else set()

    def sidecar_url(self, job_id: str, pod: dict[str, Any], path: str | None = None) -> str:
        """A URL of the pod's sidecar (pod proxy path, or the pod IP when direct).

        ``path`` is the sidecar route (``healthz``, ``v1/jobs/…/cancel``); default the run's stream.
        """
        path = path or f"v1/jobs/{job_id}/events/stream"
        if self.direct:
            return f"http://{pod['status']['podIP']}:{self.port}/{path}"
        name = pod["metadata"]["name"]
        return f"/api/v1/namespaces/{self.api.namespace}/pods/{name}:{self.port}/proxy/{path}"

    async def replay(
        self,
        job_id: str,
        job: dict[str, Any] | None,
        last_event_id: str | None,
        fallback: Diagnosis | None,
    ) -> list[Frame]:
        """Frames from the persisted log; raises StreamError(404) when there is no run at all."""
        uri = self.events_uri(job_id, job)
        record = await kube_cancel.recorded(self.storage, uri)
        cancelled = job_id in self.cancelled or kube_cancel.requested(job) or record is not None
        try:
            data = await asyncio.to_thread(self.storage().get_bytes, uri)
        except StorageError:
            if job is None and not cancelled:
                msg = f"run {job_id}: no Job and no event log at {uri}"
                raise StreamError(msg, status=404) from None
            data = b""
        return replay_frames(
            job_id,
            data,
            last_event_id,
            fallback=fallback,
            cancelled=cancelled,
            evaluation=job_id in self.evaluations or (record or {}).get("stage") == "evaluation",
        )

    def _remember_cancel(self, job_id: str, job: dict[str, Any]) -> None:
        """Note a cancel annotation and the stage seen on the Job: they go away with the Job."""
        if kube_cancel.requested(job):
            self.cancelled.add(job_id)
        labels = (job.get("metadata") or {}).get("labels") or {}
        if labels.get(m.STAGE_LABEL) == "evaluation":
            self.evaluations.add(job_id)

    async def relay(
        self, job_id: str, pod: dict[str, Any], last_event_id: str | None
    ) -> AsyncGenerator[Frame, None]:
        """The sidecar's own stream.

        Raises:
            StreamError: as :func:`arkor_ops.sse.stream_frames`.
        """
        headers = {} if self.direct else bearer_header(self.api.cfg)
        url = self.sidecar_url(job_id, pod)
        source = cast(
            AsyncGenerator[Frame, None],
            stream_frames(self.http, url, last_event_id=last_event_id, headers=headers),
        )
        async with contextlib.aclosing(source) as frames:
            async for frame in frames:
                yield frame

    async def last_id(self, job_id: str, pod: dict[str, Any], timeout: float) -> int | None:
        """The id of the last event the pod's sidecar has read (``/healthz``); None if unknown."""
        headers = {} if self.direct else bearer_header(self.api.cfg)
        url = self.sidecar_url(job_id, pod, "healthz")
        try:
            resp = await self.http.get(url, headers=headers, timeout=timeout)
            resp.raise_for_status()
            return int(resp.json()["lastEventId"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.debug("sidecar health of %s unknown: %s", job_id, exc)
            return None

    async def peek(
        self,
        job_id: str,
        pod: dict[str, Any],
        idle_seconds: float = 0.5,
        first_frame_seconds: float = 10.0,
        *,
        after: int = 0,
    ) -> list[dict[str, Any]]:
        """Events the live sidecar has so far (``after``: only those after that id).

        Reads the stream up to the last event id the sidecar's ``/healthz`` reported first: a
        run that logs more often than every ``idle_seconds`` never goes quiet. Without that id,
        ``idle_seconds`` of silence means the backlog is read. The first frame may take a while
        (a cold connection through the API server's pod proxy on a busy node).
        """
        upto = await self.last_id(job_id, pod, first_frame_seconds)
        if upto == 0:
            return []  # nothing written yet
        out: list[dict[str, Any]] = []
        frames = follow(
            lambda last: self.frames(job_id, last),
            after=str(after) if after else None,
            upto=upto,
            first_frame_seconds=first_frame_seconds,
            idle_seconds=idle_seconds,
        )
        try:
            async with contextlib.aclosing(frames):
                async for frame in frames:
                    with contextlib.suppress(ValueError):
                        data = json.loads(frame.data) if frame.data else None
                        if isinstance(data, dict) and frame.id is not None:
                            out.append(data)
        except BackendError:
            pass  # what was read so far
        return out

    async def frames(self, job_id: str, last_event_id: str | None) -> AsyncGenerator[Frame, None]:
        """Yield the run's frames until the stream ends (see the module docstring).

        Raises:
            StreamError: the run does not exist (404), the API refused (401/403), or the sidecar
                stream broke off after frames arrived (``status=None``).
        """
        last: Diagnosis | None = None
        delays = iter(Backoff(self.poll_seconds, 1.5, 2.0))
        refused_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            try:
                job = await self.api.get_job(job_id)
                pods = await self.api.job_pods(job_id)
            except JobNotFoundError:
                for frame in await self.replay(job_id, None, last_event_id, last):
                    yield frame
                return
            except BackendError as exc:
                raise StreamError(str(exc), status=exc.status) from exc
            self._remember_cancel(job_id, job)
            pod = current_pod(pods)
            if pod is not None and sidecar_ready(pod):
                relayed = False
                try:
                    async with contextlib.aclosing(self.relay(job_id, pod, last_event_id)) as src:
                        async for frame in src:
                            relayed = True
                            yield frame
                    return
                except StreamError as exc:
                    now = loop.time()
                    refused_since = refused_since or now
                    starting = exc.status in (None, 502, 503)
                    if relayed or not starting or now - refused_since > SIDECAR_START_SECONDS:
                        raise
                    log.debug("sidecar of %s not answering yet: %s", job_id, exc)
            names = [job_id, *(p["metadata"]["name"] for p in pods)]
            try:
                events = await self.api.events(names)
            except BackendError as exc:
                log.debug("cannot list events of %s: %s", job_id, exc)
                events = []
            diagnosis = diagnose(job, pods, events)
            if diagnosis.terminal and not any(sidecar_ready(p) for p in pods):
                for frame in await self.replay(job_id, job, last_event_id, diagnosis):
                    yield frame
                return
            if diagnosis != last:
                last = diagnosis
                yield phase_frame(job_id, diagnosis)
            await asyncio.sleep(next(delays))
