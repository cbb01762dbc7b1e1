"""A local endpoint (llama-server + the gateway) answers the official openai client, refuses
requests without a valid key, answers as transformers does, and swaps versions under load."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from arkor_ops.errors import CheckpointError
from arkor_ops.serving.endpoint import LocalEndpoint
from tests.serving.helpers import TICKET, greedy_transformers

pytestmark = pytest.mark.serving


def client(ep: LocalEndpoint, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=ep.url + "/v1", api_key=key, max_retries=0, timeout=60)


def ask(c: openai.OpenAI, **kw: Any) -> Any:
    return c.chat.completions.create(
        model="triage", messages=TICKET, max_tokens=8, temperature=0, **kw
    )


def test_completion_stream_and_models(endpoint: LocalEndpoint, adapters: dict[str, str]) -> None:
    key = endpoint.keys.create("ci")
    assert httpx.get(endpoint.url + "/health").status_code == 503  # nothing serves yet
    endpoint.deploy("1", adapters["a"])
    c = client(endpoint, key)

    answer = ask(c)
    text = answer.choices[0].message.content
    assert text
    assert answer.model == "triage@1"  # the answer names the version that gave it

    chunks = list(ask(c, stream=True))
    pieces = [ch.choices[0].delta.content or "" for ch in chunks if ch.choices]
    assert len([p for p in pieces if p]) > 1  # it really streamed, piece by piece
    assert "".join(pieces) == text  # greedy: the same answer either way

    assert [m.id for m in c.models.list()] == ["triage"]
    with pytest.raises(openai.NotFoundError, match="not served here"):
        c.chat.completions.create(model="gpt-4o", messages=TICKET, max_tokens=4)


def test_refuses_requests_without_a_valid_key(
    endpoint: LocalEndpoint, adapters: dict[str, str]
) -> None:
    key = endpoint.keys.create("ci")
    endpoint.deploy("1", adapters["a"])
    assert ask(client(endpoint, key)).choices[0].message.content

    with pytest.raises(openai.AuthenticationError):
        ask(client(endpoint, "ak-not-a-key"))
    bare = httpx.post(
        endpoint.url + "/v1/chat/completions",
        json={"model": "triage", "messages": TICKET, "max_tokens": 4},
    )
    assert bare.status_code == 401
    assert bare.json()["error"]["code"] == "invalid_api_key"
    assert "Authorization: Bearer <key>" in bare.json()["error"]["message"]
    assert httpx.get(endpoint.url + "/v1/models").status_code == 401

    stored = (endpoint.workdir / "keys.jsonl").read_text()
    assert key not in stored  # only its hash is kept
    endpoint.keys.revoke("ci")
    with pytest.raises(openai.AuthenticationError):
        ask(client(endpoint, key))


def test_answers_as_transformers_does(
    endpoint: LocalEndpoint, adapters: dict[str, str], tiny_model_dir: Path
) -> None:
    key = endpoint.keys.create("ci")
    endpoint.deploy("1", adapters["a"])
    served = ask(client(endpoint, key)).choices[0].message.content
    adapter = Path(adapters["a"].removeprefix("file://"))
    assert served == greedy_transformers(tiny_model_dir, adapter)


def test_swap_under_load(endpoint: LocalEndpoint, adapters: dict[str, str]) -> None:
    key = endpoint.keys.create("ci")
    endpoint.deploy("1", adapters["a"])
    c = client(endpoint, key)
    answer_a = ask(c).choices[0].message.content
    results: list[tuple[float, str, str | None]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def every_100ms() -> None:
        while not stop.is_set():
            t = time.monotonic()
            try:
                answer = ask(c)
                results.append((t, answer.model, answer.choices[0].message.content))
            except BaseException as exc:
                failures.append(exc)
            stop.wait(max(0.0, 0.1 - (time.monotonic() - t)))

    sender = threading.Thread(target=every_100ms)
    sender.start()
    try:
        time.sleep(1.0)
        started = time.monotonic()
        endpoint.deploy("2", adapters["b"])
        done = time.monotonic()
        time.sleep(1.5)
    finally:
        stop.set()
        sender.join()

    assert not failures, failures[:3]
    assert len(results) > 15
    answer_b = next(text for _, model, text in results if model == "triage@2")
    assert answer_b != answer_a  # the two adapters answer differently, so the switch shows
    models = [model for _, model, _ in results]
    first_b = models.index("triage@2")
    assert set(models[:first_b]) == {"triage@1"} and set(models[first_b:]) == {"triage@2"}
    assert all(text == answer_a for _, m, text in results if m == "triage@1")
    assert all(text == answer_b for _, m, text in results if m == "triage@2")
    assert results[first_b][0] - started < 30
    assert all(m == "triage@2" for t, m, _ in results if t > done)
    assert endpoint.engine.loaded == ["triage@2"]  # the old version was unloaded


def test_corrupted_adapter_is_refused_and_the_old_one_serves(
    endpoint: LocalEndpoint, adapters: dict[str, str], tmp_path: Path
) -> None:
    key = endpoint.keys.create("ci")
    endpoint.deploy("1", adapters["a"])
    c = client(endpoint, key)
    before = ask(c).choices[0].message.content

    with pytest.raises(CheckpointError, match=r"adapter_model\.safetensors fails its sha256"):
        endpoint.deploy("2", adapters["corrupt"])
    uncommitted = tmp_path / "half-written"
    uncommitted.mkdir()
    with pytest.raises(CheckpointError, match="nothing is committed"):
        endpoint.deploy("3", f"file://{uncommitted}")

    after = ask(c)
    assert (after.model, after.choices[0].message.content) == ("triage@1", before)
    assert endpoint.serving == "1"
    outcomes = [(r.version, r.ok) for r in endpoint.history]
    assert outcomes == [("1", True), ("2", False), ("3", False)]
    assert endpoint.engine.loaded == ["triage@1"]


def test_concurrent_clients_all_get_answers(
    endpoint: LocalEndpoint, adapters: dict[str, str]
) -> None:
    # 160 requests, 16 at a time, streamed and not: each gets the greedy answer.
    key = endpoint.keys.create("ci")
    endpoint.deploy("1", adapters["a"])
    expected = ask(client(endpoint, key)).choices[0].message.content

    async def many() -> list[str | None]:
        c = openai.AsyncOpenAI(base_url=endpoint.url + "/v1", api_key=key, max_retries=0)
        sem = asyncio.Semaphore(16)

        async def one(stream: bool) -> str | None:
            async with sem:
                kw: dict[str, Any] = {"model": "triage", "messages": TICKET, "max_tokens": 8}
                if not stream:
                    r = await c.chat.completions.create(temperature=0, **kw)
                    return r.choices[0].message.content
                chunks = await c.chat.completions.create(temperature=0, stream=True, **kw)
                return "".join([ch.choices[0].delta.content or "" async for ch in chunks])

        try:
            return await asyncio.gather(*(one(i % 2 == 0) for i in range(160)))
        finally:
            await c.close()

    assert asyncio.run(many()) == [expected] * 160
