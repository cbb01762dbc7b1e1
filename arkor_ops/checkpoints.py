"""Checkpoints as objects: the commit manifest, and what a user lists and starts from.

A checkpoint (``{run}/checkpoints/step-NNNNNNNN/``) or a final adapter (``{run}/final/``) counts
only once its ``manifest.json`` is written; the worker writes it last (see
:mod:`arkor_ops.worker.checkpoints`). This module is the client's view: it reads manifests with
the core's storage clients only (no ML stack), so ``trainer.checkpoints()`` and
``arkor-ops checkpoints JOB`` work from a laptop with nothing but a kubeconfig and the S3 keys.
The loss at each step comes from the run's event stream (the sidecar, or the log persisted to
storage once the pod is gone), so a live run lists the same way as a finished one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from arkor_ops.errors import CheckpointError, JobNotFoundError, StorageError, StreamError
from arkor_ops.storage import MANIFEST_NAME, RunLayout, Storage, join_uri

if TYPE_CHECKING:
    from arkor_ops.backends.base import Backend
    from arkor_ops.config import AdapterRef, TrainerConfig

#: The files of a PEFT adapter (what ``save_pretrained`` writes besides a README).
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class ManifestFile(BaseModel):
    """One file of a checkpoint."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    path: str = Field(description="Path relative to the checkpoint prefix.")
    sha256: str = Field(description="Hex sha256 of the file's bytes.")
    size: int = Field(ge=0, description="Size in bytes.")

    @field_validator("path")
    @classmethod
    def _inside(cls, value: str) -> str:
        # Resume writes dest / path: a manifest must never name a file outside the checkpoint.
        parts = value.split("/")
        if not value or value.startswith("/") or "\\" in value or ":" in parts[0]:
            raise ValueError(f"{value[:200]!r} is not a relative path")
        if any(part in ("", ".", "..") for part in parts) or "\x00" in value:
            raise ValueError(f"{value[:200]!r} has an empty, '.' or '..' part")
        return value


class Manifest(BaseModel):
    """The commit marker of a checkpoint (written last)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    step: int = Field(ge=0, description="Optimizer step of the checkpoint.")
    config_hash: str = Field(description="`TrainerConfig.config_hash()` of the run.")
    dataset_fingerprint: str = Field(description="sha256 of the checked training examples.")
    base_model: str = Field(
        description="The config's model, with `@<commit>` when it was downloaded from a hub."
    )
    config: dict[str, Any] = Field(default_factory=dict, description="Wire config (no secrets).")
    files: list[ManifestFile] = Field(description="Every file of the checkpoint but this one.")
    created_at: float = Field(default_factory=time.time, description="Unix time of the commit.")


def committed_steps(storage: Storage, layout: RunLayout) -> list[int]:
    """Steps of the run's committed checkpoints (those with a manifest), newest first."""
    prefix = layout.checkpoints + "/"
    steps = set()
    for uri in storage.list(prefix):
        rel = uri[len(prefix) :]
        name, _, rest = rel.partition("/")
        if rest == MANIFEST_NAME and name.startswith("step-") and name[5:].isdigit():
            steps.add(int(name[5:]))
    return sorted(steps, reverse=True)


def read_manifest_at(storage: Storage, prefix: str) -> Manifest:
    """The manifest committed under ``prefix`` (a checkpoint's or the final adapter's)."""
    return Manifest.model_validate_json(storage.get_bytes(join_uri(prefix, MANIFEST_NAME)))


def read_manifest(storage: Storage, layout: RunLayout, step: int) -> Manifest:
    """The manifest of the checkpoint at ``step``."""
    return read_manifest_at(storage, layout.checkpoint(step))


class CheckpointInfo(BaseModel):
    """One committed checkpoint (or the final adapter) of a run."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    kind: Literal["checkpoint", "final"] = Field(description="A checkpoint, or the final adapter.")
    job_id: str = Field(description="The run it belongs to.")
    step: int = Field(description="Optimizer step it was saved at.")
    uri: str = Field(description="Its prefix in storage (holds `manifest.json`).")
    size: int = Field(description="Bytes of its files.")
    created_at: str = Field(description="ISO time it was committed.")
    base_model: str = Field(description="The base model it was trained on (`id@commit` if pinned).")
    train_loss: float | None = Field(default=None, description="Training loss at that step.")
    eval_loss: float | None = Field(default=None, description="Eval loss at that step, if any.")
    best: bool = Field(
        default=False, description="The checkpoint with the lowest eval loss (earliest on a tie)."
    )

    def ref(self) -> dict[str, Any]:
        """What a new run's ``init_adapter`` takes to start from this one."""
        if self.kind == "final":
            return {"kind": "final", "jobId": self.job_id}
        return {"kind": "checkpoint", "jobId": self.job_id, "step": self.step}


