"""Backoff and polling: the one helper behind every wait-and-try-again loop.

- :class:`Backoff`: a growing sequence of delays (``initial · factor^n`` capped at ``maximum``),
  for loops that cannot be wrapped in a call (a poll inside an async generator).
- :func:`poll`: call ``check`` until it returns something other than ``None`` (or a deadline
  passes), sleeping the backoff's delays in between.
- :func:`retry` / :func:`retry_sync`: call ``fn`` until it succeeds, sleeping between failures,
  ``attempts`` times at most; ``before_sleep`` sees each failure (to log it, or to re-raise one
  that must not be retried).

The delays are an ``Iterable[float]``: a :class:`Backoff`, or
``ReconnectPolicy.delays()`` for the trainer's jittered numbers. No retry library: tenacity or
stamina would add a dependency to both images' locks for what is four small functions here, and
the project's backoff numbers already live in :class:`~arkor_ops.reconnect.ReconnectPolicy`
(public API, with an injectable sleep and random source that the tests use), which a library's
wait strategies would have to re-implement.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

__all__ = ["Backoff", "poll", "retry", "retry_sync"]


@dataclass(frozen=True)
class Backoff:
    """Delays ``initial``, ``initial·factor``, … capped at ``maximum`` (forever).

    Attributes:
        initial_seconds: the first delay.
        factor: how much each delay grows (1: a fixed interval).
        maximum_seconds: the cap (None: no cap).
    """

    initial_seconds: float
    factor: float = 1.0
    maximum_seconds: float | None = None

    def __iter__(self) -> Iterator[float]:
        delay = self.initial_seconds
        while True:
            yield delay if self.maximum_seconds is None else min(delay, self.maximum_seconds)
            delay *= self.factor


async def poll(
    check: Callable[[], Awaitable[T | None]],
    delays: Iterable[float],
    *,
    timeout_seconds: float | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """Await ``check()`` until it returns something other than None, sleeping ``delays``.

    Args:
        check: one look; None means "not yet".
        delays: seconds to sleep between looks (an endless :class:`Backoff`, say).
        timeout_seconds: give up once this long has passed after a look (None: never).
        sleep: the async sleep (injectable for tests).

    Returns:
        What ``check`` returned.

    Raises:
        TimeoutError: still None after ``timeout_seconds``, or ``delays`` ran out.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout_seconds is None else loop.time() + timeout_seconds
    for delay in itertools.chain(delays, [None]):
        found = await check()
        if found is not None:
            return found
        if delay is None or (deadline is not None and loop.time() > deadline):
            break
        await sleep(delay)
    raise TimeoutError(f"not done after {timeout_seconds} s")


async def retry(
    fn: Callable[[], Awaitable[T]],
    delays: Iterable[float],
    *,
    attempts: int,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    before_sleep: Callable[[int, BaseException, float], None] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """Await ``fn()`` until it returns, ``attempts`` tries at most, sleeping ``delays`` between.

    Args:
        fn: the call.
        delays: seconds to sleep after each failure but the last.
        attempts: tries in all (>= 1).
        retry_on: the exceptions that are retried; others propagate at once.
        before_sleep: called with (try number from 1, the error, the delay) before each sleep;
            it may raise to stop retrying.
        sleep: the async sleep (injectable for tests).

    Returns:
        What ``fn`` returned.

    Raises:
        Exception: the last error, after ``attempts`` tries (or one not in ``retry_on``).
    """
    waits = iter(delays)
    for attempt in range(1, attempts + 1):
        try:
            return await fn()
        except retry_on as exc:
            if attempt >= attempts:
                raise
            delay = next(waits)
            if before_sleep is not None:
                before_sleep(attempt, exc, delay)
            await sleep(delay)
    raise ValueError("attempts must be >= 1")


def retry_sync(
    fn: Callable[[], T],
    delays: Iterable[float],
    *,
    attempts: int,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    before_sleep: Callable[[int, BaseException, float], None] | None = None,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """Blocking twin of :func:`retry` (for the worker, which has no event loop).

    Raises:
        Exception: the last error, after ``attempts`` tries (or one not in ``retry_on``).
    """
    waits = iter(delays)
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except retry_on as exc:
            if attempt >= attempts:
                raise
            delay = next(waits)
            if before_sleep is not None:
                before_sleep(attempt, exc, delay)
            sleep(delay)
    raise ValueError("attempts must be >= 1")
