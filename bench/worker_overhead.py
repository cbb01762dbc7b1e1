"""Worker overhead, side by side in one process: our worker vs bare TRL, our checkpoint upload
vs a plain boto3 upload, and how long steps stall while a checkpoint uploads.

    .venv/bin/python bench/worker_overhead.py [--steps 120] [--save-steps 20] [--rounds 2]
    .venv/bin/python bench/worker_overhead.py --upload-only [--upload-rounds 5]

- Step time: the same small training run (a Gemma-3-shaped random model, bigger than the
  tests' tiny one so a step is tens of milliseconds and a checkpoint tens of MB) through
  ``arkor_ops.worker`` (event log, background uploads to a real S3-protocol server on
  loopback) and through bare TRL ``SFTTrainer`` with the same arguments (local checkpoints
  only). Rounds alternate; the ratio of median step times is printed. Target: <= 1.03.
- Upload throughput: the files of one checkpoint uploaded by the worker's own path (the
  ``CheckpointUploader``: snapshot, queue, the upload process, sha256 + upload + manifest
  written last; submit to commit) and by plain ``boto3.upload_file`` of each file with one
  client, alternating, after one warm-up each, in the same run. Target: >= 0.90 of plain boto3.
  (Before issue 17 this timed ``upload_committed`` in the bench's own process, which is not
  the path the worker takes.) The worker runs also report how long each checkpoint took from
  its save to its commit while training, and how many were skipped (``checkpoint.skipped``).
  ``--upload-only`` runs just this comparison, on a synthetic checkpoint of the same shape.
- Stall: step times while an upload is in flight vs. steps with none. Target: no stall.

Prints ratios; asserts nothing.

Upload, 17 MB checkpoint (11 files), moto on the same 2-core machine under other agents' load
(load average 6-8, so noisy), ``--upload-only --upload-rounds 5``:

    before (issue 17: a client per checkpoint, files one after another, upload process at
            nice 19): worker 754-768 ms, plain boto3 531-607 ms, ratio 0.69 / 0.81
    after  (one client and transfer manager per upload process, all files at once, nice 10):
            worker 449-498 ms, plain boto3 533-632 ms, ratio 1.19 / 1.27

Both exclude the first upload; before, the worker's first checkpoint also paid the upload
process's start during training (2.8-4.2 s here against 0.7 s), now it starts with the uploader.
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
) -> tuple[list[float], list[float], list[int], int]:
    """One worker run in-process; returns (log times, commit times, save steps, skipped)."""
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
    skipped = sum(1 for e in events if e.type == "checkpoint.skipped")
    return logs, commits, steps, skipped


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


def synthetic_checkpoint(folder: Path) -> Path:
    """Files shaped like the bench model's checkpoint (LoRA r=64, hidden 256, 4 layers)."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {
        "adapter_model.safetensors": 5_636_000,
        "optimizer.pt": 11_290_000,
        "tokenizer.json": 60_000,
        "rng_state.pth": 14_000,
        "training_args.bin": 6_000,
        "README.md": 5_000,
        "trainer_state.json": 3_000,
        "scheduler.pt": 1_500,
        "tokenizer_config.json": 1_200,
        "adapter_config.json": 900,
        "chat_template.jinja": 800,
    }
    for name, size in sizes.items():
        (folder / name).write_bytes(os.urandom(size))
    return folder


def upload_compare(folder: Path, bucket: str, rounds: int) -> tuple[list[float], list[float], int]:
    """Seconds per upload of ``folder``: the worker's uploader (submit to commit) vs plain boto3.

    The uploader is made first, as the worker makes it before training; each side gets one
    warm-up upload (connections, the upload process's imports) that is not counted.
    """
    import threading

    import boto3

    from arkor_ops.storage import RunLayout, open_storage, s3_client_kwargs
    from arkor_ops.worker.checkpoints import CheckpointUploader, RunIdentity

    client = boto3.client("s3", **s3_client_kwargs())
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    committed: dict[int, float] = {}
    done = threading.Event()

    def on_commit(step: int, artifact: Any) -> None:
        committed[step] = time.perf_counter()
        done.set()

    with tempfile.TemporaryDirectory(prefix="arkor-bench-staging-") as staging:
        uploader = CheckpointUploader(
            open_storage(f"s3://{bucket}"),
            RunLayout(f"s3://{bucket}/ours", "bench"),
            RunIdentity("h", "f", "m", {}),
            Path(staging),
            on_commit,
        )
        ours, plain = [], []
        try:
            for i in range(rounds + 1):
                t = time.perf_counter()
                for p in files:
                    key = f"plain/{i}/{p.relative_to(folder).as_posix()}"
                    client.upload_file(str(p), bucket, key)
                plain.append(time.perf_counter() - t)
                done.clear()
                t = time.perf_counter()
                uploader.submit(i + 1, folder)
                done.wait()
                ours.append(committed[i + 1] - t)
        finally:
            uploader.close()
    return ours[1:], plain[1:], size


def print_upload(ours: list[float], plain: list[float], size: int) -> None:
    o, p = statistics.median(ours), statistics.median(plain)
    print(
        f"upload      {size / 1e6:.1f} MB: worker uploader {size / o / 1e6:.1f} MB/s "
        f"({o * 1000:.0f} ms)   plain boto3 {size / p / 1e6:.1f} MB/s ({p * 1000:.0f} ms)   "
        f"ratio {p / o:.3f}  (target >= 0.90)"
    )
    print(
        f"            per round, ms: worker {[round(x * 1000) for x in ours]}   "
        f"plain {[round(x * 1000) for x in plain]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--save-steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--upload-rounds", type=int, default=3)
    parser.add_argument(
        "--upload-only", action="store_true", help="only the upload comparison (no training)"
    )
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
    save_to_commit: list[float] = []
    skipped = 0
    try:
        with tempfile.TemporaryDirectory(prefix="arkor-bench-") as tmp:
            root = Path(tmp)
            if args.upload_only:
                folder = synthetic_checkpoint(root / "checkpoint")
                print_upload(*upload_compare(folder, bucket, args.upload_rounds))
                return
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
                logs, commits, saves, skips = run_worker(config, root, f"s3://{bucket}/runs")
                skipped += skips
                # the save of step k happens right after its log line, logs[k-1]
                save_to_commit.extend(c - logs[s - 1] for s, c in zip(saves, commits, strict=True))
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
            ours, plain, size = upload_compare(newest, bucket, args.upload_rounds)
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
    print_upload(ours, plain, size)
    if save_to_commit:
        print(
            f"            while training: save to commit median "
            f"{statistics.median(save_to_commit) * 1000:.0f} ms, max "
            f"{max(save_to_commit) * 1000:.0f} ms (n={len(save_to_commit)}); "
            f"checkpoint.skipped: {skipped}"
        )
    if len(stall) >= 2 and len(calm) >= 2:  # quantiles need two points
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
        print(
            f"stall       {len(stall)} step(s) overlapped an upload: too few to compare "
            "(uploads finished within a step or two)"
        )


if __name__ == "__main__":
    main()
