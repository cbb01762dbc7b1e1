"""Helpers for the core tests: a fake backend on loopback and a recording, instant sleep."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from arkor_ops import ReconnectPolicy
from arkor_ops.testing import FakeBackend

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


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def policy(sleeps: Sleeps) -> ReconnectPolicy:
    """Arkor's defaults, no jitter (r = 0.5), instant recorded sleeps."""
    return ReconnectPolicy(sleep=sleeps, random=lambda: 0.5)


@pytest.fixture
def fake_factory() -> Iterator[Any]:
    made: list[FakeBackend] = []

    def make(*args: Any, **kwargs: Any) -> FakeBackend:
        fake = FakeBackend(*args, **kwargs)
        made.append(fake)
        return fake

    yield make
    for fake in made:
        fake.close()
