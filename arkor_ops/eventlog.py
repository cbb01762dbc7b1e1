"""The run's append-only event log: JSON Lines, one event per line, ids from 1.

The trainer process is its single writer (:class:`EventLogWriter`); the sidecar and tests read
it (:func:`read_events`, :func:`read_complete_lines`). A line counts only once its newline is
written, so a reader never sees a half-written event.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from arkor_ops.events import Event, event_to_json, parse_event


def read_complete_lines(path: Path, offset: int = 0) -> tuple[list[bytes], int]:
    """Read the complete lines of ``path`` from byte ``offset``.

    Returns:
        The complete lines (without newlines) and the offset just past the last complete line;
        a partial last line is held back until its newline arrives.
    """
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset
    lines = [line for line in chunk[:end].split(b"\n") if line.strip()]
    return lines, offset + end + 1


def read_events(path: Path) -> list[Event]:
    """Every complete, well-formed event in the log at ``path``, in order."""
    lines, _ = read_complete_lines(path)
    events = []
    for line in lines:
        event = parse_event(line)
        if event is not None:
            events.append(event)
    return events


def iter_log_lines(data: bytes) -> Iterator[dict[str, Any]]:
    """Parse an event log held in memory (e.g. downloaded from storage) into JSON objects."""
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield obj


class EventLogWriter:
    """Appends events to the log, assigning increasing ids; safe to call from several threads.

    Opening an existing log continues its numbering, so a restarted trainer (or one that was
    seeded with the log persisted by a previous pod) never reuses an id.
    """

    def __init__(self, path: Path, job_id: str) -> None:
        self.path = path
        self.job_id = job_id
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._last_id = max((e.id or 0 for e in read_events(path)), default=0)
        self._truncate_partial_tail()

    @property
    def last_id(self) -> int:
        """The id of the last event written (0 when the log is empty)."""
        return self._last_id

    def _truncate_partial_tail(self) -> None:
        if not self.path.exists():
            return
        _, complete = read_complete_lines(self.path)
        if complete != self.path.stat().st_size:
            with self.path.open("r+b") as fh:
                fh.truncate(complete)

    def seed(self, data: bytes) -> int:
        """Start an empty log from a previous pod's persisted log; returns the lines taken."""
        with self._lock:
            if self.path.exists() and self.path.stat().st_size:
                return 0
            lines = [json.dumps(obj, separators=(",", ":")) for obj in iter_log_lines(data)]
            if lines:
                self.path.write_text("\n".join(lines) + "\n", encoding="utf-8")
                self._last_id = max((int(json.loads(ln).get("id") or 0) for ln in lines), default=0)
            return len(lines)

    def advance_to(self, last_id: int) -> None:
        """Make the next id at least ``last_id + 1`` (ids above a lost pod's; never backwards)."""
        with self._lock:
            self._last_id = max(self._last_id, last_id)

    def write(self, event: BaseModel) -> Event:
        """Append ``event`` (its ``job_id``/``id`` are filled in) and return what was written."""
        with self._lock:
            self._last_id += 1
            stamped = event.model_copy(update={"id": self._last_id, "job_id": self.job_id})
            line = event_to_json(stamped) + "\n"
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
            return stamped  # type: ignore[return-value]
