"""Checkpoints: background upload, manifest commit, newest committed checkpoint, resume checks.

A checkpoint counts only once its ``manifest.json`` (every file with sha256 and size, the step,
the config hash, the dataset fingerprint, the base model) is written, and it is written last.
Uploads run in the background (a queue, a coordinator thread and one child process that does the
hashing and boto3 work, away from the training loop's GIL), so training never waits for them; the
checkpoint folder is hard-linked (or copied) first, so the trainer may rotate its own copy.
``checkpoint.saved`` is written to the event log after the commit; a checkpoint dropped because
uploads fell behind is reported as ``checkpoint.skipped``.

Where an upload's time went (17 MB checkpoint of 11 files, moto on the same loaded 2-core
machine, ``bench/worker_overhead.py``): the child was started by the first upload, during
training, so the first checkpoint paid the spawn and the imports (4.2 s against 0.7 s for plain
boto3) and later ones queued behind it; the child inherited the coordinator thread's nice
value and added its own (19, not 10), so it starved while training used the CPUs; each upload
made a new boto3 client and put the files one after another (the nine small files alone took
about 0.25 s of round trips). Now the child is started when the uploader is made (before
training, by the thread that makes it), keeps one client and one transfer manager for all
checkpoints, and puts every file of a checkpoint at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import queue
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from arkor_ops.checkpoints import Manifest, ManifestFile, committed_steps, read_manifest
from arkor_ops.errors import CheckpointError, StorageError
from arkor_ops.events import Artifact
from arkor_ops.storage import MANIFEST_NAME, RunLayout, Storage, join_uri

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
#: Queued checkpoints beyond this many are skipped for newer ones (bounds disk and lag).
MAX_BACKLOG = 3
#: Nice increment of the upload thread (CPU goes to training first).
UPLOAD_NICE = 10


@dataclass(frozen=True)
class RunIdentity:
    """What a checkpoint must match to be resumed by this run."""

    config_hash: str
    dataset_fingerprint: str
    base_model: str
    config: dict[str, Any]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def snapshot(src: Path, dst: Path) -> Path:
    """Hard-link (or copy) every file of ``src`` into ``dst``; the trainer may then delete src."""
    shutil.rmtree(dst, ignore_errors=True)
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
    return dst


def upload_committed(
    storage: Storage, prefix: str, local: Path, step: int, identity: RunIdentity
) -> Manifest:
    """Upload ``local`` under ``prefix`` and commit it with a manifest written last.

    A manifest already at ``prefix`` is removed first, so a half-overwritten checkpoint never
    looks committed.
    """
    manifest_uri = join_uri(prefix, MANIFEST_NAME)
    if storage.exists(manifest_uri):
        storage.delete_prefix(prefix)
    paths = [p for p in sorted(local.rglob("*")) if p.is_file() and p.name != MANIFEST_NAME]
    # Hash in a helper thread while uploading (hashlib releases the GIL): the manifest is ready
    # when the last byte is up, instead of costing a second pass.
    with ThreadPoolExecutor(1, thread_name_prefix="checkpoint-sha256") as pool:
        digests = [pool.submit(sha256_file, p) for p in paths]
        storage.put_files([(join_uri(prefix, p.relative_to(local).as_posix()), p) for p in paths])
        files = [
            ManifestFile(
                path=p.relative_to(local).as_posix(), sha256=d.result(), size=p.stat().st_size
            )
            for p, d in zip(paths, digests, strict=True)
        ]
    manifest = Manifest(
        step=step,
        config_hash=identity.config_hash,
        dataset_fingerprint=identity.dataset_fingerprint,
        base_model=identity.base_model,
        config=identity.config,
        files=files,
    )
    storage.put_bytes(manifest_uri, manifest.model_dump_json(indent=1).encode())
    return manifest


@dataclass
class _Job:
    step: int
    local: Path
    done: threading.Event = field(default_factory=threading.Event)


#: The upload process's storage, made once by :func:`_child_init` (one client for the run).
_CHILD: dict[str, Storage] = {}


def _child_init(storage_uri: str) -> None:
    """Set up the upload process: lower priority, no SIGINT or SIGTERM (a local cancel signals
    the worker's whole process group; the worker decides when its uploads stop), die with the
    worker (Linux), and the storage client that every checkpoint of the run reuses."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(UPLOAD_NICE)
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: no orphan keeps committing
    from arkor_ops.storage import open_storage

    _CHILD["storage"] = open_storage(storage_uri)


def _child_ready() -> None:
    """Nothing: submitted once so that the upload process starts before training does."""


def _hold(path: str | None) -> None:
    """Test hook (``ARKOR_TEST_HOLD_UPLOADS``): wait until ``path`` exists before uploading."""
    while path is not None and not os.path.exists(path):
        time.sleep(0.05)


def _upload_in_child(
    prefix: str, local: str, step: int, identity: dict[str, Any], hold: str | None = None
) -> dict[str, Any]:
    """:func:`upload_committed` in the upload process; returns the manifest as data."""
    _hold(hold)
    storage = _CHILD["storage"]
    manifest = upload_committed(storage, prefix, Path(local), step, RunIdentity(**identity))
    return manifest.model_dump(mode="json")


class CheckpointUploader:
    """Uploads checkpoints in the background; training only enqueues.

    A coordinator thread takes checkpoints off a queue and hands each to one child process
    (spawned once, lower CPU priority) that hashes, uploads and commits it, so boto3's Python
    work never competes with the training loop for the GIL. ``in_process=True`` uploads in the
    thread instead. The child is started here, not by the first upload: by the caller's thread
    (so its priority is the worker's lowered once, not the lowered coordinator's lowered again)
    and before training, so the first checkpoint does not pay for the start.

    When more than :data:`MAX_BACKLOG` newer checkpoints wait behind the one taken off the
    queue, that one is skipped (its snapshot deleted, never committed) and ``on_skip`` says so.

    Args:
        storage: where the run lives.
        layout: the run's layout.
        identity: what goes into each manifest.
        staging: local folder for the hard-linked snapshots.
        on_commit: called (in the upload thread) after each commit, with step and artifact.
        on_skip: called (in the upload thread) for each skipped checkpoint, with its step and
            the number of newer checkpoints queued behind it.
        hold: test hook; uploads wait until this file exists.
    """

    def __init__(
        self,
        storage: Storage,
        layout: RunLayout,
        identity: RunIdentity,
        staging: Path,
        on_commit: Callable[[int, Artifact], None],
        *,
        on_skip: Callable[[int, int], None] | None = None,
        in_process: bool = False,
        hold: Path | None = None,
    ) -> None:
        self.storage = storage
        self.in_process = in_process
        self._pool: ProcessPoolExecutor | None = None
        self.layout = layout
        self.identity = identity
        self.staging = staging
        self.on_commit = on_commit
        self.on_skip = on_skip
        self.hold = hold
        if not in_process:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                1, mp_context=ctx, initializer=_child_init, initargs=(layout.prefix,)
            )
            self._pool.submit(_child_ready)  # starts the process now, from this thread
        self.committed: list[Artifact] = []
        self.skipped: list[int] = []
        self.error: BaseException | None = None
        self.upload_seconds = 0.0
        self.uploaded_bytes = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="checkpoint-upload", daemon=True)
        self._thread.start()

    def submit(self, step: int, checkpoint_dir: Path) -> None:
        """Snapshot ``checkpoint_dir`` and queue its upload; returns at once."""
        local = snapshot(checkpoint_dir, self.staging / f"step-{step:08d}")
        self._queue.put(_Job(step, local))

    def _run(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            # Linux: a thread is a task with its own nice value; let training win the CPU.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), UPLOAD_NICE)
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                backlog = self._queue.qsize()
                if backlog >= MAX_BACKLOG:
                    self._skip(job, backlog)
                elif self.error is None:
                    self._upload(job)
            except BaseException as exc:
                self.error = exc
                log.error("uploading checkpoint step %d failed: %s", job.step, exc)
            finally:
                shutil.rmtree(job.local, ignore_errors=True)
                job.done.set()
                self._queue.task_done()

    def _skip(self, job: _Job, backlog: int) -> None:
        log.warning(
            "skipping checkpoint step %d: uploads are %d checkpoints behind training",
            job.step,
            backlog,
        )
        self.skipped.append(job.step)
        if self.on_skip is not None:
            self.on_skip(job.step, backlog)

    def _upload(self, job: _Job) -> None:
        start = time.perf_counter()
        prefix = self.layout.checkpoint(job.step)
        if self._pool is None:
            _hold(None if self.hold is None else str(self.hold))
            manifest = upload_committed(self.storage, prefix, job.local, job.step, self.identity)
        else:
            ident = dataclasses.asdict(self.identity)
            hold = None if self.hold is None else str(self.hold)
            data = self._pool.submit(
                _upload_in_child, prefix, str(job.local), job.step, ident, hold
            )
            manifest = Manifest.model_validate(data.result())
        self.upload_seconds += time.perf_counter() - start
        self.uploaded_bytes += sum(f.size for f in manifest.files)
        artifact = Artifact(kind="checkpoint", job_id=self.layout.job_id, uri=prefix, step=job.step)
        self.committed.append(artifact)
        log.info("checkpoint step %d committed to %s", job.step, prefix)
        self.on_commit(job.step, artifact)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued upload is done; returns False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Finish the queued uploads and stop the thread; returns False on timeout."""
        finished = self.flush(timeout)
        self._queue.put(None)
        if finished:
            self._thread.join(timeout=5)
            if self._pool is not None:
                self._pool.shutdown(wait=True)
        return finished


# --- resume -----------------------------------------------------------------------------------


def _diff_fields(old: dict[str, Any], new: dict[str, Any], path: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if key in ("name", "resume"):
            continue
        a, b = old.get(key), new.get(key)
        where = f"{path}.{key}" if path else key
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_diff_fields(a, b, where))
        elif a != b:
            out.append(f"{where} ({json.dumps(a)} -> {json.dumps(b)})")
    return out


def check_match(manifest: Manifest, identity: RunIdentity) -> None:
    """Raise :class:`CheckpointError` naming what differs between a checkpoint and this run."""
    problems = []
    if manifest.config_hash != identity.config_hash:
        fields = _diff_fields(manifest.config, identity.config)
        problems.append("config differs" + (": " + ", ".join(fields) if fields else ""))
    if manifest.dataset_fingerprint != identity.dataset_fingerprint:
        problems.append(
            f"dataset fingerprint differs ({manifest.dataset_fingerprint[:12]} -> "
            f"{identity.dataset_fingerprint[:12]})"
        )
    if problems:
        raise CheckpointError(
            f"refusing to resume from checkpoint step {manifest.step}: "
            + "; ".join(problems)
            + " (set resume=force to resume anyway, or resume=never to start over)"
        )


def download_files(
    storage: Storage,
    prefix: str,
    manifest: Manifest,
    dest: Path,
    *,
    only: set[str] | None = None,
    label: str | None = None,
) -> Path:
    """Download the committed files under ``prefix`` (``only``: those paths) into ``dest``,
    checking each against its manifest sha256; errors start with ``label`` (or the prefix)."""
    label = label or prefix
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    for entry in manifest.files:
        if only is not None and entry.path not in only:
            continue
        target = dest / entry.path
        if not target.resolve().is_relative_to(root):
            raise CheckpointError(f"{label}: {entry.path} leaves its folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        storage.get_file(join_uri(prefix, entry.path), target)
        if sha256_file(target) != entry.sha256:
            raise CheckpointError(f"{label}: {entry.path} fails its sha256")
    return dest


def download_verified(storage: Storage, layout: RunLayout, manifest: Manifest, dest: Path) -> Path:
    """Download a committed checkpoint and check every file against its manifest."""
    prefix, label = layout.checkpoint(manifest.step), f"checkpoint step {manifest.step}"
    return download_files(storage, prefix, manifest, dest, label=label)


def find_resume_point(
    storage: Storage,
    layout: RunLayout,
    identity: RunIdentity,
    policy: str,
    dest_root: Path,
) -> tuple[int, Path] | None:
    """The newest committed checkpoint to resume from, downloaded and verified, or None.

    ``policy`` is the config's ``resume``: ``never`` ignores checkpoints, ``auto`` refuses a
    mismatch (:class:`CheckpointError`), ``force`` resumes anyway (logging the mismatch). A
    checkpoint whose manifest is unreadable (corrupt JSON, a file path outside the checkpoint)
    or whose files fail their sha256 is skipped, logged, for the next older one.
    """
    if policy == "never":
        return None
    for step in committed_steps(storage, layout):
        try:
            manifest = read_manifest(storage, layout, step)
        except (ValidationError, StorageError) as exc:
            why = (
                f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}"
                if isinstance(exc, ValidationError)
                else str(exc)
            )
            log.warning("skipping checkpoint step %d: its manifest is unusable (%s)", step, why)
            continue
        if manifest.step != step:
            log.warning(
                "skipping checkpoint step %d: its manifest says step %d", step, manifest.step
            )
            continue
        try:
            check_match(manifest, identity)
        except CheckpointError as exc:
            if policy != "force":
                raise
            log.warning("resume=force: %s", exc)
        try:
            path = download_verified(storage, layout, manifest, dest_root / f"checkpoint-{step}")
        except (CheckpointError, StorageError) as exc:
            log.warning("skipping checkpoint step %d: %s", step, exc)
            continue
        return step, path
    return None
