"""One shared reader of the growing event log, and its persistence to run storage.

The trainer appends JSON lines; :class:`LogTail` reads them when the file changes: inotify on its
folder (through ``asyncinotify``), whose descriptor the event loop watches, so a write is read in
the loop's callback for it, with no timer between them, and an idle log wakes nothing. It reads
only the complete lines past its offset (a partial last line waits for its newline) and keeps the
newest :data:`RECENT` events in memory, with each event's SSE frame encoded once, so live
followers (the usual case) are served from one reader instead of each re-reading the disk. A
client that is further behind (a replay from the start, a resume after a long pause) reads its
batches from the file itself, one batch at a time; so the sidecar's memory is bounded by its
connected clients, never by the length of the run. Waiting clients share one
:class:`asyncio.Event` that is replaced on every change, so one append wakes them all at once.

Besides inotify, the tail checks the file every :data:`WATCH_FALLBACK_SECONDS`, and polls every
``poll_seconds`` where it cannot watch, because inotify does not see everything: a folder on a
network or FUSE file system (writes from another node or container raise no event), a
notification queue that overflowed, a file replaced in a way that fires no event for its name, a
kernel out of watches, or a folder that does not exist yet (the tail starts watching once it
does). The check is one ``stat`` a second; a missed change is late by at most that.

(``watchfiles`` was not used: its Rust watcher sleeps ``step`` milliseconds at a time in a loop
and returns changes only after a step that brought no new one, so a write waits one to two
steps, and an idle log still wakes that thread, and takes the GIL, every step.)

Ids increase along the file (the trainer's writer guarantees it, across pods too), which lets
:meth:`LogTail.position_after` find a resume point by binary search.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from arkor_ops.events import TERMINAL_TYPES
from arkor_ops.polling import Backoff, retry

log = logging.getLogger(__name__)

PERSIST_ATTEMPTS = 4
#: Newest events kept in memory for live followers.
RECENT = 1024
#: Most bytes one read of the file takes (a client's batch, one poll step).
CHUNK_BYTES = 256 << 10
#: Most bytes of a backlog read in one step (see :meth:`LogTail._step`): well inside the
#: memory window, so clients that keep up are served from memory.
STEP_BYTES = 64 << 10
#: Most events sent to one client in one write.
MAX_BATCH = 512
_ID = re.compile(rb'^\{"id":(\d+)[,}]')
#: With inotify, the longest wait between two reads (a safety net, not the wake-up path).
WATCH_FALLBACK_SECONDS = 1.0
#: Longest a stream holds its `end` frame for the log's upload after the terminal event.
PERSIST_WAIT_SECONDS = 30.0


class _Watch:
    """Calls ``on_change`` when the log changes: inotify on the log's folder.

    The inotify descriptor is registered with the event loop once, and ``on_change`` runs in the
    loop's reader callback (the queued notifications drained first, so a burst of writes costs
    one call): no task or timer sits between a write and the read of it, and an idle log wakes
    nothing. Without inotify (not Linux, no watches left, no folder yet) :attr:`polling` is true;
    :meth:`retry` tries again (the folder may have been created since).
    """

    def __init__(self, path: Path, on_change: Callable[[], None]) -> None:
        self._path = path
        self._on_change = on_change
        self._inotify: Any = None
        self._loop = asyncio.get_running_loop()
        self._next_try = 0.0
        self.retry(quiet=False)

    @property
    def polling(self) -> bool:
        """Whether changes are found by polling only."""
        return self._inotify is None

    def retry(self, *, quiet: bool = True) -> bool:
        """Start watching if not yet watching (at most once a second); whether it watches now."""
        if self._inotify is not None:
            return True
        now = self._loop.time()
        if now < self._next_try:
            return False
        self._next_try = now + WATCH_FALLBACK_SECONDS
        try:
            from asyncinotify import Inotify, Mask

            self._inotify = Inotify(cache_size=64, sync_timeout=0)  # sync_get: no wait
            self._inotify.add_watch(
                self._path.parent, Mask.MODIFY | Mask.CREATE | Mask.MOVED_TO | Mask.CLOSE_WRITE
            )
            self._loop.add_reader(self._inotify.fd, self._drain)
        except (ImportError, OSError) as exc:
            if not quiet:
                log.info("inotify unavailable for %s (%s): polling", self._path, exc)
            if self._inotify is not None:
                self._inotify.close()
                self._inotify = None
            return False
        if quiet:
            log.info("watching %s with inotify now", self._path.parent)
        return True

    def _drain(self) -> None:
        from asyncinotify import Mask

        changed = False
        try:
            while (event := self._inotify.sync_get()) is not None:
                changed = changed or event.name is None or event.name.name == self._path.name
                if Mask.IGNORED in event.mask:  # the folder is gone, and its watch with it
                    raise OSError("the watched folder was removed")
        except OSError as exc:  # the watch broke: poll from now on
            log.warning("inotify failed for %s (%s): polling", self._path, exc)
            self.close()
            changed = True
        if changed:
            self._on_change()

    def close(self) -> None:
        """Stop watching."""
        if self._inotify is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One event of the log, kept as the exact JSON line the trainer wrote, and where it is.

    ``frame`` is the event's SSE frame, encoded once when the line is read and shared by every
    client that is sent it.
    """

    id: int
    type: str
    data: str
    start: int = 0
    end: int = 0
    frame: bytes = b""

    @property
    def terminal(self) -> bool:
        """Whether this event ends the run."""
        return self.type in TERMINAL_TYPES


