"""Event latency and throughput through the sidecar, beside a bare file tail, in one run.

    .venv/bin/python bench/events.py [--latency-events 400] [--throughput-events 100000]

Latency: a writer thread appends ``training.log`` events with the real ``EventLogWriter`` every
few milliseconds; the time from the write to the client's ``on_log`` callback is measured for
(a) the full path: sidecar subprocess -> HTTP SSE -> ``AsyncTrainer.wait()`` -> callback;
(b) the floor: a bare reader in the same process, woken by inotify on each write, calls a callback;
(c) the sidecar alone: its stream read by a bare HTTP client that decodes each frame's JSON and
calls the callback (no trainer), so the sidecar's share and the client's can be told apart.
Throughput: events written as fast as possible in chunks, until the last callback ran.
Prints p50/p99 latency, events/s and the ratios to the bare reader. Targets, for (a): p99 < 20 ms,
>= 5,000 events/s to one client; p50 within 2x of the bare reader's, throughput at least half.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from arkor_ops import create_async_trainer
from arkor_ops.backends.base import Backend, JobDescription, TrainingJob
from arkor_ops.config import TrainerConfig
from arkor_ops.eventlog import EventLogWriter, read_complete_lines
from arkor_ops.events import Frame, TrainingCompleted, TrainingLog
from arkor_ops.sse import stream_frames

JOB = "bench-run-1"
#: The paths measured: the floor, the full path (the targets are its), the sidecar alone.
PATHS = ("bare tail", "sidecar", "sidecar raw")


class SidecarBackend(Backend):
    """The smallest backend: the job already runs; its events come from a sidecar URL."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def submit(
        self, config: TrainerConfig, *, idempotency_key: str | None = None
    ) -> TrainingJob:
        return TrainingJob(id=JOB, name=config.name, status="running")

    async def events(self, job_id: str, last_event_id: str | None = None) -> AsyncIterator[Frame]:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
            async for frame in stream_frames(client, self.url, last_event_id=last_event_id):
                yield frame

    async def cancel(self, job_id: str) -> None:
        return None

    async def describe(self, job_id: str) -> JobDescription:
        return JobDescription(job=TrainingJob(id=job_id, name=job_id))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    proc = subprocess.Popen(
        [sys.executable, "-m", "arkor_ops.sidecar"], env=env, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            return proc, f"{base}/v1/jobs/{JOB}/events/stream"
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit("the sidecar did not start")


def write_paced(
    log: Path, count: int, sent: dict[int, float], interval: float, ready: threading.Event
) -> None:
    """Append a warm-up event; once the client has it, ``count`` training.log events
    ``interval`` apart, then the terminal event."""
    writer = EventLogWriter(log, JOB)
    writer.write(TrainingLog(job_id=JOB, step=0, loss=1.0))
    if not ready.wait(60):
        raise SystemExit("the client never received the warm-up event")
    for step in range(1, count + 1):
        sent[step] = time.perf_counter()
        writer.write(TrainingLog(job_id=JOB, step=step, loss=1.0))
        time.sleep(interval)
    writer.write(TrainingCompleted(job_id=JOB))


def write_bulk(log: Path, count: int, chunk: int = 1000) -> float:
    """Append ``count`` events as fast as possible (then the terminal event); returns the start."""
    lines = [
        json.dumps(
            {
                "id": i,
                "type": "training.log",
                "jobId": JOB,
                "timestamp": "t",
                "step": i,
                "loss": 1.0,
            }
        )
        for i in range(1, count + 1)
    ]
    lines.append(
        json.dumps({"id": count + 1, "type": "training.completed", "jobId": JOB, "timestamp": "t"})
    )
    start = time.perf_counter()
    with log.open("a") as fh:
        for i in range(0, len(lines), chunk):
            fh.write("\n".join(lines[i : i + chunk]) + "\n")
            fh.flush()
    return start


async def via_sidecar(url: str, on_step: Callable[[int], None]) -> None:
    """Follow the run with the real trainer; ``on_step`` runs inside its ``on_log`` callback."""
    trainer = create_async_trainer(
        name="bench",
        model="m",
        dataset={"type": "file", "path": "x"},
        backend=SidecarBackend(url),
        on_log=lambda ctx: on_step(ctx.step),
    )
    result = await trainer.wait()
    assert result.job.status == "completed"


async def via_sidecar_raw(url: str, on_step: Callable[[int], None]) -> None:
    """The sidecar alone: its SSE bytes read by a bare HTTP client, ``json.loads`` per frame.

    What the bare reader does with the file, done with the sidecar's stream instead; the gap
    to the full path is the client's (SSE parsing, reconnect bookkeeping, typed events).
    """
    buffer = b""
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client,
        client.stream("GET", url) as response,
    ):
        async for chunk in response.aiter_raw():
            buffer += chunk
            *frames, buffer = buffer.split(b"\n\n")
            for frame in frames:
                data = frame[frame.find(b"\ndata: ") + 7 :]
                if not data.startswith(b"{"):
                    continue  # ping, end
                obj = json.loads(data)
                if obj["type"] == "training.completed":
                    return
                on_step(int(obj["step"]))


