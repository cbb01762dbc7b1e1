"""Pin the run's Hub revisions to commits, once, so every retry and resume trains the same bytes.

The first attempt of a run resolves the configured ``revision`` of the model and of a
``huggingface`` dataset (a branch, a tag, or nothing: the default branch) to the commits they
point at, and records them in the run's stored config (``{job}/config.json``, key
``resolved``) before anything is downloaded. Every later attempt of the same run (a retry, an
eviction's replacement pod) reads that record and uses those commits even if the branch has
moved since. The commits also appear in ``training.started`` metadata and in every checkpoint
manifest (through the run identity's base model and dataset fingerprint).

Resolving is the first request the run sends to the hub, so a gated repo, a missing repo or
revision and a refused token fail here (exit 2), before a dataset row or a weight is fetched.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from arkor_ops.config import HuggingFaceDataset, TrainerConfig
from arkor_ops.errors import StorageError
from arkor_ops.storage import RunLayout, Storage
from arkor_ops.worker.hub import HubRef, resolve_commit
from arkor_ops.worker.models import is_local
from arkor_ops.worker.settings import WorkerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pins:
    """The hub references of a run and the commits they are pinned to (None: not from a hub)."""

    model: HubRef | None = None
    model_commit: str | None = None
    dataset: HubRef | None = None
    dataset_commit: str | None = None


def hub_refs(config: TrainerConfig, settings: WorkerSettings) -> tuple[HubRef | None, ...]:
    """The model's and the dataset's hub references; None where offline or not a hub id."""
    if settings.hub_offline:
        return None, None

    def ref(repo_id: str, repo_type: Any, revision: str | None) -> HubRef:
        return HubRef(
            repo_id=repo_id,
            repo_type=repo_type,
            revision=revision,
            token=settings.hf_token,
            endpoint=settings.hub_endpoint,
            token_variable=settings.hf_token_setting,
        )

    model = None if is_local(config.model) else ref(config.model, "model", config.revision)
    source = config.dataset
    dataset = None
    if isinstance(source, HuggingFaceDataset) and not is_local(source.name):
        dataset = ref(source.name, "dataset", source.revision)
    return model, dataset


def _stored(storage: Storage, layout: RunLayout) -> dict[str, Any]:
    try:
        if storage.exists(layout.config):
            data = json.loads(storage.get_bytes(layout.config))
            if isinstance(data, dict):
                return data
    except (StorageError, ValueError) as exc:
        log.warning("could not read the stored config %s: %s", layout.config, exc)
    return {}


def _pinned(record: dict[str, Any], key: str, ref: HubRef | None) -> str | None:
    entry = record.get(key)
    if ref is None or not isinstance(entry, dict):
        return None
    same = entry.get("id") == ref.repo_id and entry.get("revision") == ref.revision
    commit = entry.get("commit")
    return commit if same and isinstance(commit, str) and commit else None


def pin_revisions(
    config: TrainerConfig, settings: WorkerSettings, storage: Storage, layout: RunLayout
) -> Pins:
    """The run's pins: read from the stored config, or resolved now and recorded there.

    Raises:
        HubAccessError: the hub refused a repo, revision or token (exit 2).
        StorageError: the pins cannot be recorded (retryable).
    """
    model, dataset = hub_refs(config, settings)
    if model is None and dataset is None:
        return Pins()
    stored = _stored(storage, layout)
    record = dict(stored.get("resolved") or {})
    commits: dict[str, str | None] = {}
    for key, ref in (("model", model), ("dataset", dataset)):
        commit = _pinned(record, key, ref)
        if ref is not None and commit is None:
            commit = resolve_commit(ref)
            record[key] = {"id": ref.repo_id, "revision": ref.revision, "commit": commit}
            log.info(
                "%s %s@%s pinned to commit %s", key, ref.repo_id, ref.revision or "default", commit
            )
        elif commit is not None:
            log.info("%s %s: the run's pinned commit %s", key, ref and ref.repo_id, commit)
        commits[key] = commit
    if record != stored.get("resolved"):
        wire = stored or config.to_wire()
        storage.put_bytes(layout.config, json.dumps({**wire, "resolved": record}).encode())
    return Pins(model, commits.get("model"), dataset, commits.get("dataset"))
