"""Helpers of the tests in tests/worker/ (their fixtures are in conftest.py)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from arkor_ops.eventlog import read_events
from arkor_ops.storage import MANIFEST_NAME, RunLayout, join_uri, open_storage

REPO = Path(__file__).resolve().parents[2]


#: ARKOR_CANCEL_GRACE_SECONDS for tests that SIGTERM a worker (what its checkpoint may take).
GRACE_SECONDS = 30


CATEGORIES = ("billing", "account", "bug", "feature")


TICKETS = {
    "billing": "my invoice was charged twice this month",
    "account": "I cannot log in since the password reset",
    "bug": "the export to CSV button does nothing",
    "feature": "please add dark mode to the dashboard",
}


def chat_rows(n: int = 24) -> list[dict[str, Any]]:
    """Support-triage chats in OpenAI ``messages`` form."""
    rows = []
    for i in range(n):
        cat = CATEGORIES[i % len(CATEGORIES)]
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": "You triage support tickets."},
                    {"role": "user", "content": f"Ticket {i}: {TICKETS[cat]}"},
                    {"role": "assistant", "content": f"category: {cat}"},
                ]
            }
        )
    return rows


def alpaca_rows(n: int = 24) -> list[dict[str, Any]]:
    """The same data, alpaca-style."""
    return [
        {
            "instruction": "Triage this support ticket.",
            "input": f"Ticket {i}: {TICKETS[CATEGORIES[i % 4]]}",
            "output": f"category: {CATEGORIES[i % 4]}",
        }
        for i in range(n)
    ]


def text_rows(n: int = 24) -> list[dict[str, Any]]:
    """The same data as plain text."""
    return [
        {"text": f"Ticket {i}: {TICKETS[CATEGORIES[i % 4]]} => category: {CATEGORIES[i % 4]}"}
        for i in range(n)
    ]


ROWS = {"chatml": chat_rows, "alpaca": alpaca_rows, "text": text_rows}


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as JSONL, JSON, CSV or Parquet, by the file's suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        import csv

        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow(
                    {k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
                )
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        raise ValueError(path)
    return path


def base_config(model: Path, dataset: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A small, fast config: 6 steps, log every step, save every 3."""
    config: dict[str, Any] = {
        "name": "worker-test",
        "model": str(model),
        "dataset": dataset,
        "maxSteps": 6,
        "loggingSteps": 1,
        "saveSteps": 3,
        "learningRate": 0.005,
        "batchSize": 2,
        "lora": {"r": 8, "alpha": 16, "maxLength": 128},
    }
    config.update(extra)
    return config


@dataclass
class RunDir:
    """Where one run's local files go, and its environment."""

    root: Path
    job_id: str
    storage_uri: str
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def event_log(self) -> Path:
        return self.root / "events.jsonl"

    def env(self, config: dict[str, Any]) -> dict[str, str]:
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = self.root / "config.json"
        cfg.write_text(json.dumps(config))
        env = dict(os.environ)
        env.update(
            {
                "ARKOR_JOB_ID": self.job_id,
                "ARKOR_CONFIG_FILE": str(cfg),
                "ARKOR_STORAGE_URI": self.storage_uri,
                "ARKOR_EVENT_LOG": str(self.event_log),
                "ARKOR_WORK_DIR": str(self.root / "work"),
                "ARKOR_MODEL_CACHE": str(self.root / "models"),
                "HF_HUB_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(REPO),
            }
        )
        env.pop("ARKOR_CONFIG_JSON", None)
        env.update(self.extra_env)
        return env

    def events(self) -> list[Any]:
        return read_events(self.event_log)

    def layout(self) -> RunLayout:
        return RunLayout(self.storage_uri, self.job_id)


def run_inprocess(env: dict[str, str]) -> int:
    """Run the worker in this process (imports shared across runs); returns its exit code."""
    from arkor_ops.worker.run import run
    from arkor_ops.worker.settings import load_settings

    return run(load_settings(env))


def start_worker(env: dict[str, str], python: str = sys.executable) -> subprocess.Popen[str]:
    """Start ``python -m arkor_ops.worker`` with ``env``; stderr is captured."""
    return subprocess.Popen(
        [python, "-m", "arkor_ops.worker"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(run: RunDir, predicate: Any, proc: subprocess.Popen[str], timeout: float) -> list[Any]:
    """Poll the event log until ``predicate(events)`` holds; fails if the worker exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = run.events()
        if predicate(events):
            return events
        if proc.poll() is not None:
            raise AssertionError(f"worker exited {proc.returncode}: {proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out; events: {[e.type for e in run.events()]}")


def of_type(events: list[Any], kind: str) -> list[Any]:
    return [e for e in events if e.type == kind]


def check_committed(run: RunDir, step: int) -> None:
    """The checkpoint at ``step`` is committed and every file matches its manifest's sha256."""
    import hashlib

    storage = open_storage(run.storage_uri)
    prefix = run.layout().checkpoint(step) if step >= 0 else run.layout().final
    manifest = json.loads(storage.get_bytes(join_uri(prefix, MANIFEST_NAME)))
    names = {u[len(prefix) + 1 :] for u in storage.list(prefix + "/")} - {MANIFEST_NAME}
    assert names == {f["path"] for f in manifest["files"]}
    assert any(f["path"] == "adapter_model.safetensors" for f in manifest["files"])
    for entry in manifest["files"]:
        data = storage.get_bytes(join_uri(prefix, entry["path"]))
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
        assert len(data) == entry["size"]
    for key in ("step", "configHash", "datasetFingerprint", "baseModel"):
        assert key in manifest or _snake(key) in manifest


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def assert_completed(
    run: RunDir, *, max_steps: int, save_steps: int, rows: int | None = None
) -> None:
    """The log of a finished run: started, decreasing finite losses, a checkpoint per save,
    completed with artifacts; every committed checkpoint matches its manifest."""
    events = run.events()
    types = [e.type for e in events]
    assert types[0] == "training.started", types
    assert types[-1] == "training.completed", types
    started = events[0]
    if rows is not None:
        assert started.metadata["rows"] == rows
    logs = [e for e in of_type(events, "training.log") if e.loss is not None]
    assert [e.step for e in logs] == list(range(1, max_steps + 1))
    losses = [e.loss for e in logs]
    assert all(math.isfinite(x) for x in losses)
    half = len(losses) // 2
    assert sum(losses[half:]) / (len(losses) - half) < sum(losses[:half]) / half, losses
    saved = [e.step for e in of_type(events, "checkpoint.saved")]
    assert saved == list(range(save_steps, max_steps + 1, save_steps))
    done = events[-1]
    kinds = [(a.kind, a.step) for a in done.artifacts]
    assert ("final", max_steps) in kinds
    assert [s for k, s in kinds if k == "checkpoint"] == saved
    assert done.metrics.total_steps == max_steps
    for step in saved:
        check_committed(run, step)
    check_committed(run, -1)
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


class _BlobHandler(BaseHTTPRequestHandler):
    server: _BlobServer

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append(dict(self.headers))
        if srv.token and self.headers.get("Authorization") != f"Bearer {srv.token}":
            self.send_response(401)
            self.end_headers()
            return
        item = srv.files.get(self.path.split("?")[0])
        if item is None:
            self.send_response(404)
            self.end_headers()
            return
        body, ctype = item
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _BlobServer(ThreadingHTTPServer):
    token: str | None = None
    files: dict[str, tuple[bytes, str]]
    requests: list[dict[str, str]]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"