async def via_bare_tail(log: Path, on_step: Callable[[int], None]) -> None:
    """The floor: a reader woken by inotify on each write, calling back per event."""
    from asyncinotify import Inotify, Mask

    offset = 0
    with Inotify() as inotify:
        inotify.add_watch(log, Mask.MODIFY)
        while True:
            lines, offset = read_complete_lines(log, offset)
            for line in lines:
                obj = json.loads(line)
                if obj["type"] == "training.completed":
                    return
                on_step(int(obj["step"]))
            await inotify.get()


def run_case(
    name: str, mode: str, follow: Any, log: Path, args: argparse.Namespace
) -> dict[str, float]:
    got: dict[int, float] = {}

    ready = threading.Event()

    def on_step(step: int) -> None:
        got[step] = time.perf_counter()
        if step == 0:
            ready.set()

    if mode == "latency":
        sent: dict[int, float] = {}
        writer = threading.Thread(
            target=write_paced, args=(log, args.latency_events, sent, 0.004, ready)
        )
        writer.start()
        asyncio.run(follow(on_step))
        writer.join()
        lat = sorted((got[s] - sent[s]) * 1000 for s in sent)
        return {
            "p50_ms": statistics.median(lat),
            "p99_ms": lat[int(len(lat) * 0.99) - 1],
            "max_ms": lat[-1],
        }
    box: dict[str, float] = {}
    writer = threading.Thread(
        target=lambda: box.update(start=write_bulk(log, args.throughput_events))
    )
    writer.start()
    asyncio.run(follow(on_step))
    writer.join()
    assert len(got) == args.throughput_events, (name, len(got))
    return {"events_per_s": args.throughput_events / (max(got.values()) - box["start"])}


def one_trial(tmp: Path, trial: int, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Every path in both modes once, each on a fresh log (and a fresh sidecar)."""
    results: dict[str, dict[str, float]] = {}
    for mode in ("latency", "throughput"):
        for name in PATHS:
            log = tmp / f"{trial}-{mode}-{name.replace(' ', '-')}.jsonl"
            log.touch()
            if name == "bare tail":
                res = run_case(name, mode, lambda cb, log=log: via_bare_tail(log, cb), log, args)
            else:
                proc, url = start_sidecar(log, tmp)
                via = via_sidecar if name == "sidecar" else via_sidecar_raw
                try:
                    res = run_case(name, mode, lambda cb, url=url, via=via: via(url, cb), log, args)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=30)
            results.setdefault(name, {}).update(res)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-events", type=int, default=400)
    parser.add_argument("--throughput-events", type=int, default=100000)
    parser.add_argument("--trials", type=int, default=3, help="interleaved runs of every path")
    args = parser.parse_args()
    trials = []
    with tempfile.TemporaryDirectory() as tmp_name:
        for trial in range(args.trials):
            trials.append(one_trial(Path(tmp_name), trial, args))
    metrics = ("p50_ms", "p99_ms", "max_ms", "events_per_s")
    median = {
        name: {m: statistics.median(t[name][m] for t in trials) for m in metrics} for name in PATHS
    }

    def ratio(name: str, metric: str) -> float:
        """The median over trials of the path's figure over the bare reader's in that trial."""
        return statistics.median(t[name][metric] / t["bare tail"][metric] for t in trials)

    print(
        f"sidecar and bare reader woken by inotify; {args.latency_events} paced events; "
        f"{args.throughput_events} bulk events; medians of {args.trials} interleaved trials"
    )
    print(f"{'path':<12} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'events/s':>10}")
    for name, r in median.items():
        print(
            f"{name:<12} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.2f} "
            f"{r['events_per_s']:>10.0f}"
        )
    for name in PATHS[1:]:
        print(
            f"ratio {name}/bare: p50 x{ratio(name, 'p50_ms'):.2f}, "
            f"p99 x{ratio(name, 'p99_ms'):.2f}, throughput x{ratio(name, 'events_per_s'):.2f}"
        )
    side = median["sidecar"]
    ok = side["p99_ms"] < 20 and side["events_per_s"] >= 5000
    ok = ok and ratio("sidecar", "p50_ms") <= 2 and ratio("sidecar", "events_per_s") >= 0.5
    print(
        "targets (p99 < 20 ms, >= 5000 events/s, p50 <= 2x bare, throughput >= 0.5x bare): "
        + ("met" if ok else "NOT met")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
