"""The studio's API as a script (or a hostile page) meets it: the session token, loopback only,
the runs list, a run's events, cancel, and the playground's refusal after a run ended. The runs
are real local runs with the scripted worker (no model, so no committed checkpoint: those are
in test_browser.py, on a real run)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import psutil
import pytest

from arkor_ops.backends.local import LocalBackend
from arkor_ops.config import validate_config
from tests.local.helpers import config_fields, make_backend
from tests.studio.helpers import Studio

pytestmark = pytest.mark.timeout(120)


async def _finished_run(runs_dir: Path, dataset_file: Path, **extra: object) -> str:
    backend = make_backend(runs_dir)
    async with backend:
        job = await backend.submit(validate_config(config_fields(dataset_file, **extra)))
        deadline = time.monotonic() + 60
        while (await backend.describe(job.id)).job.status not in ("completed", "failed"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    return job.id


def test_every_route_needs_the_session_token(studio: Studio) -> None:
    assert studio.url.startswith("http://127.0.0.1:")
    with studio.client() as anonymous:
        for path in ("/", "/api/runs", "/static/studio.js", "/api/runs/x/events"):
            assert anonymous.get(path).status_code == 401, path
        assert anonymous.post("/api/runs/x/cancel").status_code == 401
    with studio.client(token="not-the-token") as wrong:
        assert wrong.get("/api/runs").status_code == 403
    with studio.client(token=studio.token) as script:
        reply = script.get("/api/runs")
        assert reply.status_code == 200
        assert reply.json() == {"runs": []}


def test_the_printed_url_logs_the_browser_in_with_an_httponly_cookie(studio: Studio) -> None:
    with studio.client() as browser:
        login = browser.get(studio.url.removeprefix(studio.base))
        assert login.status_code == 303
        assert login.headers["location"] == "/"  # the token leaves the address bar
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        page = browser.get("/")  # the cookie jar now holds the token
        assert page.status_code == 200
        assert '<script src="/static/studio.js"' in page.text
        assert studio.token not in page.text  # the page itself never carries the token
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert browser.get("/api/runs").status_code == 200


def test_it_listens_on_loopback_only_and_refuses_foreign_host_names(studio: Studio) -> None:
    listening = [
        c.laddr
        for c in psutil.Process(studio.proc.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    port = int(studio.base.rsplit(":", 1)[1])
    assert listening == [("127.0.0.1", port)]
    outside = _non_loopback_address()
    if outside is not None:  # this machine has another interface: the port is closed there
        with pytest.raises(OSError), socket.create_connection((outside, port), timeout=3):
            pass
    # a DNS-rebinding page reaches 127.0.0.1 under its own name: refused even with the token
    with studio.client(token=studio.token) as client:
        reply = client.get("/api/runs", headers={"host": f"attacker.example:{port}"})
        assert reply.status_code == 403
        assert "loopback-only" in reply.json()["error"]


def _non_loopback_address() -> str | None:
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family == socket.AF_INET and not addr.address.startswith("127."):
                return str(addr.address)
    return None


async def test_runs_list_and_events_of_a_finished_run(
    studio: Studio, runs_dir: Path, dataset_file: Path
) -> None:
    job_id = await _finished_run(runs_dir, dataset_file)
    async with httpx.AsyncClient(
        base_url=studio.base, headers={"x-arkor-studio-token": studio.token}, timeout=60
    ) as client:
        (row,) = (await client.get("/api/runs")).json()["runs"]
        assert (row["id"], row["name"], row["status"], row["step"]) == (
            job_id,
            "Support Bot v1",
            "completed",
            6,
        )
        assert isinstance(row["loss"], float) and row["createdAt"]
        assert row["dataset"] == f"file: {dataset_file}"

        reply = await client.get(f"/api/runs/{job_id}/events")
        assert reply.headers["content-type"].startswith("text/event-stream")
        kinds = [line[7:] for line in reply.text.splitlines() if line.startswith("event: ")]
        assert kinds[0] == "training.started" and kinds[-2:] == ["training.completed", "end"]
        assert kinds.count("training.log") == 6

        missing = await client.get("/api/runs/no-such-run")
        assert missing.status_code == 404


async def test_the_playground_says_run_ended_after_the_run(
    studio: Studio, runs_dir: Path, dataset_file: Path
) -> None:
    job_id = await _finished_run(runs_dir, dataset_file)
    with studio.client(token=studio.token) as client:
        body = {"messages": [{"role": "user", "content": "hi"}], "maxTokens": 8}
        reply = client.post(f"/api/runs/{job_id}/checkpoints/3/chat", json=body)
        assert reply.status_code == 410
        assert reply.json()["code"] == "run_ended"
        assert f"run {job_id} has ended" in reply.json()["error"]
        bad = client.post(f"/api/runs/{job_id}/checkpoints/3/chat", json={"messages": []})
        assert bad.status_code == 400 and "messages" in bad.json()["error"]


async def test_cancel_stops_a_live_run_but_not_from_another_origin(
    studio: Studio, runs_dir: Path, dataset_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.5")
    backend: LocalBackend = make_backend(runs_dir)
    async with backend:
        job = await backend.submit(validate_config(config_fields(dataset_file, max_steps=500)))
    with studio.client(token=studio.token) as client:
        hostile = client.post(
            f"/api/runs/{job.id}/cancel", headers={"origin": "http://attacker.example"}
        )
        assert hostile.status_code == 403
        assert client.get(f"/api/runs/{job.id}").json()["status"] in ("queued", "running")
        reply = client.post(f"/api/runs/{job.id}/cancel")
        assert reply.status_code == 200
        assert reply.json()["status"] == "cancelled"
        (row,) = client.get("/api/runs").json()["runs"]
        assert row["status"] == "cancelled"
