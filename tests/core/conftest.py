"""Helpers for the core tests: a fake backend on loopback and a recording, instant sleep."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from arkor_ops import ReconnectPolicy
from arkor_ops.testing import FakeBackend
from tests.core.helpers import Sleeps


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
