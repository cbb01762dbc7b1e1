"""An endpoint (``arkor-ops serve``'s path) beside the bare engine started by hand, in one run.

    .venv/bin/python bench/serve.py [--model DIR] [--requests 48] [--trials 3] [--max-tokens 16]

- Ours: :class:`arkor_ops.serving.endpoint.LocalEndpoint`: the gateway (API key, model routing)
  in front of llama-server in router mode (the router forwards to the version's instance), the
  adapter loaded from ``file://`` storage, verified and converted as ``deploy`` does.
- Router: the endpoint's llama-server router asked directly (no gateway), to split our cost
  between the gateway and the router's hop to the version's instance.
- Bare: ``llama-server -m BASE.gguf --lora ADAPTER.gguf`` on the same GGUF files (the ones the
  endpoint made), with the same context size, slots and threads, no router, no gateway.

At 1, 4 and 16 concurrent clients, each sends streamed chat completions (greedy,
``--max-tokens``) until ``--requests`` are done; TTFT is send to the first chunk with text.
Each request opens its own connection: the bare llama-server closes a connection after a
streamed answer without a ``Connection: close``, so a client that reuses it (httpx's pool) gets
"Server disconnected" on its next request at 4 clients and more.
Trials alternate ours and bare; medians over trials; prints requests/s and TTFT p50 (ms) of each
and the ratios ours / bare. Then the swap: 4 clients send requests while the endpoint deploys a
second adapter; prints p50/max latency of the requests that overlapped the swap beside those
before it, and how many failed. The tiny random model by default (the engine's own cost is
smallest, so our share shows most); ``--model`` takes a Hugging Face folder, e.g. the Gemma 3
270M the tests convert (``python -m arkor_ops.worker.models prepare-gemma`` prints where).
Results and a reading: docs/serving.md. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TICKET = [{"role": "user", "content": "ticket 7: the app crashes on login"}]
CONCURRENCY = (1, 4, 16)


async def one(client: httpx.AsyncClient, body: dict[str, object]) -> tuple[float, float]:
    """One streamed request: (ttft, total) seconds."""
    t0 = time.perf_counter()
    ttft = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if ttft is None and line.startswith("data: {") and '"content":"' in line:
                ttft = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return (ttft if ttft is not None else total), total


async def load(url: str, key: str | None, model: str, clients: int, *, requests: int, tokens: int):
    """``requests`` requests from ``clients`` concurrent clients: (req/s, ttft p50, totals)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {
        "model": model,
        "messages": TICKET,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
    }
    left = requests
    samples: list[tuple[float, float]] = []

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            samples.append(await one(client, body))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for _ in range(clients)))
        wall = time.perf_counter() - t0
    ttfts = [s[0] for s in samples]
    return len(samples) / wall, statistics.median(ttfts), [s[1] for s in samples]


def bare_engine(home: Path, base: Path, lora: Path, threads: int, log: Path):
    """``llama-server`` on one model, as one would start it by hand; (process, url)."""
    from arkor_ops.serving.llama_cpp import free_port

    port = free_port()
    cmd = [
        str(home / "bin" / "llama-server"),
        "-m",
        str(base),
        "--lora",
        str(lora),
        "--port",
        str(port),
        "--ctx-size",
        "2048",
        "--parallel",
        "4",
        "--threads",
        str(threads),
    ]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the bare llama-server did not start; see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="base model folder (tiny)")
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from arkor_ops.serving.endpoint import LocalEndpoint
    from arkor_ops.storage import open_storage
    from arkor_ops.worker.checkpoints import RunIdentity, upload_committed
    from arkor_ops.worker.tiny import build_random_adapter, build_tiny_model

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        base = args.model or build_tiny_model(root / "tiny")
        vocab_pre = None if args.model else "gpt-2"
        storage = open_storage(f"file://{root}/store")
        uris = {}
        for name, seed in (("a", 1), ("b", 2)):
            local = build_random_adapter(base, root / name, seed=seed)
            uris[name] = f"file://{root}/store/{name}"
            upload_committed(storage, uris[name], local, 1, RunIdentity("c", "d", str(base), {}))
        ep = LocalEndpoint(
            "bench", base, root / "ep", vocab_pre=vocab_pre, threads=args.threads, gguf_type="f16"
        )
        with ep:
            ep.deploy("1", uris["a"])
            key = ep.keys.create("bench")
            base_gguf = next((root / "ep" / "base").glob("*.gguf"))
            lora_gguf = next((root / "ep" / "versions").glob("1.*/adapter.gguf"))
            proc, bare_url = bare_engine(
                ep.engine.home, base_gguf, lora_gguf, args.threads, root / "bare.log"
            )
            try:
                measure(args, ep.url, key, ep.engine.url, bare_url)
                swap(args, ep, key, uris["b"])
            finally:
                proc.terminate()
                proc.wait()


