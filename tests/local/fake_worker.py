"""A scripted stand-in for `python -m arkor_ops.worker`: same environment, same event log.

It trains nothing: it writes ``training.started``, one ``training.log`` per step (loss falling),
``checkpoint.saved`` every ``save_steps`` (a small file committed to storage), and
``training.completed`` with a dummy adapter under ``{run}/final/``. SIGTERM makes it write
``training.cancelled`` and exit 0, as the real worker does.

Test knobs (environment): ``FAKE_STEP_SECONDS`` (default 0.05), ``FAKE_FAIL_AT_STEP``
(write ``training.failed`` at that step and exit 1), ``FAKE_IGNORE_SIGTERM`` (a stuck worker).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from arkor_ops.config import TrainerConfig
from arkor_ops.eventlog import EventLogWriter
from arkor_ops.events import (
    Artifact,
    CheckpointSaved,
    Metrics,
    TrainingCancelled,
    TrainingCompleted,
    TrainingFailed,
    TrainingLog,
    TrainingStarted,
)
from arkor_ops.storage import RunLayout, open_storage

_stop = False


def _on_term(signum: int, frame: FrameType | None) -> None:
    global _stop
    _stop = True


def main() -> int:
    job_id = os.environ["ARKOR_JOB_ID"]
    storage_uri = os.environ["ARKOR_STORAGE_URI"]
    log_path = Path(os.environ.get("ARKOR_EVENT_LOG", "/var/run/arkor/events.jsonl"))
    if "ARKOR_CONFIG_FILE" in os.environ:
        data = json.loads(Path(os.environ["ARKOR_CONFIG_FILE"]).read_text())
    else:
        data = json.loads(os.environ["ARKOR_CONFIG_JSON"])
    config = TrainerConfig.from_wire(data, os.environ)
    if not os.environ.get("FAKE_IGNORE_SIGTERM"):
        signal.signal(signal.SIGTERM, _on_term)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    step_seconds = float(os.environ.get("FAKE_STEP_SECONDS", "0.05"))
    fail_at = int(os.environ.get("FAKE_FAIL_AT_STEP", "0"))
    steps = config.max_steps or 10
    save_every = config.save_steps.steps if config.save_steps and config.save_steps.steps else 0
    storage = open_storage(storage_uri)
    layout = RunLayout(storage_uri, job_id)
    writer = EventLogWriter(log_path, job_id)
    print(f"fake worker {job_id}: {steps} steps", flush=True)
    t0 = time.monotonic()
    writer.write(TrainingStarted(job_id=job_id, metadata={"model": config.model, "fake": True}))
    loss = 2.0
    for step in range(1, steps + 1):
        time.sleep(step_seconds)
        if _stop:
            writer.write(TrainingCancelled(job_id=job_id, step=step - 1))
            return 0
        if step == fail_at:
            writer.write(TrainingFailed(job_id=job_id, error="scripted failure", step=step))
            return 1
        loss *= 0.9
        writer.write(TrainingLog(job_id=job_id, step=step, loss=round(loss, 4), epoch=step / steps))
        if save_every and step % save_every == 0:
            uri = layout.checkpoint(step)
            storage.put_bytes(uri + "/manifest.json", json.dumps({"step": step}).encode())
            art = Artifact(kind="checkpoint", job_id=job_id, uri=uri, step=step)
            writer.write(CheckpointSaved(job_id=job_id, step=step, artifacts=[art]))
    storage.put_bytes(layout.final + "/adapter_config.json", b'{"fake": true}')
    final = Artifact(kind="final", job_id=job_id, uri=layout.final)
    metrics = Metrics(
        final_loss=round(loss, 4), total_steps=steps, total_time=time.monotonic() - t0
    )
    writer.write(TrainingCompleted(job_id=job_id, artifacts=[final], metrics=metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
