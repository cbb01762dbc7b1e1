"""The 14 port notes of the Arkor reference (research/arkor.md §8), one named test each.

Every test talks HTTP to :class:`arkor_ops.testing.FakeBackend` on loopback. Where a note is about
something our port does not have, the docstring says which behaviour of ours stands in for it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from arkor_ops import (
    AbortController,
    BackendError,
    ConfigError,
    ReconnectGiveUpError,
    ReconnectPolicy,
    StreamError,
    create_async_trainer,
    create_trainer,
)
from arkor_ops.events import TrainingLog, TrainingStarted, encode_frame, ping_frame
from arkor_ops.testing import Connection, Fault, scripted_events
from tests.core.helpers import CONFIG, JOB


def _walk(value: Any) -> list[tuple[str, Any]]:
    """(key, value) pairs of every mapping inside ``value``."""
    if isinstance(value, dict):
        pairs = list(value.items())
        for item in value.values():
            pairs += _walk(item)
        return pairs
    if isinstance(value, list):
        return [p for item in value for p in _walk(item)]
    return []


def test_note01_config_validated_at_construction_without_backend_calls(fake_factory):
    """Arkor checks only `model` at construction. Our port validates the whole config there
    (DESIGN.md: any model id is allowed, so model ids are not restricted) and still contacts
    nothing: the backend is first reached on start()."""
    fake = fake_factory(scripted_events(JOB))
    with pytest.raises(ConfigError) as info:
        create_trainer({**CONFIG, "lora": {"r": 0, "alpha": 16}}, backend=fake)
    assert ("lora.r", "Input should be greater than 0") in info.value.problems
    for model in ("unsloth/gemma-3-270m-it", "./models/tiny", "s3://bucket/models/base"):
        trainer = create_trainer({**CONFIG, "model": model}, backend=fake)
        assert trainer.config.model == model
        assert trainer.job_id is None
    assert fake.requests == []


def test_note02_wire_mapping_is_camel_case_without_undefined_fields(fake_factory):
    """Arkor flattens lora into loraR/loraAlpha and renames dataset to datasetSource. Our wire
    form is `TrainerConfig.to_wire()`: camelCase keys, nested `lora`, undefined fields omitted,
    and the run name at the top level of the submit body and of the job."""
    fake = fake_factory(scripted_events(JOB))
    trainer = create_trainer(
        name="wire-test",
        model="m",
        dataset={"type": "huggingface", "name": "arkorlab/triage-demo"},
        lora={"r": 8, "alpha": 16, "max_length": 512, "load_in_4bit": True},
        max_steps=10,
        learning_rate=2e-4,
        backend=fake,
    )
    trainer.start()
    (body,) = fake.submits
    assert body["name"] == "wire-test"
    config = body["config"]
    assert config["maxSteps"] == 10
    assert config["learningRate"] == 2e-4
    assert config["lora"] == {
        "r": 8,
        "alpha": 16,
        "maxLength": 512,
        "loadIn4bit": True,
        "dropout": 0.0,
    }
    assert config["dataset"]["name"] == "arkorlab/triage-demo"
    pairs = _walk(config)
    assert all(value is not None for _, value in pairs), "undefined fields are omitted"
    assert not [key for key, _ in pairs if "_" in key], "keys are camelCase"
    assert "numTrainEpochs" not in config
    assert trainer.job is not None
    assert trainer.job.name == "wire-test"


async def test_note03_start_is_idempotent_and_makes_no_request_once_cached(fake_factory):
    """A second start() returns the same job id without a request; we also close Arkor's race:
    concurrent start() calls submit once."""
    fake = fake_factory(scripted_events(JOB))
    trainer = create_async_trainer(CONFIG, backend=fake)
    first, second = await asyncio.gather(trainer.start(), trainer.start())
    assert first == second
    assert first.job_id == JOB
    requests = len(fake.requests)
    assert (await trainer.start()).job_id == JOB
    assert len(fake.requests) == requests
    assert len(fake.submits) == 1


@pytest.mark.parametrize(
    ("outcome", "connection", "status"),
    [
        ("completed", Connection(), "completed"),
        ("failed", Connection(), "failed"),
        (None, Connection(frames=3, then="end"), "running"),
    ],
)
async def test_note04_wait_auto_starts_and_resolves_on_completed_failed_or_end(
    fake_factory, outcome, connection, status
):
    """wait() submits when needed and resolves on training.completed, training.failed (returning,
    not raising) or an `end` frame (with the last known status); it never polls the job."""
    fake = fake_factory(scripted_events(JOB, outcome=outcome), connections=[connection])
    trainer = create_async_trainer(CONFIG, backend=fake)
    result = await trainer.wait()
    assert len(fake.submits) == 1
    assert result.job.status == status
    if outcome == "failed":
        assert result.job.error == "CUDA OOM"
        assert result.artifacts == []
    assert [r.method for r in fake.requests if r.method == "GET"] == ["GET"]  # the stream only


async def test_note05_dispatch_uses_json_type_keepalive_and_end_use_event_name(fake_factory):
    """Data frames dispatch on the JSON `type`, whatever the SSE event name; `ping` and `end`
    are recognised by the event name, whatever their data."""
    log = TrainingLog(id=1, job_id=JOB, step=7, loss=0.5).model_dump(mode="json", by_alias=True)
    completed = json.dumps({"type": "training.completed", "jobId": JOB})
    before = (
        encode_frame("training.completed", json.dumps(log), 1),  # name lies; type decides
        encode_frame("ping", completed),  # a keepalive, whatever its data
        encode_frame("end"),
    )
    fake = fake_factory(connections=[Connection(before=before, frames=0, then="hang")])
    seen: list[Any] = []
    trainer = create_async_trainer(
        CONFIG, backend=fake, on_log=seen.append, on_completed=seen.append
    )
    result = await trainer.wait()
    assert [(type(c).__name__, c.step) for c in seen] == [("LogContext", 7)]
    assert result.job.status == "queued"


async def test_note06_callbacks_awaited_one_at_a_time_and_a_throw_is_not_retried(fake_factory):
    """Each callback (sync or async) finishes before the next event is read; a callback that
    raises makes wait() raise the same object, with no reconnect and no on_failed."""
    fake = fake_factory(scripted_events(JOB, steps=3))
    order: list[str] = []
    boom = RuntimeError("callback broke")

    async def on_log(ctx):
        order.append(f"log{ctx.step}:begin")
        await asyncio.sleep(0.01)
        order.append(f"log{ctx.step}:end")
        if ctx.step == 3:
            raise boom

    trainer = create_async_trainer(
        CONFIG,
        backend=fake,
        on_started=lambda ctx: order.append("started"),
        on_log=on_log,
        on_checkpoint=lambda ctx: order.append(f"ckpt{ctx.step}"),
        on_failed=lambda ctx: order.append("failed"),
    )
    with pytest.raises(RuntimeError) as info:
        await trainer.wait()
    assert info.value is boom
    assert order == [
        "started",
        "log1:begin",
        "log1:end",
        "log2:begin",
        "log2:end",
        "ckpt2",
        "log3:begin",
        "log3:end",
    ]
    assert len(fake.stream_requests) == 1
    assert fake.cancels == []


async def test_note07_log_metrics_null_and_job_patched_before_callbacks(fake_factory):
    """Missing (and non-finite) log metrics are None; the job snapshot a callback sees is already
    patched: running + started_at on started, completed/failed + completed_at at the end."""
    started = TrainingStarted(job_id=JOB, timestamp="2026-01-01T00:00:00.000Z")
    events = [
        started,
        {"type": "training.log", "jobId": JOB, "step": 1, "timestamp": "t"},
        {"type": "training.log", "jobId": JOB, "step": 2, "loss": "NaN", "evalLoss": 0.7},
        {"type": "training.failed", "jobId": JOB, "error": "boom", "timestamp": "T-end"},
    ]
    fake = fake_factory(events)
    seen: list[Any] = []
    trainer = create_async_trainer(
        CONFIG,
        backend=fake,
        on_started=seen.append,
        on_log=seen.append,
        on_failed=seen.append,
    )
    result = await trainer.wait()
    on_started, log1, log2, on_failed = seen
    assert (on_started.job.status, on_started.job.started_at) == (
        "running",
        "2026-01-01T00:00:00.000Z",
    )
    assert (log1.loss, log1.eval_loss, log1.learning_rate, log1.epoch) == (None,) * 4
    assert log1.samples_per_second is None
    assert (log2.loss, log2.eval_loss) == (None, 0.7)
    assert log1.job.status == "running"
    assert (on_failed.job.status, on_failed.job.completed_at) == ("failed", "T-end")
    assert on_failed.error == on_failed.job.error == "boom"
    assert result.job == on_failed.job


@pytest.mark.parametrize("status", [404, 408, 429, 500, 502, 503, 504])
async def test_note08_backoff_schedule_and_retried_statuses(fake_factory, policy, sleeps, status):
    """Failures wait 1 s·2^n (jitter off here), a clean close after progress waits exactly 1 s
    without counting, a zero-progress close counts; 404/408/429/5xx are retried."""
    fake = fake_factory(
        scripted_events(JOB, steps=2),
        connections=[
            Connection(status=status),
            Connection(status=status),
            Connection(frames=0, then="close"),  # zero progress: counts
            Connection(frames=2, then="close"),  # progress: exactly 1 s, resets the counter
            Connection(status=status),
        ],
    )
    result = await create_async_trainer(CONFIG, backend=fake, reconnect=policy).wait()
    assert result.job.status == "completed"
    assert sleeps.delays == [1.0, 2.0, 4.0, 1.0, 1.0]


@pytest.mark.parametrize("status", [401, 403, 410, 426])
async def test_note08_fatal_statuses_are_not_retried(fake_factory, policy, sleeps, status):
    """401/403/410/426 when opening the stream raise StreamError at once."""
    fake = fake_factory(scripted_events(JOB), connections=[Connection(status=status)])
    with pytest.raises(StreamError) as info:
        await create_async_trainer(CONFIG, backend=fake, reconnect=policy).wait()
    assert info.value.status == status
    assert not info.value.retryable
    assert sleeps.delays == []
    assert len(fake.stream_requests) == 1


async def test_note09_give_up_text_counts_attempts_and_pings_never_reset(fake_factory, sleeps):
    """With max_attempts=2, three consecutive failures give up with "failed 3 consecutive times"
    and the last error as __cause__; pings in between do not reset the counter, data frames do."""
    pings = Connection(before=(ping_frame(), ping_frame()), frames=0, then="drop")
    fake = fake_factory(
        scripted_events(JOB),
        connections=[
            Connection(status=503),
            Connection(frames=1, then="drop"),  # a data frame: counter back to 0, then 1
            pings,  # 2: pings are not progress
            Connection(status=502, error="bad gateway"),  # 3: give up
        ],
    )
    policy = ReconnectPolicy(max_attempts=2, sleep=sleeps, random=lambda: 0.5)
    with pytest.raises(ReconnectGiveUpError) as info:
        await create_async_trainer(CONFIG, backend=fake, reconnect=policy).wait()
    assert str(info.value) == "Trainer SSE stream failed 3 consecutive times; giving up."
    cause = info.value.__cause__
    assert isinstance(cause, StreamError)
    assert cause.status == 502
    assert "bad gateway" in str(cause)
    assert sleeps.delays == [1.0, 1.0, 2.0]


async def test_note10_abort_rejects_with_reason_and_sends_no_request(fake_factory):
    """An aborted signal makes wait() raise its reason (an exception reason is raised as is)
    before anything is sent: no submit, no stream, no cancel."""
    fake = fake_factory(scripted_events(JOB))
    controller = AbortController()
    reason = TimeoutError("deadline passed")
    controller.abort(reason)
    trainer = create_async_trainer(CONFIG, backend=fake, abort_signal=controller.signal)
    with pytest.raises(TimeoutError) as info:
        await trainer.wait()
    assert info.value is reason
    assert fake.requests == []


async def test_note11_cancel_before_start_is_a_noop_after_start_posts_and_errors_propagate(
    fake_factory,
):
    """cancel() before a job exists sends nothing; afterwards it POSTs, and a refusal raises
    BackendError with the backend's message and status."""
    fake = fake_factory(
        scripted_events(JOB), cancel_faults=[Fault(status=409, error="already cancelled")]
    )
    trainer = create_async_trainer(CONFIG, backend=fake)
    await trainer.cancel()
    assert fake.requests == []
    await trainer.start()
    with pytest.raises(BackendError) as info:
        await trainer.cancel()
    assert (str(info.value), info.value.status) == ("already cancelled", 409)
    await trainer.cancel()
    assert fake.cancels == [JOB, JOB]
    assert [r.path for r in fake.requests if r.method == "POST"][-1] == f"/v1/jobs/{JOB}/cancel"


