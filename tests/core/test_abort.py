"""AbortController: wait() raises at once, from any thread, and the run keeps going."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from arkor_ops import (
    AbortController,
    AbortError,
    ArkorOpsError,
    ReconnectPolicy,
    create_async_trainer,
    create_trainer,
)
from arkor_ops.testing import Connection, FakeBackend, scripted_events
from tests.core.helpers import CONFIG, JOB

ROOT = Path(__file__).resolve().parents[2]


def _abort_soon(controller: AbortController, reason: object = None) -> None:
    threading.Timer(0.05, controller.abort, args=(reason,)).start()


def _abort_after_first_request(fake: FakeBackend, controller: AbortController, reason: str) -> None:
    for _ in range(2000):  # up to 20 s; the test's own timeout is the real bound
        if fake.stream_requests:
            break
        threading.Event().wait(0.01)
    controller.abort(reason)


@pytest.mark.timeout(30)
async def test_abort_while_reading_a_silent_stream_raises_at_once_and_never_cancels(
    fake_factory,
):
    fake = fake_factory(
        scripted_events(JOB, steps=1, outcome=None),
        connections=[Connection(then="hang")],
    )
    controller = AbortController()
    trainer = create_async_trainer(
        CONFIG,
        backend=fake,
        abort_signal=controller.signal,
        on_log=lambda ctx: _abort_soon(controller),
    )
    # the stream hangs: only the abort can end wait() (within the test's timeout)
    with pytest.raises(AbortError) as info:
        await trainer.wait()
    assert info.value.reason is None
    assert isinstance(info.value, ArkorOpsError)
    assert fake.cancels == []
    assert fake.job is not None and fake.job.status == "queued"  # the run was left alone
    assert trainer.job_id == JOB


@pytest.mark.timeout(30)
async def test_abort_during_backoff_does_not_wait_for_the_delay(fake_factory):
    fake = fake_factory(scripted_events(JOB), connections=[Connection(status=503)])
    controller = AbortController()
    # real asyncio.sleep of an hour: only an abort that cuts the delay ends wait() in time
    policy = ReconnectPolicy(base_delay_seconds=3600.0, max_delay_seconds=3600.0)
    trainer = create_async_trainer(
        CONFIG, backend=fake, abort_signal=controller.signal, reconnect=policy
    )
    # abort once the 503 was served, so the abort lands in (or just before) the backoff,
    # however slowly this machine reaches it
    threading.Thread(
        target=_abort_after_first_request, args=(fake, controller, "user pressed stop")
    ).start()
    with pytest.raises(AbortError, match="user pressed stop") as info:
        await trainer.wait()
    assert info.value.reason == "user pressed stop"
    assert len(fake.stream_requests) == 1
    assert fake.cancels == []


def test_sync_trainer_abort_from_another_thread_raises_the_reason_itself(fake_factory):
    fake = fake_factory(scripted_events(JOB, outcome=None), connections=[Connection(then="hang")])
    controller = AbortController()
    reason = TimeoutError("flow run timed out")
    trainer = create_trainer(CONFIG, backend=fake, abort_signal=controller.signal)
    trainer.start()
    _abort_soon(controller, reason)
    with pytest.raises(TimeoutError) as info:
        trainer.wait()
    assert info.value is reason
    assert fake.cancels == []


async def test_a_running_callback_finishes_before_the_abort_takes_effect(fake_factory):
    """Only the waits on the backend are interrupted; user code is never cancelled halfway."""
    fake = fake_factory(scripted_events(JOB, steps=3, outcome=None))
    controller = AbortController()
    steps: list[str] = []

    async def on_log(ctx):
        steps.append(f"begin{ctx.step}")
        controller.abort()
        await asyncio.sleep(0.05)
        steps.append(f"end{ctx.step}")

    trainer = create_async_trainer(
        CONFIG, backend=fake, abort_signal=controller.signal, on_log=on_log
    )
    with pytest.raises(AbortError):
        await trainer.wait()
    assert steps == ["begin1", "end1"]


def test_abort_signal_is_idempotent_and_tells_listeners_once():
    controller = AbortController()
    calls: list[int] = []
    controller.signal.add_listener(lambda: calls.append(1))
    assert not controller.signal.aborted
    controller.abort("first")
    controller.abort("second")
    assert controller.signal.aborted
    assert controller.signal.reason == "first"
    assert calls == [1]
    controller.signal.add_listener(lambda: calls.append(2))  # already aborted: called now
    assert calls == [1, 2]
    with pytest.raises(AbortError, match="first"):
        controller.signal.throw_if_aborted()


def test_keyboard_interrupt_in_sync_wait_propagates_promptly_and_keeps_the_run(tmp_path):
    """Ctrl-C while blocked in Trainer.wait() reaches the caller at once (the CLI then asks
    cancel-or-detach); nothing is cancelled on the backend."""
    script = tmp_path / "interrupt.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, threading, time
            from arkor_ops import create_trainer
            from arkor_ops.testing import Connection, FakeBackend, scripted_events

            config = {CONFIG!r}
            with FakeBackend(scripted_events("{JOB}", outcome=None),
                             connections=[Connection(then="hang")]) as fake:
                def interrupt(ctx):
                    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
                trainer = create_trainer(config, backend=fake, on_started=interrupt)
                try:
                    trainer.wait()  # the stream hangs: only the interrupt ends it
                except KeyboardInterrupt:
                    print("interrupted")
                print("cancels", fake.cancels, "job", trainer.job_id)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first == "interrupted"
    assert second == f"cancels [] job {JOB}"
