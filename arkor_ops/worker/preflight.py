"""A training run's CPU pre-flight: what would fail on a GPU fails here, before a GPU is held.

The pre-flight Job (:func:`arkor_ops.backends.kubernetes.manifests.build_preflight`) runs the
trainer image's worker with ``ARKOR_PREFLIGHT=1`` on a CPU node. It writes ``job.phase``
``preflight``, then checks, with the worker's own code and errors:

1. the hub's answer for the model and a ``huggingface`` dataset, pinning both to commits
   (:mod:`.pins`): a gated or missing repo, a missing revision, a refused token;
2. every dataset row (:func:`~.data.prepare_dataset`): the bad rows, with their numbers;
3. the model's files without its weights: a ``config.json`` and weights listed (a local
   folder, an ``s3://`` prefix, the pinned Hub commit), the tokenizer fetched and loaded;
4. the chat template on the first rows: rendered as the model will see them (the preview)
   and, with ``train_on_responses_only``, the assistant tokens it marks for the loss (a
   template without TRL's ``{% generation %}`` markers marks none: the GPU run would fail
   while tokenizing);
5. every row's token count, the rows longer than the run's ``max_length`` and, with
   ``train_on_responses_only``, the rows whose response starts past it (truncation leaves
   them no loss; when that is every row, the run would train nothing: it fails here);
6. the GPU memory the run needs, estimated from ``config.json`` and the weights' size
   (:mod:`.memory`), against the GPU type's (``ARKOR_GPU_MEMORY_GIB``, where known): weights
   that alone do not fit fail here; an estimate above it is reported, not stopped.

Passing writes ``preflight.passed`` (rows, tokens, the preview, the weights' size, the
memory estimate), exit 0.
A check that can never pass writes ``training.failed`` naming the row or the model, exit 2
(the Job's pod failure policy fails it at once). A retryable failure (storage or the hub
unreachable) writes ``job.phase`` ``preflight`` with the error, exit 1: the Job retries.
SIGTERM stops it between checks with no terminal event, exit 1.

Either way the log goes to the run's ``events.jsonl`` in storage, where the GPU pod's worker
continues it (ids go on from there), so a follower sees the pre-flight's events first and a
failed pre-flight's ``training.failed`` ends the run that never got a GPU. The pins recorded
here are the ones the GPU run downloads.

Not done here (yet): staging the model and tokenized data for the GPU node.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arkor_ops.config import TrainerConfig
from arkor_ops.errors import ArkorOpsError
from arkor_ops.eventlog import EventLogWriter, read_events
from arkor_ops.events import JobPhase, PreflightPassed, PreviewRow, TrainingFailed
from arkor_ops.storage import RunLayout, Storage, open_storage
from arkor_ops.worker.data import PreparedDataset
from arkor_ops.worker.errors import (
    EXIT_OK,
    EXIT_PERMANENT,
    EXIT_RETRYABLE,
    MAX_ERROR_CHARS,
    DatasetError,
    HubAccessError,
    ModelError,
    excerpt,
    exit_code_for,
)
from arkor_ops.worker.hub import MODEL_FILES, HubRef, call_hub
from arkor_ops.worker.pins import Pins
from arkor_ops.worker.run import seed_event_log
from arkor_ops.worker.settings import WorkerSettings
from arkor_ops.worker.train import RunState, check_template

log = logging.getLogger(__name__)

#: Rows shown in the preview (and checked for response-only masking).
PREVIEW_ROWS = 3
#: Longest rendered row in the preview.
PREVIEW_CHARS = 2000
#: Rows tokenized per call while counting.
_BATCH = 256
#: A model's files the pre-flight fetches: everything a causal LM needs but its weights.
_NOT_WEIGHTS = tuple(p for p in MODEL_FILES if p != "*.safetensors")
_WEIGHTS = ("*.safetensors", "*.bin")


class Cancelled(Exception):  # noqa: N818 - a control-flow signal, never shown to a user
    """SIGTERM arrived: stop between checks."""


@dataclass(frozen=True)
class ModelFiles:
    """A folder holding the model's config and tokenizer (no weights), and what was listed."""

    path: Path
    weight_bytes: int | None
    source: str


