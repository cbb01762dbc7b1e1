"""Blocking twins of async objects: run their coroutines on a private event loop.

``Trainer`` and ``Evaluator`` wrap ``AsyncTrainer`` and ``AsyncEvaluator`` with one
:class:`BlockingRunner` each. Its loop runs in a daemon thread started on first use, so a
blocking call works from a plain script and from a thread that already runs an event loop (a
notebook, a Prefect task); the loop stops when the runner is garbage-collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class _LoopThread:
    """A private event loop running in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    @staticmethod
    def stop(loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)


@dataclass(frozen=True)
class _Raised:
    error: Exception


async def _boxed(coro: Coroutine[Any, Any, T]) -> T | _Raised:
    try:
        return await coro
    except Exception as exc:
        return _Raised(exc)


class BlockingRunner:
    """Runs coroutines to completion on its own loop thread (started on first use)."""

    def __init__(self, thread_name: str) -> None:
        self._name = thread_name
        self._lock = threading.Lock()
        self._loop_thread: _LoopThread | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """``coro``'s result, or the very exception it raised.

        A ``KeyboardInterrupt`` while blocked propagates at once and cancels ``coro`` on the
        loop (a trainer stops following the stream; the run itself goes on).
        """
        with self._lock:
            if self._loop_thread is None:
                self._loop_thread = _LoopThread(self._name)
                weakref.finalize(self, _LoopThread.stop, self._loop_thread.loop)
            loop = self._loop_thread.loop
        future = asyncio.run_coroutine_threadsafe(_boxed(coro), loop)
        try:
            outcome = future.result()
        except BaseException:
            future.cancel()
            raise
        if isinstance(outcome, _Raised):
            raise outcome.error  # the very object raised (futures would copy TimeoutError)
        return outcome
