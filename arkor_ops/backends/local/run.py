"""One local run on disk: its state file, processes, event log and the replay of that log.

A run's processes are recognised by pid plus start time (from ``/proc``), so a recycled pid is
never mistaken for the worker. When the worker is gone without a terminal event (killed, or it
crashed before it could write one), the backend becomes the log's writer post mortem and appends
``training.failed`` (or ``training.cancelled`` after a cancel), so every run ends. Several
processes may follow one run; an exclusive lock on ``settle.lock`` around "no terminal event
yet? then append one" makes exactly one of them write it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from arkor_ops.backends.base import JobDescription, TrainingJob
from arkor_ops.eventlog import EventLogWriter, iter_log_lines, read_complete_lines
from arkor_ops.events import (
    END,
    STARTED_TYPES,
    TERMINAL_STATUS,
    TERMINAL_TYPES,
    EvaluationFailed,
    Frame,
    TrainingFailed,
)
from arkor_ops.storage import RunLayout, open_storage

log = logging.getLogger(__name__)


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return -1  # a zombie: it has exited
    return int(fields[19])


def proc_info(pid: int) -> dict[str, Any]:
    """What the state file records about a process."""
    return {"pid": pid, "start": _start_ticks(pid)}


def _frame(obj: dict[str, Any]) -> Frame:
    return Frame(
        event=str(obj.get("type")), data=json.dumps(obj, separators=(",", ":")), id=str(obj["id"])
    )


class LocalRun:
    """The files and processes of one local run."""

    def __init__(
        self,
        directory: Path,
        job_id: str,
        storage_uri: str,
        children: dict[str, dict[str, subprocess.Popen[bytes]]],
    ) -> None:
        self.dir = directory
        self.job_id = job_id
        self.layout = RunLayout(storage_uri, job_id)
        self.storage_uri = storage_uri
        self._children = children.setdefault(job_id, {})

    state_path = property(lambda self: self.dir / "state.json")
    config_path = property(lambda self: self.dir / "config.json")
    log_path = property(lambda self: self.dir / "events.jsonl")

    # -- state ---------------------------------------------------------------------------

    def load_state(self) -> dict[str, Any]:
        """The state file's content ({} when there is none)."""
        try:
            data: dict[str, Any] = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def save_state(self, state: dict[str, Any]) -> None:
        """Replace the state file atomically."""
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
        tmp.replace(self.state_path)

    def update_state(self, **changes: Any) -> None:
        """Change some fields of the state file."""
        if self.state_path.exists():
            self.save_state({**self.load_state(), **changes})

    def _persisted(self) -> bytes | None:
        storage = open_storage(self.storage_uri)
        if not storage.exists(self.layout.events):
            return None
        return storage.get_bytes(self.layout.events)

    def exists(self) -> bool:
        """Whether the run is known here, or its log was persisted to storage."""
        return self.state_path.exists() or self._persisted() is not None

    # -- processes -----------------------------------------------------------------------

    def spawn(self, role: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start ``role`` (worker or sidecar) in its own session, output to ``{role}.log``."""
        with (self.dir / f"{role}.log").open("ab") as out:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._children[role] = proc
        return proc

    def output_tail(self, role: str, limit: int = 1500) -> str:
        """The end of ``role``'s output (for error messages)."""
        try:
            data = (self.dir / f"{role}.log").read_bytes()[-limit:]
        except OSError:
            return ""
        return data.decode("utf-8", "replace").strip()

    def alive(self, role: str) -> bool:
        """Whether ``role``'s process is still running."""
        proc = self._children.get(role)
        if proc is not None:
            return proc.poll() is None
        info = self.load_state().get(role) or {}
        pid, start = info.get("pid"), info.get("start")
        if not pid:
            return False
        ticks = _start_ticks(pid)
        if ticks is None:  # no /proc (not Linux): ask the kernel whether the pid exists
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return start is None
        return ticks != -1 and ticks == start

    def exit_code(self, role: str) -> int | None:
        """The exit code, when this process started it and it has exited."""
        proc = self._children.get(role)
        return None if proc is None else proc.poll()

    def signal(self, role: str, sig: int) -> None:
        """Send ``sig`` to ``role``'s whole process group, if it still runs."""
        if not self.alive(role):
            return
        proc = self._children.get(role)
        pid = proc.pid if proc is not None else self.load_state()[role]["pid"]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    def kill_all(self) -> None:
        """SIGKILL every process this object started for the run."""
        for proc in self._children.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def sidecar_port(self) -> int | None:
        """The sidecar's port while it runs."""
        port = self.load_state().get("port")
        return int(port) if port and self.alive("sidecar") else None

    def stop_sidecar(self, timeout: float = 15) -> None:
        """SIGTERM the sidecar (it persists the log and drains its clients); SIGKILL if stuck."""
        self.signal("sidecar", signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive("sidecar") and time.monotonic() < deadline:
            time.sleep(0.05)
        self.signal("sidecar", signal.SIGKILL)

    # -- the log -------------------------------------------------------------------------

    def read_events(self) -> list[dict[str, Any]]:
        """The run's events: the local log, completed from the persisted one when shorter."""
        by_id: dict[int, dict[str, Any]] = {}
        lines, _ = read_complete_lines(self.log_path)
        local = list(iter_log_lines(b"\n".join(lines)))
        sources = [local]
        if not any(obj.get("type") in TERMINAL_TYPES for obj in local):
            persisted = self._persisted()
            if persisted:
                sources.insert(0, list(iter_log_lines(persisted)))
        for source in sources:
            for obj in source:
                if isinstance(obj.get("id"), int):
                    by_id[obj["id"]] = obj
        return [by_id[k] for k in sorted(by_id)]

    def terminal_event(self) -> dict[str, Any] | None:
        """The terminal event of the local log, if written."""
        lines, _ = read_complete_lines(self.log_path)
        for obj in iter_log_lines(b"\n".join(lines[-5:])):
            if obj.get("type") in TERMINAL_TYPES:
                return obj
        return None

    def last_step(self) -> int | None:
        """The last step seen in the local log."""
        lines, _ = read_complete_lines(self.log_path)
        steps = [
            o["step"] for o in iter_log_lines(b"\n".join(lines)) if isinstance(o.get("step"), int)
        ]
        return steps[-1] if steps else None

    @contextlib.contextmanager
    def _settle_lock(self) -> Iterator[None]:
        """Exclusive across processes and threads (each open is its own flock holder)."""
        with (self.dir / "settle.lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def write_post_mortem(self, event: BaseModel) -> bool:
        """Append a terminal event for a gone worker unless the log has one (exactly one writer
        wins); persist the log when no sidecar will. Returns whether this call wrote it."""
        with self._settle_lock():
            if self.terminal_event() is not None:
                return False
            EventLogWriter(self.log_path, self.job_id).write(event)
        log.warning(
            "run %s: wrote %s on behalf of its worker", self.job_id, event.__class__.__name__
        )
        if not self.alive("sidecar"):
            open_storage(self.storage_uri).put_file(self.layout.events, self.log_path)
        return True

    def is_evaluation(self) -> bool:
        """Whether the job is an evaluation (its config says so), not a training run."""
        try:
            return bool(json.loads(self.config_path.read_text()).get("kind") == "evaluation")
        except (OSError, ValueError, AttributeError):
            return False

    def _worker_failed(self) -> TrainingFailed | EvaluationFailed:
        code = self.exit_code("worker")
        how = f" with code {code}" if code is not None else ""
        last = self.output_tail("worker", 400).splitlines()[-1:] or [""]
        error = (
            f"the worker exited{how} without reporting an outcome: {last[0][:300]} "
            f"(see {self.dir / 'worker.log'})"
        )
        if self.is_evaluation():
            return EvaluationFailed(job_id=self.job_id, error=error)
        return TrainingFailed(job_id=self.job_id, step=self.last_step(), error=error)

    def settle(self) -> None:
        """Write ``training.failed`` when the worker is gone without a terminal event."""
        if self.state_path.exists() and self.terminal_event() is None and not self.alive("worker"):
            time.sleep(0.2)  # it may have written its last line just now
            if self.terminal_event() is None and self.write_post_mortem(self._worker_failed()):
                self.update_state(status="failed")

    async def watch_worker(self, interval: float = 0.5) -> None:
        """While a client follows the sidecar: settle the run if the worker dies silently."""
        while self.terminal_event() is None:
            if not self.alive("worker"):
                await asyncio.to_thread(self.settle)
                return
            await asyncio.sleep(interval)

    async def replay(self, last_event_id: str | None) -> AsyncIterator[Frame]:
        """Every event after ``last_event_id`` from the logs, following the local log while the
        worker still runs; ``end`` after the terminal event."""
        sent = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
        events = await asyncio.to_thread(self.read_events)
        offset = 0
        while True:
            for obj in events:
                if obj["id"] <= sent:
                    continue
                sent = obj["id"]
                yield _frame(obj)
                if obj.get("type") in TERMINAL_TYPES:
                    yield Frame(event=END, data="")
                    return
            if not self.state_path.exists():
                return  # only the persisted log is left and it has no end: nothing will come
            if not self.alive("worker"):
                await asyncio.to_thread(self.settle)
            else:
                await asyncio.sleep(0.05)
            lines, offset = read_complete_lines(self.log_path, offset)
            events = [o for o in iter_log_lines(b"\n".join(lines)) if isinstance(o.get("id"), int)]

    def describe(self) -> JobDescription:
        """The run as the backend sees it, from state file and event log."""
        state = self.load_state()
        try:
            config = json.loads(self.config_path.read_text())
        except (OSError, ValueError):
            config = {}
        events = self.read_events()
        terminal = next((o for o in reversed(events) if o.get("type") in TERMINAL_TYPES), None)
        error = None
        if terminal is not None:
            status = TERMINAL_STATUS[terminal["type"]]
            error = terminal.get("error")
        elif self.alive("worker"):
            status = "running"
        else:
            status, error = "failed", "the worker is gone without reporting an outcome"
        logs = [o for o in events if o.get("type") == "training.log"]
        started = next((o for o in events if o.get("type") in STARTED_TYPES), None)
        job = TrainingJob(
            id=self.job_id,
            name=state.get("name") or config.get("name") or self.job_id,
            status=status,  # type: ignore[arg-type]
            config=config,
            error=error,
            created_at=state.get("createdAt"),
            started_at=started.get("timestamp") if started else None,
            completed_at=terminal.get("timestamp") if terminal else None,
        )
        return JobDescription(
            job=job,
            step=logs[-1].get("step") if logs else None,
            # an evaluation's log has no training loss: the last one that has
            loss=next((o["loss"] for o in reversed(logs) if o.get("loss") is not None), None),
            phase=None if started or terminal else "starting",
            message=None if started or terminal else "loading the model and the dataset",
            last_event_id=max((int(o.get("id") or 0) for o in events), default=0) or None,
        )
