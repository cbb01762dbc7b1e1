"""GPU-idle time: how long a run holds its GPU without training, and why.

The trainer container starts holding the GPU when it starts (its process, PID 1 of the
container, is this worker), and stops when it exits. Between its start and the first optimizer
step, and between the last step and the terminal event, the GPU does nothing: each cause is
timed (model fetch, data fetch, checkpoint fetch, model load, tokenization) and the rest is
"other" (imports, hub revisions, storage checks). ``training.completed.metrics.gpuIdle`` carries
the figures, in seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

#: The causes timed before the first step, in the order they happen.
CAUSES = ("modelFetch", "dataFetch", "checkpointFetch", "modelLoad", "tokenize")


def process_start() -> float:
    """Unix time this process started (for the trainer: its container's start)."""
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime, after comm
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


class IdleClock:
    """Times the causes of idle GPU time and the first and last optimizer steps."""

    def __init__(self, started: float | None = None) -> None:
        self.started = process_start() if started is None else started
        self.parts = dict.fromkeys(CAUSES, 0.0)
        self.first_step: float | None = None
        self.last_step: float | None = None

    def timed(self, cause: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn`` and add its duration to ``cause``."""
        began = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            self.parts[cause] = self.parts.get(cause, 0.0) + time.time() - began

    def step(self) -> None:
        """An optimizer step ended."""
        now = time.time()
        if self.first_step is None:
            self.first_step = now
        self.last_step = now

    def metrics(self, now: float | None = None) -> dict[str, float]:
        """``beforeFirstStep`` (split into the causes and ``other``) and ``afterLastStep``."""
        now = time.time() if now is None else now
        before = max((self.first_step or now) - self.started, 0.0)
        parts = {k: round(v, 3) for k, v in self.parts.items()}
        other = max(before - sum(self.parts.values()), 0.0)
        after = max(now - self.last_step, 0.0) if self.last_step is not None else 0.0
        return {
            "beforeFirstStep": round(before, 3),
            **parts,
            "other": round(other, 3),
            "afterLastStep": round(after, 3),
        }
