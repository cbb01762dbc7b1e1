"""GPU-idle time before the first optimizer step: a cold run, a warm one, an evicted-and-resumed
one and two cold runs at once, beside a bare script, in one run.

    .venv/bin/python bench/gpu_idle.py [--model gemma|tiny] [--steps 2]

Each run is ``python -m arkor_ops.worker`` in a fresh process (what the trainer container runs;
its process start is the container's start), its model an ``s3://`` folder on a real
S3-protocol server on loopback (moto, logging every request) and its dataset in the same
bucket, with one node cache (``ARKOR_MODEL_CACHE``) shared by the runs as a node's ``hostPath``
is. The figure is ``training.completed.metrics.gpuIdle.beforeFirstStep``, split by cause.

- **cold**: an empty node cache: the model is downloaded and the data tokenized.
- **warm**: a second run of the same model and data on the node.
- **resumed**: a run killed (SIGKILL, as an eviction) after its first checkpoint, started
  again as a replacement pod (a fresh event log and work folder, the same node cache): it
  downloads only the checkpoint.
- **two at once**: two runs on a second, empty node cache, started together.
- **floor**: a bare script in a fresh process: import torch, transformers and peft, load the
  same model from local disk, add the same LoRA, take one optimizer step on two rows.
- **bare download**: boto3 ``download_file`` of the model's objects, timed in this process.

Prints each run's figures and: warm / floor (target <= 1.2), (cold - warm) / bare download
(target about 1: the cold run's extra time is the download and nothing else), and the
downloads of the weights counted in the server's request log (target: one per cold cache; a
large file is fetched in ranged parts, so the count is its GETs over those of one bare
download).
Asserts nothing. Local runs of the worker, not pods of the local cluster: the node agent runs
a pod's trainer as this same process (tools/k8senv), so the figures are the pod's less the
agent's own start-up, which ``bench/submit.py`` measures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FLOOR = """
import json, sys, time
from arkor_ops.worker.idle import process_start
started = process_start()
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
path, r, rows = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
lora = LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", task_type="CAUSAL_LM")
model = get_peft_model(model, lora)
texts = [tok.apply_chat_template(row["messages"], tokenize=False) for row in rows]
batch = tok(texts, return_tensors="pt", padding=True)
optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
model(**batch, labels=batch["input_ids"]).loss.backward()
optim.step()
print(json.dumps({"beforeFirstStep": time.time() - started}))
"""


def rows(n: int) -> list[dict[str, Any]]:
    cats = ["billing", "account", "bug", "feature"]
    return [
        {
            "messages": [
                {"role": "user", "content": f"Ticket {i}: the app fails around {cats[i % 4]}"},
                {"role": "assistant", "content": f'{{"category": "{cats[i % 4]}"}}'},
            ]
        }
        for i in range(n)
    ]


def model_folder(choice: str, tmp: Path) -> Path:
    if choice == "gemma":
        from arkor_ops.settings.worker import model_cache_dir
        from arkor_ops.worker.models import prepare_gemma

        return prepare_gemma(model_cache_dir())
    from arkor_ops.worker.tiny import build_tiny_model

    return build_tiny_model(tmp / "tiny")


class Runs:
    """Worker runs against one bucket, each in its own folder under ``root``."""

    def __init__(self, root: Path, bucket: str, model_uri: str, data_uri: str, steps: int) -> None:
        self.root, self.bucket = root, bucket
        self.config = {
            "name": "gpu-idle",
            "model": model_uri,
            "dataset": {"type": "s3", "uri": data_uri},
            "maxSteps": steps,
            "loggingSteps": 1,
            "saveSteps": max(1, steps // 2),
            "batchSize": 2,
            "lora": {"r": 16, "alpha": 32, "maxLength": 256},
        }

    def start(self, job: str, cache: Path, attempt: str = "1", **config: Any) -> tuple[Any, Path]:
        folder = self.root / f"{job}-{attempt}"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({**self.config, **config}))
        env = {
            **os.environ,
            "ARKOR_JOB_ID": job,
            "ARKOR_CONFIG_FILE": str(folder / "config.json"),
            "ARKOR_STORAGE_URI": f"s3://{self.bucket}/runs",
            "ARKOR_EVENT_LOG": str(folder / "events.jsonl"),
            "ARKOR_WORK_DIR": str(folder / "work"),
            "ARKOR_MODEL_CACHE": str(cache),
            "ARKOR_MAX_RESTARTS": "3",
            "HF_HUB_OFFLINE": "1",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "arkor_ops.worker"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        return proc, folder / "events.jsonl"

    @staticmethod
    def idle(proc: Any, log: Path) -> dict[str, float]:
        _, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise SystemExit(f"worker exited {proc.returncode}: {err[-3000:]}")
        events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        (done,) = [e for e in events if e["type"] == "training.completed"]
        return dict(done["metrics"]["gpuIdle"])

    def run(self, job: str, cache: Path, **config: Any) -> dict[str, float]:
        return self.idle(*self.start(job, cache, **config))

    def evicted(self, job: str, cache: Path) -> dict[str, float]:
        """Killed after its first committed checkpoint; its replacement's figures."""
        longer = {"maxSteps": 6, "saveSteps": 2}  # killed at step 2, resumed for 3-6
        proc, log = self.start(job, cache, **longer)
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and '"checkpoint.saved"' in log.read_text():
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return self.idle(*self.start(job, cache, attempt="2", **longer))


