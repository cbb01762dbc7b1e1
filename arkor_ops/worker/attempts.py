"""The run's attempts across pods: event ids that survive any pod loss, and the retry budget.

A Job may run several pods (attempts) for one run: replacements after a disruption, retries
after a failure, after a forced delete or a lost node. Each attempt's worker keeps a small
ledger in storage, ``{run}/attempts.json``, written before its first event and when it exits:

``{"attempts": n, "starts": [unix times], "failures": k, "started": bool,
"closed": {"attempt", "how", "lastEventId", "error"}}``

- **Event ids.** A new attempt continues the log that the previous pod persisted (or, with the
  same pod's log still there, that log: then every earlier id is in it). When that
  attempt closed itself (it recorded ``closed`` with its last id) and the persisted log reaches
  that id, ids go on densely. Otherwise the previous pod was lost ungracefully and may have
  served ids that never reached storage, so this attempt's ids start at ``(n - 1) · EPOCH + 1``,
  above every id an earlier attempt can have used (each attempt writes fewer than ``EPOCH``
  events). Ids stay integers, unique and increasing across every pod of the run, so a client
  resuming with ``Last-Event-ID`` never skips a new event.
- **Retry budget.** ``failures`` counts the retryable failures earlier attempts reported. A
  retryable failure is the run's last (``training.failed``) once ``failures + 1`` reaches
  ``ARKOR_MAX_ATTEMPTS`` (the Job's ``backoffLimit + 1``); before that it is ``job.phase``
  ``retrying``. Failures the worker never saw (OOM kill, forced delete) are not counted, so it
  never declares a run failed that Kubernetes will retry; when the Job gives up first, the
  client ends the stream from the Job's status.

- **Restart limit.** The Job's ``podFailurePolicy`` ignores disruptions, so an eviction that
  repeats for the same reason (a full disk, a pool that keeps preempting) would be retried for
  free until ``activeDeadlineSeconds``. Every start is listed in ``starts``; a start after more
  than ``ARKOR_MAX_RESTARTS`` restarts (Kubernetes: ``ARKOR_K8S_MAX_POD_RESTARTS``) fails the
  run with exit 2 (``FailJob``). Unset (local runs): no limit.

The ledger must be readable and writable at the start: without it, ids could repeat, so the
worker then exits 1 before writing any event (see :func:`begin`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from arkor_ops.errors import StorageError
from arkor_ops.eventlog import EventLogWriter
from arkor_ops.storage import RunLayout, Storage, join_uri
from arkor_ops.worker.errors import RestartLimitError

log = logging.getLogger(__name__)

#: Ids of an attempt that follows an ungraceful loss start above ``(attempt - 1) * EPOCH``.
EPOCH = 1_000_000_000
LEDGER_NAME = ATTEMPTS_NAME = "attempts.json"


def ledger_uri(layout: RunLayout) -> str:
    """Where the run's attempt ledger lives."""
    return join_uri(layout.root, LEDGER_NAME)