def _is_weight(name: str) -> bool:
    return any(fnmatch.fnmatch(name.rsplit("/", 1)[-1], p) for p in _WEIGHTS)


def _local_files(path: Path) -> ModelFiles:
    if not (path / "config.json").is_file():
        raise ModelError(f"model folder {path} has no config.json")
    weights = [p for p in path.iterdir() if _is_weight(p.name)]
    if not weights:
        raise ModelError(f"model folder {path} holds no weights (*.safetensors)")
    return ModelFiles(path, sum(p.stat().st_size for p in weights), "local folder")


def _s3_files(uri: str, work: Path) -> ModelFiles:
    """List the model's prefix; fetch all but the weights."""
    storage = open_storage(uri)
    prefix = uri.rstrip("/") + "/"
    objects = {o.uri[len(prefix) :]: o for o in storage.list_objects(prefix)}
    if not objects:
        raise ModelError(f"model {uri} does not exist: no objects under that prefix")
    if "config.json" not in objects:
        raise ModelError(f"{uri} holds no config.json: not a Hugging Face model folder")
    weights = [o.size for name, o in objects.items() if _is_weight(name)]
    if not weights:
        raise ModelError(f"{uri} holds no weights (*.safetensors)")
    for name, obj in objects.items():
        if "/" not in name and not _is_weight(name):
            storage.get_file(obj.uri, work / name)
    return ModelFiles(work, sum(weights), f"listed at {uri}")


def _hub_files(ref: HubRef, commit: str, work: Path) -> ModelFiles:
    """The pinned commit's file list from the hub; fetch all but the weights."""
    from huggingface_hub import HfApi, snapshot_download

    api = HfApi(endpoint=ref.endpoint)
    info = call_hub(
        ref,
        "listing the files of",
        lambda: api.model_info(ref.repo_id, revision=commit, token=ref.token or None),
    )
    names = {s.rfilename: s.size for s in info.siblings or []}
    short = commit[:12]
    if "config.json" not in names:
        raise HubAccessError(
            f"model {ref.repo_id!r} at {short} has no config.json: not a Transformers model"
        )
    shards = [size for name, size in names.items() if name.endswith(".safetensors")]
    if not shards:
        raise HubAccessError(
            f"model {ref.repo_id!r} at {short} has no *.safetensors weights; arkor-ops "
            "loads only safetensors (convert the repo, or pass a local folder)"
        )
    folder = call_hub(
        ref,
        "downloading the tokenizer of",
        lambda: snapshot_download(
            ref.repo_id,
            revision=commit,
            cache_dir=work / "hub",
            allow_patterns=list(_NOT_WEIGHTS),
            token=ref.token or None,
            endpoint=ref.endpoint,
        ),
    )
    sizes = [s for s in shards if s is not None]
    size = sum(sizes) if len(sizes) == len(shards) else None  # a hub may not list sizes
    return ModelFiles(Path(folder), size, f"{ref.endpoint} at commit {commit}")


def model_files(
    config: TrainerConfig, settings: WorkerSettings, pins: Pins, work: Path
) -> ModelFiles:
    """The model's config and tokenizer, without downloading its weights.

    Raises:
        ModelError: no such folder or prefix, no config.json, no weights.
        HubAccessError: the hub refused, or the commit is not a safetensors causal LM.
    """
    from arkor_ops.worker.models import is_local, resolve_model

    name = config.model
    work.mkdir(parents=True, exist_ok=True)
    if name.startswith("s3://"):
        return _s3_files(name, work)
    local = Path(name).expanduser()
    if local.is_dir():
        return _local_files(local.resolve())
    if is_local(name):
        raise ModelError(f"model folder {name} does not exist")
    if pins.model is not None and pins.model_commit is not None:
        return _hub_files(pins.model, pins.model_commit, work)
    # Offline: the model cache or the converted Gemma package (what the GPU pod would use).
    resolved = resolve_model(
        name,
        settings.model_cache,
        commit=config.revision,
        cache_max_bytes=settings.model_cache_max_bytes,
    )
    return ModelFiles(resolved.path, _local_files(resolved.path).weight_bytes, resolved.how)


