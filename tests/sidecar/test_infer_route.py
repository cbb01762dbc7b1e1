"""The sidecar's `infer()` route: it hands the request to the worker's Unix socket and relays
the answer as SSE ending `data: [DONE]` or as one completion; refusals keep their status and
code. The worker here is a stand-in that answers on the socket (the real one: tests/local)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from arkor_ops.eventlog import EventLogWriter
from arkor_ops.events import TrainingCompleted, TrainingStarted
from arkor_ops.inference import SOCKET_NAME, socket_address, worker_line
from tests.sidecar.helpers import JOB_ID, Sidecars

pytestmark = [pytest.mark.timeout(60)]

BODY = {"messages": [{"role": "user", "content": "hi"}]}


def _chunk(content: str, finish: str | None = None) -> dict[str, Any]:
    delta = {"content": content}
    return {"id": "c1", "object": "chat.completion.chunk", "model": f"{JOB_ID}@step-2",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip


class StandInWorker:
    """Answers each request on the socket with ``lines``; records what it received."""

    def __init__(self, path: Path, lines: list[bytes]) -> None:
        self.received: list[dict[str, Any]] = []
        self.sock = socket.socket(socket.AF_UNIX)
        with socket_address(path) as address:
            self.sock.bind(address)
        self.sock.listen()
        self.lines = lines
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as f:
                self.received.append(json.loads(f.readline()))
                for line in self.lines:
                    conn.sendall(line)


@pytest.fixture
def started(writer: EventLogWriter) -> EventLogWriter:
    writer.write(TrainingStarted(job_id=JOB_ID))
    return writer


@pytest.fixture
def worker_answers(log_path: Path) -> Iterator[Any]:
    made: list[StandInWorker] = []

    def make(lines: list[bytes]) -> StandInWorker:
        made.append(StandInWorker(log_path.parent / SOCKET_NAME, lines))
        return made[-1]

    yield make
    for w in made:
        w.sock.close()


def _url(sc: Any, step: int = 2) -> str:
    return f"{sc.base}/v1/jobs/{JOB_ID}/checkpoints/{step}/chat/completions"


def test_a_streamed_answer_is_sse_chunks_ending_with_done(
    sidecars: Sidecars, log_path: Path, storage_uri: str, started: Any, worker_answers: Any
) -> None:
    worker = worker_answers(
        [
            worker_line(chunk=_chunk('{"a": ')),
            worker_line(chunk=_chunk("1}", "stop")),
            worker_line(done=True),
        ]
    )
    sc = sidecars.start(log_path, storage_uri)
    resp = httpx.post(_url(sc), json={**BODY, "maxTokens": 5}, timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in resp.text.split("\n\n") if f]
    assert frames[-1] == "data: [DONE]"
    contents = [
        json.loads(f.removeprefix("data: "))["choices"][0]["delta"]["content"] for f in frames[:-1]
    ]
    assert "".join(contents) == '{"a": 1}'
    assert worker.received == [{"step": 2, "request": {**BODY, "maxTokens": 5, "stream": True}}]

    whole = httpx.post(_url(sc), json={**BODY, "stream": False}, timeout=10)
    assert whole.status_code == 200
    completion = whole.json()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == '{"a": 1}'
    assert completion["choices"][0]["finish_reason"] == "stop"


def test_the_workers_refusal_keeps_its_status_and_code(
    sidecars: Sidecars, log_path: Path, storage_uri: str, started: Any, worker_answers: Any
) -> None:
    worker_answers(
        [worker_line(error="it holds steps [4, 6]", status=409, code="checkpoint_not_held")]
    )
    sc = sidecars.start(log_path, storage_uri)
    resp = httpx.post(_url(sc), json=BODY, timeout=10)
    assert resp.status_code == 409
    assert resp.json() == {"error": "it holds steps [4, 6]", "code": "checkpoint_not_held"}


def test_no_worker_yet_is_503_and_an_ended_run_is_410(
    sidecars: Sidecars, log_path: Path, storage_uri: str, started: EventLogWriter
) -> None:
    sc = sidecars.start(log_path, storage_uri)
    resp = httpx.post(_url(sc), json=BODY, timeout=10)
    assert resp.status_code == 503 and resp.json()["code"] == "unavailable"
    started.write(TrainingCompleted(job_id=JOB_ID))
    for _ in range(200):  # the sidecar reads the log as it grows
        if sc.health()["terminal"]:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the sidecar never read the terminal event")
    resp = httpx.post(_url(sc), json=BODY, timeout=10)
    assert resp.status_code == 410 and resp.json()["code"] == "run_ended"


def test_a_bad_request_is_400_naming_the_field_and_another_job_404(
    sidecars: Sidecars, log_path: Path, storage_uri: str, started: Any
) -> None:
    sc = sidecars.start(log_path, storage_uri)
    resp = httpx.post(_url(sc), json={**BODY, "responseFormat": {"type": "yaml"}}, timeout=10)
    assert resp.status_code == 400
    assert "responseFormat.type" in resp.json()["error"]
    resp = httpx.post(_url(sc).replace(JOB_ID, "other-job"), json=BODY, timeout=10)
    assert resp.status_code == 404
    resp = httpx.post(_url(sc), content=b"{not json", timeout=10)
    assert resp.status_code == 400 and "not JSON" in resp.json()["error"]
