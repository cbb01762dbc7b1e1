"""A real browser's `EventSource` reads the sidecar, reconnects after a restart, ends on `end`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from arkor_ops.eventlog import EventLogWriter
from arkor_ops.events import TrainingCompleted, TrainingStarted
from tests.sidecar.browser import Browser
from tests.sidecar.helpers import JOB_ID, Sidecars, write_logs

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(120),
]

PAGE_SCRIPT = """
window.__events = []; window.__opens = 0; window.__errors = 0; window.__done = false;
const es = new EventSource('/v1/jobs/%s/events/stream');
const types = ['training.started', 'training.log', 'checkpoint.saved', 'training.completed',
               'training.failed', 'training.cancelled', 'ping', 'end'];
for (const t of types) {
  es.addEventListener(t, (e) => {
    window.__events.push({type: t, id: e.lastEventId, data: e.data});
    if (t === 'end') { es.close(); window.__done = true; }
  });
}
es.onopen = () => { window.__opens += 1; };
es.onerror = () => { window.__errors += 1; };
true;
"""


async def until(
    browser: Browser, expr: str, check: Callable[[Any], bool], timeout: float = 30
) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            value = await browser.evaluate(expr)
            if check(value):
                return value
            await asyncio.sleep(0.05)


async def test_browser_eventsource_reconnects_after_restart_and_ends(
    sidecars: Sidecars, log_path: Path, storage_uri: str, writer: EventLogWriter, tmp_path: Path
) -> None:
    writer.write(TrainingStarted(job_id=JOB_ID))
    write_logs(writer, 2)  # ids 1..3
    sc = sidecars.start(log_path, storage_uri, ARKOR_PING_SECONDS="0.5")
    async with Browser(tmp_path / "profile") as browser:
        await browser.goto(f"{sc.base}/healthz")  # same origin as the stream: no CORS needed
        await browser.evaluate(PAGE_SCRIPT % JOB_ID)
        await until(
            browser, "window.__events.filter(e => e.type !== 'ping').length", lambda n: n >= 3
        )
        await until(browser, "window.__events.some(e => e.type === 'ping')", bool)  # idle
        assert await asyncio.to_thread(sc.stop) == 0
        write_logs(writer, 2, start_step=3)  # ids 4, 5 while the sidecar is down
        await until(browser, "window.__errors", lambda n: n >= 1)
        sc2 = sidecars.start(log_path, storage_uri, port=sc.port, ARKOR_PING_SECONDS="0.5")
        await until(browser, "window.__opens", lambda n: n >= 2)  # EventSource's own retry
        writer.write(TrainingCompleted(job_id=JOB_ID))
        await until(browser, "window.__done", bool)
        events = await browser.evaluate("window.__events")
        assert sc2.health()["terminal"] is True
    named = [e for e in events if e["type"] != "ping"]
    assert [int(e["id"]) for e in named[:-1]] == [1, 2, 3, 4, 5, 6]  # each once, in order
    assert [e["type"] for e in named][-2:] == ["training.completed", "end"]
    assert any(e["type"] == "ping" for e in events)