def _losses(events: list[dict[str, Any]]) -> dict[int, tuple[float | None, float | None]]:
    """Step -> (train loss, eval loss), the last value seen of each (re-done steps replace)."""
    out: dict[int, tuple[float | None, float | None]] = {}
    for event in events:
        if event.get("type") != "training.log" or not isinstance(event.get("step"), int):
            continue
        old = out.get(event["step"], (None, None))
        loss, eval_loss = event.get("loss"), event.get("evalLoss")
        out[event["step"]] = (
            loss if loss is not None else old[0],
            eval_loss if eval_loss is not None else old[1],
        )
    return out


def describe_checkpoints(
    storage: Storage, layout: RunLayout, events: list[dict[str, Any]]
) -> list[CheckpointInfo]:
    """The run's committed checkpoints, oldest first, then its final adapter if committed.

    A checkpoint whose manifest is unreadable is left out (the worker skips it on resume too).
    """
    losses = _losses(events)
    found: list[tuple[str, str, Manifest]] = []
    for step in sorted(committed_steps(storage, layout)):
        with contextlib.suppress(ValidationError, StorageError):
            manifest = read_manifest(storage, layout, step)
            found.append(("checkpoint", layout.checkpoint(step), manifest))
    if storage.exists(join_uri(layout.final, MANIFEST_NAME)):
        with contextlib.suppress(ValidationError, StorageError):
            found.append(("final", layout.final, read_manifest_at(storage, layout.final)))
    infos = []
    for kind, uri, manifest in found:
        train, evaluation = losses.get(manifest.step, (None, None))
        infos.append(
            CheckpointInfo(
                kind=kind,  # type: ignore[arg-type]
                job_id=layout.job_id,
                step=manifest.step,
                uri=uri,
                size=sum(f.size for f in manifest.files),
                created_at=datetime.fromtimestamp(manifest.created_at, UTC).isoformat(),
                base_model=manifest.base_model,
                train_loss=train,
                eval_loss=evaluation,
            )
        )
    scored = [
        (c.eval_loss, c.step) for c in infos if c.kind == "checkpoint" and c.eval_loss is not None
    ]
    if scored:
        best = min(scored)[1]
        infos = [
            c.model_copy(update={"best": True}) if c.kind == "checkpoint" and c.step == best else c
            for c in infos
        ]
    return infos


async def events_so_far(
    backend: Backend, job_id: str, *, idle_seconds: float = 1.5, first_seconds: float = 30.0
) -> list[dict[str, Any]]:
    """The run's events written so far, as JSON payloads.

    Reads the stream up to the last event id ``describe`` reports (a live run never goes idle),
    else until it ends or is idle; a stream that cannot be opened gives what was read.
    """
    try:
        upto = (await backend.describe(job_id)).last_event_id
    except JobNotFoundError:
        upto = None
    out: list[dict[str, Any]] = []
    frames = backend.events(job_id).__aiter__()
    try:
        while True:
            timeout = idle_seconds if out else first_seconds
            frame = await asyncio.wait_for(anext(frames), timeout=timeout)
            if frame.is_end:
                break
            if frame.is_ping or not frame.data:
                continue
            with contextlib.suppress(ValueError):
                data = json.loads(frame.data)
                if isinstance(data, dict):
                    out.append(data)
            if upto is not None and frame.id and frame.id.isdigit() and int(frame.id) >= upto:
                break
    except (StopAsyncIteration, TimeoutError, StreamError):
        pass
    finally:
        with contextlib.suppress(Exception):
            await frames.aclose()  # type: ignore[attr-defined]
    return out


async def list_checkpoints(backend: Backend, job_id: str) -> list[CheckpointInfo]:
    """What ``trainer.checkpoints()`` and ``arkor-ops checkpoints JOB`` show.

    Raises:
        JobNotFoundError: the backend knows no such run.
        BackendError: the backend keeps no run storage.
    """
    storage, layout = await backend.run_storage(job_id)
    events = await events_so_far(backend, job_id)
    return await asyncio.to_thread(describe_checkpoints, storage, layout, events)


# --- starting from an adapter (``init_adapter``) --------------------------------------------
# The same checks run twice: here, before the client creates a job (so a ref to nothing, to
# another base model or to another LoRA rank never costs a pod), and in the worker, which
# also resolves the model's hub commit and checks each file's sha256 as it downloads.


def adapter_prefix(ref: AdapterRef, layout: RunLayout) -> str:
    """Where ``ref`` points: its ``uri``, or the run's final adapter or checkpoint in ``layout``
    (the referenced run's layout)."""
    if ref.uri is not None:
        return ref.uri.rstrip("/")
    return layout.final if ref.kind == "final" else layout.checkpoint(ref.step or 0)


def _split_commit(base_model: str) -> tuple[str, str | None]:
    """``id@commit`` -> (id, commit); a bare id (or a path with an ``@``) -> (id, None)."""
    name, at, commit = base_model.rpartition("@")
    return (name, commit) if at and _COMMIT.match(commit) else (base_model, None)


