"""Worker overhead, side by side in one process: our worker vs bare TRL, our checkpoint upload
vs a plain boto3 upload, and how long steps stall while a checkpoint uploads.

    .venv/bin/python bench/worker_overhead.py [--steps 120] [--save-steps 20] [--rounds 2]

- Step time: the same small training run (a Gemma-3-shaped random model, bigger than the
  tests' tiny one so a step is tens of milliseconds and a checkpoint tens of MB) through
  ``arkor_ops.worker`` (event log, background uploads to a real S3-protocol server on
  loopback) and through bare TRL ``SFTTrainer`` with the same arguments (local checkpoints
  only). Rounds alternate; the ratio of median step times is printed. Target: <= 1.03.
- Upload throughput: the files of one checkpoint uploaded by the worker's commit path
  (sha256 + upload + manifest written last) and by plain ``boto3.upload_file``, alternating.
  Target: >= 0.90 of plain boto3.
- Stall: step times while an upload is in flight vs. steps with none. Target: no stall.

Prints ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_model(out: Path, hidden: int, layers: int) -> Path:
    """A random Gemma-3-shaped model with the tiny model's tokenizer, ``hidden`` wide."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from arkor_ops.worker.tiny import build_tiny_model

    tiny = build_tiny_model(out / "tiny")
    tok = AutoTokenizer.from_pretrained(str(tiny))
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=hidden // 4,
        max_position_embeddings=512,
        sliding_window=128,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    path = out / "model"
    Gemma3ForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def rows(n: int) -> list[dict[str, Any]]:
    cats = ["billing", "account", "bug", "feature"]
    return [
        {
            "messages": [
                {"role": "user", "content": f"Ticket {i}: something about {cats[i % 4]}"},
                {"role": "assistant", "content": f"category: {cats[i % 4]}"},
            ]
        }
        for i in range(n)
    ]


