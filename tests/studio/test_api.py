"""The studio's API as a script (or a hostile page) meets it: the session token, loopback only,
the runs list, a run's events, cancel, and the playground's refusal after a run ended. The runs
are real local runs with the scripted worker (no model, so no committed checkpoint: those are
in test_browser.py, on a real run)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
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
    assert studio.stop() == 0  # Ctrl-C stops it cleanly
    assert studio.token not in studio.log.read_text().split(studio.url, 1)[1]  # printed once


def test_a_port_in_use_is_refused_with_exit_code_2(studio: Studio, runs_dir: Path) -> None:
    port = studio.base.rsplit(":", 1)[1]
    taken = subprocess.run(
        [
            sys.executable,
            "-m",
            "arkor_ops.cli",
            "studio",
            "--backend",
            "local",
            "--no-open",
            "--port",
            port,
        ],
        env={**os.environ, "ARKOR_RUNS_DIR": str(runs_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert taken.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in taken.stderr


def test_a_stream_of_no_run_ends_with_a_studio_error(studio: Studio) -> None:
    with studio.client(token=studio.token) as client:
        reply = client.get("/api/runs/no-such-run/events")
        assert reply.status_code == 200
        assert "event: studio.error" in reply.text
        assert "no local run 'no-such-run'" in reply.text


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
    port = int(studio.base.rsplit(":", 1)[1])
    assert _listening_addresses(port) == {"127.0.0.1"}
    outside = _non_loopback_address()
    if outside is not None:  # this machine has another interface: the port is closed there
        with pytest.raises(OSError), socket.create_connection((outside, port), timeout=3):
            pass
    # a DNS-rebinding page reaches 127.0.0.1 under its own name: refused even with the token
    with studio.client(token=studio.token) as client:
        reply = client.get("/api/runs", headers={"host": f"attacker.example:{port}"})
        assert reply.status_code == 403
        assert "loopback-only" in reply.json()["error"]


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on ``port`` (IPv4 and IPv6), from /proc."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                if len(address) == 8:
                    found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                else:
                    found.add(f"ipv6:{address}")
    return found


def _non_loopback_address() -> str | None:
    """This machine's address on its default route, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only the route is looked up
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


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
