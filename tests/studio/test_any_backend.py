"""The studio over another backend than the local one: the fake backend (its own HTTP server,
no processes, no run storage), served in process on loopback. The pages' API works the same:
runs, the events relay, a streamed playground answer, cancel; the checkpoints route says why
it has none."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from arkor_ops.config import validate_config
from arkor_ops.studio import server
from arkor_ops.studio.access import HEADER
from arkor_ops.testing import FakeBackend, scripted_events

pytestmark = pytest.mark.timeout(60)
JOB = "fake-job-1"


@pytest.fixture
async def studio(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A live fake run (4 steps, checkpoints at 2 and 4, no outcome yet) and the studio over it."""
    with FakeBackend(scripted_events(JOB, steps=4, outcome=None), job_id=JOB) as fake:
        fields = {"name": "fake run", "model": "tiny", "dataset": {"type": "file", "path": "x"}}
        await fake.submit(validate_config(fields))
        sock, token = server.bind(0), server.new_token()
        uv = server.uvicorn_server(fake, token)
        task = asyncio.create_task(uv.serve(sockets=[sock]))
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        try:
            async with httpx.AsyncClient(
                base_url=base, headers={HEADER: token}, timeout=30
            ) as client:
                yield client
        finally:
            uv.should_exit = True
            await asyncio.wait_for(task, 10)
            sock.close()


async def test_runs_events_chat_and_cancel_over_the_fake_backend(
    studio: httpx.AsyncClient,
) -> None:
    (row,) = (await studio.get("/api/runs")).json()["runs"]
    assert (row["id"], row["name"]) == (JOB, "fake run")

    listed = (await studio.get(f"/api/runs/{JOB}/checkpoints")).json()
    assert listed["checkpoints"] == [] and "keeps no run storage" in listed["note"]

    kinds: list[str] = []
    async with studio.stream("GET", f"/api/runs/{JOB}/events") as stream:
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                kinds.append(line[7:])
            if kinds.count("training.log") == 4 and kinds.count("checkpoint.saved") == 2:
                break
    assert kinds[0] == "training.started"

    body = {"messages": [{"role": "user", "content": "hi"}], "maxTokens": 8}
    reply = await studio.post(f"/api/runs/{JOB}/checkpoints/2/chat", json=body)
    assert reply.status_code == 200
    chunks = [line[6:] for line in reply.text.splitlines() if line.startswith("data: ")]
    assert chunks[-1] == "[DONE]"
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in map(json.loads, chunks[:-1])
    )
    assert text == '{"answer": "fake"}'
    assert json.loads(chunks[0])["model"] == f"{JOB}@step-2"

    unheld = await studio.post(f"/api/runs/{JOB}/checkpoints/3/chat", json=body)
    assert (unheld.status_code, unheld.json()["code"]) == (409, "checkpoint_not_held")

    cancelled = await studio.post(f"/api/runs/{JOB}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    ended = await studio.post(f"/api/runs/{JOB}/checkpoints/2/chat", json=body)
    assert (ended.status_code, ended.json()["code"]) == (410, "run_ended")
