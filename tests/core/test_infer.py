"""`ctx.infer()` / `ctx.ainfer()` against the fake backend: arguments (snake and Arkor camel),
what is sent, the two answer shapes, the stream's end at [DONE], and the errors users see."""

from __future__ import annotations

import json
from typing import Any

import pytest

from arkor_ops import create_async_trainer, create_trainer
from arkor_ops.chat import AsyncChatStream, ChatStream, CheckpointChat, collect_args
from arkor_ops.errors import CheckpointUnavailableError, InferenceError, InferRequestError
from arkor_ops.events import TrainingCompleted
from arkor_ops.inference import ChatCompletion, infer_request
from arkor_ops.results import CheckpointContext
from arkor_ops.testing import scripted_events
from tests.core.helpers import CONFIG, JOB

MESSAGES = [{"role": "user", "content": "Where is my refund?"}]
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}


def _problem_paths(exc: InferRequestError) -> list[str]:
    return [path for path, _ in exc.problems]


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"responseFormat": {"type": "json_schema"}}, "response_format"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
                }
            },
            "response_format.json_schema",
        ),
        ({"temperature": 3}, "temperature"),
        ({"maxTokens": 0}, "max_tokens"),
        ({"top_k": 5}, "top_k"),
        ({"tool_choice": "required"}, "<root>"),
    ],
)
def test_bad_arguments_raise_naming_the_field(fields: dict[str, Any], path: str) -> None:
    with pytest.raises(InferRequestError) as err:
        collect_args(None, {"messages": MESSAGES, **fields})
    paths = _problem_paths(err.value) or ["<root>"]
    assert any(p == path or (path == "<root>" and p == "") for p in paths), err.value.problems
    assert isinstance(err.value, ValueError)  # a bad argument, as Python users expect
    assert "invalid infer() arguments" in str(err.value)


def test_a_field_given_in_both_spellings_is_an_error() -> None:
    with pytest.raises(InferRequestError, match="max_tokens: given twice"):
        collect_args({"messages": MESSAGES, "maxTokens": 5}, {"max_tokens": 7})


def test_a_message_without_content_is_named() -> None:
    with pytest.raises(InferRequestError) as err:
        infer_request({"messages": [{"role": "user"}]})
    assert _problem_paths(err.value) == ["messages[0]"]


def test_the_wire_body_is_camel_case_and_stream_defaults_to_true() -> None:
    request = infer_request(
        {
            "messages": MESSAGES,
            "max_tokens": 9,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": SCHEMA},
            },
        }
    )
    wire = request.to_wire()
    assert wire["stream"] is True
    assert wire["maxTokens"] == 9
    assert wire["responseFormat"]["json_schema"]["schema"] == SCHEMA
    assert "temperature" not in wire  # unset fields are left out, as Arkor's JSON does


def test_sync_trainer_infer_answers_as_text_and_as_chunks_ending_at_done(fake_factory) -> None:
    fake = fake_factory(scripted_events(JOB, steps=2, outcome=None), infer_text='{"answer": "yes"}')
    got: list[Any] = []

    def on_checkpoint(ctx: CheckpointContext) -> None:
        whole = ctx.infer(
            {"messages": MESSAGES, "maxTokens": 20},  # Arkor's one-object call
            stream=False,
            responseFormat={"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}},
        )
        got.append(whole)
        with ctx.infer(messages=MESSAGES) as stream:
            got.append((list(stream), stream))
        fake.emit(TrainingCompleted(job_id=JOB))  # the run goes on to its end

    create_trainer(CONFIG, backend=fake, on_checkpoint=on_checkpoint).wait()

    whole, (chunks, stream) = got
    assert isinstance(whole, ChatCompletion)
    assert json.loads(whole.choices[0].message.content) == {"answer": "yes"}
    assert whole.model == f"{JOB}@step-2"
    assert isinstance(stream, ChatStream) and stream.done
    assert stream.text == '{"answer": "yes"}'
    assert chunks[-1].choices[0].finish_reason == "stop"

    posts = [r for r in fake.requests if r.path.endswith("/chat/completions")]
    assert [r.path for r in posts] == [f"/v1/jobs/{JOB}/checkpoints/2/chat/completions"] * 2
    assert posts[0].body["maxTokens"] == 20 and posts[0].body["stream"] is False
    assert posts[0].body["responseFormat"]["type"] == "json_schema"
    assert posts[1].body["stream"] is True


async def test_async_trainer_ainfer_and_the_error_after_the_run_ended(fake_factory) -> None:
    fake = fake_factory(scripted_events(JOB, steps=2, outcome=None))
    contexts: list[CheckpointContext] = []
    texts: list[str] = []

    async def on_checkpoint(ctx: CheckpointContext) -> None:
        contexts.append(ctx)
        stream = await ctx.ainfer(messages=MESSAGES)
        assert isinstance(stream, AsyncChatStream)
        async for _ in stream:
            pass
        assert stream.done
        texts.append(stream.text)
        await trainer.cancel()

    trainer = create_async_trainer(CONFIG, backend=fake, on_checkpoint=on_checkpoint)
    result = await trainer.wait()
    assert result.job.status == "cancelled"
    assert texts == ['{"answer": "fake"}']

    with pytest.raises(CheckpointUnavailableError) as err:
        await contexts[0].ainfer(messages=MESSAGES, stream=False)
    assert err.value.reason == "run_ended"
    assert err.value.job_id == JOB and err.value.step == 2
    assert f"run {JOB} has ended" in str(err.value) and "step 2" in str(err.value)


async def test_a_checkpoint_the_worker_does_not_hold_is_a_clear_error(fake_factory) -> None:
    fake = fake_factory(scripted_events(JOB, steps=2, outcome=None))
    trainer = create_async_trainer(CONFIG, backend=fake)
    await trainer.start()
    assert trainer.job is not None
    ctx = CheckpointContext(
        job=trainer.job, step=7, artifacts=[], adapter={}, _chat=CheckpointChat(fake, JOB, 7)
    )
    with pytest.raises(CheckpointUnavailableError, match="no longer holds checkpoint step 7"):
        await ctx.ainfer(messages=MESSAGES, stream=False)


def test_a_context_made_by_hand_says_it_has_no_backend() -> None:
    from arkor_ops.backends.base import TrainingJob

    ctx = CheckpointContext(job=TrainingJob(id="j", name="n"), step=1, artifacts=[], adapter={})
    with pytest.raises(InferenceError, match="no backend to ask"):
        ctx.infer(messages=MESSAGES)
