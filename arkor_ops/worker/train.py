"""Training: pick the backend, load model and LoRA, map the config to TRL, write events.

Two backends, same config, same events:

- ``unsloth``: ``unsloth.FastLanguageModel`` loads the model and adds LoRA, then TRL's
  ``SFTTrainer`` trains. Chosen when a CUDA device is present and ``unsloth`` imports, or when
  ``ARKOR_TRAINER_BACKEND=unsloth`` forces it (Unsloth then runs in its CPU mode).
- ``trl``: transformers + peft + TRL's ``SFTTrainer``.

Heavy imports happen inside functions; the backend is chosen before transformers or TRL are
imported, since Unsloth must patch them first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arkor_ops.config import TrainerConfig
from arkor_ops.events import TrainingLog
from arkor_ops.worker.cache import NodeCache, content_key
from arkor_ops.worker.data import PreparedDataset
from arkor_ops.worker.early_stop import EarlyStop
from arkor_ops.worker.errors import ModelError
from arkor_ops.worker.idle import IdleClock
from arkor_ops.worker.infer import InferServer
from arkor_ops.worker.init_adapter import InitAdapter
from arkor_ops.worker.settings import BackendChoice

log = logging.getLogger(__name__)

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DRY_RUN_STEPS = 10


@dataclass
class RunState:
    """What the training loop shares with the entrypoint and the signal handler."""

    step: int = 0
    last_loss: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_at: float | None = None
    grace_seconds: float = 20.0
    saved_on_cancel: int | None = None
    disruption: bool = False
    early: EarlyStop | None = None
    idle: IdleClock = field(default_factory=IdleClock)

    def request_cancel(self, *, disruption: bool = False) -> None:
        """Ask the loop to stop at the next step boundary (signal-handler safe).

        ``disruption``: the pod is being evicted or preempted, not cancelled; the run stops the
        same way but ends without a terminal event (exit 1) so that a replacement resumes it.
        A later cancel request turns a disruption into a cancel, never the other way round.
        """
        if self.cancel_at is None:
            self.cancel_at = time.monotonic()
            self.disruption = disruption
        elif not disruption:
            self.disruption = False
        self.cancel.set()

    def grace_left(self) -> float:
        """Seconds left of the cancel grace period (the full period when not cancelling)."""
        if self.cancel_at is None:
            return self.grace_seconds
        return self.grace_seconds - (time.monotonic() - self.cancel_at)


def _trl_trains_on_cpu() -> bool:
    """Whether the installed TRL can train on CPU without Unsloth.

    TRL before 1.16 runs its fused LM head's Triton kernel on any device once Triton is
    installed (as it is with PyPI's torch), and fails on CPU ("0 active drivers"); the trainer
    image pins TRL 1.15 (Unsloth's cap), so a CPU node must train through Unsloth's CPU mode.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(x) for x in version("trl").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return True
    return (major, minor) >= (1, 16)


def select_backend(prefer: BackendChoice) -> tuple[str, str]:
    """Choose ``unsloth`` or ``trl`` (call before transformers/trl/peft are imported).

    Returns:
        The backend and why it was chosen.

    Raises:
        ModelError: ``unsloth`` was forced but does not import.
    """
    if prefer == "trl":
        return "trl", "requested (ARKOR_TRAINER_BACKEND=trl)"
    if importlib.util.find_spec("unsloth") is None:
        if prefer == "unsloth":
            raise ModelError("ARKOR_TRAINER_BACKEND=unsloth but unsloth is not installed")
        return "trl", "unsloth not installed"
    import torch

    cpu_only = not torch.cuda.is_available()
    if cpu_only and prefer != "unsloth" and _trl_trains_on_cpu():
        return "trl", "no CUDA device"
    try:
        import unsloth  # noqa: F401  (must precede transformers/trl)
    except Exception as exc:
        if prefer == "unsloth":
            raise ModelError(f"unsloth failed to import: {type(exc).__name__}: {exc}") from exc
        return "trl", f"unsloth failed to import: {type(exc).__name__}"
    if not cpu_only:
        return "unsloth", "CUDA device and unsloth available"
    if prefer == "unsloth":
        why = "forced (ARKOR_TRAINER_BACKEND=unsloth)"
    else:
        why = "no CUDA device, and trl < 1.16 cannot train on CPU"
    return "unsloth", f"{why}; Unsloth CPU mode"


def device_name() -> str:
    """``cuda:<name>`` or ``cpu``."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return "cpu"


def max_length(config: TrainerConfig) -> int:
    """Max sequence length: ``lora.max_length`` or 1024."""
    return (config.lora.max_length if config.lora else None) or 1024


def sft_kwargs(
    config: TrainerConfig, data: PreparedDataset, output_dir: Path, *, cuda: bool, eos: str | None
) -> dict[str, Any]:
    """Every hyperparameter of the config as ``SFTConfig`` arguments."""
    dry = config.dry_run
    steps = config.max_steps
    if dry:
        steps = min(steps or DRY_RUN_STEPS, DRY_RUN_STEPS)
    kw: dict[str, Any] = {
        "output_dir": str(output_dir),
        "max_steps": steps or -1,
        "num_train_epochs": config.num_train_epochs or 1.0,
        "per_device_train_batch_size": config.batch_size or 2,
        "per_device_eval_batch_size": config.batch_size or 2,
        "gradient_accumulation_steps": config.gradient_accumulation_steps or 1,
        "learning_rate": config.learning_rate or 2e-4,
        "weight_decay": config.weight_decay or 0.0,
        "seed": config.seed,
        "data_seed": config.seed,
        "max_length": max_length(config),
        "logging_steps": config.logging_steps.resolve(steps) if config.logging_steps else 1,
        "save_strategy": "steps",
        "save_steps": (
            config.save_steps.resolve(steps)
            if config.save_steps
            else (max(1, (steps or DRY_RUN_STEPS) // 2) if dry else 500)
        ),
        "save_total_limit": 2,
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": not cuda,
        "bf16": bool(cuda and _bf16_ok()),
        "dataloader_pin_memory": cuda,
        "dataset_num_proc": None,
        "assistant_only_loss": bool(config.train_on_responses_only) and data.format != "text",
    }
    if data.format == "text":
        kw["dataset_text_field"] = "text"
    if eos:
        kw["eos_token"] = eos
    if config.optim:
        kw["optim"] = config.optim
    if config.lr_scheduler_type:
        kw["lr_scheduler_type"] = config.lr_scheduler_type
    if config.warmup_steps:
        kw["warmup_steps"] = config.warmup_steps.resolve(steps)
    if config.dataset_split and config.dataset_split.enabled:
        kw["eval_strategy"] = "steps"
        kw["eval_steps"] = (
            config.eval_steps.resolve(steps) if config.eval_steps else kw["save_steps"]
        )
    return kw


def sft_config(
    backend: str,
    config: TrainerConfig,
    data: PreparedDataset,
    output_dir: Path,
    *,
    cuda: bool,
    eos: str | None,
) -> Any:
    """TRL's ``SFTConfig`` for the run (its ``__post_init__`` runs Hugging Face's own checks)."""
    from trl import SFTConfig  # type: ignore[attr-defined]

    kwargs = sft_kwargs(config, data, output_dir, cuda=cuda, eos=eos)
    fields = {f.name for f in dataclasses.fields(SFTConfig)}
    # transformers 5.24 renamed gradient_checkpointing; 5.17 (the Unsloth lock) has only the old.
    ckpt = (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else "gradient_checkpointing"
    )
    if backend != "unsloth":
        kwargs[ckpt] = cuda
    return SFTConfig(**kwargs)


def _bf16_ok() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _targets(config: TrainerConfig, module_names: set[str]) -> list[str] | str:
    if config.lora and config.lora.target_modules:
        return list(config.lora.target_modules)
    present = [t for t in DEFAULT_TARGETS if t in module_names]
    return present or "all-linear"


def _end_of_turn(tok: Any, fmt: str) -> str | None:
    if fmt == "text":
        return None
    template = getattr(tok, "chat_template", None) or ""
    vocab = tok.get_vocab()
    return "<end_of_turn>" if "<end_of_turn>" in vocab and "<end_of_turn>" in template else None


def check_template(tok: Any, data: PreparedDataset) -> None:
    """A chat or alpaca dataset needs a chat template; a missing pad token becomes EOS.

    Raises:
        ModelError: the tokenizer has no chat template and the rows are chats.
    """
    if data.format != "text" and not getattr(tok, "chat_template", None):
        raise ModelError(
            "the model's tokenizer has no chat template, which the chat and alpaca formats need; "
            "use a model with one or dataset_format=text"
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token


def load_trl(config: TrainerConfig, path: Path, cuda: bool) -> tuple[Any, Any, Any]:
    """transformers + peft: returns (model, tokenizer, peft LoraConfig)."""
    import peft
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if cuda and _bf16_ok() else torch.float32}
    if config.lora and config.lora.load_in_4bit:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ModelError("lora.load_in_4bit needs bitsandbytes (pip install bitsandbytes)")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    lora = config.lora
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    peft_config = peft.LoraConfig(
        r=lora.r if lora else 16,
        lora_alpha=lora.alpha if lora else 16,
        lora_dropout=lora.dropout if lora else 0.0,
        target_modules=_targets(config, names),
        task_type="CAUSAL_LM",
    )
    return model, tok, peft_config


def load_unsloth(config: TrainerConfig, path: Path, cuda: bool) -> tuple[Any, Any, None]:
    """Unsloth's FastLanguageModel with LoRA applied: returns (model, tokenizer, None)."""
    from unsloth import FastLanguageModel

    lora = config.lora
    model, tok = FastLanguageModel.from_pretrained(
        model_name=str(path),
        max_seq_length=max_length(config),
        load_in_4bit=bool(lora and lora.load_in_4bit),
        dtype=None,
    )
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = _targets(config, names)
    model = FastLanguageModel.get_peft_model(
        model,
        r=lora.r if lora else 16,
        lora_alpha=lora.alpha if lora else 16,
        lora_dropout=lora.dropout if lora else 0.0,
        target_modules=list(DEFAULT_TARGETS) if targets == "all-linear" else targets,
        bias="none",
        use_gradient_checkpointing="unsloth" if cuda else False,
        random_state=config.seed,
    )
    return model, tok, None


def make_callback(
    run_state: RunState,
    write_log: Callable[[TrainingLog], None],
    on_checkpoint: Callable[[int, Path], None],
    check_health: Callable[[], None],
    samples_per_step: int,
    *,
    infer: InferServer | None = None,
    backend: str = "trl",
) -> Any:
    """A ``TrainerCallback`` that writes ``training.log``, queues checkpoint uploads, stops
    at the next step boundary once cancellation is requested, and (with ``infer``) holds each
    saved checkpoint's weights and answers queued ``infer()`` requests between steps."""
    from transformers import TrainerCallback

    class EventCallback(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self._last = (time.perf_counter(), 0)

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            run_state.step = state.global_step
            self._last = (time.perf_counter(), state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            run_state.step = state.global_step
            run_state.idle.step()
            check_health()
            if infer is not None and kw.get("model") is not None:
                infer.serve(kw["model"], kw.get("processing_class"), backend)
            if run_state.cancel.is_set():
                control.should_training_stop = True
                if (
                    run_state.grace_left() > run_state.grace_seconds / 2
                    and run_state.saved_on_cancel is None
                ):
                    control.should_save = True
                    run_state.saved_on_cancel = state.global_step

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            logs = logs or {}
            if "loss" not in logs and "eval_loss" not in logs:
                return
            now = time.perf_counter()
            then, step0 = self._last
            sps = None
            if "loss" in logs and state.global_step > step0 and now > then:
                sps = (state.global_step - step0) * samples_per_step / (now - then)
                self._last = (now, state.global_step)
            loss = logs.get("loss")
            if isinstance(loss, int | float) and math.isfinite(loss):
                run_state.last_loss = float(loss)
            write_log(
                TrainingLog(
                    job_id="",
                    step=state.global_step,
                    loss=loss,
                    eval_loss=logs.get("eval_loss"),
                    learning_rate=logs.get("learning_rate"),
                    epoch=logs.get("epoch"),
                    samples_per_second=sps,
                )
            )
            if loss is not None:
                log.info(
                    "step %d loss %.4f lr %.3g",
                    state.global_step,
                    loss,
                    logs.get("learning_rate", 0),
                )
            eval_loss = logs.get("eval_loss")
            early = run_state.early
            if early and isinstance(eval_loss, int | float) and math.isfinite(eval_loss):
                # the save check follows the evaluation in the same step: a new best is
                # committed (so the best is always a checkpoint), and so is the stopping step
                stop = early.observe(state.global_step, float(eval_loss))
                control.should_save = (
                    control.should_save or stop or (early.best_step == state.global_step)
                )
                if stop:
                    control.should_training_stop = True
                    log.info("stopping early at step %d: %s", state.global_step, early.reason)

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                if infer is not None and kw.get("model") is not None:
                    infer.snapshot(state.global_step, kw["model"])  # before it can be committed
                on_checkpoint(state.global_step, folder)

    return EventCallback()


TOKENIZED = "tokenized"
#: The model folder's files that define its tokenizer (and so the token ids of the data).
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)


def tokenized_key(  # noqa: PLR0917 - what the key depends on, in one place
    backend: str,
    config: TrainerConfig,
    data: PreparedDataset,
    model_path: Path,
    tok: Any,
    args: Any,
) -> str:
    """The node-cache key of the run's tokenized dataset: what the token ids depend on.

    The rows (the dataset's fingerprint, which covers a dry run's subset and a Hub commit), the
    tokenizer (its files' sha256, its chat template and pad token), TRL's preparation settings
    (max length, truncation, assistant-only loss, the EOS token, the text field), the eval split,
    the training stack (TRL's version, the backend) and the row format.
    """
    import trl

    parts: list[tuple[str, int, str]] = [
        ("dataset", 0, data.fingerprint),
        ("format", 0, data.format),
        ("backend", 0, backend),
        ("trl", 0, trl.__version__),
        ("chat-template", 0, hashlib.sha256(str(tok.chat_template or "").encode()).hexdigest()),
        ("pad", 0, str(tok.pad_token)),
    ]
    for name in _TOKENIZER_FILES:
        path = model_path / name
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            parts.append((f"tokenizer:{name}", path.stat().st_size, digest))
    for name in (
        "max_length",
        "truncation_mode",
        "assistant_only_loss",
        "completion_only_loss",
        "eos_token",
        "dataset_text_field",
        "packing",
    ):
        parts.append((f"sft:{name}", 0, repr(getattr(args, name, None))))
    split = config.dataset_split
    parts.append(
        ("split", 0, repr((split.test_size, split.seed) if split and split.enabled else None))
    )
    return content_key(TOKENIZED, parts)


def build_trainer(
    backend: str,
    *,
    config: TrainerConfig,
    data: PreparedDataset,
    model_path: Path,
    output_dir: Path,
    callback_factory: Callable[[int], Any],
    init_adapter: InitAdapter | None = None,
    idle: IdleClock | None = None,
    cache: NodeCache | None = None,
) -> tuple[Any, str]:
    """Load model + LoRA on ``backend`` and build TRL's ``SFTTrainer`` (tokenizes the data).

    With ``init_adapter``, the fresh LoRA then takes that adapter's weights. ``idle`` times
    the model load and the tokenization (GPU-idle causes). With ``cache``, the tokenized
    dataset is taken from the node cache when an earlier run prepared the same one (see
    :func:`tokenized_key`), else kept there for the next run. Returns the trainer and how the
    data was prepared (for ``training.started.metadata.tokenizedData``).
    """
    idle = idle or IdleClock()
    import datasets
    import torch
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    cuda = torch.cuda.is_available()
    loader = load_unsloth if backend == "unsloth" else load_trl
    try:
        model, tok, peft_config = idle.timed("modelLoad", loader, config, model_path, cuda)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the model from {model_path}: {exc}") from exc
    check_template(tok, data)
    import datasets
    from transformers import PrinterCallback
    from trl import SFTTrainer  # type: ignore[attr-defined]

    args = sft_config(
        backend, config, data, output_dir, cuda=cuda, eos=_end_of_turn(tok, data.format)
    )
    key = tokenized_key(backend, config, data, model_path, tok, args) if cache else None
    held = cache.find(TOKENIZED, key) if cache and key else None
    if held is not None:  # tokenized, labelled and truncated by an earlier run on this node
        dataset = datasets.load_from_disk(str(held.path / "train"))
        eval_path = held.path / "eval"
        eval_dataset = datasets.load_from_disk(str(eval_path)) if eval_path.is_dir() else None
        args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    else:
        dataset = datasets.Dataset.from_list(data.examples)
        eval_dataset = None
        if config.dataset_split and config.dataset_split.enabled:
            split = dataset.train_test_split(
                test_size=config.dataset_split.test_size, seed=config.dataset_split.seed
            )
            dataset, eval_dataset = split["train"], split["test"]
    samples = args.per_device_train_batch_size * args.gradient_accumulation_steps
    trainer = idle.timed(
        "tokenize",
        SFTTrainer,
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        processing_class=tok,
        peft_config=peft_config,
        callbacks=[callback_factory(samples)],
    )
    prepared = "from the node cache" if held is not None else "tokenized"
    if cache is not None and key is not None and held is None:

        def fill(staging: Path) -> None:
            built: Any = trainer  # TRL types the prepared sets loosely: both are Datasets here
            built.train_dataset.save_to_disk(str(staging / "train"))
            if built.eval_dataset is not None:
                built.eval_dataset.save_to_disk(str(staging / "eval"))

        try:
            idle.timed("tokenize", cache.get, TOKENIZED, key, fill, source=data.fingerprint)
            prepared = "tokenized (now in the node cache)"
        except OSError as exc:  # a full or read-only cache must not fail the run
            log.warning("could not keep the tokenized dataset in the node cache: %s", exc)
    trainer.remove_callback(PrinterCallback)  # our callback logs each step to stderr instead
    if init_adapter is not None:
        from arkor_ops.worker.init_adapter import load_weights

        load_weights(trainer.model, init_adapter)
    return trainer, prepared
