"""One training run, start to terminal event: the worker's pipeline.

settings → event log (seeded from storage) → config → backend → hub revisions pinned (the first
request to the hub: a refusal fails here, exit 2) → dataset → resume point → model → trainer →
``training.started`` → train → ``training.completed`` (or ``cancelled`` / ``failed``).
:func:`run` never raises: every ending writes exactly one terminal event and maps to an exit
code (see :mod:`arkor_ops.worker.errors`), except a disruption (SIGTERM without the cancel
marker, see :mod:`arkor_ops.worker.__main__`): it checkpoints like a cancel, writes no terminal
event and exits 1, so that the Job's replacement pod resumes the run.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from arkor_ops.errors import ArkorOpsError, StorageError
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
from arkor_ops.storage import RunLayout, Storage, open_storage
from arkor_ops.worker.errors import (
    EXIT_OK,
    EXIT_PERMANENT,
    EXIT_RETRYABLE,
    MAX_ERROR_CHARS,
    excerpt,
    exit_code_for,
)
from arkor_ops.worker.settings import WorkerSettings
from arkor_ops.worker.train import RunState

log = logging.getLogger(__name__)


def seed_event_log(writer: EventLogWriter, storage: Storage, layout: RunLayout) -> None:
    """Continue the log a previous pod persisted, so ids stay monotonic across restarts."""
    if writer.last_id:
        return
    try:
        if storage.exists(layout.events):
            taken = writer.seed(storage.get_bytes(layout.events))
            log.info("event log seeded with %d events from %s", taken, layout.events)
    except StorageError as exc:
        log.warning("could not read the persisted event log: %s", exc)


class Run:
    """The state of one run while it executes (see the module docstring)."""

    def __init__(self, settings: WorkerSettings, state: RunState) -> None:
        self.settings = settings
        self.state = state
        state.grace_seconds = settings.cancel_grace_seconds
        self.writer = EventLogWriter(settings.event_log, settings.job_id)
        self.work = settings.work_dir / settings.job_id
        self.training = False
        self.uploader: Any = None

    # -- events --------------------------------------------------------------------------------

    def _checkpoint_saved(self, step: int, artifact: Artifact) -> None:
        self.writer.write(CheckpointSaved(job_id="", step=step, artifacts=[artifact]))

    def _write_log(self, event: TrainingLog) -> None:
        self.writer.write(event)

    def _health(self) -> None:
        if self.uploader is not None and self.uploader.error is not None:
            raise RuntimeError(f"checkpoint upload failed: {self.uploader.error}")

    def _disrupted(self) -> bool:
        """A disruption, unless a cancel request appeared meanwhile (a cancel after all)."""
        if not self.state.disruption:
            return False
        if self.settings.cancel_requested():
            log.info("the cancel request appeared meanwhile: a cancel after all")
            self.state.disruption = False
            return False
        return True

    def _cancelled(self) -> int:
        """Stopped on request: ``training.cancelled`` (exit 0), or nothing after a disruption."""
        checkpoint = None
        if self.uploader is not None:
            left = max(0.0, self.state.grace_left() - 1.0)
            if not self.uploader.close(timeout=left):
                log.warning("grace period over before the last checkpoint upload finished")
            wanted = self.state.saved_on_cancel
            for artifact in self.uploader.committed:
                if artifact.step == wanted:
                    checkpoint = artifact
        step = self.state.step if self.training else None
        if self._disrupted():
            saved = f"checkpoint {checkpoint.step} committed" if checkpoint else "no checkpoint"
            log.warning(
                "disruption: stopped at step %s (%s); no terminal event, exit %d: the "
                "replacement pod resumes from the newest committed checkpoint",
                step,
                saved,
                EXIT_RETRYABLE,
            )
            return EXIT_RETRYABLE
        self.writer.write(TrainingCancelled(job_id="", step=step, checkpoint=checkpoint))
        log.info("training cancelled at step %s", step)
        return EXIT_OK

    # -- the pipeline --------------------------------------------------------------------------

    def execute(self) -> int:
        """Run to a terminal event; returns the exit code."""
        try:
            return self._execute()
        except BaseException as exc:
            if isinstance(exc, SystemExit | KeyboardInterrupt) and self.state.cancel.is_set():
                return self._cancelled()
            message = str(exc) if isinstance(exc, ArkorOpsError) else f"{type(exc).__name__}: {exc}"
            message = excerpt(self.settings.scrub(message), MAX_ERROR_CHARS, quote=False)
            step = self.state.step if self.training else None
            log.error("training failed%s: %s", f" at step {step}" if step else "", message)
            if not isinstance(exc, ArkorOpsError):
                log.debug("traceback", exc_info=True)
            code = exit_code_for(exc)
            if code != EXIT_PERMANENT and self.state.cancel.is_set() and self._disrupted():
                log.warning("failed while the pod is disrupted: no terminal event, exit 1 (retry)")
                return EXIT_RETRYABLE
            self.writer.write(TrainingFailed(job_id="", error=message, step=step))
            return code

    def _execute(self) -> int:
        from arkor_ops.worker.attempts import count_attempt
        from arkor_ops.worker.checkpoints import (
            CheckpointUploader,
            RunIdentity,
            find_resume_point,
            upload_committed,
        )
        from arkor_ops.worker.data import prepare_dataset
        from arkor_ops.worker.models import resolve_model
        from arkor_ops.worker.pins import pin_revisions
        from arkor_ops.worker.train import build_trainer, device_name, make_callback, select_backend

        settings, state = self.settings, self.state
        storage = open_storage(settings.storage_uri)
        layout = RunLayout(settings.storage_uri, settings.job_id)
        seed_event_log(self.writer, storage, layout)
        count_attempt(storage, layout, settings.max_restarts)
        config = settings.config()
        backend, why = select_backend(settings.backend)
        log.info("trainer backend %s (%s)", backend, why)

        shutil.rmtree(self.work, ignore_errors=True)
        pins = pin_revisions(config, settings, storage, layout)
        data = prepare_dataset(
            config,
            self.work / "data",
            settings.max_dataset_bytes,
            pins.dataset,
            pins.dataset_commit,
        )
        wire = config.to_wire()
        for key in ("name", "resume"):
            wire.pop(key, None)
        base_model = f"{config.model}@{pins.model_commit}" if pins.model_commit else config.model
        identity = RunIdentity(config.config_hash(), data.fingerprint, base_model, wire)
        resume = find_resume_point(storage, layout, identity, config.resume, self.work / "resume")
        if resume:
            log.info("resuming from committed checkpoint step %d", resume[0])
        if state.cancel.is_set():
            return self._cancelled()

        model = resolve_model(
            config.model,
            settings.model_cache,
            hub=pins.model,
            commit=pins.model_commit if pins.model else config.revision,
        )
        log.info("model %s -> %s (%s)", model.name, model.path, model.how)
        self.uploader = CheckpointUploader(
            storage, layout, identity, self.work / "upload", self._checkpoint_saved
        )
        trainer = build_trainer(
            backend,
            config=config,
            data=data,
            model_path=model.path,
            output_dir=self.work / "checkpoints",
            callback_factory=lambda samples: make_callback(
                state, self._write_log, self.uploader.submit, self._health, samples
            ),
        )
        metadata = {
            "model": config.model,
            "modelPath": str(model.path),
            "modelSource": model.how,
            "modelRevision": pins.model_commit,
            "datasetRevision": pins.dataset_commit,
            "datasetSource": data.source,
            "datasetFingerprint": data.fingerprint,
            "datasetFormat": data.format,
            "rows": data.rows,
            "resumedFromStep": resume[0] if resume else None,
            "trainerBackend": backend,
            "quantization": (
                "bitsandbytes-nf4" if getattr(trainer.model, "is_loaded_in_4bit", False) else None
            ),
            "device": device_name(),
            "configHash": identity.config_hash,
            "maxSteps": trainer.args.max_steps,
            "dryRun": config.dry_run,
        }
        self.writer.write(TrainingStarted(job_id="", metadata=metadata))
        if state.cancel.is_set():
            return self._cancelled()

        self.training = True
        start = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(resume[1]) if resume else None)
        total = time.perf_counter() - start
        state.step = trainer.state.global_step
        if state.cancel.is_set():
            return self._cancelled()

        self.uploader.close()
        self._health()
        final_dir = self.work / "final"
        trainer.save_model(str(final_dir))
        upload_committed(storage, layout.final, Path(final_dir), state.step, identity)
        final = Artifact(kind="final", job_id=settings.job_id, uri=layout.final, step=state.step)
        artifacts = [*self.uploader.committed, final]
        metrics = Metrics(final_loss=state.last_loss, total_steps=state.step, total_time=total)
        self.writer.write(TrainingCompleted(job_id="", artifacts=artifacts, metrics=metrics))
        log.info(
            "training completed: %d steps in %.1f s, final adapter %s",
            state.step,
            total,
            layout.final,
        )
        return EXIT_OK


def run(settings: WorkerSettings, state: RunState | None = None) -> int:
    """Execute one run (callable in-process, e.g. by tests); returns the exit code."""
    return Run(settings, state or RunState()).execute()
