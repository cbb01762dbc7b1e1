"""wait()'s reconnect policy, over real HTTP: resume, backoff numbers, what counts as failure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arkor_ops import ReconnectGiveUpError, ReconnectPolicy, create_async_trainer
from arkor_ops.events import encode_frame
from arkor_ops.testing import MALFORMED_FRAME, Connection, FakeBackend, scripted_events
from tests.core.helpers import CONFIG, JOB, Sleeps


@pytest.mark.parametrize(
    ("attempt", "r", "expected"),
    [
        (0, 0.5, 1.0),
        (3, 0.5, 8.0),
        (0, 0.0, 0.75),  # -25 %
        (2, 0.9999, 4 * 1.249_95),  # almost +25 %
        (5, 0.0, 24.0),
        (6, 0.0, 45.0),  # 64 s capped to 60, then -25 %
        (6, 0.5, 60.0),
        (6, 0.9999, 60.0),  # +25 % of the cap is clamped back to the cap
        (50, 0.5, 60.0),
        (10_000, 0.5, 60.0),  # no overflow
    ],
)
def test_delay_is_base_times_two_to_the_n_with_jitter_capped_at_60_seconds(attempt, r, expected):
    policy = ReconnectPolicy(random=lambda: r)
    assert policy.delay(attempt) == pytest.approx(expected)


def test_delays_stay_within_25_percent_of_nominal_for_real_random_draws():
    policy = ReconnectPolicy()
    for attempt in range(10):
        nominal = min(2.0**attempt, 60.0)
        for _ in range(50):
            assert 0.75 * nominal <= policy.delay(attempt) <= min(1.25 * nominal, 60.0)


def test_policy_rejects_impossible_settings():
    with pytest.raises(ValueError, match="jitter"):
        ReconnectPolicy(jitter=2)
    with pytest.raises(ValueError, match="max_attempts"):
        ReconnectPolicy(max_attempts=-1)


def _run(fake: FakeBackend, policy: ReconnectPolicy, **callbacks: Any) -> Any:
    trainer = create_async_trainer(CONFIG, backend=fake, reconnect=policy, **callbacks)
    return asyncio.run(trainer.wait())


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=st.lists(
        st.tuples(st.integers(min_value=0, max_value=4), st.sampled_from(["drop", "close"])),
        max_size=4,
    )
)
def test_resume_after_drops_delivers_each_event_once_in_order(cuts):
    """However the stream is cut, reconnects resume with Last-Event-ID and every event reaches
    the callbacks exactly once, in order."""
    events = scripted_events(JOB, steps=5, checkpoint_every=2)  # 9 events, ids 1..9
    connections = [Connection(frames=n, then=then) for n, then in cuts]
    seen: list[str] = []
    sleeps = Sleeps()
    with FakeBackend(events, connections=connections) as fake:
        result = _run(
            fake,
            ReconnectPolicy(sleep=sleeps, random=lambda: 0.5),
            on_started=lambda ctx: seen.append("started"),
            on_log=lambda ctx: seen.append(f"log{ctx.step}"),
            on_checkpoint=lambda ctx: seen.append(f"ckpt{ctx.step}"),
            on_completed=lambda ctx: seen.append("completed"),
        )
        ids = fake.last_event_ids
    assert result.job.status == "completed"
    assert seen == [
        "started",
        "log1",
        "log2",
        "ckpt2",
        "log3",
        "log4",
        "ckpt4",
        "log5",
        "completed",
    ]
    # Each reconnect resumes after the last id delivered so far.
    # Each reconnect resumes after the last id delivered so far; none after the terminal event.
    delivered = 0
    expected_ids: list[str | None] = [None]
    for n, _ in cuts:
        delivered = min(delivered + n, len(events))
        if delivered == len(events):
            break
        expected_ids.append(str(delivered) if delivered else None)
    assert ids == expected_ids
    assert len(sleeps.delays) == len(expected_ids) - 1


async def test_clean_close_after_progress_waits_exactly_base_delay_and_is_not_counted(
    fake_factory, sleeps
):
    """Even with max_attempts=0 (give up on the first failure), closes after progress go on."""
    fake = fake_factory(
        scripted_events(JOB, steps=3),
        connections=[Connection(frames=1, then="close")] * 3,
    )
    policy = ReconnectPolicy(max_attempts=0, sleep=sleeps, random=lambda: 0.99)
    result = await create_async_trainer(CONFIG, backend=fake, reconnect=policy).wait()
    assert result.job.status == "completed"
    assert sleeps.delays == [1.0, 1.0, 1.0]  # no jitter, even with r = 0.99


@pytest.mark.parametrize(
    "before",
    [(), (encode_frame("ping"),), (MALFORMED_FRAME, encode_frame("ping"))],
    ids=["nothing", "only-pings", "only-malformed"],
)
async def test_a_close_without_progress_counts_as_a_failure(fake_factory, sleeps, before):
    fake = fake_factory(
        scripted_events(JOB), connections=[Connection(before=before, frames=0, then="close")]
    )
    policy = ReconnectPolicy(max_attempts=0, sleep=sleeps)
    with pytest.raises(ReconnectGiveUpError, match="failed 1 consecutive times"):
        await create_async_trainer(CONFIG, backend=fake, reconnect=policy).wait()
    assert sleeps.delays == []


async def test_network_errors_are_retried_with_backoff(fake_factory, policy, sleeps):
    fake = fake_factory(
        scripted_events(JOB),
        connections=[Connection(frames=0, then="drop"), Connection(frames=0, then="drop")],
    )
    result = await create_async_trainer(CONFIG, backend=fake, reconnect=policy).wait()
    assert result.job.status == "completed"
    assert sleeps.delays == [1.0, 2.0]


async def test_counter_resets_on_each_data_frame_never_on_pings(fake_factory, policy, sleeps):
    ping = encode_frame("ping")
    fake = fake_factory(
        scripted_events(JOB, steps=2),
        connections=[
            Connection(status=503),  # attempt 0 -> 1 s
            Connection(before=(ping, ping), frames=0, then="drop"),  # attempt 1 -> 2 s
            Connection(status=500),  # attempt 2 -> 4 s
            Connection(frames=1, then="drop"),  # data frame resets: attempt 0 -> 1 s
            Connection(status=429),  # attempt 1 -> 2 s
        ],
    )
    await create_async_trainer(CONFIG, backend=fake, reconnect=policy).wait()
    assert sleeps.delays == [1.0, 2.0, 4.0, 1.0, 2.0]


async def test_unknown_event_types_are_progress_but_skipped(fake_factory, sleeps):
    """Arkor counts a parseable frame of an unknown type as progress: the close that follows is
    a clean close after progress (1 s, not counted), and no callback fires for it."""
    status = encode_frame("status", '{"type":"status","status":"running"}', 1)
    fake = fake_factory(
        connections=[Connection(before=(status,), frames=0, then="close")],
    )
    fake.emit({"id": 2, "type": "training.completed", "jobId": JOB})
    seen: list[Any] = []
    policy = ReconnectPolicy(max_attempts=0, sleep=sleeps)
    trainer = create_async_trainer(
        CONFIG, backend=fake, reconnect=policy, on_started=seen.append, on_log=seen.append
    )
    result = await trainer.wait()
    assert result.job.status == "completed"
    assert seen == []
    assert sleeps.delays == [1.0]
    assert fake.last_event_ids == [None, "1"]


async def test_ids_of_pings_move_the_resume_point(fake_factory, policy):
    fake = fake_factory(
        scripted_events(JOB),
        connections=[Connection(before=(encode_frame("ping", "", 0),), frames=1, then="drop")],
    )
    await create_async_trainer(CONFIG, backend=fake, reconnect=policy).wait()
    assert fake.last_event_ids == [None, "1"]