def check_base_model(uri: str, trained_on: str, this_run: str, label: str = "init_adapter") -> None:
    """Raise :class:`CheckpointError` when the adapter was trained on another base model."""
    (old, old_commit), (new, new_commit) = _split_commit(trained_on), _split_commit(this_run)
    if old != new:
        raise CheckpointError(
            f"{label} {uri} was trained on base model {old!r}, this run's model is "
            f"{new!r}: an adapter only fits the model it was trained on (set model: {old!r})"
        )
    if old_commit and new_commit and old_commit != new_commit:
        raise CheckpointError(
            f"{label} {uri} was trained on {old} at commit {old_commit}, this run resolves "
            f"it to {new_commit}: set revision: {old_commit}"
        )


def committed_adapter(storage: Storage, uri: str, label: str = "init_adapter") -> Manifest:
    """The manifest of the adapter committed at ``uri`` (errors name the field ``label``).

    Raises:
        CheckpointError: nothing is committed there, its manifest is unreadable, or it holds no
            adapter files.
    """
    if not storage.exists(join_uri(uri, MANIFEST_NAME)):
        raise CheckpointError(
            f"{label}: nothing is committed at {uri} (no {MANIFEST_NAME}); "
            "`arkor-ops checkpoints JOB` lists a run's committed checkpoints"
        )
    try:
        manifest = read_manifest_at(storage, uri)
    except ValidationError as exc:
        raise CheckpointError(
            f"{label} {uri}: its manifest is unreadable ({exc.error_count()} problem(s))"
        ) from None
    names = {f.path for f in manifest.files}
    missing = [name for name in ADAPTER_FILES if name not in names]
    if missing:
        raise CheckpointError(f"{label} {uri} holds no {', '.join(missing)}: not an adapter")
    return manifest


def check_rank(uri: str, adapter_config: dict[str, Any], config: TrainerConfig) -> None:
    """Raise :class:`CheckpointError` when the adapter's LoRA rank is not ``config.lora.r``."""
    rank = adapter_config.get("r")
    if config.lora is not None and rank is not None and rank != config.lora.r:
        raise CheckpointError(
            f"init_adapter {uri} has LoRA rank {rank}, this run has lora.r={config.lora.r}: "
            f"set lora.r: {rank} (an adapter's weights keep their shape)"
        )


def _check_at(storage: Storage, uri: str, config: TrainerConfig) -> None:
    manifest = committed_adapter(storage, uri)
    this_run = config.model
    if config.revision and _COMMIT.match(config.revision):
        this_run = f"{config.model}@{config.revision}"
    check_base_model(uri, manifest.base_model, this_run)
    try:
        adapter_config = json.loads(storage.get_bytes(join_uri(uri, "adapter_config.json")))
    except ValueError:
        raise CheckpointError(f"init_adapter {uri}: adapter_config.json is not JSON") from None
    check_rank(uri, adapter_config if isinstance(adapter_config, dict) else {}, config)


async def _locate(backend: Backend, ref: AdapterRef, label: str) -> tuple[Storage, str] | None:
    """Where ``ref``'s adapter is, as this client reads it; None when it cannot check from here
    (a backend without run storage, or a ``uri`` of a scheme it does not reach)."""
    from arkor_ops.backends.base import Backend as _Base

    if type(backend).run_storage is _Base.run_storage:
        return None
    if ref.job_id is None:
        uri = adapter_prefix(ref, RunLayout("file:///", ""))
        found = await backend.adapter_storage(uri)
        return None if found is None else (found, uri)
    try:
        storage, layout = await backend.run_storage(ref.job_id)
    except JobNotFoundError:
        raise CheckpointError(
            f"{label}: no run {ref.job_id!r} here; `arkor-ops list` shows the runs"
        ) from None
    return storage, adapter_prefix(ref, layout)


async def check_init_adapter(backend: Backend, config: TrainerConfig) -> None:
    """Check ``config.init_adapter`` from the client, before a job is created.

    A backend that keeps no run storage (the fake one), or a ``uri`` it cannot read from here,
    leaves the check to the worker.

    Raises:
        CheckpointError: the ref names no committed adapter, or one that does not fit.
        StorageError: the storage could not be read.
    """
    if config.init_adapter is None:
        return
    located = await _locate(backend, config.init_adapter, "init_adapter")
    if located is not None:
        await asyncio.to_thread(_check_at, *located, config)


async def check_adapter_ref(
    backend: Backend, ref: AdapterRef, model: str, revision: str | None, label: str
) -> None:
    """Check that ``ref`` names a committed adapter of base model ``model``, from the client,
    before a job is created (an evaluation's ``adapter``); errors name the field ``label``.

    As :func:`check_init_adapter`: a backend without run storage, or a ``uri`` it cannot read
    from here, leaves the check to the worker.

    Raises:
        CheckpointError: the ref names no run or no committed adapter, or another base model's.
        StorageError: the storage could not be read.
    """
    located = await _locate(backend, ref, label)
    if located is None:
        return
    storage, uri = located
    this_run = f"{model}@{revision}" if revision and _COMMIT.match(revision) else model

    def check() -> None:
        manifest = committed_adapter(storage, uri, label)
        check_base_model(uri, manifest.base_model, this_run, label)

    await asyncio.to_thread(check)
