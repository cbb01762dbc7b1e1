"""`ctx.infer()` from `on_checkpoint` on the local backend: the real worker (tiny model) answers
through its sidecar with the weights of the checkpoint that fired the callback, refuses a
checkpoint it no longer holds, and after the run a call says the run ended."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.local import LocalBackend, LocalSettings
from arkor_ops.errors import CheckpointUnavailableError
from arkor_ops.inference import HELD_CHECKPOINTS
from arkor_ops.results import CheckpointContext
from tests.local.helpers import REPO

pytestmark = [pytest.mark.train, pytest.mark.timeout(420)]

TEST_ROWS = REPO / "examples" / "triage" / "test.jsonl"

#: Arkor's triage template's answer, strict (every property required, no others).
TRIAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "account", "bug", "feature"]},
        "urgency": {"type": "string", "enum": ["low", "medium", "high"]},
        "summary": {"type": "string", "maxLength": 40},
    },
    "required": ["category", "urgency", "summary"],
    "additionalProperties": False,
}
TICKET = [
    {"role": "system", "content": "Triage the support ticket. Answer in JSON."},
    {"role": "user", "content": "I was charged twice for my invoice this month."},
]


def _greedy_from_committed(model_dir: Path, adapter_dir: Path, schema: dict[str, Any]) -> str:
    """What the committed checkpoint answers, loaded afresh here (the same constraint, greedy)."""
    import torch
    import xgrammar as xgr
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    from arkor_ops.worker.infer import bounded_strings

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    stops = [tok.eos_token_id, tok.get_vocab()["<end_of_turn>"]]
    info = xgr.TokenizerInfo.from_huggingface(
        tok, vocab_size=model.get_output_embeddings().weight.shape[0], stop_token_ids=stops
    )
    grammar = xgr.GrammarCompiler(info).compile_json_schema(
        json.dumps(bounded_strings(schema)), any_whitespace=False, strict_mode=True
    )
    enc = tok.apply_chat_template(
        TICKET, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(
        **enc,
        max_new_tokens=120,
        do_sample=False,
        eos_token_id=stops,
        pad_token_id=tok.pad_token_id,
        logits_processor=LogitsProcessorList([xgr.contrib.hf.LogitsProcessor(grammar)]),
    )
    return str(tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))


async def test_on_checkpoint_infer_answers_from_that_checkpoint_with_the_schema(
    runs_dir: Path, tiny_model_dir: Path
) -> None:
    backend = LocalBackend(LocalSettings(runs_dir=runs_dir, sidecar_linger_seconds=1))
    seen: list[CheckpointContext] = []
    replies: list[Any] = []
    streamed: list[Any] = []
    evicted: list[CheckpointUnavailableError] = []
    late: list[int] = []

    async def on_checkpoint(ctx: CheckpointContext) -> None:
        if seen:
            if not late and ctx.step >= seen[0].step + 2 * HELD_CHECKPOINTS:  # step 2 replaced
                late.append(ctx.step)
                try:
                    await seen[0].ainfer(messages=TICKET, stream=False)
                except CheckpointUnavailableError as exc:
                    evicted.append(exc)
                await trainer.cancel()
            return
        seen.append(ctx)
        reply = await ctx.ainfer(
            messages=TICKET,
            temperature=0,
            maxTokens=120,
            stream=False,
            responseFormat={
                "type": "json_schema",
                "json_schema": {"name": "triage", "schema": TRIAGE_SCHEMA, "strict": True},
            },
        )
        replies.append(reply)
        # the blocking twin, from inside an async callback: a stream of chunks
        with ctx.infer(messages=TICKET, max_tokens=8) as stream:
            streamed.append((list(stream), stream))

    trainer = create_async_trainer(
        name="tiny-infer",
        model=str(tiny_model_dir),
        dataset={"type": "file", "path": str(TEST_ROWS)},
        lora={"r": 8, "alpha": 8, "max_length": 512},
        max_steps=5000,
        save_steps=2,
        batch_size=2,
        backend=backend,
        on_checkpoint=on_checkpoint,
    )
    result = await trainer.wait()
    assert result.job.status == "cancelled", result

    ctx = seen[0]
    (reply,) = replies
    text = reply.choices[0].message.content
    jsonschema.validate(json.loads(text), TRIAGE_SCHEMA)  # the constraint, not the model, did it
    assert reply.model == f"{ctx.job.id}@step-{ctx.step}"
    assert reply.usage.completion_tokens > 0
    assert reply.usage.training_pause_seconds is not None
    assert reply.usage.training_pause_seconds > 0

    # the weights that answered are the committed checkpoint's, not the live model's
    adapter_dir = Path(ctx.artifacts[0].uri.removeprefix("file://"))
    assert text == _greedy_from_committed(tiny_model_dir, adapter_dir, TRIAGE_SCHEMA)

    chunks, stream = streamed[0]
    assert stream.done  # the wire said [DONE]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 8

    # the worker holds only its newest checkpoints: step 2, asked later, is refused by name
    (gone,) = evicted
    assert (gone.reason, gone.step, gone.job_id) == ("checkpoint_not_held", ctx.step, ctx.job.id)
    assert f"no longer holds checkpoint step {ctx.step}" in str(gone)

    with pytest.raises(CheckpointUnavailableError, match=rf"{ctx.job.id}.*step {ctx.step}") as err:
        await ctx.ainfer(messages=TICKET, stream=False)
    assert err.value.reason == "run_ended"
    assert "create_evaluator" in str(err.value)
