"""The reconnect policy of ``wait()``: Arkor's backoff numbers, injectable for tests."""

from __future__ import annotations

import asyncio
import random as _random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ReconnectPolicy:
    """How ``wait()`` reconnects to the event stream (Arkor's defaults).

    Attributes:
        base_delay_seconds: first backoff delay, and the fixed delay after a clean close that
            followed progress.
        max_delay_seconds: cap of every delay.
        max_attempts: consecutive failures tolerated before giving up; ``None`` retries forever.
        jitter: relative jitter, uniform in ``±jitter``.
        sleep: the async sleep to use (injectable for tests).
        random: returns a float in ``[0, 1)`` (injectable for tests).
    """

    base_delay_seconds: float = 1.0
    max_delay_seconds: float = 60.0
    max_attempts: int | None = None
    jitter: float = 0.25
    sleep: Callable[[float], Awaitable[Any]] = field(default=asyncio.sleep, repr=False)
    random: Callable[[], float] = field(default=_random.random, repr=False)

    def __post_init__(self) -> None:
        if self.base_delay_seconds < 0 or self.max_delay_seconds < 0:
            raise ValueError("reconnect delays must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be within [0, 1]")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError("max_attempts must be >= 0 or None")

    def delay(self, attempt: int) -> float:
        """Backoff before reconnecting after failure number ``attempt`` (0-based, consecutive).

        Args:
            attempt: how many consecutive failures preceded this one.

        Returns:
            ``clamp(min(base·2^attempt, max) · (1 + jitter·(2r − 1)), 0, max)`` seconds.
        """
        exp = min(self.base_delay_seconds * 2.0 ** min(attempt, 64), self.max_delay_seconds)
        jittered = exp * (1 + self.jitter * (2 * self.random() - 1))
        return max(0.0, min(jittered, self.max_delay_seconds))

    def delays(self) -> Iterator[float]:
        """``delay(0)``, ``delay(1)``, …: the backoff as an endless sequence (for
        :mod:`arkor_ops.polling`)."""
        attempt = 0
        while True:
            yield self.delay(attempt)
            attempt += 1
