"""``ctx.infer()`` from ``on_checkpoint`` beside a bare ``model.generate``, in one run.

    .venv/bin/python bench/infer.py [--model PATH] [--calls 5] [--max-tokens 64]

- Ours: a real training run on the local backend (the worker, its sidecar, the tiny random
  model the tests use unless ``--model``); at the first checkpoint the callback calls
  ``ctx.ainfer()`` ``--calls`` times streamed and ``--calls`` times not, alternating, after one
  warm-up of each (the first answer builds the worker's engine), greedy, ``--max-tokens``,
  the same prompt; then it cancels the run. Each answer goes callback -> HTTP -> sidecar ->
  Unix socket -> worker, waits there for the next optimizer step boundary, and is generated
  with the checkpoint's weights swapped in.
- Bare: after the run, in this process, transformers + peft: the same base model with the
  same checkpoint's adapter loaded from its committed files (``PeftModel.from_pretrained``),
  the same prompt through the chat template, ``generate`` greedy with the same stop tokens
  and ``max_new_tokens``; streamed (a streamer that notes the first token) and not, alternating,
  after one warm-up each.
- Pause: ``usage.training_pause_seconds`` of each answer (the worker reports it: the time from
  taking the request off its queue to the live weights copied back).

TTFT: call to the first chunk with text (non-stream: call to the answer). Tokens/s: completion
tokens / (last token - call). Outside: total - pause, the time an answer spends off the training
thread (waiting for the step boundary, HTTP, the socket). Medians; prints the ratios ours / bare.
``--threads`` (default 1) sets torch's CPU threads in both processes: on a shared 2-core machine
torch's default (one per core) spins against the other load and a tiny model's token costs
10-20x more, which swamps what is measured. ``--save-steps``: the first checkpoint's step;
the worker holds only its newest 3 checkpoints, so all the calls (one step boundary each) must
end before 3 more saves (``--save-steps 2`` with Gemma 3 270M on CPU lost its checkpoint).
Results and a reading: docs/local.md. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATASET = REPO / "examples" / "triage" / "test.jsonl"
PROMPT = [
    {"role": "system", "content": "Triage the support ticket. Answer in JSON."},
    {"role": "user", "content": "I was charged twice for my invoice this month."},
]

Sample = dict[str, float]  # ttft_s, total_s, tokens, pause_s


async def run_ours(
    model: Path, runs_dir: Path, calls: int, max_tokens: int, save_steps: int
) -> tuple[dict[str, list[Sample]], Path, str, int]:
    """The training run; returns (samples by mode, adapter dir, text, checkpoint step)."""
    from arkor_ops import create_async_trainer
    from arkor_ops.backends.local import LocalBackend, LocalSettings
    from arkor_ops.results import CheckpointContext

    samples: dict[str, list[Sample]] = {"stream": [], "non-stream": []}
    found: list[tuple[Path, str, int]] = []

    async def one(ctx: CheckpointContext, stream: bool) -> tuple[Sample, str]:
        began = time.perf_counter()
        if not stream:
            reply = await ctx.ainfer(
                messages=PROMPT, temperature=0, max_tokens=max_tokens, stream=False
            )
            total = time.perf_counter() - began
            usage = reply.usage
            text = reply.choices[0].message.content or ""
            assert usage is not None
            pause = usage.training_pause_seconds or 0.0
            return {
                "ttft_s": total,
                "total_s": total,
                "tokens": usage.completion_tokens,
                "pause_s": pause,
            }, text
        first = None
        last = began
        answer = await ctx.ainfer(
            messages=PROMPT, temperature=0, max_tokens=max_tokens, stream=True
        )
        async for chunk in answer:
            if chunk.choices and chunk.choices[0].delta.content:
                last = time.perf_counter()
                first = first or last
        final = answer.chunks[-1].usage
        assert final is not None
        return {
            "ttft_s": (first or last) - began,
            "total_s": last - began,
            "tokens": final.completion_tokens,
            "pause_s": final.training_pause_seconds or 0.0,
        }, answer.text

    async def on_checkpoint(ctx: CheckpointContext) -> None:
        if found:
            return
        text = ""
        for warm in (True, False):  # one warm-up of each, then the measured calls
            for _ in range(1 if warm else calls):
                for mode in ("stream", "non-stream"):
                    sample, text = await one(ctx, mode == "stream")
                    if not warm:
                        samples[mode].append(sample)
        adapter = Path(ctx.artifacts[0].uri.removeprefix("file://"))
        found.append((adapter, text, ctx.step))
        await trainer.cancel()

    backend = LocalBackend(LocalSettings(runs_dir=runs_dir, sidecar_linger_seconds=1))
    trainer = create_async_trainer(
        name="bench-infer",
        model=str(model),
        dataset={"type": "file", "path": str(DATASET)},
        lora={"r": 8, "alpha": 8, "max_length": 512},
        max_steps=100_000,
        save_steps=save_steps,
        batch_size=2,
        backend=backend,
        on_checkpoint=on_checkpoint,
    )
    result = await trainer.wait()
    assert found, f"no checkpoint answered: {result.job.status}"
    adapter, text, step = found[0]
    return samples, adapter, text, step


class _FirstToken:
    """A transformers streamer that notes when the first new token and the last one came."""

    def __init__(self) -> None:
        self.prompt_seen = False
        self.first: float | None = None
        self.last = 0.0

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.last = time.perf_counter()
        self.first = self.first or self.last

    def end(self) -> None:
        pass


def run_bare(
    model_dir: Path, adapter: Path, calls: int, max_tokens: int
) -> tuple[dict[str, list[Sample]], str]:
    """Plain transformers + peft on the committed adapter; returns (samples by mode, text)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    if cuda:
        model = model.to("cuda")
    vocab = tok.get_vocab()
    stops = sorted(
        {vocab[t] for t in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>") if t in vocab}
        | ({int(tok.eos_token_id)} if tok.eos_token_id is not None else set())
    )
    enc = tok.apply_chat_template(
        PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(model.device)
    prompt_len = enc["input_ids"].shape[1]
    samples: dict[str, list[Sample]] = {"stream": [], "non-stream": []}
    text = ""

    def one(stream: bool) -> tuple[Sample, str]:
        streamer = _FirstToken() if stream else None
        began = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=tok.pad_token_id,
                streamer=streamer,
            )
        if cuda:
            torch.cuda.synchronize()
        done = time.perf_counter()
        new = out[0, prompt_len:].tolist()
        tokens = len([t for t in new if t not in stops and t != tok.pad_token_id])
        total = (streamer.last if streamer and streamer.first else done) - began
        ttft = (streamer.first if streamer and streamer.first else done) - began
        return {"ttft_s": ttft, "total_s": total, "tokens": tokens, "pause_s": 0.0}, str(
            tok.decode(new, skip_special_tokens=True)
        )

    for warm in (True, False):
        for _ in range(1 if warm else calls):
            for mode in ("stream", "non-stream"):
                sample, text = one(mode == "stream")
                if not warm:
                    samples[mode].append(sample)
    return samples, text


def _med(samples: list[Sample], key: str) -> float:
    return statistics.median(s[key] for s in samples)


def _tps(samples: list[Sample]) -> float:
    return statistics.median(s["tokens"] / s["total_s"] for s in samples if s["total_s"] > 0)


def report(ours: dict[str, list[Sample]], bare: dict[str, list[Sample]]) -> None:
    print(
        f"{'path':<22}{'TTFT ms':>10}{'total ms':>10}{'tokens':>8}{'tok/s':>9}"
        f"{'pause ms':>10}{'outside ms':>11}"
    )
    for mode in ("stream", "non-stream"):
        for name, data in (("bare generate", bare), ("ctx.infer()", ours)):
            rows = data[mode]
            if data is ours:
                outside = statistics.median(s["total_s"] - s["pause_s"] for s in rows)
                pause = f"{_med(rows, 'pause_s') * 1e3:10.1f}{outside * 1e3:11.1f}"
            else:
                pause = f"{'-':>10}{'-':>11}"
            print(
                f"{name + ' ' + mode:<22}{_med(rows, 'ttft_s') * 1e3:10.1f}"
                f"{_med(rows, 'total_s') * 1e3:10.1f}{_med(rows, 'tokens'):8.0f}"
                f"{_tps(rows):9.1f}{pause}"
            )
    for mode in ("stream", "non-stream"):
        o, b = ours[mode], bare[mode]
        print(
            f"ratio ours/bare, {mode}: TTFT x{_med(o, 'ttft_s') / _med(b, 'ttft_s'):.2f}, "
            f"tokens/s x{_tps(o) / _tps(b):.2f}, "
            f"training pause / bare total x{_med(o, 'pause_s') / _med(b, 'total_s'):.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="a saved causal LM (default: the tiny one)")
    parser.add_argument("--calls", type=int, default=5, help="measured calls per mode")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--save-steps", type=int, default=20, help="the first checkpoint's step")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads of torch in the worker and here (OMP_NUM_THREADS); 0: torch's default",
    )
    args = parser.parse_args()
    if args.threads > 0:  # before torch is imported; the worker inherits the environment
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        root = Path(tmp)
        model = args.model
        if model is None:
            from arkor_ops.worker.tiny import build_tiny_model

            model = build_tiny_model(root / "tiny")
        ours, adapter, ours_text, step = asyncio.run(
            run_ours(model, root / "runs", args.calls, args.max_tokens, args.save_steps)
        )
        bare, bare_text = run_bare(model, adapter, args.calls, args.max_tokens)
    print(
        f"model {args.model or 'tiny random Gemma 3 (tests)'}, checkpoint step {step}, "
        f"{args.calls} calls per mode (median), max_tokens {args.max_tokens}, greedy, "
        f"torch threads {args.threads or 'default'}"
    )
    print(f"same text from both paths: {'yes' if ours_text == bare_text else 'NO'}")
    if ours_text != bare_text:
        print(f"  ours: {ours_text!r}\n  bare: {bare_text!r}")
    report(ours, bare)


if __name__ == "__main__":
    main()
