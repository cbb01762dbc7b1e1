"""Following a run's frames: the one loop that reads a stream, resumes it and knows when to stop.

:func:`follow` is written once and used by everything that reads a run's events: the trainer's
and the evaluator's ``wait()``, ``arkor-ops logs``, the Kubernetes backend's ``peek`` and the
flows that read a finished run. It sits below the backends (it takes a ``connect`` function, not
a backend), so a backend may use it on its own stream.

- It opens ``connect(last_event_id)`` and yields each frame but pings (a ping still keeps an idle
  stream alive and moves the resume point when it carries an id).
- It stops after yielding an ``end`` frame, after yielding a frame whose id reaches ``upto``, or
  when no frame came for ``first_frame_seconds`` (before a connection's first frame) or
  ``idle_seconds`` (after it): silence means the backlog is read.
- Without a ``policy`` it reads one connection: a :class:`StreamError` propagates, a clean close
  ends the iteration.
- With a :class:`ReconnectPolicy` it reconnects with ``Last-Event-ID`` (Arkor's semantics): a
  clean close after progress reconnects after exactly ``base_delay_seconds`` without counting;
  any other failure (a retryable :class:`StreamError`, a close before any progress) waits
  ``policy.delay(attempt)``; a frame with a payload resets the count; a fatal
  :class:`StreamError` (401, 403, 410, 426) propagates; ``max_attempts`` consecutive failures
  raise :class:`ReconnectGiveUpError`.

The consumer runs between two frames (the generator is suspended meanwhile), so a callback is
awaited before the next frame is read; closing the generator closes the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from arkor_ops.errors import ReconnectGiveUpError, StreamError
from arkor_ops.events import Frame
from arkor_ops.reconnect import ReconnectPolicy

logger = logging.getLogger(__name__)

__all__ = ["Connect", "follow", "frame_id", "has_payload"]

#: Opens one connection to a run's stream, resuming after the given event id (None: from the start).
Connect = Callable[[str | None], AsyncIterator[Frame]]


def has_payload(frame: Frame) -> bool:
    """Whether ``frame`` carries an event (its data is a JSON object): what counts as progress."""
    return frame.has_payload


def frame_id(frame: Frame) -> int | None:
    """The frame's integer id, or None (no id, or not an integer)."""
    try:
        return None if frame.id is None else int(frame.id)
    except ValueError:
        return None


async def follow(
    connect: Connect,
    *,
    after: str | None = None,
    upto: int | None = None,
    first_frame_seconds: float | None = None,
    idle_seconds: float | None = None,
    policy: ReconnectPolicy | None = None,
    name: str = "event stream",
) -> AsyncGenerator[Frame, None]:
    """Yield a run's frames (see the module docstring for when it stops and reconnects).

    Args:
        connect: opens one connection, resuming after the id it is given.
        after: resume after this event id from the start.
        upto: stop after the frame with this id (or a later one).
        first_frame_seconds: stop when the first frame takes longer (None: wait forever).
        idle_seconds: stop when a later frame takes longer (None: wait forever).
        policy: reconnect with it; None: read one connection.
        name: what the give-up error calls the stream.

    Yields:
        Frames in stream order, pings left out.

    Raises:
        StreamError: a fatal status; or any, without a ``policy``.
        ReconnectGiveUpError: ``policy.max_attempts`` consecutive failures.
    """
    last_id, attempt = after, 0
    while True:
        progressed, error = False, None
        source = connect(last_id).__aiter__()
        try:
            timeout = first_frame_seconds
            while (frame := await _next(source, timeout)) is not None:
                timeout = idle_seconds
                if frame.id is not None:
                    last_id = frame.id
                if frame.is_ping:
                    continue
                if has_payload(frame):
                    progressed, attempt = True, 0
                yield frame
                if frame.is_end or _reaches(frame, upto):
                    return
            if not progressed:
                error = StreamError(f"{name} closed before any event arrived")
        except TimeoutError:
            return  # idle: the backlog is read
        except StreamError as exc:
            if policy is None or not exc.retryable:
                raise
            error = exc
        finally:
            await _close(source)
        if policy is None:
            return
        attempt = await _back_off(policy, attempt, error, name)


async def _back_off(
    policy: ReconnectPolicy, attempt: int, error: BaseException | None, name: str
) -> int:
    """Sleep before the next connection; returns the new count of consecutive failures.

    ``error`` None: a clean close after progress (a fixed delay, not counted).
    """
    if error is None:
        logger.debug("%s closed after progress; reconnecting", name)
        await policy.sleep(policy.base_delay_seconds)
        return attempt
    if policy.max_attempts is not None and attempt >= policy.max_attempts:
        raise ReconnectGiveUpError(
            f"{name} failed {attempt + 1} consecutive times; giving up."
        ) from error
    delay = policy.delay(attempt)
    logger.info("%s failed (%s); reconnecting in %.1fs", name, error, delay)
    await policy.sleep(delay)
    return attempt + 1


async def _next(source: AsyncIterator[Frame], timeout: float | None) -> Frame | None:
    """The next frame, None at a clean close; TimeoutError after ``timeout`` seconds of silence.

    The wait runs in the caller's task, so an abort (a cancellation of that task) reaches it.
    """
    if timeout is None:  # the common case: no timer per frame
        return await anext(source, None)
    try:
        async with asyncio.timeout(timeout):
            return await anext(source)
    except StopAsyncIteration:
        return None


async def _close(source: AsyncIterator[Frame]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()


def _reaches(frame: Frame, upto: int | None) -> bool:
    if upto is None:
        return False
    number = frame_id(frame)
    return number is not None and number >= upto
