"""``arkor-ops dev`` end to end: server + UI up, deployments registered, Ctrl-C stops it all."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.s3 import free_port
from tests.flows.helpers import tiny_config

pytestmark = [pytest.mark.prefect, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
ARKOR_OPS = Path(sys.executable).parent / "arkor-ops"
EXPECTED = {
    "fine-tune",
    "retrain-nightly",
    "retrain-on-dataset-update",
    "reaper",
    "dataset-watcher",
}


def server_pids(port: int) -> list[int]:
    """Pids of live ``prefect server start`` processes listening on ``port``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"server" in argv and str(port).encode() in argv and state != "Z":
            pids.append(int(proc.name))
    return pids


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """Read ``proc``'s stdout until a line contains ``marker``; returns what was read."""
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise AssertionError(f"no {marker!r} from arkor-ops dev; output so far:\n{seen}")
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 1))
        if ready:
            seen += proc.stdout.readline()
    return seen


def http(url: str, body: dict[str, object] | None = None) -> tuple[int, str, bytes]:
    """GET (or POST ``body`` as JSON) ``url``, asking for HTML like a browser would."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Accept": "text/html"} if body is None else {"Content-Type": "application/json"}
    req = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:  # follows the 307 to /v2/
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()


def test_arkor_ops_dev_serves_ui_and_deployments_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    config = tmp_path / "retrain.json"
    config.write_text(json.dumps(tiny_config(str(tmp_path / "train.jsonl"))))
    (tmp_path / "data").mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.pop("KUBECONFIG", None)
    argv = [str(ARKOR_OPS), "dev", "--port", str(port), "--home", str(tmp_path / "prefect")]
    argv += ["--retrain-config", str(config), "--watch", (tmp_path / "data").as_uri() + "/"]
    proc = subprocess.Popen(
        argv,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as in a terminal: Ctrl-C hits all
    )
    ui = f"http://127.0.0.1:{port}"
    try:
        printed = read_until(proc, "Press Ctrl-C to stop.", timeout=150)
        assert f"Prefect UI: {ui}" in printed
        assert (tmp_path / "prefect" / "prefect.db").exists()

        status, content_type, page = http(ui + "/")
        assert status == 200 and content_type.startswith("text/html"), content_type
        assert b"<html" in page.lower()

        def registered() -> set[str]:
            _, _, body = http(ui + "/api/deployments/filter", {})
            return {d["name"] for d in json.loads(body)}

        deadline = time.monotonic() + 60
        while not (names := registered()) >= EXPECTED and time.monotonic() < deadline:
            time.sleep(0.5)
        assert names == EXPECTED
        assert server_pids(port), "the Prefect server should be running"

        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode in (0, 130), printed + rest
        assert "Stopped." in rest
        assert server_pids(port) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in server_pids(port):
            os.kill(pid, signal.SIGKILL)
