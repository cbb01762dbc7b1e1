"""Start a run from another run's adapter (``init_adapter``): find it, check it, fetch it, load it.

The adapter is a committed checkpoint or final adapter (it has a manifest). It is checked before
the model is loaded: the manifest must name the same base model (and, when both were pinned to
hub commits, the same commit), and its LoRA rank must be this run's. Only the adapter's own files
are fetched (weights and ``adapter_config.json``, not the optimizer state), each against its
sha256. The weights are loaded into the run's freshly built LoRA once the trainer exists, so both
trainer backends (TRL and Unsloth) take the same path; a resume of this run's own checkpoint
then overrides them as usual. The new run counts its steps from 0 with a fresh optimizer.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from arkor_ops.checkpoints import read_manifest_at
from arkor_ops.config import AdapterRef, TrainerConfig
from arkor_ops.errors import CheckpointError
from arkor_ops.storage import MANIFEST_NAME, RunLayout, join_uri, open_storage

log = logging.getLogger(__name__)

#: The files of a PEFT adapter (what ``save_pretrained`` writes besides a README).
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class InitAdapter:
    """An adapter fetched and checked, ready to load."""

    uri: str
    step: int
    path: Path


def _prefix(ref: AdapterRef, storage_uri: str) -> str:
    if ref.uri is not None:
        return ref.uri.rstrip("/")
    layout = RunLayout(storage_uri, ref.job_id or "")
    return layout.final if ref.kind == "final" else layout.checkpoint(ref.step or 0)


def _split(base_model: str) -> tuple[str, str | None]:
    """``id@commit`` -> (id, commit); a bare id (or a path with an ``@``) -> (id, None)."""
    name, at, commit = base_model.rpartition("@")
    return (name, commit) if at and _COMMIT.match(commit) else (base_model, None)


def check_base_model(uri: str, trained_on: str, this_run: str, label: str = "init_adapter") -> None:
    """Raise :class:`CheckpointError` when the adapter was trained on another base model."""
    (old, old_commit), (new, new_commit) = _split(trained_on), _split(this_run)
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


def fetch(config: TrainerConfig, storage_uri: str, base_model: str, dest: Path) -> InitAdapter:
    """Find, check and download ``config.init_adapter`` into ``dest``.

    Raises:
        CheckpointError: nothing is committed there, its manifest is unreadable, it belongs to
            another base model or LoRA rank, or a file fails its sha256 (never retried).
        StorageError: the storage could not be reached (retried).
    """
    assert config.init_adapter is not None
    adapter = fetch_ref(config.init_adapter, storage_uri, base_model, dest)
    rank = json.loads((adapter.path / "adapter_config.json").read_text()).get("r")
    if config.lora is not None and rank is not None and rank != config.lora.r:
        raise CheckpointError(
            f"init_adapter {adapter.uri} has LoRA rank {rank}, this run has "
            f"lora.r={config.lora.r}: set lora.r: {rank} (an adapter's weights keep their shape)"
        )
    log.info("starting from adapter %s (step %d)", adapter.uri, adapter.step)
    return adapter


def fetch_ref(
    ref: AdapterRef, storage_uri: str, base_model: str, dest: Path, label: str = "init_adapter"
) -> InitAdapter:
    """Find, check and download the committed adapter ``ref`` names into ``dest``.

    Shared by ``init_adapter`` and the evaluation stage (``label`` names the config field in
    errors): only a committed adapter (its manifest written last) of the same base model is
    taken, and each file is checked against its sha256.

    Raises:
        CheckpointError: nothing is committed there, its manifest is unreadable, it belongs to
            another base model, or a file fails its sha256 (never retried).
        StorageError: the storage could not be reached (retried).
    """
    from arkor_ops.worker.checkpoints import download_files

    uri = _prefix(ref, storage_uri)
    storage = open_storage(uri)
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
    check_base_model(uri, manifest.base_model, base_model, label)
    names = {f.path for f in manifest.files}
    missing = [name for name in ADAPTER_FILES if name not in names]
    if missing:
        raise CheckpointError(f"{label} {uri} holds no {', '.join(missing)}: not an adapter")
    path = download_files(storage, uri, manifest, dest, only=set(ADAPTER_FILES))
    return InitAdapter(uri=uri, step=manifest.step, path=path)


def load_weights(model: Any, adapter: InitAdapter) -> None:
    """Load the adapter's LoRA weights into the run's PEFT ``model`` (in place).

    Raises:
        CheckpointError: the weights do not fit this run's LoRA (target modules, shapes).
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(adapter.path / "adapter_model.safetensors"))
    try:
        result = set_peft_model_state_dict(model, state)
    except RuntimeError as exc:  # a size mismatch
        raise CheckpointError(
            f"init_adapter {adapter.uri} does not fit this run's LoRA: {str(exc)[:300]}"
        ) from None
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    lora_missing = [k for k in getattr(result, "missing_keys", []) or [] if "lora_" in k]
    if unexpected or lora_missing:
        first = (unexpected or lora_missing)[0]
        raise CheckpointError(
            f"init_adapter {adapter.uri} does not fit this run's LoRA: {len(unexpected)} weights "
            f"it lacks, {len(lora_missing)} it does not set (first: {first}); use the same "
            "lora.target_modules"
        )
