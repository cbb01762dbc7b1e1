"""Helpers for the flow tests: configs, polling the Prefect API, reading a run's artifacts."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def tiny_config(dataset_path: str, model: str = "tiny", **extra: Any) -> dict[str, Any]:
    """A UI-style (camelCase) trainer config for a few steps of the tiny model."""
    config: dict[str, Any] = {
        "name": "flow-test",
        "model": model,
        "dataset": {"type": "file", "path": dataset_path},
        "lora": {"r": 4, "alpha": 8, "maxLength": 64},
        "maxSteps": 4,
        "batchSize": 2,
        "loggingSteps": {"steps": 1},
        "saveSteps": {"steps": 2},
    }
    config.update(extra)
    return config


async def eventually(
    probe: Callable[[], Awaitable[T | None]], timeout: float, interval: float = 0.5
) -> T:
    """Await ``probe()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


def stopped_line(message: str) -> bool:
    """Whether a flow run log line says its training run was stopped (by a hook or the flow)."""
    return re.search(r"training run (\S+ )?stopped$", message) is not None


async def stop_logged(client: Any, flow_run_id: uuid.UUID) -> bool:
    """Whether the flow run's logs (they reach the API in batches) say its run was stopped."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = await client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    )
    return any(stopped_line(log.message) for log in logs)


async def wait_final(client: Any, flow_run_id: uuid.UUID, timeout: float = 120) -> Any:
    """The flow run once it is in a final state."""

    async def probe() -> Any:
        run = await client.read_flow_run(flow_run_id)
        return run if run.state is not None and run.state.is_final() else None

    return await eventually(probe, timeout)


async def run_artifacts(client: Any, flow_run_id: uuid.UUID) -> list[Any]:
    """Every artifact (all versions) the flow run created."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    return list(
        await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    )


def latest(artifacts: list[Any], type_: str) -> list[Any]:
    """The newest version of each artifact key of one type (unkeyed ones all count)."""
    newest: dict[Any, Any] = {}
    for art in sorted(artifacts, key=lambda a: a.created):
        if art.type == type_:
            newest[art.key or art.id] = art
    return list(newest.values())


def by_key(artifacts: list[Any]) -> dict[str, Any]:
    """The run's artifacts by key; fails if a key has more than one version (a card each)."""
    keys = [a.key for a in artifacts]
    assert len(set(keys)) == len(keys), f"artifact versions shown as extra cards: {sorted(keys)}"
    return {a.key: a for a in artifacts}


def embedded_png(markdown: str) -> bytes:
    """The PNG embedded in ``markdown`` as a ``data:image/png;base64,`` URI."""
    found = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", markdown or "")
    assert found, f"no embedded PNG in {markdown[:200]!r}"
    return base64.b64decode(found.group(1))


def png_info(png: bytes) -> dict[str, Any]:
    """A PNG's size and text chunks, read chunk by chunk (fails on anything but a PNG)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    info: dict[str, Any] = {}
    pos = 8
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        body = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            info["width"], info["height"] = struct.unpack(">II", body[:8])
        elif kind == b"tEXt":
            name, _, value = body.partition(b"\0")
            info[name.decode("latin-1")] = value.decode("latin-1")
        pos += 12 + length
    assert kind == b"IEND", "truncated PNG"
    return info


@contextlib.contextmanager
def serve_runner(env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[str]:
    """A ``serve()`` runner subprocess (``tests.flows.serve_runner``) with ``env``.

    Parametrize with ``"broken-hooks"`` to make the flow's hooks fail (and turn off the flow
    run's own cancel check, so that nothing but the reaper stops the run once the flow process
    is killed), with ``"broken-hooks-checking"`` to make the hooks fail but keep that check (so
    that the flow itself, its check or its termination path, stops the run on a cancel), with
    ``"hooks-only"`` to turn off only the flow run's own check (so that the runner's SIGTERM,
    the termination path and the hooks stop what it started); any other value serves as
    deployed. Yields the deployment suffix; the runner is stopped afterwards.
    """
    suffix = "-" + uuid.uuid4().hex[:8]
    env = dict(env)
    param = getattr(request, "param", None)
    if param in ("broken-hooks", "broken-hooks-checking"):
        env["ARKOR_TEST_BREAK_HOOKS"] = "1"
    if param in ("broken-hooks", "hooks-only"):
        env["ARKOR_FLOW_CANCEL_CHECK_SECONDS"] = "0"
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.flows.serve_runner", suffix], env=env, cwd=repo
    )
    try:
        yield suffix
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def flow_process_pids(flow_run_id: Any) -> list[int]:
    """The process running a flow run: the runner's child has ``PREFECT__FLOW_RUN_ID`` (and so
    do the run's processes, which inherit it: the topmost one is the flow's)."""
    marker = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    marked: dict[int, int] = {}  # pid -> parent pid
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                stat = (proc / "stat").read_text()
                marked[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    return [pid for pid, parent in marked.items() if parent not in marked]
