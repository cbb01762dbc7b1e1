"""arkor_ops.polling: the backoff sequence, poll until done, retry until it works."""

from __future__ import annotations

import itertools

import pytest

from arkor_ops import ReconnectPolicy
from arkor_ops.polling import Backoff, poll, retry, retry_sync
from tests.core.helpers import Sleeps


def test_backoff_grows_by_its_factor_up_to_its_cap():
    assert list(itertools.islice(Backoff(0.2, 1.5, 1.0), 6)) == pytest.approx(
        [0.2, 0.3, 0.45, 0.675, 1.0, 1.0]
    )
    assert list(itertools.islice(Backoff(0.05), 3)) == [0.05, 0.05, 0.05]


def test_the_reconnect_policy_gives_its_delays_as_a_sequence():
    policy = ReconnectPolicy(random=lambda: 0.5)
    assert list(itertools.islice(policy.delays(), 8)) == [1, 2, 4, 8, 16, 32, 60, 60]


async def test_poll_returns_the_first_answer_and_sleeps_between_looks():
    sleeps, answers = Sleeps(), iter([None, None, "done"])

    async def check() -> str | None:
        return next(answers)

    assert await poll(check, Backoff(0.1, 2.0), sleep=sleeps) == "done"
    assert sleeps.delays == [0.1, 0.2]


async def test_poll_gives_up_after_its_timeout_or_when_the_delays_run_out():
    async def never() -> None:
        return None

    with pytest.raises(TimeoutError):
        await poll(never, Backoff(0.01), timeout_seconds=0.05)
    sleeps = Sleeps()
    with pytest.raises(TimeoutError):
        await poll(never, [0.1, 0.1], sleep=sleeps)
    assert sleeps.delays == [0.1, 0.1]  # three looks


async def test_retry_sleeps_after_each_failure_but_the_last_and_reraises_it():
    sleeps, calls, seen = Sleeps(), [], []

    async def flaky() -> str:
        calls.append(1)
        raise OSError(f"try {len(calls)}")

    with pytest.raises(OSError, match="try 3"):
        await retry(
            flaky,
            Backoff(0.4, 2.0),
            attempts=3,
            before_sleep=lambda n, exc, delay: seen.append((n, str(exc), delay)),
            sleep=sleeps,
        )
    assert sleeps.delays == [0.4, 0.8]
    assert seen == [(1, "try 1", 0.4), (2, "try 2", 0.8)]


def test_retry_sync_retries_only_what_it_is_told_to():
    calls = []

    def fails_once() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("blip")
        return len(calls)

    assert retry_sync(fails_once, [0.0], attempts=2, retry_on=ConnectionError) == 2

    def refuses() -> int:
        raise PermissionError("no")

    with pytest.raises(PermissionError):
        retry_sync(refuses, [0.0], attempts=5, retry_on=ConnectionError, sleep=pytest.fail)