def measure(args: argparse.Namespace, ours: str, key: str, router: str, bare: str) -> None:
    """The concurrency table."""
    print(f"{args.requests} streamed requests per level, {args.trials} trials, medians")
    print("clients  req/s: ours router  bare  ours/bare   TTFT: ours router   bare  ours/bare")
    targets = (("ours", ours, key, "bench"), ("router", router, None, "bench@1"))
    targets += (("bare", bare, None, "x"),)
    for clients in CONCURRENCY:
        rows: dict[str, list[tuple[float, float]]] = {who: [] for who, *_ in targets}
        for _ in range(args.trials):
            for who, url, k, model in targets:
                rps, ttft, _ = asyncio.run(
                    load(url, k, model, clients, requests=args.requests, tokens=args.max_tokens)
                )
                rows[who].append((rps, ttft))
        rps = {who: statistics.median(r for r, _ in v) for who, v in rows.items()}
        ttft = {who: statistics.median(t for _, t in v) * 1000 for who, v in rows.items()}
        print(
            f"{clients:>7} {rps['ours']:>11.1f} {rps['router']:>6.1f} {rps['bare']:>5.1f}"
            f" {rps['ours'] / rps['bare']:>9.2f}x {ttft['ours']:>11.1f} {ttft['router']:>6.1f}"
            f" {ttft['bare']:>6.1f} {ttft['ours'] / ttft['bare']:>9.2f}x"
        )


def swap(args: argparse.Namespace, ep, key: str, uri: str) -> int:
    """Latency of requests around a deploy of a second adapter, 4 clients; how many failed."""
    window: list[float] = []

    def deploy() -> None:
        time.sleep(1.0)
        window.append(time.perf_counter())
        ep.deploy("2", uri)
        window.append(time.perf_counter())

    async def traffic() -> tuple[list[tuple[float, float]], int]:
        headers = {"Authorization": f"Bearer {key}"}
        body = {"model": "bench", "messages": TICKET, "max_tokens": args.max_tokens, "stream": True}
        spans: list[tuple[float, float]] = []
        failed = 0

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal failed
            while len(window) < 2 or time.perf_counter() < window[1] + 1.0:
                t0 = time.perf_counter()
                try:
                    await one(client, body)
                except httpx.HTTPError:
                    failed += 1
                spans.append((t0, time.perf_counter()))

        async with httpx.AsyncClient(base_url=ep.url, headers=headers, timeout=120) as client:
            await asyncio.gather(*(worker(client) for _ in range(4)))
        return spans, failed

    thread = threading.Thread(target=deploy)
    thread.start()
    spans, failed = asyncio.run(traffic())
    thread.join()
    start, end = window
    before = [b - a for a, b in spans if b < start]
    during = [b - a for a, b in spans if b >= start and a <= end]
    print(
        f"swap: deploy took {end - start:.2f} s; {len(during)} requests overlapped it, "
        f"{failed} failed; latency p50 {statistics.median(during) * 1000:.1f} ms "
        f"(max {max(during) * 1000:.1f}) vs {statistics.median(before) * 1000:.1f} ms "
        f"(max {max(before) * 1000:.1f}) before"
    )
    return failed


if __name__ == "__main__":
    main()