def _tokenizer(files: ModelFiles) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(files.path))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load the model's tokenizer ({files.source}): {exc}") from exc


def training_template(tok: Any) -> str | None:
    """The chat template TRL tokenizes with when only responses are trained: the model's own
    when it has ``{% generation %}`` markers, else TRL's patched copy of a template it knows.

    Raises:
        ModelError: TRL knows no training version of the template (the GPU run would fail).
    """
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tok.chat_template):
        return None
    try:
        return get_training_chat_template(tok)
    except ValueError as exc:
        raise ModelError(
            "train_on_responses_only: the model's chat template marks no assistant tokens (it "
            "has no {% generation %} markers) and TRL has no training version of it "
            f"({exc}): use a template with the markers, or set train_on_responses_only to false"
        ) from exc


def _encode(
    tok: Any, example: dict[str, Any], *, masks: bool, template: str | None = None
) -> dict[str, Any]:
    """The row's token ids (and assistant mask) as TRL's SFT preparation computes them."""
    if "text" in example:
        ids = tok(example["text"])["input_ids"]
        return {"input_ids": ids if ids[-1:] == [tok.eos_token_id] else [*ids, tok.eos_token_id]}
    out = tok.apply_chat_template(
        example["messages"],
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=masks,
        chat_template=template,
    )
    return dict(out)


def preview(
    tok: Any, data: PreparedDataset, *, responses_only: bool, rows: int = PREVIEW_ROWS
) -> list[PreviewRow]:
    """The first rows as the model will see them; checks response-only masking on them.

    Raises:
        ModelError: a chat dataset and a tokenizer without a chat template, or (with
            ``responses_only``) a template that marks no assistant token.
    """
    check_template(tok, data)  # the training's own check
    chat = data.format != "text"
    masks = responses_only and chat
    template = training_template(tok) if masks else None
    out = []
    for number, example in enumerate(data.examples[:rows], start=1):
        if chat:
            text = str(
                tok.apply_chat_template(example["messages"], tokenize=False, chat_template=template)
            )
        else:
            text = example["text"]
        try:
            encoded = _encode(tok, example, masks=masks, template=template)
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelError(f"the chat template fails on row {number}: {exc}") from exc
        trained = sum(encoded.get("assistant_masks") or []) if masks else None
        if masks and not trained:
            raise ModelError(
                f"train_on_responses_only: the model's chat template marks no assistant tokens "
                f"in row {number}, so nothing would be trained: use a template whose "
                "{% generation %} markers enclose the assistant turns, or set "
                "train_on_responses_only to false"
            )
        out.append(
            PreviewRow(
                row=number,
                text=excerpt(text, PREVIEW_CHARS, quote=False),
                tokens=len(encoded["input_ids"]),
                trained_tokens=trained,
            )
        )
    return out


@dataclass(frozen=True)
class RowTokens:
    """One row's token count and, with response-only training, where its loss starts."""

    tokens: int
    first_trained: int | None = None


def count_tokens(
    tok: Any, data: PreparedDataset, cancel: Any, *, responses_only: bool = False
) -> list[RowTokens]:
    """Every row's token count (before truncation), with the template TRL will use."""
    chat = data.format != "text"
    masks = responses_only and chat
    template = training_template(tok) if masks else None
    counts: list[RowTokens] = []
    examples = data.examples
    for start in range(0, len(examples), _BATCH):
        if cancel.is_set():
            raise Cancelled
        batch = examples[start : start + _BATCH]
        if not chat:
            counts.extend(RowTokens(len(_encode(tok, e, masks=False)["input_ids"])) for e in batch)
            continue
        encoded = tok.apply_chat_template(
            [e["messages"] for e in batch],
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=masks,
            chat_template=template,
        )
        marks = encoded["assistant_masks"] if masks else [None] * len(batch)
        for ids, mask in zip(encoded["input_ids"], marks, strict=True):
            first = (list(mask).index(1) if 1 in mask else len(ids)) if mask is not None else None
            counts.append(RowTokens(len(ids), first))
    return counts