_LINE_SEP = re.compile(r"\r\n|\r|\n")


def sse_frame(event_id: int, event_type: str, data: str) -> bytes:
    """The SSE frame ``id: …``/``event: …``/``data: …`` with ``\\n`` line ends, byte for byte
    what sse-starlette's ``ServerSentEvent(data, event=, id=, sep="\\n").encode()`` writes."""
    if "\r" in event_type or "\n" in event_type:
        event_type = _LINE_SEP.sub("", event_type)
    if "\r" in data or "\n" in data:  # one data: line per line of the data
        lines = "".join(f"data: {part}\n" for part in _LINE_SEP.split(data))
    else:
        lines = f"data: {data}\n"
    return f"id: {event_id}\nevent: {event_type}\n{lines}\n".encode()


def parse_line(line: bytes, start: int = 0, end: int = 0) -> LogEvent | None:
    """The event in one log line, or None when the line has no integer ``id`` or string ``type``.

    Unknown event types pass through unchanged: clients skip what they do not know.
    """
    try:
        text = line.decode()
        obj = json.loads(text)
    except ValueError:  # UnicodeDecodeError too
        return None
    if not isinstance(obj, dict):
        return None
    event_id, event_type = obj.get("id"), obj.get("type")
    if (
        not isinstance(event_id, int)
        or isinstance(event_id, bool)
        or not isinstance(event_type, str)
    ):
        return None
    data = text.strip()
    return LogEvent(event_id, event_type, data, start, end, sse_frame(event_id, event_type, data))


def _line_id(line: bytes) -> int | None:
    match = _ID.match(line)
    if match:
        return int(match.group(1))
    event = parse_line(line)
    return None if event is None else event.id


def read_lines(fh: BinaryIO, pos: int, stop: int) -> list[tuple[bytes, int, int]]:
    """The complete lines in ``[pos, stop)`` of ``fh``, at most about :data:`CHUNK_BYTES` of them.

    ``stop`` must be a line boundary. Returns ``(line, start, end)`` triples; empty at ``stop``.
    """
    if pos >= stop:
        return []
    fh.seek(pos)
    chunk = fh.read(min(stop - pos, CHUNK_BYTES))
    cut = chunk.rfind(b"\n")
    if cut < 0:  # one line longer than a chunk: read on to its newline
        chunk += fh.readline(stop - pos - len(chunk))
        cut = len(chunk) - 1
    out = []
    start = pos
    for line in chunk[: cut + 1].split(b"\n")[:-1]:
        end = start + len(line) + 1
        if line.strip():
            out.append((line, start, end))
        start = end
    return out


