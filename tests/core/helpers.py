"""Helpers of the tests in tests/core/ (their fixtures are in conftest.py)."""

from __future__ import annotations

from typing import Any

JOB = "fake-job-1"


CONFIG: dict[str, Any] = {
    "name": "support-bot-v1",
    "model": "unsloth/gemma-3-270m-it",
    "dataset": {"type": "huggingface", "name": "arkorlab/triage-demo"},
    "lora": {"r": 16, "alpha": 16, "loadIn4bit": True},
    "maxSteps": 100,
}


class Sleeps:
    """An injected sleep that records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
