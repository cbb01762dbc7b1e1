"""One evaluation job, start to terminal event: score an adapter (or the base model) on rows.

settings → event log (seeded from storage) → config → scorers (user scorers imported: a bad
one fails here, before anything heavy) → hub revisions pinned → rows → adapter fetched and
checked against its manifest → model → ``evaluation.started`` → per sample: generate, score,
held-out loss, ``evaluation.progress`` → results committed → ``evaluation.completed``.

Each row is a chat: the prompt is every turn before the last assistant turn, the reference is
that turn's text. Answers are generated greedily unless ``generation.temperature`` is above 0.
``loss`` is the model's mean cross-entropy on the reference's tokens (the assistant turn as the
chat template renders it, prompt tokens masked), averaged over all reference tokens of the set.

The results go to ``{storage}/{job_id}/evaluation/``: ``samples.jsonl`` (one line per sample:
prompt, reference, answer, each metric's score, its loss) so a person can read what went
wrong, ``metrics.json``, and the manifest (:class:`~arkor_ops.checkpoints.Manifest`, its
``step`` the adapter's) written last as the commit marker: results without a manifest are not
results.

Endings, as for training: SIGTERM (a cancel) stops between samples (and inside a generation)
and writes ``evaluation.cancelled`` with nothing committed, exit 0; a disruption on Kubernetes
(SIGTERM without the cancel annotation) writes nothing and exits 1, so the Job's next pod
evaluates again from the start; any failure writes ``evaluation.failed`` naming it (a user
scorer's error names the scorer and the sample), exit 2 when retrying cannot help.
:func:`evaluate` never raises.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arkor_ops.errors import ArkorOpsError
from arkor_ops.evaluation import EvaluationConfig
from arkor_ops.eventlog import EventLogWriter, read_events
from arkor_ops.events import (
    EvaluationCancelled,
    EvaluationCompleted,
    EvaluationFailed,
    EvaluationProgress,
    EvaluationStarted,
)
from arkor_ops.scoring import Scorer, ScorerError, build_scorers, mean
from arkor_ops.storage import RunLayout, open_storage
from arkor_ops.worker.errors import (
    EXIT_OK,
    EXIT_PERMANENT,
    EXIT_RETRYABLE,
    MAX_ERROR_CHARS,
    DatasetError,
    excerpt,
    exit_code_for,
)
from arkor_ops.worker.run import seed_event_log
from arkor_ops.worker.settings import WorkerSettings
from arkor_ops.worker.train import RunState

log = logging.getLogger(__name__)

#: About this many ``evaluation.progress`` events per job (plus the last one).
PROGRESS_EVENTS = 20


@dataclass(frozen=True)
class Sample:
    """One evaluation row: the prompt turns and the reference answer."""

    prompt: list[dict[str, str]]
    reference: str

    @property
    def question(self) -> str:
        """The last user turn: the ``prompt`` a user scorer receives."""
        users = [m["content"] for m in self.prompt if m["role"] == "user"]
        return users[-1] if users else ""


def split_samples(examples: list[dict[str, Any]]) -> list[Sample]:
    """Prompt and reference of each checked chat row (the last assistant turn is the reference).

    Raises:
        DatasetError: a row has no chat ``messages`` (the ``text`` format has no reference).
    """
    out = []
    for number, example in enumerate(examples, start=1):
        messages = example.get("messages")
        if not isinstance(messages, list):
            raise DatasetError(f"row {number} has no chat messages: nothing to use as reference")
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        out.append(Sample(prompt=messages[:last], reference=messages[last]["content"]))
    return out


@dataclass
class Totals:
    """What the scored samples add up to."""

    scores: dict[str, list[float | None]] = field(default_factory=dict)
    loss_sum: float = 0.0
    loss_tokens: int = 0

    def metrics(self, names: tuple[str, ...]) -> dict[str, float | None]:
        """Each metric's value, in the config's order."""
        out: dict[str, float | None] = {}
        for name in names:
            if name == "loss":
                out[name] = self.loss_sum / self.loss_tokens if self.loss_tokens else None
            else:
                out[name] = mean(self.scores.get(name, []))
        return out


def stop_tokens(tok: Any, eos: int | list[int] | None) -> list[int]:
    """Where an answer ends: the model's end-of-sequence ids, and the token that closes an
    assistant turn in the tokenizer's chat template (Gemma's ``<end_of_turn>``, ChatML's
    ``<|im_end|>``) when that is a special token. A base model's generation config often names
    only ``<eos>``; without the end of turn, a model trained on chats answers, closes its turn
    and writes on, and the answer is scored with that text after it (as chat servers stop there).
    """
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(tok.eos_token_id)
    mark = "ARKOR-END-OF-ANSWER"
    try:
        text = tok.apply_chat_template(
            [{"role": "user", "content": "?"}, {"role": "assistant", "content": mark}],
            tokenize=False,
        )
    except (ValueError, TypeError, KeyError):  # no chat template (plain-text datasets)
        return ids
    tail = str(text).partition(mark)[2]
    after = tok(tail, add_special_tokens=False)["input_ids"] if tail else []
    added = tok.added_tokens_decoder.get(after[0]) if after else None
    if added is not None and added.special and after[0] not in ids:
        ids.append(after[0])
    return ids


class _Model:
    """The base model (with the adapter, if any) and its tokenizer, scoring one sample."""

    def __init__(self, path: Path, adapter: Path | None, config: EvaluationConfig) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tok = AutoTokenizer.from_pretrained(str(path))
        model: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter))
        self.model = model.to(self.device).eval()
        gen = config.evaluation.generation
        eos = stop_tokens(self.tok, model.generation_config.eos_token_id)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else eos[0]
        sampling = {"temperature": gen.temperature, "top_p": gen.top_p} if gen.do_sample else {}
        self.generation = GenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=gen.max_new_tokens,
            do_sample=gen.do_sample,
            eos_token_id=eos,
            pad_token_id=pad,
            **sampling,
        )
        self.max_length = config.evaluation.max_length
        torch.manual_seed(gen.seed)

    def _render(self, messages: list[dict[str, str]], *, prompt: bool) -> str:
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
        return str(text)

    def _ids(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def answer(self, sample: Sample, stop: Any) -> str:
        """The model's answer to the sample's prompt."""
        ids = self._ids(self._render(sample.prompt, prompt=True))
        inputs = self.torch.tensor([ids], device=self.device)
        with self.torch.no_grad():
            out = self.model.generate(
                input_ids=inputs,
                attention_mask=self.torch.ones_like(inputs),
                generation_config=self.generation,
                stopping_criteria=stop,
            )
        return str(self.tok.decode(out[0, len(ids) :], skip_special_tokens=True)).strip()

    def loss(self, sample: Sample) -> tuple[float, int] | None:
        """Mean loss on the reference's tokens and their count (None: nothing left after
        ``max_length``)."""
        prompt = self._render(sample.prompt, prompt=True)
        full = self._render(
            [*sample.prompt, {"role": "assistant", "content": sample.reference}], prompt=False
        )
        prompt_ids = self._ids(prompt)
        if full.startswith(prompt):  # tokenized apart, so the mask falls on the boundary
            ids = prompt_ids + self._ids(full[len(prompt) :])
        else:
            ids = self._ids(full)
        labels = [-100] * len(prompt_ids) + ids[len(prompt_ids) :]
        if self.max_length is not None:
            ids, labels = ids[: self.max_length], labels[: self.max_length]
        counted = sum(1 for label in labels[1:] if label != -100)  # the model shifts by one
        if not counted:
            return None
        torch = self.torch
        with torch.no_grad():
            out = self.model(
                input_ids=torch.tensor([ids], device=self.device),
                labels=torch.tensor([labels], device=self.device),
            )
        return float(out.loss), counted


class Evaluation:
    """The state of one evaluation job while it runs (see the module docstring)."""

    def __init__(self, settings: WorkerSettings, state: RunState) -> None:
        self.settings = settings
        self.state = state
        self.writer = EventLogWriter(settings.event_log, settings.job_id)
        self.work = settings.work_dir / settings.job_id
        self.done = 0

    def execute(self) -> int:
        """Run to a terminal event; returns the exit code."""
        try:
            return self._execute()
        except BaseException as exc:
            if isinstance(exc, SystemExit | KeyboardInterrupt) and self.state.cancel.is_set():
                return self._cancelled()
            message = str(exc) if isinstance(exc, ArkorOpsError) else f"{type(exc).__name__}: {exc}"
            message = excerpt(self.settings.scrub(message), MAX_ERROR_CHARS, quote=False)
            log.error("evaluation failed: %s", message)
            code = EXIT_PERMANENT if isinstance(exc, ScorerError) else exit_code_for(exc)
            if code != EXIT_PERMANENT and self.state.cancel.is_set() and self.state.disruption:
                log.warning("failed while the pod is disrupted: no terminal event, exit 1")
                return EXIT_RETRYABLE
            self.writer.write(EvaluationFailed(job_id="", error=message))
            return code

    def _cancelled(self) -> int:
        if self.state.disruption and not self.settings.cancel_requested():
            log.warning(
                "disruption after %d samples: no terminal event, exit %d; the next pod "
                "evaluates again from the start",
                self.done,
                EXIT_RETRYABLE,
            )
            return EXIT_RETRYABLE
        self.writer.write(EvaluationCancelled(job_id="", done=self.done))
        log.info("evaluation cancelled after %d samples; nothing committed", self.done)
        return EXIT_OK

    def _stop_criteria(self) -> Any:
        """Ends a generation early once a cancel is asked for (a long answer is not waited)."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        cancel = self.state.cancel

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool)

        return StoppingCriteriaList([_Cancelled()])

    def _score(
        self, scorers: list[Scorer], sample: Sample, answer: str, number: int
    ) -> dict[str, float | None]:
        scores: dict[str, float | None] = {}
        for scorer in scorers:
            try:
                scores[scorer.name] = scorer.score(sample.question, answer, sample.reference)
            except ScorerError as exc:
                raise ScorerError(f"{exc} (sample {number})") from exc
        return scores

    def _score_all(
        self,
        model: _Model,
        scorers: list[Scorer],
        samples: list[Sample],
        path: Path,
        metrics: tuple[str, ...],
    ) -> Totals | None:
        """Answer and score every sample, one line each in ``path``; None once cancelled."""
        path.parent.mkdir(parents=True, exist_ok=True)
        totals = Totals()
        stop = self._stop_criteria()
        every = max(1, len(samples) // PROGRESS_EVENTS)
        with path.open("w", encoding="utf-8") as fh:
            for number, sample in enumerate(samples, start=1):
                if self.state.cancel.is_set():
                    return None
                answer = model.answer(sample, stop)
                if self.state.cancel.is_set():
                    return None  # the answer was cut short: not a result
                scores = self._score(scorers, sample, answer, number)
                loss = model.loss(sample) if "loss" in metrics else None
                for name, value in scores.items():
                    totals.scores.setdefault(name, []).append(value)
                if loss is not None:
                    totals.loss_sum += loss[0] * loss[1]
                    totals.loss_tokens += loss[1]
                line = {
                    "index": number - 1,
                    "prompt": sample.prompt,
                    "reference": sample.reference,
                    "answer": answer,
                    "scores": scores,
                    "loss": loss[0] if loss else None,
                }
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
                self.done = number
                if number % every == 0 or number == len(samples):
                    self.writer.write(
                        EvaluationProgress(job_id="", done=number, total=len(samples))
                    )
        return totals

    def _execute(self) -> int:
        from arkor_ops.worker.checkpoints import RunIdentity, upload_committed
        from arkor_ops.worker.data import prepare_dataset
        from arkor_ops.worker.init_adapter import fetch_ref
        from arkor_ops.worker.models import resolve_model
        from arkor_ops.worker.pins import pin_revisions

        settings, state = self.settings, self.state
        storage = open_storage(settings.storage_uri)
        layout = RunLayout(settings.storage_uri, settings.job_id)
        from_storage = seed_event_log(self.writer, storage, layout)
        ended = next((e for e in read_events(self.writer.path) if e.terminal), None)
        if ended is not None and from_storage:
            log.warning("the evaluation already ended (%s): nothing to do", ended.type)
            return EXIT_PERMANENT if ended.type == "evaluation.failed" else EXIT_OK
        config = settings.evaluation_config()
        spec = config.evaluation
        scorers = build_scorers(spec)
        view = config.data_view()
        shutil.rmtree(self.work, ignore_errors=True)
        pins = pin_revisions(view, settings, storage, layout)
        data = prepare_dataset(
            view, self.work / "data", settings.max_dataset_bytes, pins.dataset, pins.dataset_commit
        )
        samples = split_samples(data.examples)[: spec.max_samples]
        base_model = f"{config.model}@{pins.model_commit}" if pins.model_commit else config.model
        adapter = None
        if config.adapter is not None:
            adapter = fetch_ref(
                config.adapter, settings.storage_uri, base_model, self.work / "adapter", "adapter"
            )
        if state.cancel.is_set():
            return self._cancelled()
        resolved = resolve_model(
            config.model,
            settings.model_cache,
            hub=pins.model,
            commit=pins.model_commit if pins.model else config.revision,
            cache_max_bytes=settings.model_cache_max_bytes,
        )
        model = _Model(resolved.path, adapter.path if adapter else None, config)
        if state.cancel.is_set():
            return self._cancelled()
        self.writer.write(
            EvaluationStarted(
                job_id="",
                metadata={
                    "model": config.model,
                    "modelPath": str(resolved.path),
                    "adapter": adapter.uri if adapter else None,
                    "adapterStep": adapter.step if adapter else None,
                    "datasetSource": data.source,
                    "datasetFingerprint": data.fingerprint,
                    "samples": len(samples),
                    "metrics": list(spec.metrics),
                    "device": model.device,
                },
            )
        )
        start = time.perf_counter()
        out = self.work / "evaluation"
        totals = self._score_all(model, scorers, samples, out / "samples.jsonl", spec.metrics)
        if totals is None or state.cancel.is_set():
            return self._cancelled()
        metrics = totals.metrics(spec.metrics)
        summary = {
            "metrics": metrics,
            "samples": len(samples),
            "model": base_model,
            "adapter": adapter.uri if adapter else None,
            "adapterStep": adapter.step if adapter else None,
            "datasetFingerprint": data.fingerprint,
            "seconds": time.perf_counter() - start,
        }
        (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        wire = {k: v for k, v in config.to_wire().items() if k != "name"}
        identity = RunIdentity(config.config_hash(), data.fingerprint, base_model, wire)
        upload_committed(storage, layout.evaluation, out, adapter.step if adapter else 0, identity)
        self.writer.write(
            EvaluationCompleted(
                job_id="", metrics=metrics, samples=len(samples), uri=layout.evaluation
            )
        )
        log.info("evaluation completed: %d samples, %s", len(samples), metrics)
        return EXIT_OK


def evaluate(settings: WorkerSettings, state: RunState | None = None) -> int:
    """Execute one evaluation job (callable in-process, e.g. by tests); returns the exit code."""
    from arkor_ops.worker.cache import release_all

    try:
        return Evaluation(settings, state or RunState()).execute()
    finally:
        release_all()  # the node cache's entries it used may be evicted from now on
