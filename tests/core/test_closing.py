"""What opens closes: trainers, evaluators and backends are context managers, and a script that
follows a run to its end leaves nothing behind (no pending task, no unclosed resource)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from arkor_ops import Backend, create_async_trainer, create_evaluator, create_trainer
from arkor_ops.backends.base import JobDescription
from arkor_ops.testing import FakeBackend, scripted_events
from tests.core.helpers import CONFIG, JOB

REPO = Path(__file__).resolve().parents[2]

SCRIPT_HEAD = f"""
from arkor_ops import create_trainer
from arkor_ops.testing import FakeBackend, scripted_events

CONFIG = {CONFIG!r}
fake = FakeBackend(scripted_events("fake-1", steps=3), job_id="fake-1")
"""

#: A script that lets a finished trainer (and its fake backend) go without closing either,
#: and goes on (the trainer is garbage-collected while the interpreter still runs).
LETS_GO = """
import gc, time

def train():
    trainer = create_trainer(CONFIG, backend=fake)
    print(trainer.wait().job.status)

train()
gc.collect()
time.sleep(0.5)
"""

#: The same, the interpreter exiting right after the trainer went (its loop still draining).
EXITS = """
def train():
    trainer = create_trainer(CONFIG, backend=fake)
    print(trainer.wait().job.status)

train()
"""

#: The same with the trainer and the fake closed by their context managers.
CLOSES = """
with fake, create_trainer(CONFIG, backend=fake) as trainer:
    print(trainer.wait().job.status)
"""


def run_script(body: str) -> subprocess.CompletedProcess[str]:
    """Run ``body`` under ``-X dev`` (asyncio debug, every warning shown) with ResourceWarnings
    as errors, as a user's script would run, to its end and interpreter exit."""
    code = textwrap.dedent(SCRIPT_HEAD) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


@pytest.mark.parametrize(
    "body", [LETS_GO, EXITS, CLOSES], ids=["lets-go", "exits-at-once", "closes"]
)
def test_a_finished_script_leaves_no_pending_task_or_resource(body: str) -> None:
    out = run_script(body)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "completed"
    for leak in ("Task was destroyed", "ResourceWarning", "was never awaited", "Unclosed"):
        assert leak not in out.stderr, out.stderr


def test_a_loop_let_go_at_exit_finishes_closing_its_streams() -> None:
    """The interpreter exits while a let-go loop still closes a stream (a network close takes a
    moment): exit waits for it, and nothing is destroyed pending."""
    code = textwrap.dedent(
        """
        import asyncio
        from arkor_ops.blocking import BlockingRunner

        async def stream():
            try:
                yield 1
                yield 2
            finally:
                await asyncio.sleep(0.5)
                print("stream closed")

        held = []

        async def start():
            gen = stream()
            await gen.__anext__()
            held.append(gen)

        runner = BlockingRunner("arkor-ops-test-loop")
        runner.run(start())
        del runner
        """
    )
    out = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "stream closed"
    assert "Task was destroyed" not in out.stderr, out.stderr


def _loop_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


class ClosingBackend(FakeBackend):
    """A fake that counts how often it was closed."""

    closed = 0

    async def aclose(self) -> None:
        type(self).closed += 1


def test_trainer_closes_its_loop_thread_and_the_backend_it_resolved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import arkor_ops.backends

    before = set(_loop_threads("arkor-ops-trainer-loop"))  # other tests' may still be ending
    with ClosingBackend(scripted_events(JOB, steps=1)) as fake:
        monkeypatch.setattr(arkor_ops.backends, "resolve_backend", lambda *a, **k: fake)
        ClosingBackend.closed = 0
        with create_trainer(CONFIG) as trainer:  # resolves its own backend: the fake
            assert trainer.wait().job.status == "completed"
            [ours] = set(_loop_threads("arkor-ops-trainer-loop")) - before
        assert ClosingBackend.closed == 1
        assert not ours.is_alive()
        with pytest.raises(RuntimeError, match="closed"):
            trainer.start()
        trainer.close()  # twice is harmless
        assert ClosingBackend.closed == 1


def test_trainer_leaves_a_given_backend_open(fake_factory) -> None:
    fake = fake_factory(scripted_events(JOB, steps=1))
    with create_trainer(CONFIG, backend=fake) as trainer:
        assert trainer.wait().job.status == "completed"
    assert fake.submits  # the fake, given, still serves
    assert create_trainer(CONFIG, backend=fake).wait().job.status == "completed"


async def test_async_trainer_and_backend_are_async_context_managers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import arkor_ops.backends

    with ClosingBackend(scripted_events(JOB, steps=1)) as fake:
        monkeypatch.setattr(arkor_ops.backends, "resolve_backend", lambda *a, **k: fake)
        ClosingBackend.closed = 0
        async with create_async_trainer(CONFIG) as trainer:
            assert (await trainer.wait()).job.status == "completed"
        assert ClosingBackend.closed == 1
        async with fake as entered:
            assert entered is fake
        assert ClosingBackend.closed == 2


def test_evaluator_is_a_context_manager_too() -> None:
    before = set(_loop_threads("arkor-ops-evaluator-loop"))
    fields = {
        "name": "eval-1",
        "model": "unsloth/gemma-3-270m-it",
        "evaluation": {
            "dataset": {"type": "file", "path": "/data/eval.jsonl"},
            "metrics": ["exact_match"],
        },
    }
    with ClosingBackend() as fake:
        with create_evaluator(backend=fake, **fields) as evaluator:
            assert evaluator.start() == fake.job_id
            [ours] = set(_loop_threads("arkor-ops-evaluator-loop")) - before
        assert not ours.is_alive()


async def test_the_backend_contract_has_harmless_defaults() -> None:
    class Minimal(Backend):
        async def submit(self, config, *, idempotency_key=None):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def events(self, job_id, last_event_id=None):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        async def cancel(self, job_id):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        async def describe(self, job_id):  # type: ignore[no-untyped-def]
            raise NotImplementedError

    from arkor_ops import BackendError, validate_config

    backend = Minimal()
    assert backend.job_id_for(validate_config(CONFIG), "key") is None
    assert await backend.jobs_by_flow_run() == {}
    with pytest.raises(BackendError, match="Minimal cannot list runs"):
        await backend.list_jobs()
    with pytest.raises(BackendError, match="cannot be built from the environment"):
        Minimal.from_env()


async def test_the_fake_implements_the_contract() -> None:
    from arkor_ops import validate_config

    with FakeBackend.from_env(
        events=scripted_events(JOB, steps=1), job_id=JOB, flow_run_id="flow-1"
    ) as fake:
        assert fake.job_id_for(validate_config(CONFIG), "any key") == JOB
        assert await fake.list_jobs() == []
        assert await fake.jobs_by_flow_run() == {}
        await create_async_trainer(CONFIG, backend=fake).start()
        listed = await fake.list_jobs()
        assert [type(d) for d in listed] == [JobDescription]
        assert [d.job.id for d in listed] == [JOB]
        assert await fake.jobs_by_flow_run() == {JOB: "flow-1"}
