"""The flow's termination path when Prefect's SIGTERM exception never reaches the wait task.

Prefect's SIGTERM handler raises ``TerminationSignal`` wherever the main thread is. Inside an
asyncio callback (a socket read of the event stream, say) asyncio logs the exception and carries
on; the task must still stop its job and let the exit through. The runner announced the
termination on Prefect's control channel first, as it does before it signals.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from types import FrameType
from typing import Any

import pytest


class _Job:
    """A job that runs until it is cancelled; records each cancel's ``wait``."""

    def __init__(self) -> None:
        self.cancels: list[bool] = []

    async def wait(self) -> None:
        await asyncio.Event().wait()

    async def cancel(self, *, wait: bool = True) -> None:
        self.cancels.append(wait)


async def test_a_sigterm_swallowed_by_an_asyncio_callback_still_stops_the_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect._internal import control_listener
    from prefect.exceptions import TerminationSignal

    from arkor_ops.flows import training

    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", str(uuid.uuid4()))
    monkeypatch.setenv("ARKOR_FLOW_CANCEL_CHECK_SECONDS", "0")  # only the signal is left

    async def cancelling(flow_run_id: uuid.UUID, client: Any = None) -> bool:
        return True  # the flow run is being cancelled (as a runner's SIGTERM means)

    monkeypatch.setattr(training, "_is_cancelling", cancelling)

    def bridge(signum: int, frame: FrameType | None) -> None:  # what Prefect's flow engine installs
        raise TerminationSignal(signal=signum)

    loop = asyncio.get_running_loop()
    swallowed: list[BaseException] = []
    loop.set_exception_handler(lambda _loop, context: swallowed.append(context["exception"]))

    def runner_cancels() -> None:
        control_listener._set_intent("cancel")  # what the control channel's reader does
        signal.raise_signal(signal.SIGTERM)  # the handler runs at once: raises in this callback

    previous = signal.signal(signal.SIGTERM, bridge)
    job = _Job()
    try:
        loop.call_later(0.3, runner_cancels)
        with pytest.raises(TerminationSignal):
            await asyncio.wait_for(training._follow_unless_cancelled(job), timeout=20)
    finally:
        signal.signal(signal.SIGTERM, previous)
        loop.set_exception_handler(None)
        control_listener.clear_intent()
    assert [type(e) for e in swallowed] == [TerminationSignal]  # asyncio did swallow it
    assert job.cancels == [False]  # stopped on the way out, without waiting for the end
