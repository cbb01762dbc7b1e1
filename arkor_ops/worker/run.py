"""One training run, start to terminal event: the worker's pipeline.

settings → event log (seeded from storage) → config → backend → hub revisions pinned (the first
request to the hub: a refusal fails here, exit 2) → dataset → resume point → model → trainer →
``training.started`` → train → ``training.completed`` (or ``cancelled`` / ``failed``).
:func:`run` never raises: every ending maps to an exit code (see
:mod:`arkor_ops.worker.errors`) and writes exactly one terminal event, except when another
attempt follows (see :mod:`arkor_ops.worker.attempts`): a disruption (SIGTERM without the cancel
marker, see :mod:`arkor_ops.worker.__main__`) checkpoints like a cancel and writes nothing, a
retryable failure with retries left writes ``job.phase`` ``retrying``; both exit 1, so that the
Job's next pod resumes the run. A terminal event is final. A later attempt writes
``training.resumed`` (and ``training.started`` only when the log it continues has none).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arkor_ops.config import TrainerConfig
from arkor_ops.errors import ArkorOpsError, StorageError
from arkor_ops.eventlog import EventLogWriter, read_events
from arkor_ops.events import (
    Artifact,
    CheckpointSaved,
    CheckpointSkipped,
    JobPhase,
    Metrics,
    TrainingCancelled,
    TrainingCompleted,
    TrainingFailed,
    TrainingLog,
    TrainingResumed,
    TrainingStarted,
)
from arkor_ops.inference import SOCKET_NAME
from arkor_ops.storage import RunLayout, Storage, open_storage
from arkor_ops.worker.attempts import Attempt, begin
from arkor_ops.worker.cache import NodeCache, release_all
from arkor_ops.worker.early_stop import EarlyStop
from arkor_ops.worker.errors import (
    EXIT_OK,
    EXIT_PERMANENT,
    EXIT_RETRYABLE,
    MAX_ERROR_CHARS,
    excerpt,
    exit_code_for,
)
from arkor_ops.worker.infer import InferServer
from arkor_ops.worker.init_adapter import InitAdapter
from arkor_ops.worker.settings import WorkerSettings
from arkor_ops.worker.train import RunState

if TYPE_CHECKING:
    from arkor_ops.worker.checkpoints import RunIdentity

log = logging.getLogger(__name__)


def seed_event_log(writer: EventLogWriter, storage: Storage, layout: RunLayout) -> bool:
    """Continue the log a previous pod persisted; returns whether it was seeded from storage."""
    if writer.last_id:
        return False
    try:
        if storage.exists(layout.events):
            taken = writer.seed(storage.get_bytes(layout.events))
            log.info("event log seeded with %d events from %s", taken, layout.events)
            return taken > 0
    except StorageError as exc:
        log.warning("could not read the persisted event log: %s", exc)
    return False


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
        self.attempt: Attempt | None = None
        self.seeded_started = False
        self.infer = InferServer(settings.event_log.parent / SOCKET_NAME, settings.job_id)

    # -- events --------------------------------------------------------------------------------

    def _checkpoint_saved(self, step: int, artifact: Artifact) -> None:
        self.writer.write(CheckpointSaved(job_id="", step=step, artifacts=[artifact]))

    def _checkpoint_skipped(self, step: int, backlog: int) -> None:
        reason = (
            f"uploads are {backlog} checkpoints behind training: step {step} was not uploaded, "
            "the newer ones queued after it go first"
        )
        self.writer.write(CheckpointSkipped(job_id="", step=step, reason=reason, backlog=backlog))

    def _write_log(self, event: TrainingLog) -> None:
        self.writer.write(event)

    def _health(self) -> None:
        if self.uploader is not None and self.uploader.error is not None:
            raise RuntimeError(f"checkpoint upload failed: {self.uploader.error}")

    def _close(self, how: str, error: str | None = None) -> None:
        if self.attempt is not None:
            self.attempt.close(how, self.writer.last_id, error)

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
            self._close("disruption")
            return EXIT_RETRYABLE
        self.writer.write(TrainingCancelled(job_id="", step=step, checkpoint=checkpoint))
        self._close("cancelled")
        log.info("training cancelled at step %s", step)
        return EXIT_OK

    # -- the pipeline --------------------------------------------------------------------------

    def execute(self) -> int:
        """Run to a terminal event; returns the exit code."""
        try:
            self.infer.start()
        except OSError as exc:
            log.warning(
                "infer() is unavailable in this run: cannot listen on %s: %s", self.infer.path, exc
            )
        try:
            return self._execute_logged()
        finally:
            self.infer.close()

    def _execute_logged(self) -> int:
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
                self._close("disruption")
                return EXIT_RETRYABLE
            if code != EXIT_PERMANENT and self.attempt is None:
                log.error("the attempt ledger is unavailable: no event written (ids could repeat)")
                return code
            if code != EXIT_PERMANENT and self.attempt is not None and not self.attempt.last_try:
                return self._retrying(exc, message)
            self.writer.write(TrainingFailed(job_id="", error=message, step=step))
            self._close("failed", message)
            return code

    def _retrying(self, exc: BaseException, message: str) -> int:
        """A retryable failure with retries left: ``job.phase`` ``retrying``, exit 1."""
        assert self.attempt is not None
        number, most = self.attempt.number, self.attempt.max_attempts
        used = self.attempt.failures + 1
        hint = (
            f"failure {used} of at most {most}: Kubernetes runs another attempt, which resumes "
            "from the newest committed checkpoint"
        )
        self.writer.write(
            JobPhase(
                job_id="", phase="retrying", reason=type(exc).__name__, message=message, hint=hint
            )
        )
        self.attempt.close("retrying", self.writer.last_id, message)
        log.warning(
            "attempt %d failed (%s); exit %d, the Job retries", number, hint, EXIT_RETRYABLE
        )
        return EXIT_RETRYABLE

    def _seed(self, storage: Storage, layout: RunLayout) -> int | None:
        """Seed the log from storage; the exit code when that log already ended the run."""
        from_storage = seed_event_log(self.writer, storage, layout)
        seeded = read_events(self.writer.path)
        self.seeded_started = any(e.type == "training.started" for e in seeded)
        ended = next((e for e in seeded if e.terminal), None) if from_storage else None
        if ended is None:
            return None
        # A terminal event is final: e.g. the pod was killed right after writing it.
        log.warning("the run already ended (%s, id %s): nothing to do", ended.type, ended.id)
        return EXIT_PERMANENT if ended.type == "training.failed" else EXIT_OK

    def _begin(self, storage: Storage, layout: RunLayout, *, continued_local: bool) -> Storage:
        """Register this attempt (see :mod:`.attempts`); returns the storage the pipeline uses."""
        self.attempt = begin(
            storage,
            layout,
            self.writer,
            max_attempts=self.settings.max_attempts,
            seeded_started=self.seeded_started,
            continued_local=continued_local,
        )
        self.attempt.check_restarts(self.settings.max_restarts)
        if self.attempt.number in self.settings.test_fault_storage_attempts:
            from arkor_ops.worker.faults import FaultyStorage

            log.warning("ARKOR_TEST_FAULT_STORAGE_ATTEMPTS: storage fails in this attempt (test)")
            return FaultyStorage(self.attempt.number)
        return storage

    def _announce(self, metadata: dict[str, Any], resumed_from: int | None) -> None:
        """``training.started`` once per log; ``training.resumed`` when an attempt takes over."""
        attempt = self.attempt
        assert attempt is not None
        metadata["attempt"] = attempt.number
        if not self.seeded_started:
            self.writer.write(TrainingStarted(job_id="", metadata=metadata))
            if not attempt.started_before:
                attempt.mark_started()
        if attempt.started_before or resumed_from is not None:
            self.writer.write(
                TrainingResumed(
                    job_id="",
                    step=resumed_from or 0,
                    reason=attempt.resume_reason(),
                    attempt=attempt.number,
                    metadata=metadata,
                )
            )

    def _init_adapter(self, config: TrainerConfig, base_model: str) -> InitAdapter | None:
        """The adapter the run starts from (``init_adapter``), fetched and checked."""
        if config.init_adapter is None:
            return None
        from arkor_ops.worker import init_adapter

        storage_uri = self.settings.storage_uri
        return init_adapter.fetch(config, storage_uri, base_model, self.work / "init-adapter")

    def _complete(
        self,
        trainer: Any,
        storage: Storage,
        layout: RunLayout,
        identity: RunIdentity,
        total: float,
    ) -> int:
        """Commit the final adapter and write ``training.completed``."""
        from arkor_ops.worker.checkpoints import upload_committed

        settings, state = self.settings, self.state
        self.uploader.close()
        self._health()
        final_dir = self.work / "final"
        trainer.save_model(str(final_dir))
        upload_committed(storage, layout.final, Path(final_dir), state.step, identity)
        final = Artifact(kind="final", job_id=settings.job_id, uri=layout.final, step=state.step)
        artifacts = [*self.uploader.committed, final]
        committed = [a.step for a in self.uploader.committed if a.step is not None]
        early = state.early.metrics(committed) if state.early else {}
        metrics = Metrics(
            final_loss=state.last_loss,
            total_steps=state.step,
            total_time=total,
            gpu_idle=state.idle.metrics(),
            **early,
        )
        self.writer.write(TrainingCompleted(job_id="", artifacts=artifacts, metrics=metrics))
        self._close("completed")
        log.info(
            "training completed: %d steps in %.1f s, final adapter %s",
            state.step,
            total,
            layout.final,
        )
        return EXIT_OK

    def _execute(self) -> int:
        from arkor_ops.worker.checkpoints import (
            CheckpointUploader,
            RunIdentity,
            find_resume_point,
        )
        from arkor_ops.worker.data import prepare_dataset
        from arkor_ops.worker.models import resolve_model
        from arkor_ops.worker.pins import pin_revisions
        from arkor_ops.worker.train import build_trainer, device_name, make_callback, select_backend

        settings, state = self.settings, self.state
        storage = open_storage(settings.storage_uri)
        layout = RunLayout(settings.storage_uri, settings.job_id)
        local = self.writer.last_id > 0  # this pod's own log: it holds every id written here
        ended = self._seed(storage, layout)
        if ended is not None:
            return ended
        storage = self._begin(storage, layout, continued_local=local)
        config = settings.config()
        backend, why = select_backend(settings.backend)
        log.info("trainer backend %s (%s)", backend, why)

        shutil.rmtree(self.work, ignore_errors=True)
        timed = state.idle.timed
        pins = pin_revisions(config, settings, storage, layout)
        data = timed(
            "dataFetch",
            prepare_dataset,
            config,
            self.work / "data",
            settings.max_dataset_bytes,
            pins.dataset,
            pins.dataset_commit,
        )
        wire = {k: v for k, v in config.to_wire().items() if k not in ("name", "resume")}
        base_model = f"{config.model}@{pins.model_commit}" if pins.model_commit else config.model
        identity = RunIdentity(config.config_hash(), data.fingerprint, base_model, wire)
        resume = timed(
            "checkpointFetch",
            find_resume_point,
            storage,
            layout,
            identity,
            config.resume,
            self.work / "resume",
        )
        if resume:
            log.info("resuming from committed checkpoint step %d", resume[0])
        init = timed("checkpointFetch", self._init_adapter, config, base_model)
        if state.cancel.is_set():
            return self._cancelled()

        model = timed(
            "modelFetch",
            resolve_model,
            config.model,
            settings.model_cache,
            hub=pins.model,
            commit=pins.model_commit if pins.model else config.revision,
            cache_max_bytes=settings.model_cache_max_bytes,
        )
        log.info("model %s -> %s (%s)", model.name, model.path, model.how)
        self.uploader = CheckpointUploader(
            storage,
            layout,
            identity,
            self.work / "upload",
            self._checkpoint_saved,
            on_skip=self._checkpoint_skipped,
            hold=settings.test_hold_uploads,
        )
        trainer, tokenized = build_trainer(
            backend,
            config=config,
            data=data,
            model_path=model.path,
            output_dir=self.work / "checkpoints",
            init_adapter=init,
            idle=state.idle,
            cache=NodeCache(settings.model_cache, settings.model_cache_max_bytes),
            callback_factory=lambda samples: make_callback(
                state,
                self._write_log,
                self.uploader.submit,
                self._health,
                samples,
                infer=self.infer,
                backend=backend,
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
            "tokenizedData": tokenized,
            "rows": data.rows,
            "resumedFromStep": resume[0] if resume else None,
            "initAdapter": init.uri if init else None,
            "initAdapterStep": init.step if init else None,
            "trainerBackend": backend,
            "quantization": (
                "bitsandbytes-nf4" if getattr(trainer.model, "is_loaded_in_4bit", False) else None
            ),
            "device": device_name(),
            "configHash": identity.config_hash,
            "maxSteps": trainer.args.max_steps,
            "dryRun": config.dry_run,
        }
        self._announce(metadata, resume[0] if resume else None)
        if state.cancel.is_set():
            return self._cancelled()

        if config.early_stopping:
            stop = config.early_stopping
            state.early = EarlyStop(patience=stop.patience, min_delta=stop.min_delta)
        self.training = True
        start = time.perf_counter()
        try:
            trainer.train(resume_from_checkpoint=str(resume[1]) if resume else None)
        finally:
            self.infer.finish()  # a later infer() is told the run ended, at once
        total = time.perf_counter() - start
        state.step = trainer.state.global_step
        if state.cancel.is_set():
            return self._cancelled()

        return self._complete(trainer, storage, layout, identity, total)


def run(settings: WorkerSettings, state: RunState | None = None) -> int:
    """Execute one run (callable in-process, e.g. by tests); returns the exit code."""
    try:
        return Run(settings, state or RunState()).execute()
    finally:
        release_all()  # the node cache's entries this run used may be evicted from now on