class LogTail:
    """The event log at ``path``: the newest events in memory, the rest read from the file.

    Args:
        path: the log file (it may not exist yet).
        poll_seconds: how often :meth:`run` checks the file's size where inotify is unavailable.
        check_seconds: how often it checks the file with inotify (a safety net, see above).
        persist: called (in a worker thread) with the log's path after the terminal event and
            by :meth:`close`, to upload it; None when nothing is persisted.
        recent: how many of the newest events to keep in memory.
    """

    def __init__(
        self,
        path: Path,
        *,
        poll_seconds: float = 0.01,
        check_seconds: float = WATCH_FALLBACK_SECONDS,
        persist: Callable[[Path], None] | None = None,
        recent: int = RECENT,
    ) -> None:
        self.path = path
        self.poll_seconds = poll_seconds
        self.check_seconds = check_seconds
        self.recent: list[LogEvent] = []
        self._recent_max = max(1, recent)
        self._ids: list[int] = []
        self._starts: list[int] = []
        self._offset = 0
        self._last_id = 0
        self._persist = persist
        self._persisted_offset = -1
        self._persist_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()  # wakes run(): the terminal event, or close()
        self._stepping = False  # a step of a backlog is scheduled
        self.behind = False
        self.closed = False
        self._stopping = False
        self.terminal = asyncio.Event()
        self.persisted_terminal = asyncio.Event()
        self._running = False

    @property
    def last_id(self) -> int:
        """The id of the newest event read (0 when none)."""
        return self._last_id

    @property
    def offset(self) -> int:
        """Bytes of the log read so far (complete lines only)."""
        return self._offset

    def _keep(self, event: LogEvent) -> None:
        self.recent.append(event)
        self._ids.append(event.id)
        self._starts.append(event.start)
        if len(self.recent) >= 2 * self._recent_max:
            drop = len(self.recent) - self._recent_max
            del self.recent[:drop], self._ids[:drop], self._starts[:drop]

    def _take(self, lines: bytes) -> bool:
        """Keep the events of ``lines`` (complete lines at the offset); whether any were new."""
        added = False
        start = self._offset
        for line in lines.split(b"\n")[:-1]:
            end = start + len(line) + 1
            event = parse_line(line, start, end) if line.strip() else None
            start = end
            if event is None:
                if line.strip():
                    log.warning("skipping a malformed log line: %.200r", line)
                continue
            if event.id <= self._last_id:
                continue  # a re-read after the file was replaced: ids are the identity
            self._last_id = event.id
            self._keep(event)
            added = True
            if event.terminal:
                self.terminal.set()
        self._offset = start
        return added

    def poll(self, limit: int | None = None) -> bool:
        """Read new complete lines (about ``limit`` bytes of them, or all); whether events were
        added. :attr:`behind` says whether a ``limit`` left lines unread."""
        self.behind = False
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return False
        if size < self._offset:
            log.warning("%s shrank (%d < %d bytes); re-reading it", self.path, size, self._offset)
            self._offset = 0
            self.recent, self._ids, self._starts = [], [], []
        if size == self._offset:
            return False
        added = False
        want = CHUNK_BYTES if limit is None else max(1, min(limit, CHUNK_BYTES))
        with self.path.open("rb") as fh:
            while True:
                fh.seek(self._offset)
                chunk = fh.read(want)
                cut = chunk.rfind(b"\n")
                if cut < 0:
                    rest = fh.readline() if len(chunk) == want else b""
                    if not rest.endswith(b"\n"):
                        break  # only a partial last line: wait for its newline
                    chunk += rest
                    cut = len(chunk) - 1
                added = self._take(chunk[: cut + 1]) or added
                if len(chunk) < want:
                    break
                if limit is not None:
                    self.behind = True
                    break
        return added

    def position_after(self, last_event_id: int) -> int:
        """Byte offset of the first event whose id is above ``last_event_id`` (binary search)."""
        if self._ids and last_event_id >= self._ids[0]:
            i = bisect_right(self._ids, last_event_id)
            return self._starts[i] if i < len(self._starts) else self._offset
        if last_event_id <= 0:
            return 0
        lo, hi = 0, self.recent[0].start if self.recent else self._offset
        try:
            with self.path.open("rb") as fh:
                while hi - lo > CHUNK_BYTES:
                    mid = (lo + hi) // 2
                    fh.seek(mid - 1)
                    fh.readline()  # to the start of the next line
                    at = fh.tell()
                    if at >= hi:
                        break
                    event_id = _line_id(fh.readline())
                    if event_id is not None and event_id > last_event_id:
                        hi = at
                    else:
                        lo = fh.tell()
                while lo < hi:
                    lines = read_lines(fh, lo, hi)
                    for line, start, end in lines:
                        event_id = _line_id(line)
                        if event_id is not None and event_id > last_event_id:
                            return start
                        lo = end
                    if not lines:
                        break
        except FileNotFoundError:
            return 0
        return lo

    def read(self, pos: int) -> tuple[list[LogEvent], int]:
        """Up to :data:`MAX_BATCH` events from byte ``pos`` on, and the position after them.

        From memory when ``pos`` is among the newest events, otherwise from the file.
        """
        if pos > self._offset:
            pos = 0  # the file was replaced: start over (clients skip ids they have)
        if self._starts and pos >= self._starts[0]:
            i = bisect_right(self._starts, pos) - 1
            if self._starts[i] < pos:
                i += 1
            batch = self.recent[i : i + MAX_BATCH]
            return batch, batch[-1].end if batch else self._offset
        stop = self._starts[0] if self._starts else self._offset
        try:
            with self.path.open("rb") as fh:
                lines = read_lines(fh, pos, stop)
        except FileNotFoundError:
            return [], pos
        lines = lines[:MAX_BATCH]
        events = [e for e in (parse_line(*triple) for triple in lines) if e is not None]
        return events, lines[-1][2] if lines else pos

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, pos: int) -> None:
        """Return once the log has grown past byte ``pos`` or the tail is closed."""
        if self._offset > pos or self.closed:
            return
        await self._changed.wait()

    def _step(self) -> None:
        """Read what is new and wake the clients; wake :meth:`run` for the terminal event.

        A backlog is read :data:`STEP_BYTES` at a time, each step after the clients woken by
        the one before have taken their batches from memory: under load each client gets its
        frames in large writes and keeps up from memory instead of falling behind the window
        and re-reading the file.
        """
        if self._stopping or self._stepping:
            return
        if self.poll(STEP_BYTES):
            self._notify()
            if self.terminal.is_set() and not self.persisted_terminal.is_set():
                self._wake.set()
        if self.behind:
            self._stepping = True
            asyncio.get_running_loop().call_soon(self._next_step)

    def _next_step(self) -> None:
        self._stepping = False
        self._step()

    async def run(self) -> None:
        """Follow the log until :meth:`close`; persist it once the terminal event has been read.

        With inotify, each change is read in the watch's callback (see :class:`_Watch`) and this
        loop wakes only for the terminal event and every ``check_seconds``; without it, every
        ``poll_seconds``.
        """
        watch = _Watch(self.path, self._step)
        self._running = True
        try:
            while not self._stopping:
                self._wake.clear()
                self._step()
                if self.terminal.is_set() and not self.persisted_terminal.is_set():
                    await self.persist()
                    self.persisted_terminal.set()
                polling = watch.polling and not watch.retry()
                wait = self.poll_seconds if polling else self.check_seconds
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
        finally:
            self._running = False
            watch.close()

    async def wait_persisted(self, timeout: float = PERSIST_WAIT_SECONDS) -> None:
        """Once the terminal event is read, wait (bounded) until the log has been persisted.

        Streams send ``end`` after this, so a client that sees ``end`` finds the whole log in
        storage. Returns at once when nothing is persisted or no :meth:`run` follows the log.
        """
        if self._persist is None or not self._running or self.persisted_terminal.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.persisted_terminal.wait(), timeout)

    async def persist(self) -> bool:
        """Upload the log file to storage (retrying); returns whether it was written.

        The file is streamed from disk, never held in memory. It may end in a partial line
        the trainer is writing; readers of the persisted log skip such a line.
        """
        if self._persist is None:
            return False
        async with self._persist_lock:
            if self._offset in (self._persisted_offset, 0):
                return True
            offset, persist = self._offset, self._persist

            def failed(attempt: int, exc: BaseException, _delay: float) -> None:
                log.warning("persisting the event log failed (try %d): %s", attempt, exc)

            try:  # storage errors, network errors: retry, then give up
                await retry(
                    lambda: asyncio.to_thread(persist, self.path),
                    Backoff(0.4, 2.0),
                    attempts=PERSIST_ATTEMPTS,
                    before_sleep=failed,
                )
            except Exception as exc:
                failed(PERSIST_ATTEMPTS, exc, 0.0)
                log.error("gave up persisting the event log after %d tries", PERSIST_ATTEMPTS)
                return False
            self._persisted_offset = offset
            log.info("persisted %d bytes of the event log (last id %d)", offset, self.last_id)
            return True

    async def close(self) -> None:
        """Read what is left, persist it and wake every client so it drains and closes."""
        if self._stopping:
            return
        self._stopping = True
        if self.poll():
            self._notify()
        await self.persist()
        if self.terminal.is_set():
            self.persisted_terminal.set()
        self.closed = True
        self._notify()
        self._wake.set()
