"""``infer()`` on a checkpoint: the blocking and async calls, and the chunk streams they return.

:class:`CheckpointChat` is what :class:`~arkor_ops.results.CheckpointContext` delegates to: it
is bound to one run and one checkpoint step, validates the arguments
(:func:`arkor_ops.inference.infer_request`) and asks the backend
(:meth:`~arkor_ops.backends.base.Backend.infer`), whose sidecar hands the request to the worker
that holds the model. Twins, as everywhere: ``infer()`` blocks (it runs the request on a loop
of its own in a short-lived thread, so it also works inside a callback that runs on the
trainer's loop); ``ainfer()`` is a coroutine. With ``stream=True`` (the default) they return a
:class:`ChatStream` / :class:`AsyncChatStream` of :class:`ChatCompletionChunk` that ends where the
wire says ``data: [DONE]``; with ``stream=False`` one :class:`ChatCompletion`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from arkor_ops.backends.base import Backend
from arkor_ops.errors import InferRequestError
from arkor_ops.inference import (
    ChatCompletion,
    ChatCompletionChunk,
    InferRequest,
    infer_request,
)

#: Arkor's camelCase names of ``infer()``'s arguments.
CAMEL = {"topP": "top_p", "maxTokens": "max_tokens", "responseFormat": "response_format",
         "toolChoice": "tool_choice"}  # fmt: skip


def collect_args(args: Mapping[str, Any] | None, explicit: Mapping[str, Any]) -> InferRequest:
    """``infer()``'s arguments (an Arkor-style mapping and/or keywords) as one request.

    Raises:
        InferRequestError: an unknown field, one given twice, or a bad value (each named).
    """
    fields: dict[str, Any] = {}
    sources = [dict(args or {}), {k: v for k, v in explicit.items() if v is not None}]
    for source in sources:
        for key, value in source.items():
            name = CAMEL.get(key, key)
            if name in fields:
                raise InferRequestError([(name, f"given twice (as {key!r} too)")])
            fields[name] = value
    return infer_request(fields)


class AsyncChatStream:
    """A streamed answer: ``async for chunk in stream`` yields :class:`ChatCompletionChunk`.

    Iteration ends at the wire's ``data: [DONE]`` (then :attr:`done` is True); a stream cut off
    before it raises :class:`~arkor_ops.errors.InferenceError`. ``text`` is what arrived so far.
    """

    def __init__(self, source: AsyncIterator[dict[str, Any]]) -> None:
        self._source = source
        self.done = False
        self.chunks: list[ChatCompletionChunk] = []

    @property
    def text(self) -> str:
        """The content of the chunks read so far, joined."""
        return "".join(c.choices[0].delta.content or "" for c in self.chunks if c.choices)

    def __aiter__(self) -> AsyncChatStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        try:
            data = await anext(self._source)
        except StopAsyncIteration:
            self.done = True
            raise
        chunk = ChatCompletionChunk.model_validate(data)
        self.chunks.append(chunk)
        return chunk

    async def aclose(self) -> None:
        """Stop reading (the connection closes; the worker finishes the answer regardless)."""
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> AsyncChatStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class ChatStream:
    """The blocking twin of :class:`AsyncChatStream`: ``for chunk in stream``.

    The request runs on a loop of its own in a daemon thread, which hands each chunk over as it
    arrives. Leaving early: :meth:`close` (or a ``with`` block).
    """

    def __init__(self, open_source: Callable[[], AsyncIterator[dict[str, Any]]]) -> None:
        self._items: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._open = open_source
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._finished = False
        self.done = False
        self.chunks: list[ChatCompletionChunk] = []
        self._thread = threading.Thread(target=self._run, name="arkor-ops-infer", daemon=True)
        self._thread.start()
        self._ready.wait()

    @property
    def text(self) -> str:
        """The content of the chunks read so far, joined."""
        return "".join(c.choices[0].delta.content or "" for c in self.chunks if c.choices)

    def _run(self) -> None:
        async def pump() -> None:
            source = self._open()
            async with contextlib.aclosing(source):  # type: ignore[type-var]
                async for item in source:
                    self._items.put(("chunk", item))

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()  # type: ignore[assignment]
            self._ready.set()
            try:
                await pump()
            except asyncio.CancelledError:
                self._items.put(("closed", None))
                return
            except BaseException as exc:
                self._items.put(("error", exc))
                return
            self._items.put(("end", None))

        try:
            asyncio.run(main())
        finally:
            self._ready.set()

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        return self

    def __next__(self) -> ChatCompletionChunk:
        if self._finished:
            raise StopIteration
        kind, item = self._items.get()
        if kind == "chunk":
            chunk = ChatCompletionChunk.model_validate(item)
            self.chunks.append(chunk)
            return chunk
        self._finished = True
        self._thread.join()
        if kind == "error":
            raise item
        self.done = kind == "end"
        raise StopIteration

    def close(self) -> None:
        """Stop reading and end the thread (harmless after the end)."""
        if self._finished:
            return
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
        self._thread.join()
        self._finished = True

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _one(source: AsyncIterator[dict[str, Any]]) -> ChatCompletion:
    async with contextlib.aclosing(source):  # type: ignore[type-var]
        data = await anext(source)
    return ChatCompletion.model_validate(data)


class CheckpointChat:
    """``infer()`` bound to one checkpoint of one run (see the module docstring)."""

    def __init__(self, backend: Backend, job_id: str, step: int) -> None:
        self.backend = backend
        self.job_id = job_id
        self.step = step

    def _source(self, request: InferRequest) -> AsyncIterator[dict[str, Any]]:
        return self.backend.infer(self.job_id, self.step, request)

    async def ainfer(self, request: InferRequest) -> ChatCompletion | AsyncChatStream:
        """Ask the checkpoint; see :meth:`arkor_ops.results.CheckpointContext.ainfer`."""
        if request.stream:
            return AsyncChatStream(self._source(request))
        return await _one(self._source(request))

    def infer(self, request: InferRequest) -> ChatCompletion | ChatStream:
        """Blocking :meth:`ainfer`; see :meth:`arkor_ops.results.CheckpointContext.infer`."""
        if request.stream:
            return ChatStream(lambda: self._source(request))
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["ok"] = asyncio.run(_one(self._source(request)))
            except BaseException as exc:
                box["error"] = exc

        thread = threading.Thread(target=run, name="arkor-ops-infer", daemon=True)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        result: ChatCompletion = box["ok"]
        return result
