"""The real worker (`python -m arkor_ops.worker`) on the tiny model, through LocalBackend."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arkor_ops.backends.local import LocalBackend, LocalSettings
from arkor_ops.config import validate_config
from arkor_ops.storage import RunLayout, open_storage
from tests.local.helpers import REPO

pytestmark = [pytest.mark.train, pytest.mark.timeout(300)]

TEST_ROWS = REPO / "examples" / "triage" / "test.jsonl"

TRAINER = """
from arkor_ops import create_trainer

trainer = create_trainer(
    name="tiny-triage",
    model={model!r},
    dataset={{"type": "file", "path": {dataset!r}}},
    lora={{"r": 8, "alpha": 8, "max_length": 512}},
    max_steps={steps},
    save_steps=2,
    batch_size=2,
    train_on_responses_only=True,
)
"""


@pytest.mark.s3
def test_start_trains_the_tiny_model_into_s3(
    tmp_path: Path, runs_dir: Path, tiny_model_dir: Path, s3_prefix: str
) -> None:
    path = tmp_path / "trainer.py"
    path.write_text(TRAINER.format(model=str(tiny_model_dir), dataset=str(TEST_ROWS), steps=4))
    env = {**os.environ, "ARKOR_RUNS_DIR": str(runs_dir), "ARKOR_STORAGE_URI": s3_prefix}
    proc = subprocess.run(
        [sys.executable, "-m", "arkor_ops.cli", "start", str(path), "--backend", "local"],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = proc.stdout.split("started job ", 1)[1].split()[0]
    assert f"adapter: {s3_prefix}/{job_id}/final" in proc.stdout
    storage = open_storage(s3_prefix)
    layout = RunLayout(s3_prefix, job_id)
    names = [u.rsplit("/", 1)[1] for u in storage.list(layout.final)]
    assert "adapter_config.json" in names
    persisted = storage.get_bytes(layout.events).decode()
    assert '"training.completed"' in persisted and '"checkpoint.saved"' in persisted


async def test_cancel_stops_the_real_worker_with_training_cancelled(
    runs_dir: Path, tiny_model_dir: Path
) -> None:
    backend = LocalBackend(LocalSettings(runs_dir=runs_dir, sidecar_linger_seconds=1))
    config = validate_config(
        {
            "name": "tiny-cancel",
            "model": str(tiny_model_dir),
            "dataset": {"type": "file", "path": str(TEST_ROWS)},
            "lora": {"r": 8, "alpha": 8, "max_length": 512},
            "max_steps": 5000,
            "batch_size": 2,
        }
    )
    job = await backend.submit(config)
    log = runs_dir / job.id / "events.jsonl"
    deadline = time.monotonic() + 240
    while '"training.log"' not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, (runs_dir / job.id / "worker.log").read_text()[-2000:]
        await asyncio.sleep(0.2)
    await backend.cancel(job.id)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events[-1]["type"] == "training.cancelled"
    desc = await backend.describe(job.id)
    assert desc.job.status == "cancelled" and (desc.step or 0) >= 1