def _ts(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def run_worker(
    config: dict[str, Any], root: Path, storage_uri: str
) -> tuple[list[float], list[float], list[int]]:
    """One worker run in-process; returns (log times, commit times, save steps)."""
    from arkor_ops.eventlog import read_events
    from arkor_ops.worker.run import run
    from arkor_ops.worker.settings import load_settings

    job = f"bench-{uuid.uuid4().hex[:8]}"
    (root / job).mkdir(parents=True)
    cfg = root / job / "config.json"
    cfg.write_text(json.dumps(config))
    env = {
        **os.environ,
        "ARKOR_JOB_ID": job,
        "ARKOR_CONFIG_FILE": str(cfg),
        "ARKOR_STORAGE_URI": storage_uri,
        "ARKOR_EVENT_LOG": str(root / job / "events.jsonl"),
        "ARKOR_WORK_DIR": str(root / job / "work"),
    }
    code = run(load_settings(env))
    assert code == 0, f"worker exited {code}"
    events = read_events(root / job / "events.jsonl")
    logs = [_ts(e.timestamp) for e in events if e.type == "training.log"]
    commits = [_ts(e.timestamp) for e in events if e.type == "checkpoint.saved"]
    steps = [e.step for e in events if e.type == "checkpoint.saved"]
    return logs, commits, steps


def run_bare(config: dict[str, Any], model: Path, out: Path) -> list[float]:
    """The same run through bare TRL (local checkpoints only); returns log times."""
    import datasets
    from transformers import PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from arkor_ops.config import validate_config
    from arkor_ops.worker.data import PreparedDataset, check_rows, fingerprint
    from arkor_ops.worker.train import load_trl, sft_kwargs

    cfg = validate_config(config)
    examples = check_rows(rows(64), "chatml")
    data = PreparedDataset(examples, fingerprint(examples, "chatml"), 64, "bench", "chatml")
    model_obj, tok, peft_config = load_trl(cfg, model, cuda=False)
    kwargs = sft_kwargs(cfg, data, out, cuda=False, eos="<end_of_turn>")
    kwargs["activation_checkpointing"] = False
    times: list[float] = []

    class Times(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                times.append(time.time())

    trainer = SFTTrainer(
        model=model_obj,
        args=SFTConfig(**kwargs),
        train_dataset=datasets.Dataset.from_list(examples),
        processing_class=tok,
        peft_config=peft_config,
        callbacks=[Times()],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return times


def step_times(logs: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(logs[1:])]  # skip the first step


def upload_compare(folder: Path, bucket: str, rounds: int) -> tuple[float, float, int]:
    """Seconds per upload of ``folder``: worker commit path vs plain boto3 (medians)."""
    import boto3

    from arkor_ops.storage import open_storage, s3_client_kwargs
    from arkor_ops.worker.checkpoints import RunIdentity, upload_committed

    storage = open_storage(f"s3://{bucket}")
    client = boto3.client("s3", **s3_client_kwargs())
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    ident = RunIdentity("h", "f", "m", {})
    ours, plain = [], []
    for i in range(rounds):
        t = time.perf_counter()
        upload_committed(storage, f"s3://{bucket}/ours/{i}", folder, 1, ident)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        for p in files:
            client.upload_file(str(p), bucket, f"plain/{i}/{p.relative_to(folder).as_posix()}")
        plain.append(time.perf_counter() - t)
    return statistics.median(ours), statistics.median(plain), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--save-steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()

    from tests.fixtures.s3 import S3Server, free_port, start_moto

    server = S3Server(port=free_port())
    moto = start_moto(server.port)
    os.environ.update(server.env())
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    server.client().create_bucket(Bucket=bucket)
    worker_med: list[float] = []
    bare_med: list[float] = []
    stall: list[float] = []
    calm: list[float] = []
    bare_all: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="arkor-bench-") as tmp:
            root = Path(tmp)
            model = build_model(root / "models", args.hidden, args.layers)
            data = root / "rows.jsonl"
            data.write_text("".join(json.dumps(r) + "\n" for r in rows(64)))
            config = {
                "name": "bench",
                "model": str(model),
                "dataset": {"type": "file", "path": str(data)},
                "maxSteps": args.steps,
                "loggingSteps": 1,
                "saveSteps": args.save_steps,
                "learningRate": 1e-3,
                "batchSize": 4,
                "lora": {"r": 64, "alpha": 64, "maxLength": 128},
            }
            for i in range(args.rounds):
                bare = step_times(run_bare(config, model, root / f"bare-{i}"))
                bare_med.append(statistics.median(bare))
                # bare[j] is step j+3; leave out the step after each local save, as below.
                bare_all.extend(dt for j, dt in enumerate(bare) if (j + 2) % args.save_steps)
                logs, commits, saves = run_worker(config, root, f"s3://{bucket}/runs")
                steps = step_times(logs)
                worker_med.append(statistics.median(steps))
                # step k (1-based) ends at logs[k-1]; steps[j] is step j+3's duration.
                busy = set()
                for save, commit in zip(saves, commits, strict=True):
                    for k in range(save + 1, args.steps + 1):
                        if logs[k - 2] < commit:
                            busy.add(k)
                for j, dt in enumerate(steps):
                    k = j + 3
                    if k - 1 in saves:
                        continue  # the step after a save pays HF's own local save, as bare TRL
                    (stall if k in busy else calm).append(dt)
            newest = max((root / "bare-0").glob("checkpoint-*"), key=lambda p: int(p.name[11:]))
            ours, plain, size = upload_compare(newest, bucket, 3)
    finally:
        moto.terminate()
        moto.wait(timeout=10)

    w, b = statistics.median(worker_med), statistics.median(bare_med)
    print(
        f"model: hidden {args.hidden}, {args.layers} layers, LoRA r=64; {args.steps} steps, "
        f"save every {args.save_steps}, {args.rounds} rounds"
    )
    print(
        f"step time   worker {w * 1000:.1f} ms   bare TRL {b * 1000:.1f} ms   "
        f"ratio {w / b:.3f}  (target <= 1.03)"
    )
    print(
        f"upload      {size / 1e6:.1f} MB: worker commit {size / ours / 1e6:.1f} MB/s   "
        f"plain boto3 {size / plain / 1e6:.1f} MB/s   ratio {plain / ours:.3f}  (target >= 0.90)"
    )
    if stall and calm:
        s, c = statistics.median(stall), statistics.median(calm)
        p90 = statistics.quantiles(stall, n=10)[-1]
        p90_bare = statistics.quantiles(bare_all, n=10)[-1]
        print(
            f"stall       steps while an upload is in flight: median {s * 1000:.1f} ms, "
            f"p90 {p90 * 1000:.1f} ms (n={len(stall)}); other worker steps {c * 1000:.1f} ms "
            f"(n={len(calm)}); bare TRL median {b * 1000:.1f} ms, p90 {p90_bare * 1000:.1f} ms"
        )
        print(
            f"            in-flight vs bare TRL: median ratio {s / b:.3f}, p90 ratio "
            f"{p90 / p90_bare:.3f}  (target ~1.0: no step stalled)"
        )
    else:
        print("stall       no step overlapped an upload (uploads finished within one step)")


if __name__ == "__main__":
    main()
