"""arkor_ops.follow.follow, the one loop that reads a run's frames, over real HTTP to the fake.

What ``wait()`` does with it (reconnect numbers, resume, abort) is in test_reconnect.py and
test_abort.py; here the parts only ``arkor-ops logs`` and the Kubernetes backend's peek use:
stop at an id, stop when idle, one connection without a policy.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from arkor_ops import ReconnectGiveUpError, ReconnectPolicy
from arkor_ops.errors import StreamError
from arkor_ops.events import Frame, ping_frame
from arkor_ops.follow import follow
from arkor_ops.testing import Connection, scripted_events
from tests.core.helpers import JOB, Sleeps


async def _read(fake: Any, **kwargs: Any) -> list[Frame]:
    frames = follow(lambda after: fake.events(JOB, after), **kwargs)
    async with contextlib.aclosing(frames):
        return [frame async for frame in frames]


async def test_it_stops_after_the_frame_that_reaches_upto(fake_factory):
    fake = fake_factory(scripted_events(JOB, steps=3, outcome=None))  # the run goes on
    frames = await _read(fake, upto=3, first_frame_seconds=5)
    assert [f.id for f in frames] == ["1", "2", "3"]


async def test_it_stops_when_the_stream_goes_idle_and_resumes_after_after(fake_factory):
    fake = fake_factory(
        scripted_events(JOB, steps=2, outcome=None),
        connections=[Connection(before=(ping_frame(),))],
    )
    frames = await _read(fake, after="1", first_frame_seconds=5, idle_seconds=0.3)
    assert [f.id for f in frames] == ["2", "3", "4"]  # the ping is not yielded
    assert fake.last_event_ids == ["1"]


async def test_without_a_policy_a_failure_propagates_and_nothing_reconnects(fake_factory):
    fake = fake_factory(scripted_events(JOB), connections=[Connection(status=503)])
    with pytest.raises(StreamError) as info:
        await _read(fake)
    assert info.value.status == 503 and len(fake.stream_requests) == 1


async def test_with_a_policy_it_resumes_after_a_drop_and_ends_at_end(fake_factory):
    sleeps = Sleeps()
    fake = fake_factory(
        scripted_events(JOB, steps=2), connections=[Connection(frames=2, then="drop")]
    )
    frames = await _read(fake, policy=ReconnectPolicy(sleep=sleeps, random=lambda: 0.5))
    assert [f.id for f in frames if not f.is_end] == ["1", "2", "3", "4", "5"]
    assert frames[-1].is_end
    assert fake.last_event_ids == [None, "2"] and sleeps.delays == [1.0]


async def test_the_give_up_error_names_the_stream(fake_factory):
    fake = fake_factory(connections=[Connection(status=503)] * 2)
    policy = ReconnectPolicy(max_attempts=1, sleep=Sleeps(), random=lambda: 0.5)
    with pytest.raises(ReconnectGiveUpError, match=r"^logs failed 2 consecutive times"):
        await _read(fake, policy=policy, name="logs")
