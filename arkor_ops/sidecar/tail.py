"""One shared reader of the growing event log, and its persistence to run storage.

The trainer appends JSON lines; :class:`LogTail` polls the file's size every few milliseconds,
reads only the complete lines past its offset (a partial last line waits for its newline) and
keeps the events in memory, so any number of clients stream from one reader instead of each
re-reading the disk. Waiting clients share one :class:`asyncio.Event` that is replaced on every
change, so one append wakes them all at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from arkor_ops.eventlog import read_complete_lines
from arkor_ops.events import TERMINAL_TYPES

log = logging.getLogger(__name__)

PERSIST_ATTEMPTS = 4


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One event of the log, kept as the exact JSON line the trainer wrote."""

    id: int
    type: str
    data: str

    @property
    def terminal(self) -> bool:
        """Whether this event ends the run."""
        return self.type in TERMINAL_TYPES


def parse_line(line: bytes) -> LogEvent | None:
    """The event in one log line, or None when the line has no integer ``id`` or string ``type``.

    Unknown event types pass through unchanged: clients skip what they do not know.
    """
    try:
        obj = json.loads(line)
    except ValueError:
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
    return LogEvent(event_id, event_type, line.decode("utf-8", "replace").strip())


class LogTail:
    """The event log at ``path`` as an in-memory, append-only list of events.

    Args:
        path: the log file (it may not exist yet).
        poll_seconds: how often :meth:`run` checks the file's size.
        persist: called (in a worker thread) with the complete log after the terminal event and
            by :meth:`close`; None when nothing is persisted.
    """

    def __init__(
        self,
        path: Path,
        *,
        poll_seconds: float = 0.01,
        persist: Callable[[bytes], None] | None = None,
    ) -> None:
        self.path = path
        self.poll_seconds = poll_seconds
        self.events: list[LogEvent] = []
        self._ids: list[int] = []
        self._offset = 0
        self._persist = persist
        self._persisted_offset = -1
        self._persist_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self.closed = False
        self._stopping = False
        self.terminal = asyncio.Event()
        self.persisted_terminal = asyncio.Event()

    @property
    def last_id(self) -> int:
        """The id of the newest event read (0 when none)."""
        return self._ids[-1] if self._ids else 0

    def index_after(self, last_event_id: int) -> int:
        """Position in :attr:`events` of the first event whose id is above ``last_event_id``."""
        return bisect_right(self._ids, last_event_id)

    def poll(self) -> bool:
        """Read any new complete lines; returns whether events were added."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return False
        if size < self._offset:
            log.warning("%s shrank (%d < %d bytes); re-reading it", self.path, size, self._offset)
            self._offset = 0
        if size == self._offset:
            return False
        lines, self._offset = read_complete_lines(self.path, self._offset)
        added = False
        for line in lines:
            event = parse_line(line)
            if event is None:
                log.warning("skipping a malformed log line: %.200r", line)
                continue
            if event.id <= self.last_id:
                continue  # a re-read after the file was replaced: ids are the identity
            self.events.append(event)
            self._ids.append(event.id)
            added = True
            if event.terminal:
                self.terminal.set()
        return added

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, seen: int) -> None:
        """Return once more than ``seen`` events exist or the tail is closed."""
        if len(self.events) > seen or self.closed:
            return
        await self._changed.wait()

    async def run(self) -> None:
        """Poll the log until :meth:`close`; persist it once the terminal event has been read."""
        while not self._stopping:
            if self.poll():
                self._notify()
                if self.terminal.is_set() and not self.persisted_terminal.is_set():
                    await self.persist()
                    self.persisted_terminal.set()
            await asyncio.sleep(self.poll_seconds)

    def snapshot(self) -> bytes:
        """The log's complete lines as read so far (what is persisted)."""
        try:
            with self.path.open("rb") as fh:
                return fh.read(self._offset)
        except FileNotFoundError:
            return b""

    async def persist(self) -> bool:
        """Write the log read so far to storage (retrying); returns whether it was written."""
        if self._persist is None:
            return False
        async with self._persist_lock:
            if self._offset in (self._persisted_offset, 0):
                return True
            offset, data = self._offset, self.snapshot()
            for attempt in range(1, PERSIST_ATTEMPTS + 1):
                try:
                    await asyncio.to_thread(self._persist, data)
                except Exception as exc:  # storage errors, network errors: retry, then give up
                    log.warning("persisting the event log failed (try %d): %s", attempt, exc)
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                self._persisted_offset = offset
                log.info("persisted %d bytes of the event log (last id %d)", offset, self.last_id)
                return True
            log.error("gave up persisting the event log after %d tries", PERSIST_ATTEMPTS)
            return False

    async def close(self) -> None:
        """Read what is left, persist it and wake every client so it drains and closes."""
        if self._stopping:
            return
        self._stopping = True
        if self.poll():
            self._notify()
        await self.persist()
        self.closed = True
        self._notify()
