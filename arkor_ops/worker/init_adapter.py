"""Start a run from another run's adapter (``init_adapter``): find it, check it, fetch it, load it.

The adapter is a committed checkpoint or final adapter (it has a manifest). It is checked before
the model is loaded: the manifest must name the same base model (and, when both were pinned to
hub commits, the same commit), and its LoRA rank must be this run's. Only the adapter's own files
are fetched (weights and ``adapter_config.json``, not the optimizer state), each against its
sha256. The weights are loaded into the run's freshly built LoRA once the trainer exists, so both
trainer backends (TRL and Unsloth) take the same path; a resume of this run's own checkpoint
then overrides them as usual. The new run counts its steps from 0 with a fresh optimizer.
The checks are the core's (:mod:`arkor_ops.checkpoints`), which the client runs too before it
creates a job; here they also see the model's resolved hub commit.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arkor_ops.checkpoints import (
    ADAPTER_FILES,
    adapter_prefix,
    check_base_model,
    check_rank,
    committed_adapter,
)
from arkor_ops.config import AdapterRef, TrainerConfig
from arkor_ops.errors import CheckpointError
from arkor_ops.storage import RunLayout, open_storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InitAdapter:
    """An adapter fetched and checked, ready to load."""

    uri: str
    step: int
    path: Path


def fetch(config: TrainerConfig, storage_uri: str, base_model: str, dest: Path) -> InitAdapter:
    """Find, check and download ``config.init_adapter`` into ``dest``.

    Raises:
        CheckpointError: nothing is committed there, its manifest is unreadable, it belongs to
            another base model or LoRA rank, or a file fails its sha256 (never retried).
        StorageError: the storage could not be reached (retried).
    """
    assert config.init_adapter is not None
    adapter = fetch_ref(config.init_adapter, storage_uri, base_model, dest)
    check_rank(adapter.uri, json.loads((adapter.path / "adapter_config.json").read_text()), config)
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

    uri = adapter_prefix(ref, RunLayout(storage_uri, ref.job_id or ""))
    storage = open_storage(uri)
    manifest = committed_adapter(storage, uri, label)
    check_base_model(uri, manifest.base_model, base_model, label)
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