async def test_note12_checkpoint_context_binds_the_adapter_to_that_checkpoint(fake_factory):
    """Arkor's on_checkpoint gets `infer()` bound to the checkpoint; ours too (`ctx.infer()` /
    `ctx.ainfer()`, asked of that step: tests/core/test_infer.py, and the real worker in
    tests/local/test_infer.py). The context also carries the binding as data: `adapter` =
    {"kind": "checkpoint", "jobId", "step"} of that checkpoint, plus its artifacts as sent."""
    fake = fake_factory(scripted_events(JOB, steps=4, checkpoint_every=2))
    seen: list[Any] = []
    await create_async_trainer(CONFIG, backend=fake, on_checkpoint=seen.append).wait()
    assert [c.adapter for c in seen] == [
        {"kind": "checkpoint", "jobId": JOB, "step": 2},
        {"kind": "checkpoint", "jobId": JOB, "step": 4},
    ]
    assert [(a.kind, a.step) for c in seen for a in c.artifacts] == [
        ("checkpoint", 2),
        ("checkpoint", 4),
    ]


@pytest.mark.parametrize(
    ("connection", "message"),
    [
        (Connection(status=403, error="token expired"), "token expired"),
        (Connection(status=403, error=None, body="proxy says no"), "proxy says no"),
        (Connection(status=403, error=None), "HTTP 403"),
    ],
)
async def test_note13_error_message_from_error_field_then_text_then_status(
    fake_factory, connection, message
):
    """Our port has no X-Arkor-Client header or scope query (a backend is a Python object, not a
    versioned cloud API). What carries over is the error text: StreamError/BackendError take
    the body's `error` field, else the body text, else `HTTP <status>`; the stream request
    asks for `text/event-stream`."""
    fake = fake_factory(
        scripted_events(JOB),
        connections=[connection],
        submit_faults=[
            Fault(status=connection.status, error=connection.error, body=connection.body)
        ],
    )
    trainer = create_async_trainer(CONFIG, backend=fake)
    with pytest.raises(BackendError) as submit_error:
        await trainer.start()
    assert str(submit_error.value) == message
    with pytest.raises(StreamError) as stream_error:
        await trainer.wait()
    assert str(stream_error.value).endswith(message)
    assert stream_error.value.status == 403
    assert fake.stream_requests[0].headers["accept"] == "text/event-stream"


async def test_note14_secrets_never_in_wire_repr_or_events(fake_factory):
    """Arkor's note is about credentials files; ours has none (backends read kubeconfig / env).
    The equivalent guarantee: a secret (the blob dataset token) is never in to_wire(), a repr,
    the submit request, the job, or anything a callback sees; only secret_env() carries it."""
    token = "tok-5ecret-do-not-leak"
    config = {**CONFIG, "dataset": {"type": "blob", "url": "https://x/d.jsonl", "token": token}}
    fake = fake_factory(scripted_events(JOB))
    seen: list[Any] = []
    trainer = create_async_trainer(
        config, backend=fake, on_started=seen.append, on_log=seen.append, on_completed=seen.append
    )
    result = await trainer.wait()
    texts = [
        json.dumps(trainer.config.to_wire()),
        repr(trainer.config),
        str(trainer.config),
        repr(trainer),
        json.dumps([r.body for r in fake.requests]),
        json.dumps([r.headers for r in fake.requests]),
        repr(result),
        repr(seen),
    ]
    assert all(token not in text for text in texts)
    assert trainer.config.secret_env() == {"ARKOR_DATASET_TOKEN": token}