@dataclass
class Attempt:
    """This attempt of the run, and what earlier attempts left in the ledger."""

    storage: Storage
    uri: str
    number: int
    max_attempts: int
    failures: int = 0
    started_before: bool = False
    previous: dict[str, Any] | None = None
    ledger: dict[str, Any] = field(default_factory=dict)

    @property
    def last_try(self) -> bool:
        """Whether a retryable failure now is final (the Job will not run another attempt)."""
        return self.failures + 1 >= self.max_attempts

    def resume_reason(self) -> str:
        """Why a previous attempt ended, for ``training.resumed``."""
        prev = self.previous
        if prev is None:
            return (
                "the previous pod was lost without stopping cleanly (killed, out of memory, "
                "force-deleted or its node lost)"
            )
        how = prev.get("how")
        if how == "disruption":
            return "the previous pod was disrupted (evicted, preempted or drained)"
        if how == "retrying":
            return f"retry after a failure: {prev.get('error') or 'unknown error'}"
        return f"the previous attempt ended ({how})"

    def _write(self, **changes: Any) -> None:
        self.ledger.update(changes)
        self.storage.put_bytes(self.uri, json.dumps(self.ledger, sort_keys=True).encode())

    def check_restarts(self, max_restarts: int | None) -> None:
        """Refuse to train once the run has restarted more often than ``max_restarts``.

        Raises:
            RestartLimitError: this start is restart number ``max_restarts + 1`` (exit 2).
        """
        if max_restarts is None:
            return
        restarts = self.number - 1
        if restarts:
            log.warning("pod start %d of this run (restart %d of %d allowed)", self.number,
                        restarts, max_restarts)  # fmt: skip
        if restarts > max_restarts:
            raise RestartLimitError(
                f"giving up: this run's pod has been restarted {restarts} times (the limit is "
                f"ARKOR_MAX_RESTARTS={max_restarts}, on Kubernetes ARKOR_K8S_MAX_POD_RESTARTS). "
                "Evictions, preemptions, node losses or crashes keep ending it; the previous "
                "pods' events say why (kubectl describe pod / kubectl get events), e.g. "
                "ephemeral-storage or memory over its limit"
            )

    def mark_started(self) -> None:
        """Record that training began (best effort: a later attempt then reports a resume)."""
        try:
            self._write(started=True)
        except StorageError as exc:
            log.warning("could not record the start in %s: %s", self.uri, exc)

    def close(self, how: str, last_event_id: int, error: str | None = None) -> None:
        """Record how this attempt ends, so the next one continues ids densely (best effort).

        ``how`` is ``retrying`` (counted against the retry budget), ``disruption``,
        ``completed``, ``failed`` or ``cancelled``.
        """
        changes: dict[str, Any] = {
            "closed": {
                "attempt": self.number,
                "how": how,
                "lastEventId": last_event_id,
                "error": error[:500] if error else None,
            }
        }
        if how == "retrying":
            changes["failures"] = self.failures + 1
        try:
            current = _int(_read(self.storage, self.uri).get("attempts"))
            if current != self.number:  # an old pod outliving its replacement: leave it be
                log.warning("attempt %d is not the newest (%d): not closing", self.number, current)
                return
            self._write(**changes)
        except StorageError as exc:
            log.warning("could not record how attempt %d ended: %s", self.number, exc)


def _read(storage: Storage, uri: str) -> dict[str, Any]:
    if not storage.exists(uri):
        return {}
    try:
        data = json.loads(storage.get_bytes(uri))
    except ValueError as exc:  # starting over could repeat ids: retry instead
        raise StorageError(f"{uri} is not an attempt record: {exc}") from None
    if not isinstance(data, dict):
        raise StorageError(f"{uri} is not an attempt record: {type(data).__name__}")
    return data


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def begin(
    storage: Storage,
    layout: RunLayout,
    writer: EventLogWriter,
    *,
    max_attempts: int,
    seeded_started: bool,
    continued_local: bool = False,
) -> Attempt:
    """Register this attempt in the ledger and set where its event ids continue.

    Call after the log was seeded from storage and before any event is written.

    Args:
        storage: the run's storage.
        layout: the run's layout.
        writer: the (seeded) event log writer; its numbering may be moved forward.
        max_attempts: counted attempts the Job allows (``backoffLimit + 1``).
        seeded_started: the seeded log holds ``training.started``.
        continued_local: the log was not seeded but this pod's own (a restarted trainer in the
            same pod, a local re-run): it already holds every id an earlier attempt wrote.

    Returns:
        This attempt.

    Raises:
        StorageError: the ledger cannot be read or written (no event may be written then).
    """
    uri = ledger_uri(layout)
    ledger = _read(storage, uri)
    raw_starts = ledger.get("starts")
    starts: list[Any] = raw_starts if isinstance(raw_starts, list) else []
    before = max(_int(ledger.get("attempts")), len(starts))
    number = before + 1
    closed = ledger.get("closed") if isinstance(ledger.get("closed"), dict) else None
    previous = closed if closed is not None and closed.get("attempt") == before else None
    if before and not continued_local:
        complete = previous is not None and writer.last_id >= _int(previous.get("lastEventId"))
        if not complete:
            floor = before * EPOCH
            log.warning(
                "attempt %d: the previous attempt did not close cleanly or its log was not "
                "persisted in full; event ids continue above %d so that none repeats",
                number,
                floor,
            )
            writer.advance_to(floor)
    attempt = Attempt(
        storage=storage,
        uri=uri,
        number=number,
        max_attempts=max_attempts,
        failures=_int(ledger.get("failures")),
        started_before=bool(ledger.get("started")) or seeded_started,
        previous=previous,
        ledger={k: v for k, v in ledger.items() if k != "closed"},
    )
    attempt._write(
        attempts=number, starts=[*starts, time.time()], failures=attempt.failures, closed=None
    )
    log.info(
        "attempt %d of the run (%d retryable failure(s) before, at most %d)",
        number,
        attempt.failures,
        max_attempts,
    )
    return attempt
