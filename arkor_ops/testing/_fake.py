"""The fake backend: its one job's script, served by Starlette on uvicorn (:mod:`._server`).

:class:`FakeBackend` implements :class:`~arkor_ops.backends.base.Backend` with httpx against
its own server on ``127.0.0.1``, so a trainer's submit, event stream (through
:func:`arkor_ops.sse.stream_frames`) and cancel all cross a real socket. Routes (shaped like
Arkor's cloud API)::

    POST /v1/jobs                         {name, config, idempotencyKey?} -> 201 {job}
    GET  /v1/jobs/{id}                    -> {job}
    GET  /v1/jobs/{id}/events/stream      SSE; honours Last-Event-ID
    POST /v1/jobs/{id}/cancel             -> {job}; appends training.cancelled if still running
                                          (evaluation.cancelled for an evaluation job)
    POST /v1/jobs/{id}/checkpoints/{step}/chat/completions
                                          infer(): ``infer_text`` as chunks ending [DONE] (or
                                          one completion); 409 for a step the script never
                                          saved, 410 once the script has a terminal event

An evaluation job (:meth:`FakeBackend.submit_evaluation`) is the same one job: the test scripts
its ``evaluation.*`` and ``job.phase`` events, and ``GET /v1/jobs/{id}`` reports the status of
its terminal event once the script holds one (the evaluator reads the outcome from there).

Each stream connection follows the next :class:`Connection` in ``connections`` (then the
default: stream until the terminal event, then ``end``), which is how tests inject status codes,
drops, clean closes, delays, pings and malformed frames. Everything a test may assert on is
recorded: :attr:`~FakeBackend.requests` (with headers), :attr:`~FakeBackend.submits`,
:attr:`~FakeBackend.cancels`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self

import httpx
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from arkor_ops import completions
from arkor_ops.backends.base import Backend, JobDescription, TrainingJob
from arkor_ops.config import TrainerConfig
from arkor_ops.errors import BackendError, JobNotFoundError, PermissionDeniedError
from arkor_ops.evaluation import EvaluationConfig, is_evaluation
from arkor_ops.events import (
    TERMINAL_TYPES,
    Artifact,
    CheckpointSaved,
    EvaluationCancelled,
    Frame,
    Metrics,
    TrainingCancelled,
    TrainingCompleted,
    TrainingFailed,
    TrainingLog,
    TrainingStarted,
    encode_frame,
    end_frame,
    event_to_dict,
    ping_frame,
    utc_now,
)
from arkor_ops.inference import NOT_HELD, RUN_ENDED, InferRequest, completion_from_chunks
from arkor_ops.sse import _error_text, stream_frames
from arkor_ops.testing._server import DropConnection, ServerThread

Then = Literal["end", "close", "drop", "hang"]

#: The fake speaks plain HTTP on loopback; skipping TLS setup saves ~50 ms per client.
_PLAIN_HTTP = False

#: A frame whose data is not JSON (the client must skip it).
MALFORMED_FRAME = encode_frame("training.log", "{not json")


@dataclass(frozen=True)
class Connection:
    """What one stream connection does.

    Attributes:
        status: HTTP status; anything but 200 answers with ``{"error": error}`` and closes.
        error: the error text for a non-200 answer (``None``: an empty body).
        body: a raw text body for a non-200 answer, instead of the JSON one.
        delay_seconds: wait this long before answering.
        before: raw SSE frames sent first (pings, malformed or unknown frames; see
            :func:`arkor_ops.events.encode_frame`).
        frames: send at most this many events (after ``Last-Event-ID``), then do ``then``;
            ``None``: no limit. Sending the terminal event also ends the events.
        then: ``end`` (an ``end`` frame, then a clean close), ``close`` (clean close),
            ``drop`` (cut the connection mid-body: a network error for the client) or ``hang``
            (keep the connection open, sending nothing more).
        ping_seconds: while waiting for new events, send a ping this often.
    """

    status: int = 200
    error: str | None = "fake failure"
    body: str | None = None
    delay_seconds: float = 0.0
    before: tuple[bytes, ...] = ()
    frames: int | None = None
    then: Then = "end"
    ping_seconds: float | None = None


@dataclass(frozen=True)
class Fault:
    """A non-2xx answer for one submit or cancel request (fields as in :class:`Connection`)."""

    status: int
    error: str | None = "fake failure"
    body: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the fake server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any = None


def scripted_events(
    job_id: str,
    *,
    steps: int = 3,
    outcome: Literal["completed", "failed", "cancelled", None] = "completed",
    checkpoint_every: int | None = 2,
) -> list[BaseModel]:
    """A typical run's events: started, one log per step, checkpoints, then the outcome.

    Args:
        job_id: the job id the events carry.
        steps: how many ``training.log`` events.
        outcome: the terminal event, or ``None`` for a run still going.
        checkpoint_every: a ``checkpoint.saved`` after every this many steps (``None``: none).

    Returns:
        The events, without ids (the fake numbers them from 1).
    """
    events: list[BaseModel] = [TrainingStarted(job_id=job_id, metadata={"model": "fake"})]
    for step in range(1, steps + 1):
        events.append(
            TrainingLog(job_id=job_id, step=step, loss=round(2.0 / step, 4), learning_rate=1e-4)
        )
        if checkpoint_every and step % checkpoint_every == 0:
            uri = f"file:///fake/{job_id}/checkpoints/step-{step:08d}/"
            art = Artifact(kind="checkpoint", job_id=job_id, uri=uri, step=step)
            events.append(CheckpointSaved(job_id=job_id, step=step, artifacts=[art]))
    if outcome == "completed":
        final = Artifact(kind="final", job_id=job_id, uri=f"file:///fake/{job_id}/final/")
        metrics = Metrics(final_loss=round(2.0 / max(steps, 1), 4), total_steps=steps)
        events.append(TrainingCompleted(job_id=job_id, artifacts=[final], metrics=metrics))
    elif outcome == "failed":
        events.append(TrainingFailed(job_id=job_id, error="CUDA OOM", step=steps))
    elif outcome == "cancelled":
        events.append(TrainingCancelled(job_id=job_id, step=steps))
    return events


class FakeBackend(Backend):
    """A :class:`Backend` whose one job replays a script over real HTTP/SSE on loopback.

    Args:
        events: the run's events (typed events or dicts); numbered ``1, 2, …`` unless they
            carry an ``id``. More can be added live with :meth:`emit`.
        connections: per stream connection, in order; afterwards :class:`Connection()`.
        job_id: the id of the job that ``submit`` creates.
        submit_faults: answers for the first submits (then 201).
        cancel_faults: answers for the first cancels (then 200).
        flow_run_id: the flow run its job belongs to (:meth:`jobs_by_flow_run`).
        infer_text: what every ``infer()`` answers (streamed in two pieces).

    The server runs until :meth:`close` (or the end of a ``with`` block); :meth:`aclose`, which
    code under test calls when it is done with a backend, leaves it running for the test.
    """

    def __init__(
        self,
        events: Iterable[BaseModel | Mapping[str, Any]] = (),
        *,
        connections: Iterable[Connection] = (),
        job_id: str = "fake-job-1",
        submit_faults: Iterable[Fault] = (),
        cancel_faults: Iterable[Fault] = (),
        flow_run_id: str | None = None,
        infer_text: str = '{"answer": "fake"}',
    ) -> None:
        self.job_id = job_id
        self.infer_text = infer_text
        self.flow_run_id = flow_run_id
        self.connections = list(connections)
        self.submit_faults = list(submit_faults)
        self.cancel_faults = list(cancel_faults)
        self.requests: list[RecordedRequest] = []
        self.submits: list[dict[str, Any]] = []
        self.cancels: list[str] = []
        self.job: TrainingJob | None = None
        self._events: list[dict[str, Any]] = []
        self._keys: dict[str, TrainingJob] = {}
        self._changed = asyncio.Condition()
        self._stopping = False
        self._server = ServerThread(self._app(), name="fake-backend")
        for event in events:
            self._append(event)

    # -- test-facing API -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the fake server, e.g. ``http://127.0.0.1:54321``."""
        return self._server.url

    @property
    def stream_requests(self) -> list[RecordedRequest]:
        """The event-stream requests, in order."""
        return [r for r in self.requests if r.path.endswith("/events/stream")]

    @property
    def last_event_ids(self) -> list[str | None]:
        """The ``Last-Event-ID`` header of each stream request (``None`` when absent)."""
        return [r.headers.get("last-event-id") for r in self.stream_requests]

    def emit(self, event: BaseModel | Mapping[str, Any]) -> None:
        """Append an event to the script; open streams deliver it.

        Args:
            event: a typed event or its dict; numbered after the last one unless it has an id.
        """
        self._server.call(self._emit(event))

    def close(self) -> None:
        """End the open streams, stop the server and its thread."""
        self._server.stop(self._stop)

    def __enter__(self) -> FakeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- Backend ---------------------------------------------------------------------------

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """A fake with the given constructor arguments (it reads no environment)."""
        return cls(**overrides)

    def job_id_for(self, config: TrainerConfig, idempotency_key: str) -> str | None:
        """The fake's one job id, whatever the key."""
        return self.job_id

    async def list_jobs(self) -> list[JobDescription]:
        """The fake's job, once submitted."""
        return [] if self.job is None else [await self.describe(self.job_id)]

    async def jobs_by_flow_run(self) -> dict[str, str]:
        """``{job id: flow run id}`` once the job is submitted, when a flow run was given."""
        if self.job is None or self.flow_run_id is None:
            return {}
        return {self.job_id: self.flow_run_id}

    async def submit(
        self, config: TrainerConfig, *, idempotency_key: str | None = None
    ) -> TrainingJob:
        """Create the job over HTTP (``POST /v1/jobs``).

        Raises:
            BackendError: the fake answered with a fault (message from its ``error`` field).
        """
        body: dict[str, Any] = {"name": config.name, "config": config.to_wire()}
        if idempotency_key is not None:
            body["idempotencyKey"] = idempotency_key
        data = await self._request("POST", "/v1/jobs", body)
        return TrainingJob.model_validate(data["job"])

    async def submit_evaluation(
        self, config: EvaluationConfig, *, idempotency_key: str | None = None
    ) -> TrainingJob:
        """Create the evaluation job over HTTP, as :meth:`submit` does (the script holds its
        ``evaluation.*`` events).

        Raises:
            BackendError: the fake answered with a fault.
        """
        body: dict[str, Any] = {"name": config.name, "config": config.to_wire()}
        if idempotency_key is not None:
            body["idempotencyKey"] = idempotency_key
        data = await self._request("POST", "/v1/jobs", body)
        return TrainingJob.model_validate(data["job"])

    async def events(self, job_id: str, last_event_id: str | None = None) -> AsyncIterator[Frame]:
        """Open the job's SSE stream once with :func:`arkor_ops.sse.stream_frames`.

        Raises:
            StreamError: non-200 (with ``status``) or a broken connection (``status=None``).
        """
        timeout = httpx.Timeout(10.0, read=None)
        async with httpx.AsyncClient(timeout=timeout, verify=_PLAIN_HTTP) as client:
            url = f"{self.url}/v1/jobs/{job_id}/events/stream"
            frames = stream_frames(client, url, last_event_id=last_event_id)
            async with contextlib.aclosing(frames):  # type: ignore[type-var]
                async for frame in frames:
                    yield frame

    async def cancel(self, job_id: str, *, wait: bool = True) -> None:
        """Cancel over HTTP (``POST /v1/jobs/{id}/cancel``; the fake stops at once either way).

        Raises:
            BackendError: the fake answered with a fault.
        """
        await self._request("POST", f"/v1/jobs/{job_id}/cancel")

    async def infer(
        self, job_id: str, step: int, request: InferRequest
    ) -> AsyncIterator[dict[str, Any]]:
        """``infer()`` over HTTP (the sidecar's route), read by :func:`arkor_ops.completions.post`.

        Raises:
            CheckpointUnavailableError: a step the script never saved, or a finished script.
        """
        url = f"{self.url}/{completions.route(job_id, step)}"
        async with httpx.AsyncClient(timeout=completions.timeout(), verify=_PLAIN_HTTP) as client:
            answer = completions.post(client, url, job_id, step, request.to_wire())
            async with contextlib.aclosing(answer):  # type: ignore[type-var]
                async for item in answer:
                    yield item

    async def describe(self, job_id: str) -> JobDescription:
        """The job over HTTP (``GET /v1/jobs/{id}``).

        Raises:
            JobNotFoundError: no such job.
        """
        data = await self._request("GET", f"/v1/jobs/{job_id}")
        return JobDescription(job=TrainingJob.model_validate(data["job"]))

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=10.0, verify=_PLAIN_HTTP) as client:
            response = await client.request(method, path, json=body)
        if response.is_success:
            return response.json()
        status = response.status_code
        cls = {401: PermissionDeniedError, 403: PermissionDeniedError, 404: JobNotFoundError}
        raise cls.get(status, BackendError)(_error_text(response), status=status)

    # -- the server (runs in its own thread) ----------------------------------------------

    def _app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    async def _stop(self) -> None:
        async with self._changed:
            self._stopping = True
            self._changed.notify_all()

    def _append(self, event: BaseModel | Mapping[str, Any]) -> None:
        data = event_to_dict(event) if isinstance(event, BaseModel) else dict(event)
        if data.get("id") is None:
            data["id"] = int(self._events[-1]["id"]) + 1 if self._events else 1
        self._events.append(data)

    async def _emit(self, event: BaseModel | Mapping[str, Any]) -> None:
        async with self._changed:
            self._append(event)
            self._changed.notify_all()

    def _terminal(self) -> bool:
        return any(e.get("type") in TERMINAL_TYPES for e in self._events)

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw) if raw else None
        headers = dict(request.headers)
        path = request.url.path
        self.requests.append(RecordedRequest(request.method, path, headers, body))
        return await self._route(request.method, path, headers, body)

    async def _route(self, method: str, path: str, headers: dict[str, str], body: Any) -> Response:
        parts = path.strip("/").split("/")
        if method == "POST" and parts == ["v1", "jobs"]:
            return self._on_submit(body or {})
        if len(parts) < 3 or parts[:2] != ["v1", "jobs"] or parts[2] != self.job_id:
            return _respond(404, {"error": f"job not found: {path}"})
        if method == "GET" and parts[3:] == ["events", "stream"]:
            return await self._on_stream(headers.get("last-event-id"))
        if method == "POST" and parts[3:] == ["cancel"]:
            return await self._on_cancel()
        return self._route_more(method, path, parts, body)

    def _route_more(self, method: str, path: str, parts: list[str], body: Any) -> Response:
        if method == "POST" and len(parts) == 7 and parts[3] == "checkpoints":
            return self._on_infer(parts[4], body or {})
        if method == "GET" and len(parts) == 3:
            return _respond(200, {"job": self._job_json()})
        return _respond(404, {"error": f"no route {method} {path}"})

    def _job_json(self) -> dict[str, Any]:
        assert self.job is not None
        job = self.job
        if is_evaluation(job.config) and job.status not in ("completed", "failed", "cancelled"):
            # the evaluator reads the outcome from describe(), as a real backend reports it
            ended = [e["type"] for e in self._events if e.get("type") in TERMINAL_TYPES]
            if ended:
                job = job.model_copy(update={"status": ended[0].rpartition(".")[2]})
        return job.model_dump(mode="json", by_alias=True)

    def _on_submit(self, body: dict[str, Any]) -> Response:
        self.submits.append(body)
        if self.submit_faults:
            fault = self.submit_faults.pop(0)
            return _fail(fault.status, fault.error, fault.body)
        key = body.get("idempotencyKey")
        if self.job is None or key is None or key not in self._keys:
            self.job = TrainingJob(
                id=self.job_id,
                name=str(body.get("name", "")),
                status="queued",
                config=body.get("config") or {},
                created_at=utc_now(),
            )
            if key is not None:
                self._keys[key] = self.job
        return _respond(201, {"job": self._job_json()})

    async def _on_cancel(self) -> Response:
        self.cancels.append(self.job_id)
        if self.cancel_faults:
            fault = self.cancel_faults.pop(0)
            return _fail(fault.status, fault.error, fault.body)
        if not self._terminal() and self.job is not None and is_evaluation(self.job.config):
            done = [e["done"] for e in self._events if e.get("type") == "evaluation.progress"]
            await self._emit(EvaluationCancelled(job_id=self.job_id, done=max(done, default=None)))
        elif not self._terminal():
            steps = [e["step"] for e in self._events if e.get("type") == "training.log"]
            await self._emit(TrainingCancelled(job_id=self.job_id, step=max(steps, default=None)))
        if self.job is not None:
            self.job = self.job.model_copy(update={"status": "cancelled"})
        return _respond(200, {"job": self._job_json() if self.job else None})

    def _on_infer(self, raw_step: str, body: dict[str, Any]) -> Response:
        saved = {e.get("step") for e in self._events if e.get("type") == "checkpoint.saved"}
        if self._terminal():
            return _respond(410, {"error": "the run has ended", "code": RUN_ENDED})
        if not raw_step.isdigit() or int(raw_step) not in saved:
            return _respond(409, {"error": "no such checkpoint in the script", "code": NOT_HELD})
        half = len(self.infer_text) // 2
        base = {"id": "chatcmpl-fake", "created": 0, "model": f"{self.job_id}@step-{raw_step}"}
        usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        pieces = [{"role": "assistant", "content": ""}, {"content": self.infer_text[:half]}]
        pieces.append({"content": self.infer_text[half:]})
        last = len(pieces) - 1
        chunks: list[dict[str, Any]] = [
            {
                **base,
                "object": "chat.completion.chunk",
                "choices": [
                    {"index": 0, "delta": d, "finish_reason": "stop" if i == last else None}
                ],
                **({"usage": {**usage, "training_pause_seconds": 0.0}} if i == last else {}),
            }
            for i, d in enumerate(pieces)
        ]
        if not body.get("stream", True):
            return _respond(200, completion_from_chunks(chunks))
        frames = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]
        return Response(b"".join(frames), media_type="text/event-stream")

    async def _on_stream(self, last_event_id: str | None) -> Response:
        conn = self.connections.pop(0) if self.connections else Connection()
        if conn.delay_seconds:
            await asyncio.sleep(conn.delay_seconds)
        if conn.status != 200:
            return _fail(conn.status, conn.error, conn.body)
        return StreamingResponse(
            self._stream(conn, last_event_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    async def _stream(self, conn: Connection, last_event_id: str | None) -> AsyncIterator[bytes]:
        for chunk in conn.before:
            yield chunk
        pos = self._position_after(last_event_id)
        sent = 0
        while (conn.frames is None or sent < conn.frames) and not self._stopping:
            if pos < len(self._events):
                data = self._events[pos]
                pos += 1
                sent += 1
                payload = json.dumps(data, separators=(",", ":"))
                yield encode_frame(data["type"], payload, data["id"])
                if data["type"] in TERMINAL_TYPES:
                    break
                continue
            if not await self._changed_within(pos, conn.ping_seconds):
                yield ping_frame()
        if self._stopping:
            return
        if conn.then == "end":
            yield end_frame()
        elif conn.then == "drop":
            raise DropConnection
        elif conn.then == "hang":  # until the server stops
            async with self._changed:
                await self._changed.wait_for(lambda: self._stopping)

    async def _changed_within(self, pos: int, seconds: float | None) -> bool:
        """Wait for an event past ``pos`` (or the server stopping); False after ``seconds``."""
        async with self._changed:
            if pos >= len(self._events) and not self._stopping:
                try:
                    await asyncio.wait_for(self._changed.wait(), seconds)
                except TimeoutError:
                    return False
        return True

    def _position_after(self, last_event_id: str | None) -> int:
        try:
            after = int(last_event_id) if last_event_id else 0
        except ValueError:
            after = 0
        return next(
            (i for i, e in enumerate(self._events) if int(e["id"]) > after), len(self._events)
        )


def _fail(status: int, error: str | None, text: str | None) -> Response:
    if text is not None:
        return _respond(status, text.encode(), "text/plain")
    return _respond(status, b"" if error is None else {"error": error})


def _respond(status: int, body: Any, content_type: str = "application/json") -> Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(data, status_code=status, media_type=content_type)