def weight_gets(request_log: Path, bucket: str) -> int:
    weights = re.escape(f"/{bucket}/models/base/model.safetensors")
    return len(re.findall(rf'"GET {weights} HTTP/1\.1" 20[06]', request_log.read_text()))


def bare_download(client: Any, bucket: str, out: Path) -> float:
    objects = client.list_objects_v2(Bucket=bucket, Prefix="models/base/")["Contents"]
    began = time.perf_counter()
    for obj in objects:
        target = out / obj["Key"]
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, obj["Key"], str(target))
    return time.perf_counter() - began


def floor(model: Path, r: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", FLOOR, str(model), str(r), json.dumps(rows(2))],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["beforeFirstStep"])


CAUSES = ("modelFetch", "dataFetch", "checkpointFetch", "modelLoad", "tokenize", "other")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("gemma", "tiny"), default="gemma")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()

    from arkor_ops.storage import join_uri, open_storage
    from tests.fixtures.s3 import S3Server, free_port, start_moto

    with tempfile.TemporaryDirectory(prefix="arkor-gpu-idle-") as tmp_name:
        tmp = Path(tmp_name)
        request_log = tmp / "s3-requests.log"
        server = S3Server(port=free_port())
        with request_log.open("wb") as fh:
            moto = start_moto(server.port, fh)
        try:
            os.environ.update(server.env())
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            client = server.client()
            client.create_bucket(Bucket=bucket)
            model = model_folder(args.model, tmp)
            model_uri = f"s3://{bucket}/models/base"
            open_storage(model_uri).upload_dir(model_uri, model)
            data_uri = join_uri(f"s3://{bucket}", "data", "rows.jsonl")
            data = "".join(json.dumps(r) + "\n" for r in rows(64)).encode()
            open_storage(data_uri).put_bytes(data_uri, data)
            size = sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
            print(f"model {args.model}: {size / 1e6:.0f} MB in {model_uri}; {args.steps} steps")

            runs = Runs(tmp / "runs", bucket, model_uri, data_uri, args.steps)
            node = tmp / "node-cache"
            results: dict[str, dict[str, float]] = {}
            results["cold"] = runs.run("cold", node)
            results["warm"] = runs.run("warm", node)
            results["resumed"] = runs.evicted("evicted", node)
            gets_one_node = weight_gets(request_log, bucket)
            other = tmp / "node-cache-2"
            pair = [runs.start(f"together-{i}", other) for i in range(2)]
            for i, (proc, log) in enumerate(pair):
                results[f"two at once ({i + 1})"] = runs.idle(proc, log)
            gets_pair = weight_gets(request_log, bucket) - gets_one_node
            before = weight_gets(request_log, bucket)
            download = bare_download(client, bucket, tmp / "bare")
            per_download = weight_gets(request_log, bucket) - before  # ranged GETs of one
            floor_s = floor(model, 16)
        finally:
            moto.terminate()
            moto.wait(timeout=10)

    head = f"{'run':<18} {'before 1st step':>15} " + " ".join(f"{c:>15}" for c in CAUSES)
    print(head)
    for name, idle in results.items():
        parts = " ".join(f"{idle.get(c, 0.0):>15.2f}" for c in CAUSES)
        print(f"{name:<18} {idle['beforeFirstStep']:>15.2f} {parts}")
    print(f"{'floor (bare)':<18} {floor_s:>15.2f}")
    print(f"{'bare download':<18} {download:>15.2f}")
    warm, cold = results["warm"]["beforeFirstStep"], results["cold"]["beforeFirstStep"]
    print(f"warm / floor: x{warm / floor_s:.2f} (target <= 1.2)")
    print(f"(cold - warm) / bare download: x{(cold - warm) / download:.2f} (target about 1)")
    print(
        "weight downloads counted at the storage server (its GETs of the weights over one "
        f"download's {per_download}): {gets_one_node / per_download:g} for cold, warm and "
        f"resumed on one node (target 1); {gets_pair / per_download:g} for two cold runs at once "
        "(target 1)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
