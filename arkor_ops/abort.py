"""Abort a local ``wait()``: :class:`AbortController` and its :class:`AbortSignal`.

The Python shape of the web platform's ``AbortController``, as Arkor uses it::

    controller = AbortController()
    trainer = create_trainer(..., abort_signal=controller.signal)
    controller.abort()          # from any thread, or a signal handler

Aborting makes a ``wait()`` in progress (or the next one) raise at once, even while it is
blocked reading the stream or sleeping before a reconnect. It never cancels the run and sends
nothing to the backend: the GPU job keeps going. Catch the error and call ``cancel()`` to stop it.

What ``wait()`` raises: the abort *reason* itself when it is an exception (as Arkor rejects with
``signal.reason``), otherwise an :class:`AbortError` whose ``reason`` attribute holds the reason
(``None`` when ``abort()`` was called without one).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from arkor_ops.errors import ArkorOpsError


class AbortError(ArkorOpsError):
    """``wait()`` stopped because its abort signal fired. The run itself keeps going.

    Attributes:
        reason: what was passed to :meth:`AbortController.abort` (``None`` by default).
    """

    def __init__(self, reason: Any = None) -> None:
        text = "wait() was aborted; the run keeps going (call cancel() to stop it)"
        super().__init__(text if reason is None else f"{text}: {reason}")
        self.reason = reason


class AbortSignal:
    """Read side of an :class:`AbortController`: whether and why it was aborted.

    Thread-safe: it may be aborted from another thread or from a signal handler.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entrant: a signal handler may interrupt a holder
        self._aborted = False
        self._reason: Any = None
        self._listeners: list[Callable[[], None]] = []

    @property
    def aborted(self) -> bool:
        """Whether :meth:`AbortController.abort` was called."""
        return self._aborted

    @property
    def reason(self) -> Any:
        """The reason given to :meth:`AbortController.abort` (``None`` if none was given)."""
        return self._reason

    def error(self) -> BaseException:
        """The exception ``wait()`` raises for this abort.

        Returns:
            The reason when it is an exception, else an :class:`AbortError` carrying it.
        """
        if isinstance(self._reason, BaseException):
            return self._reason
        return AbortError(self._reason)

    def throw_if_aborted(self) -> None:
        """Raise :meth:`error` if the signal has been aborted.

        Raises:
            BaseException: the abort reason, or :class:`AbortError`.
        """
        if self._aborted:
            raise self.error()

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` once when the signal aborts (at once if it already has).

        The listener runs in the thread that calls ``abort()``; it must be quick and thread-safe
        (``loop.call_soon_threadsafe`` is).

        Args:
            listener: a function of no arguments.

        Returns:
            A function that removes the listener again.
        """
        with self._lock:
            if not self._aborted:
                self._listeners.append(listener)
                return lambda: self._remove(listener)
        listener()
        return lambda: None

    def _remove(self, listener: Callable[[], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _abort(self, reason: Any) -> None:
        with self._lock:
            if self._aborted:
                return
            self._aborted = True
            self._reason = reason
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener()

    def __repr__(self) -> str:
        return f"AbortSignal(aborted={self._aborted}, reason={self._reason!r})"


class AbortController:
    """Owns an :class:`AbortSignal` and fires it."""

    def __init__(self) -> None:
        self.signal = AbortSignal()

    def abort(self, reason: Any = None) -> None:
        """Abort the signal; later calls do nothing.

        Args:
            reason: why. An exception instance is what ``wait()`` will raise; anything else is
                carried by the :class:`AbortError` it raises.
        """
        self.signal._abort(reason)


class AbortScope:
    """Turns an :class:`AbortSignal` into a prompt cancellation of the waiting task (``wait()``).

    Only the parts of ``wait()`` that block on the backend (reading the stream, sleeping before a
    reconnect) are interruptible; a callback that is running is allowed to finish.
    """

    def __init__(self, signal: AbortSignal | None) -> None:
        self._signal = signal
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self._interruptible = False
        self._cancelling = False
        self._remove: Callable[[], None] = lambda: None
        self._guard = _Interruptible(self)

    def __enter__(self) -> AbortScope:
        if self._signal is not None:
            self._remove = self._signal.add_listener(self._from_any_thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _from_any_thread(self) -> None:
        with contextlib.suppress(RuntimeError):  # loop already closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        if self._interruptible and self._task is not None and not self._cancelling:
            self._cancelling = True
            self._task.cancel()

    def check(self) -> None:
        if self._signal is not None:
            self._signal.throw_if_aborted()

    def interruptible(self) -> _Interruptible:
        """A ``with`` block an abort may interrupt (it raises the abort's error instead)."""
        return self._guard


class _Interruptible:
    """:meth:`AbortScope.interruptible`'s block: a class, not a generator, as it wraps the read
    of every frame of a stream."""

    __slots__ = ("_scope",)

    def __init__(self, scope: AbortScope) -> None:
        self._scope = scope

    def __enter__(self) -> None:
        self._scope.check()
        self._scope._interruptible = True

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        scope = self._scope
        scope._interruptible = False
        if not isinstance(exc, asyncio.CancelledError):
            return
        if not scope._cancelling or scope._signal is None:
            return  # someone else's cancellation: it propagates
        scope._cancelling = False
        if scope._task is not None:
            scope._task.uncancel()
        raise scope._signal.error() from None
