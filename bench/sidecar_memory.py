"""Sidecar memory against the length of the run, beside a bare Python process, in one run.

    .venv/bin/python bench/sidecar_memory.py [--events 1000000] [--clients 2]

Starts the real sidecar (``python -m arkor_ops.sidecar``, ``file://`` storage) on a log of 1,000
events, streams it to one client and reads the sidecar's peak resident set (``VmHWM``): the
baseline. Then the log grows to ``--events`` ``training.log`` events plus a terminal one; that
many clients replay it from the start at once (the sidecar also persists it); peak RSS again.
A bare ``python -c`` process is measured the same way. Prints the RSS of each and the ratios
long/short and (long − bare)/(short − bare). Target: the long log costs at most a few MiB more
than the short one (ratio ≈ 1), whatever ``--events``; the pod's limit is 512 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from arkor_ops.events import TrainingCompleted, TrainingLog, event_to_json

JOB = "bench-memory-1"
SHORT = 1_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for {pid}")


def append(log: Path, first: int, count: int) -> None:
    """``count`` training.log lines, as the trainer writes them (in bulk, for speed)."""
    with log.open("a", encoding="utf-8") as fh:
        for start in range(first, first + count, 50_000):
            stop = min(first + count, start + 50_000)
            lines = [
                event_to_json(TrainingLog(id=i, job_id=JOB, step=i, loss=1 / i, epoch=i / 1e6))
                for i in range(start, stop)
            ]
            fh.write("\n".join(lines) + "\n")


async def replay(url: str, want: int) -> int:
    """Stream from the start; count ``training.log`` frames until ``end`` or ``want``."""
    count, buf = 0, b""
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(30, read=120)) as client,
        client.stream("GET", url) as resp,
    ):
        async for chunk in resp.aiter_bytes():
            *frames, buf = (buf + chunk).split(b"\n\n")
            for frame in frames:
                if b"\nevent: training.log\n" in frame:
                    count += 1
                elif b"event: end" in frame:
                    return count
            if count >= want:
                return count
    return count


def start_sidecar(log: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "ARKOR_JOB_ID": JOB,
        "ARKOR_EVENT_LOG": str(log),
        "ARKOR_STORAGE_URI": f"file://{tmp}/storage",
        "ARKOR_SIDECAR_HOST": "127.0.0.1",
        "ARKOR_SIDECAR_PORT": str(port),
    }
    out = (tmp / "sidecar.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "arkor_ops.sidecar"], env=env, stdout=out, stderr=out
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            return proc, f"{base}/v1/jobs/{JOB}/events/stream"
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("sidecar did not start")


def bare_python_kib() -> int:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.stdout.write('up\\n'); sys.stdout.flush(); "
         "time.sleep(60)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.readline()
    try:
        return peak_rss_kib(proc.pid)
    finally:
        proc.kill()
        proc.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    bare = bare_python_kib()
    with tempfile.TemporaryDirectory(prefix="arkor-bench-mem-") as tmp_name:
        tmp = Path(tmp_name)
        log = tmp / "events.jsonl"
        append(log, 1, SHORT)
        proc, url = start_sidecar(log, tmp)
        try:
            assert await replay(url, SHORT) == SHORT
            short = peak_rss_kib(proc.pid)
            append(log, SHORT + 1, args.events - SHORT)
            last = TrainingCompleted(id=args.events + 1, job_id=JOB)
            with log.open("a", encoding="utf-8") as fh:
                fh.write(event_to_json(last) + "\n")
            size = log.stat().st_size
            started = time.perf_counter()
            counts = await asyncio.gather(*(replay(url, args.events) for _ in range(args.clients)))
            took = time.perf_counter() - started
            persisted = tmp / "storage" / JOB / "events.jsonl"
            for _ in range(1200):
                if persisted.exists() and persisted.stat().st_size == size:
                    break
                await asyncio.sleep(0.1)
            long = peak_rss_kib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert all(c == args.events for c in counts), counts
    mib = 1024
    print(f"log: {args.events:,} events, {size / mib / mib:.1f} MiB; {args.clients} client(s)")
    print(f"replay: {args.events * args.clients / took:,.0f} events/s over all clients")
    print(f"bare python      peak RSS {bare / mib:7.1f} MiB")
    print(f"sidecar, {SHORT:,} ev  peak RSS {short / mib:7.1f} MiB")
    print(f"sidecar, long    peak RSS {long / mib:7.1f} MiB (log persisted)")
    print(f"ratio long/short: {long / short:.3f}")
    print(f"ratio (long - bare)/(short - bare): {(long - bare) / max(1, short - bare):.3f}")


if __name__ == "__main__":
    asyncio.run(main())
