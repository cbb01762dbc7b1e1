"""Blocking twins of async objects: run their coroutines on a private event loop.

``Trainer`` and ``Evaluator`` wrap ``AsyncTrainer`` and ``AsyncEvaluator`` with one
:class:`BlockingRunner` each. Its loop runs in a daemon thread started on first use, so a
blocking call works from a plain script and from a thread that already runs an event loop (a
notebook, a Prefect task). :meth:`BlockingRunner.close` finalizes the loop's async generators,
stops it and joins its thread; a runner garbage-collected unclosed only stops its loop (at
once, whatever thread that happens in). At interpreter exit every loop still running is stopped
that way and its thread joined, so that no task of the loop is left pending when the interpreter
goes (a script that exits right after letting its trainer go).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from arkor_ops.closing import AsyncClosing, Closing

T = TypeVar("T")
A = TypeVar("A", bound=AsyncClosing)

_DRAINING: set[asyncio.Task[None]] = set()
#: Seconds the interpreter's exit waits for each loop to drain and stop.
EXIT_JOIN_SECONDS = 10.0


class _LoopThread:
    """A private event loop running in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        _RUNNING.add(self)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()
            _RUNNING.discard(self)

    def close(self, timeout: float = 10) -> None:
        """Cancel what still runs on the loop, finalize its async generators and executor, stop
        it and join the thread."""
        if self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError, TimeoutError):
            asyncio.run_coroutine_threadsafe(_drain(), self.loop).result(timeout)
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    def stop(self) -> None:
        """Drain the loop (see :func:`_drain`), then stop it; returns at once (the finalizer of
        a runner garbage-collected unclosed, whatever thread that happens in). Once is enough."""
        if self._stopping:
            return
        self._stopping = True
        loop = self.loop

        def drain() -> None:
            task = loop.create_task(_drain(stop=True))
            _DRAINING.add(task)  # a task only weakly referenced by its loop may vanish
            task.add_done_callback(_DRAINING.discard)

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(drain)

    def join(self, timeout: float) -> None:
        """Wait for the thread to end (after :meth:`stop` or :meth:`close`)."""
        self._thread.join(timeout)


#: Loop threads not yet ended, for the interpreter's exit.
_RUNNING: set[_LoopThread] = set()


@atexit.register
def _stop_running_loops() -> None:
    """Stop and join every loop thread still running: a daemon thread is frozen where it stands
    at exit, and the tasks of its loop would be destroyed pending."""
    running = list(_RUNNING)
    for loop_thread in running:
        loop_thread.stop()
    for loop_thread in running:
        loop_thread.join(EXIT_JOIN_SECONDS)


async def _drain(*, stop: bool = False) -> None:
    """Let just-scheduled callbacks run (the ``aclose()`` of async generators that were garbage
    collected), cancel every other task of the running loop, then finalize its async generators
    and its default executor, as ``asyncio.run`` does before closing its loop; with ``stop``,
    stop the loop afterwards."""
    for _ in range(3):
        await asyncio.sleep(0)
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    loop = asyncio.get_running_loop()
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()
    if stop:
        loop.stop()


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
        self._closed = False

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """``coro``'s result, or the very exception it raised.

        A ``KeyboardInterrupt`` while blocked propagates at once and cancels ``coro`` on the
        loop (a trainer stops following the stream; the run itself goes on).
        """
        with self._lock:
            if self._closed:
                coro.close()
                raise RuntimeError("this blocking object is closed")
            if self._loop_thread is None:
                self._loop_thread = _LoopThread(self._name)
                weakref.finalize(self, self._loop_thread.stop)
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

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Stop the loop thread (finalizing what still runs on it); later calls raise.

        Closing twice, or a runner never used, is harmless.
        """
        with self._lock:
            self._closed = True
            loop_thread, self._loop_thread = self._loop_thread, None
        if loop_thread is not None:
            loop_thread.close()


class BlockingTwin(Closing, Generic[A]):
    """What ``Trainer`` and ``Evaluator`` share: an async object (``AsyncTrainer``,
    ``AsyncEvaluator``) whose coroutines run on a private :class:`BlockingRunner`."""

    def __init__(self, inner: A, thread_name: str) -> None:
        self._inner = inner
        self._runner = BlockingRunner(thread_name)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def close(self) -> None:
        """The async object's ``aclose()``, then stop the private loop thread; later calls
        raise ``RuntimeError``. The run or job itself is left alone. Closing twice is harmless."""
        if not self._runner.closed:
            try:
                self._run(self._inner.aclose())
            finally:
                self._runner.close()
