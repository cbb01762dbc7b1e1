"""The Prefect UI shows a run's three artifacts and its loss curve (headless Chromium over CDP).

Needs Debian's ``chromium`` (``scripts/ensure-chromium.sh``). The screenshot it takes is the
picture in docs/prefect.md: ``ARKOR_UPDATE_SCREENSHOTS=1`` copies it to docs/img/prefect-run.png
(otherwise a test run leaves the checkout as it was).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from arkor_ops.testing import FakeBackend, scripted_events
from tests.flows.helpers import by_key, run_artifacts, tiny_config
from tests.sidecar.browser import Browser

pytestmark = [pytest.mark.prefect, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "img" / "prefect-run.png"
JOB = "support-bot-3f2a9c1e"
WIDTH, HEIGHT = 1400, 1050

#: What the page shows: the artifact cards (type, key) and the loss curves that have loaded.
SHOWN = """(() => {
  const grid = document.querySelector('[data-testid="flow-run-artifacts-grid"]');
  const root = grid || document.body;
  const cards = grid ? [...grid.children].map(card => [
      (card.querySelector('p') || {}).textContent || '',
      (card.querySelector('h3, h4') || {}).textContent || '']) : [];
  const pictures = [...root.querySelectorAll('img[src^="data:image/png"]')]
      .filter(img => img.complete && img.naturalWidth > 0)
      .map(img => [img.naturalWidth, img.naturalHeight, img.getBoundingClientRect().width]);
  return {cards, pictures, text: document.body.innerText};
})()"""


def events() -> list[Any]:
    """Eight logged steps, an evaluation at steps 4 and 8, checkpoints every 4, completed."""
    script: list[Any] = scripted_events(JOB, steps=8, checkpoint_every=4)
    from arkor_ops.events import TrainingLog

    for step, eval_loss in ((4, 0.62), (8, 0.41)):
        at = next(i for i, e in enumerate(script) if getattr(e, "step", None) == step)
        script.insert(at + 1, TrainingLog(job_id=JOB, step=step, eval_loss=eval_loss))
    return script


async def shown(browser: Browser, url: str, ready: Any, timeout: float = 60) -> dict[str, Any]:
    """What ``url`` shows once ``ready(shown)`` holds (the UI loads its data after the page)."""
    await browser.goto(url)
    seen: dict[str, Any] = {}
    for _ in range(int(timeout / 0.25)):
        seen = await browser.evaluate(SHOWN)
        if ready(seen):
            return seen
        await asyncio.sleep(0.25)
    raise AssertionError(f"{url} never got ready: {json.dumps(seen)[:3000]}")


async def settled(browser: Browser) -> None:
    """Give the run graph (a canvas drawn after the data arrives) a moment, for the picture."""
    for _ in range(40):
        if await browser.evaluate("document.querySelectorAll('canvas').length > 0"):
            break
        await asyncio.sleep(0.25)
    await asyncio.sleep(2)


async def test_flow_run_page_shows_three_artifacts_and_the_loss_curve(
    ui_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import arkor_ops.flows.training
    from arkor_ops.flows.fine_tune import fine_tune

    fake = FakeBackend(events(), job_id=JOB)
    monkeypatch.setattr(
        arkor_ops.flows.training, "resolve_backend", lambda name=None, **overrides: fake
    )
    try:
        config = tiny_config("/data/support.jsonl", name="support-bot", maxSteps=8)
        state = await fine_tune(config=config, return_state=True)
    finally:
        fake.close()
    assert state.is_completed()
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        arts = by_key(await run_artifacts(client, state.state_details.flow_run_id))
    keys = {f"{JOB}-progress", f"{JOB}-loss", f"{JOB}-checkpoints"}
    assert set(arts) == keys

    run_page = f"{ui_url}/v2/runs/flow-run/{state.state_details.flow_run_id}?tab=Artifacts"
    async with Browser(tmp_path / "profile") as browser:
        await browser.call(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )
        # the run page: three cards, one per artifact, and the loss curve on the loss card
        page = await shown(browser, run_page, lambda s: len(s["cards"]) >= 3 and s["pictures"])
        assert sorted(map(tuple, page["cards"])) == sorted(
            [
                ("PROGRESS", f"{JOB}-progress"),
                ("TABLE", f"{JOB}-checkpoints"),
                ("TABLE", f"{JOB}-loss"),
            ]
        ), page["cards"]
        ((width, height, shown_width),) = page["pictures"]
        assert (width, height) == (700, 300)
        assert shown_width > 200, "the loss curve is squeezed on its card"
        assert "Completed at step 8 of 8" in page["text"]
        await settled(browser)
        shot = await browser.call("Page.captureScreenshot", format="png")
        (tmp_path / SCREENSHOT.name).write_bytes(base64.b64decode(shot["data"]))

        # each artifact's page renders its content: the loss rows with the curve, the checkpoints
        loss = await shown(
            browser,
            f"{ui_url}/v2/artifacts/artifact/{arts[f'{JOB}-loss'].id}",
            lambda s: "0.2857" in s["text"] and s["pictures"],
        )
        assert "eval_loss" in loss["text"] and "0.41" in loss["text"]
        shot = await browser.call("Page.captureScreenshot", format="png")  # kept in tmp_path only
        (tmp_path / "loss-artifact.png").write_bytes(base64.b64decode(shot["data"]))
        checkpoints = await shown(
            browser,
            f"{ui_url}/v2/artifacts/artifact/{arts[f'{JOB}-checkpoints'].id}",
            lambda s: "final adapter" in s["text"],
        )
        assert f"file:///fake/{JOB}/checkpoints/step-00000008/" in checkpoints["text"]
        assert f"file:///fake/{JOB}/final/" in checkpoints["text"]
    if os.environ.get("ARKOR_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(tmp_path / SCREENSHOT.name, SCREENSHOT)
