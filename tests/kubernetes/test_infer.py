"""`ctx.infer()` from `on_checkpoint` on the local cluster: the request goes through the API
server's pod proxy to the run pod's sidecar, which hands it to the worker; the answer comes from
that checkpoint and validates against a strict JSON schema, and after the run a call says the
run ended."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.errors import CheckpointUnavailableError
from arkor_ops.results import CheckpointContext

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.train, pytest.mark.timeout(600)]

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "account", "bug"]},
        "urgent": {"type": "boolean"},
        "summary": {"type": "string", "maxLength": 12},
    },
    "required": ["category", "urgent", "summary"],
    "additionalProperties": False,
}
TICKET = [{"role": "user", "content": "I was charged twice this month."}]


async def test_on_checkpoint_infer_through_the_pod_proxy_follows_the_schema(
    backend: KubernetesBackend, run_config: Callable[..., dict[str, Any]]
) -> None:
    seen: list[CheckpointContext] = []
    replies: list[Any] = []
    chunks: list[Any] = []

    async def on_checkpoint(ctx: CheckpointContext) -> None:
        if seen:
            return
        seen.append(ctx)
        replies.append(
            await ctx.ainfer(
                messages=TICKET,
                temperature=0,
                max_tokens=200,  # room for the whole object: a cut answer is finish_reason "length"
                stream=False,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "triage", "schema": SCHEMA, "strict": True},
                },
            )
        )
        async with await ctx.ainfer(messages=TICKET, max_tokens=4) as stream:
            chunks.extend([chunk async for chunk in stream])
            chunks.append(stream.done)
        await trainer.cancel()  # asked and answered while the pod trains: enough

    trainer = create_async_trainer(
        **run_config(max_steps=5000, save_steps=200),
        backend=backend,
        on_checkpoint=on_checkpoint,
        idempotency_key="infer-1",
    )
    result = await trainer.wait()
    assert result.job.status == "cancelled", result

    ctx = seen[0]
    (reply,) = replies
    text = reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop", text
    jsonschema.validate(json.loads(text), SCHEMA)  # the constraint, not the tiny model, did it
    assert reply.model == f"{ctx.job.id}@step-{ctx.step}"
    assert reply.usage.training_pause_seconds is not None

    *streamed, done = chunks
    assert done is True  # the wire said [DONE], through the pod proxy
    assert streamed[0].choices[0].delta.role == "assistant"

    with pytest.raises(CheckpointUnavailableError, match=rf"{ctx.job.id}.*step {ctx.step}") as err:
        await ctx.ainfer(messages=TICKET, stream=False)
    assert err.value.reason == "run_ended"
