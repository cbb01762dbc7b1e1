"""The GPU engine's check: an endpoint on vLLM beside the bare vLLM server, in one run (GPU only).

    .venv/bin/python bench/gpu_vllm.py [--model DIR] [--requests 64] [--trials 3]

Run on a machine with an NVIDIA GPU and ``pip install vllm==0.34.0`` (the version of the
endpoint's vLLM image, ``arkor_ops.settings.serving.VLLM_VERSION``) in the same environment; it
starts ``vllm serve`` itself. What it checks, and prints:

1. vLLM starts as the endpoint's Deployment starts it (``--enable-lora --max-loras 2``,
   ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``, listening on 127.0.0.1);
2. :class:`arkor_ops.serving.endpoint.LocalEndpoint` with :class:`arkor_ops.serving.vllm.VllmServer`
   (the pod's code path) deploys a committed adapter: fetched, checked against its manifest,
   loaded into vLLM at runtime as PEFT wrote it; an answer comes back through the gateway as
   ``NAME@1``; a corrupted adapter is refused and v1 keeps answering;
3. requests/s and time to first token at 1, 4 and 16 clients through the endpoint (gateway + vLLM
   with the adapter) beside vLLM asked directly for the same adapter: the ratio is our overhead;
4. the hot swap under 4 clients: deploy v2, how many requests overlapped it, how many failed
   (the target: none), latency during vs before.

The tiny random Gemma 3 model and two random adapters by default (``--model`` takes a Hugging
Face folder of a model vLLM supports; the adapters are made for it). Exit code 1 when a check of
2 or 4 fails. Not run by ``make test`` (no GPU there); results go to docs/serving.md when run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from serve import CONCURRENCY, TICKET, load, swap  # noqa: E402 - bench/serve.py, beside this


def start_vllm(model: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """``vllm serve`` as the endpoint's Deployment runs it."""
    vllm = Path(sys.executable).with_name("vllm")  # the console script of `pip install vllm`
    if not vllm.exists():
        raise SystemExit(f"no {vllm}: pip install vllm==0.34.0 into this environment first")
    cmd = [str(vllm), "serve", str(model)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", "bench@base"]
    cmd += ["--enable-lora", "--max-loras", "2", "--max-lora-rank", "64"]
    cmd += ["--gpu-memory-utilization", "0.5", "--max-model-len", "2048"]
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


def table(args: argparse.Namespace, ours: str, key: str, bare: str) -> None:
    """Requests/s and TTFT through the endpoint and from vLLM directly, alternating trials."""
    print(f"{args.requests} streamed requests per level, {args.trials} trials, medians")
    print("clients  req/s: ours   bare  ours/bare   TTFT ms: ours   bare  ours/bare")
    for clients in CONCURRENCY:
        rows: dict[str, list[tuple[float, float]]] = {"ours": [], "bare": []}
        for _ in range(args.trials):
            for who, url, k, model in (
                ("ours", ours, key, "bench"),
                ("bare", bare, None, "bench@1"),
            ):
                rps, ttft, _ = asyncio.run(
                    load(url, k, model, clients, requests=args.requests, tokens=args.max_tokens)
                )
                rows[who].append((rps, ttft))
        rps = {w: statistics.median(r for r, _ in v) for w, v in rows.items()}
        ttft = {w: statistics.median(t for _, t in v) * 1000 for w, v in rows.items()}
        ratio, slower = rps["ours"] / rps["bare"], ttft["ours"] / ttft["bare"]
        print(
            f"{clients:>7} {rps['ours']:>11.1f} {rps['bare']:>6.1f} {ratio:>9.2f}x"
            f" {ttft['ours']:>13.1f} {ttft['bare']:>6.1f} {slower:>9.2f}x"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="base model folder (tiny)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    from arkor_ops.errors import ArkorOpsError
    from arkor_ops.serving.endpoint import LocalEndpoint
    from arkor_ops.serving.llama_cpp import free_port
    from arkor_ops.serving.vllm import VllmServer
    from arkor_ops.storage import open_storage
    from arkor_ops.worker.checkpoints import RunIdentity, upload_committed
    from arkor_ops.worker.tiny import build_random_adapter, build_tiny_model

    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as tmp:
        root = Path(tmp)
        base = args.model or build_tiny_model(root / "tiny")
        storage = open_storage(f"file://{root}/store")
        uris = {}
        for name, seed in (("a", 1), ("b", 2), ("corrupt", 3)):
            local = build_random_adapter(base, root / name, seed=seed)
            uris[name] = f"file://{root}/store/{name}"
            upload_committed(storage, uris[name], local, 1, RunIdentity("c", "d", str(base), {}))
        weights = root / "store" / "corrupt" / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-1] + b"\0")

        port = free_port()
        t0 = time.monotonic()
        proc = start_vllm(base, port, root / "vllm.log")
        vllm_url = f"http://127.0.0.1:{port}"
        try:
            ep = LocalEndpoint("bench", base, root / "ep", vllm=VllmServer(vllm_url, "bench@base"))
            with ep:
                print(f"vLLM answered after {time.monotonic() - t0:.0f} s")
                key = ep.keys.create("bench")
                t1 = time.monotonic()
                ep.deploy("1", uris["a"])
                took = time.monotonic() - t1
                print(f"v1 deployed (fetched, verified, loaded into vLLM) in {took:.1f} s")
                answer = httpx.post(
                    ep.url + "/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"model": "bench", "messages": TICKET, "max_tokens": 8},
                    timeout=120,
                ).json()
                text = answer["choices"][0]["message"]["content"]
                print(f"answered as {answer.get('model')}: {text!r}")
                if answer.get("model") != "bench@1":
                    failures.append(f"the answer came from {answer.get('model')}, not bench@1")
                try:
                    ep.deploy("9", uris["corrupt"])
                    failures.append("the corrupted adapter was deployed")
                except ArkorOpsError as exc:
                    print(f"corrupted adapter refused: {exc}")
                if ep.serving != "1":
                    failures.append(f"after the refusal {ep.serving} serves, not 1")

                table(args, ep.url, key, vllm_url)
                if swap(args, ep, key, uris["b"]):
                    failures.append("requests failed during the swap")
                if ep.serving != "2":
                    failures.append(f"after the swap {ep.serving} serves, not 2")
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
