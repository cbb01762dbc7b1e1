"""A scripted stand-in for `python -m arkor_ops.worker`: same environment, same event log.

It trains nothing: it writes ``training.started``, one ``training.log`` per step (loss falling),
``checkpoint.saved`` every ``save_steps`` (a small file committed to storage), and
``training.completed`` with a dummy adapter under ``{run}/final/``. SIGTERM makes it write
``training.cancelled`` and exit 0, as the real worker does.

Test knobs (environment): ``FAKE_STEP_SECONDS`` (default 0.05), ``FAKE_FAIL_AT_STEP``
(write ``training.failed`` at that step and exit 1), ``FAKE_IGNORE_SIGTERM`` (a stuck worker).

An evaluation config (``kind: evaluation``) is scripted the same way: ``evaluation.started``, one
``evaluation.progress`` per sample (``maxSamples``, default 5; ``FAKE_STEP_SECONDS`` each), then
``evaluation.completed``; SIGTERM writes ``evaluation.cancelled``; ``FAKE_CRASH_AT_STEP`` exits 1
at that sample without a terminal event (a crash).
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
from arkor_ops.evaluation import EvaluationConfig, is_evaluation
from arkor_ops.eventlog import EventLogWriter
from arkor_ops.events import (
    Artifact,
    CheckpointSaved,
    EvaluationCancelled,
    EvaluationCompleted,
    EvaluationProgress,
    EvaluationStarted,
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
    if not os.environ.get("FAKE_IGNORE_SIGTERM"):
        signal.signal(signal.SIGTERM, _on_term)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if is_evaluation(data):
        return _evaluate(EvaluationConfig.from_wire(data, os.environ), job_id, log_path)
    config = TrainerConfig.from_wire(data, os.environ)
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


def _evaluate(config: EvaluationConfig, job_id: str, log_path: Path) -> int:
    writer = EventLogWriter(log_path, job_id)
    total = config.evaluation.max_samples or 5
    step_seconds = float(os.environ.get("FAKE_STEP_SECONDS", "0.05"))
    crash_at = int(os.environ.get("FAKE_CRASH_AT_STEP", "0"))
    writer.write(EvaluationStarted(job_id=job_id, metadata={"samples": total, "fake": True}))
    for done in range(1, total + 1):
        time.sleep(step_seconds)
        if _stop:
            writer.write(EvaluationCancelled(job_id=job_id, done=done - 1))
            return 0
        if done == crash_at:
            print("fake evaluator: scripted crash", flush=True)
            return 1
        writer.write(EvaluationProgress(job_id=job_id, done=done, total=total))
    uri = RunLayout(os.environ["ARKOR_STORAGE_URI"], job_id).evaluation
    metrics = dict.fromkeys(config.evaluation.metrics, 0.5)
    writer.write(EvaluationCompleted(job_id=job_id, metrics=metrics, samples=total, uri=uri))
    return 0


if __name__ == "__main__":
    sys.exit(main())