def _untrained(counts: list[RowTokens], longest: int) -> list[int]:
    """Rows (1-based) whose response starts past ``longest``: truncation leaves no loss."""
    return [
        number
        for number, row in enumerate(counts, start=1)
        if row.first_trained is not None and row.first_trained >= longest
    ]


class Preflight:
    """One pre-flight (see the module docstring)."""

    def __init__(self, settings: WorkerSettings, state: RunState) -> None:
        self.settings = settings
        self.state = state
        self.writer = EventLogWriter(settings.event_log, settings.job_id)
        self.work = settings.work_dir / settings.job_id / "preflight"

    def _check_cancel(self) -> None:
        if self.state.cancel.is_set():
            raise Cancelled

    def execute(self) -> int:
        """Check the run; returns the exit code (never raises)."""
        storage: Storage | None = None
        layout = RunLayout(self.settings.storage_uri, self.settings.job_id)
        try:
            storage = open_storage(self.settings.storage_uri)
            seed_event_log(self.writer, storage, layout)
            ended = next((e for e in read_events(self.writer.path) if e.terminal), None)
            if ended is not None:
                log.warning("the run already ended (%s): nothing to check", ended.type)
                return EXIT_PERMANENT if ended.type == "training.failed" else EXIT_OK
            return self._checks(storage, layout)
        except Cancelled:
            log.warning("stopped by SIGTERM during the pre-flight: no terminal event, exit 1")
            return EXIT_RETRYABLE
        except BaseException as exc:
            return self._failed(exc)
        finally:
            shutil.rmtree(self.work, ignore_errors=True)
            if storage is not None:
                self._persist(storage, layout)

    def _failed(self, exc: BaseException) -> int:
        if isinstance(exc, SystemExit | KeyboardInterrupt) and self.state.cancel.is_set():
            log.warning("stopped during the pre-flight: no terminal event, exit 1")
            return EXIT_RETRYABLE
        message = str(exc) if isinstance(exc, ArkorOpsError) else f"{type(exc).__name__}: {exc}"
        message = excerpt(self.settings.scrub(message), MAX_ERROR_CHARS, quote=False)
        code = exit_code_for(exc)
        if code == EXIT_PERMANENT:
            log.error("pre-flight failed: %s", message)
            self.writer.write(TrainingFailed(job_id="", error=f"pre-flight: {message}"))
            return code
        log.error("pre-flight failed (retryable; the Job retries): %s", message)
        if not isinstance(exc, ArkorOpsError):
            log.debug("traceback", exc_info=True)
        self.writer.write(
            JobPhase(
                job_id="",
                phase="preflight",
                reason=type(exc).__name__,
                message=message,
                hint="retryable: the pre-flight Job tries again",
            )
        )
        return EXIT_RETRYABLE

    def _persist(self, storage: Storage, layout: RunLayout) -> None:
        """The log to the run's ``events.jsonl``: where the GPU pod's worker continues it."""
        try:
            storage.put_file(layout.events, self.writer.path)
        except ArkorOpsError as exc:
            log.error("could not store the event log at %s: %s", layout.events, exc)

    def _checks(self, storage: Storage, layout: RunLayout) -> int:
        from arkor_ops.worker.data import prepare_dataset
        from arkor_ops.worker.pins import pin_revisions
        from arkor_ops.worker.train import max_length

        settings = self.settings
        began = time.perf_counter()
        self.writer.write(
            JobPhase(
                job_id="",
                phase="preflight",
                reason="Checking",
                message="checking the dataset, the model and the chat template on a CPU node "
                "before a GPU is held",
            )
        )
        config = settings.config()
        shutil.rmtree(self.work, ignore_errors=True)
        pins = pin_revisions(config, settings, storage, layout)
        self._check_cancel()
        data = prepare_dataset(
            config,
            self.work / "data",
            settings.max_dataset_bytes,
            pins.dataset,
            pins.dataset_commit,
        )
        self._check_cancel()
        files = model_files(config, settings, pins, self.work / "model")
        log.info("model %s: %s (%s weight bytes)", config.model, files.source, files.weight_bytes)
        self._check_cancel()
        tok = _tokenizer(files)
        responses_only = bool(config.train_on_responses_only)
        shown = preview(tok, data, responses_only=responses_only)
        counts = count_tokens(tok, data, self.state.cancel, responses_only=responses_only)
        longest = max_length(config)
        untrained = _untrained(counts, longest)
        if untrained and len(untrained) == len(counts):
            starts = min(row.first_trained or 0 for row in counts)
            raise DatasetError(
                f"train_on_responses_only with max_length {longest}: every row's response "
                f"starts after token {longest} (the earliest at token {starts + 1}), so "
                "truncation leaves nothing to train: raise lora.maxLength or shorten the prompts"
            )
        if untrained:
            log.warning(
                "%d rows train nothing: their response starts after max_length %d (rows %s)",
                len(untrained),
                longest,
                ", ".join(map(str, untrained[:10])),
            )
        need = self._memory(config, files, longest)
        passed = PreflightPassed(
            job_id="",
            rows=data.rows,
            tokens=sum(row.tokens for row in counts),
            truncated_rows=sum(1 for row in counts if row.tokens > longest),
            untrained_rows=len(untrained),
            max_length=longest,
            model_bytes=files.weight_bytes,
            memory_estimate_gib=need,
            gpu_memory_gib=settings.gpu_memory_gib,
            preview=shown,
            seconds=round(time.perf_counter() - began, 3),
        )
        self.writer.write(passed)
        log.info(
            "pre-flight passed in %.1f s: %d rows, %d tokens, %d rows over max_length %d",
            passed.seconds,
            passed.rows,
            passed.tokens,
            passed.truncated_rows,
            longest,
        )
        return EXIT_OK

    def _memory(self, config: TrainerConfig, files: ModelFiles, longest: int) -> float | None:
        """The run's estimated GPU memory, GiB (None without the weights' size).

        Raises:
            ModelError: the weights alone do not fit the GPU type.
        """
        from arkor_ops.worker.memory import OVERHEAD_GIB, estimate

        if not files.weight_bytes:
            return None
        model_config = json.loads((files.path / "config.json").read_text(encoding="utf-8"))
        lora, have = config.lora, self.settings.gpu_memory_gib
        four_bit = bool(lora and lora.load_in_4bit)
        need = estimate(
            model_config,
            files.weight_bytes,
            load_in_4bit=four_bit,
            lora_rank=lora.r if lora else 16,
            batch_size=config.batch_size or 2,
            max_length=longest,
        )
        log.info(
            "GPU memory, estimated: %.2f GiB (weights %.2f, adapter %.2f, activations %.2f)%s",
            need.total,
            need.weights,
            need.adapter,
            need.activations,
            f" of {have:.1f} GiB" if have else "",
        )
        if have and need.weights + OVERHEAD_GIB > have:
            hint = "a GPU type with more memory or a smaller model"
            if not four_bit:
                hint = "lora.loadIn4bit, " + hint
            raise ModelError(
                f"model {config.model!r} needs about {need.weights + OVERHEAD_GIB:.1f} GiB of "
                f"GPU memory just to load ({need.weights:.1f} GiB of weights "
                f"{'in 4-bit' if four_bit else 'in bf16'} and {OVERHEAD_GIB:.0f} GiB for CUDA), "
                f"and the run's GPU has {have:.1f} GiB: use {hint}"
            )
        if have and need.total > have:
            log.warning(
                "the run may run out of GPU memory: about %.1f GiB needed, %.1f GiB there "
                "(lower batchSize or lora.maxLength, or set lora.loadIn4bit)",
                need.total,
                have,
            )
        return need.total


def preflight(settings: WorkerSettings, state: RunState | None = None) -> int:
    """Run the pre-flight of ``settings``' run (callable in-process, e.g. by tests)."""
    return Preflight(settings, state or RunState()).execute()
