"""Event ids across pod loss: unique, increasing, and a resuming client misses nothing.

A property test over loss points, through the real parts a pod uses: the worker's log writer,
seeding from storage and attempt ledger (``arkor_ops.worker.attempts``), the sidecar's log tail
and SSE generator, and ``file://`` storage. Each pod writes some events; a client reads some of
what that pod serves; then the pod is lost with some prefix of its log persisted (nothing, a
part, all), cleanly (the worker recorded how it ended) or not (SIGKILL, forced delete, lost
node). The next pod continues. The last one completes.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arkor_ops.eventlog import EventLogWriter, read_complete_lines, read_events
from arkor_ops.events import TrainingCompleted, TrainingLog, TrainingStarted
from arkor_ops.sidecar.app import stream_events
from arkor_ops.sidecar.tail import LogTail
from arkor_ops.storage import RunLayout, open_storage
from arkor_ops.worker.attempts import begin
from arkor_ops.worker.run import seed_event_log

JOB = "ids-run"

# (events the pod writes, events the client reads from it, % of its log persisted, clean exit)
POD = st.tuples(
    st.integers(0, 8), st.integers(0, 12), st.sampled_from([0, 30, 70, 100]), st.booleans()
)


async def _read(tail: LogTail, after: int, most: int | None) -> list[tuple[int, str]]:
    """Up to ``most`` events the sidecar serves after id ``after`` (all it has, when None)."""
    tail.poll()
    available = sum(1 for e in read_events(tail.path) if (e.id or 0) > after)
    want = available if most is None else min(most, available)
    out: list[tuple[int, str]] = []
    if want == 0:
        return out
    stream = stream_events(tail, after)
    try:
        async for chunk in stream:
            for frame in chunk.decode().split("\n\n"):
                fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
                if "id" in fields:
                    out.append((int(fields["id"]), fields["event"]))
            if len(out) >= want:
                break
    finally:
        await stream.aclose()
    return out[:want]


def _persist(storage_uri: str, log: Path, percent: int) -> None:
    """What the pod's sidecar got into storage before the loss: a prefix of the log's lines."""
    lines, _ = read_complete_lines(log)
    keep = len(lines) * percent // 100
    if keep:
        layout = RunLayout(storage_uri, JOB)
        open_storage(storage_uri).put_bytes(layout.events, b"\n".join(lines[:keep]) + b"\n")


def _simulate(root: Path, pods: list[tuple[int, int, int, bool]]) -> None:
    storage_uri = f"file://{root}/storage"
    storage, layout = open_storage(storage_uri), RunLayout(storage_uri, JOB)
    written: dict[int, tuple[int, int]] = {}  # id -> (pod, n-th event of that pod)
    received: list[int] = []
    for number, (count, reads, percent, clean) in enumerate([*pods, (2, 99, 100, True)], 1):
        last = number == len(pods) + 1
        log = root / f"pod-{number}" / "events.jsonl"
        writer = EventLogWriter(log, JOB)
        seed_event_log(writer, storage, layout)
        seeded = any(e.type == "training.started" for e in read_events(log))
        attempt = begin(storage, layout, writer, max_attempts=99, seeded_started=seeded)
        events = [TrainingStarted(job_id="")] if not seeded else []
        events += [TrainingLog(job_id="", step=i) for i in range(count)]
        if last:
            events.append(TrainingCompleted(job_id=""))
        for i, event in enumerate(events):
            stamped = writer.write(event)
            assert stamped.id not in written, (
                f"id {stamped.id} reused (first {written[stamped.id]})"
            )
            written[stamped.id] = (number, i)
        tail = LogTail(log)
        after = received[-1] if received else 0
        got = asyncio.run(_read(tail, after, None if last else reads))
        received += [event_id for event_id, _ in got]
        if clean and not last:
            attempt.close("disruption", writer.last_id)
        _persist(storage_uri, log, percent)
        if last:
            assert got and got[-1][1] == "training.completed"
    assert received == sorted(set(received)), "the client got an id twice or out of order"
    final = [e.id for e in read_events(root / f"pod-{len(pods) + 1}" / "events.jsonl")]
    missed = sorted(set(final) - set(received))
    assert not missed, f"a resuming client skipped events {missed} of the final log"
    assert final == sorted(set(final)), "the final log's ids are not increasing"


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(pods=st.lists(POD, min_size=1, max_size=4))
def test_ids_stay_unique_and_a_resuming_client_misses_nothing(
    pods: list[tuple[int, int, int, bool]],
) -> None:
    with tempfile.TemporaryDirectory(prefix="arkor-ids-") as tmp:
        _simulate(Path(tmp), pods)


def test_a_clean_handover_keeps_ids_dense(tmp_path: Path) -> None:
    """A disruption that persisted everything: the next pod goes on at the next id."""
    _simulate(tmp_path, [(3, 99, 100, True)])
    final = [e.id for e in read_events(tmp_path / "pod-2" / "events.jsonl")]
    assert final == list(range(1, len(final) + 1))
