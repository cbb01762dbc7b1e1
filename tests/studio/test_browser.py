"""The studio in headless Chromium during a real run (the real worker on the tiny model): the
loss chart grows as the run logs, committed checkpoints are listed with their URIs, the
playground gets an answer from the newest checkpoint through infer(), Cancel stops the run,
and the playground then says the run ended. ``ARKOR_UPDATE_SCREENSHOTS=1`` copies its
screenshots to docs/img/studio-*.png, the pictures in docs/studio.md (otherwise a test run leaves
the checkout as it was)."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from arkor_ops.backends.local import LocalBackend, LocalSettings
from arkor_ops.config import validate_config
from tests.local.helpers import REPO
from tests.sidecar.browser import Browser
from tests.studio.helpers import Studio

pytestmark = [pytest.mark.browser, pytest.mark.train, pytest.mark.timeout(600)]

ROWS = REPO / "examples" / "triage" / "train.jsonl"
SHOTS = REPO / "docs" / "img"
TRAIN_VERTICES = "(document.querySelector('#chart path.train')?.getAttribute('d') || '')" + (
    ".split(/[ML]/).length - 1"
)


async def until(
    browser: Browser, expr: str, check: Callable[[Any], bool], timeout: float = 240
) -> Any:
    """The value of ``expr`` once ``check`` accepts it."""
    value = None
    try:
        async with asyncio.timeout(timeout):
            while not check(value := await browser.evaluate(expr)):
                await asyncio.sleep(0.25)
    except TimeoutError:
        raise AssertionError(f"{expr} never passed its check; last value {value!r}") from None
    return value


async def shoot(browser: Browser, folder: Path, name: str) -> None:
    """A screenshot of the page as it is, for the docs (copied there on request)."""
    shot = await browser.call("Page.captureScreenshot", format="png")
    path = folder / f"studio-{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    if os.environ.get("ARKOR_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(path, SHOTS / path.name)


async def login(browser: Browser, studio: Studio) -> None:
    """Open the URL the command printed; the studio sets its cookie and drops the token."""
    await browser.call("Page.navigate", url=studio.url)
    await until(
        browser,
        "location.href + ' ' + document.readyState",
        lambda v: v == (f"{studio.base}/ complete"),
        timeout=30,
    )
    await until(browser, "!!document.querySelector('#runs')", bool, timeout=30)


async def ask(browser: Browser, text: str) -> dict[str, Any]:
    """Send ``text`` in the playground; the answer bubble once it finished or failed."""
    before = await browser.evaluate("document.querySelectorAll('.msg.assistant').length")
    await browser.evaluate(
        f"document.querySelector('#pg-input').value = {text!r};"
        "document.querySelector('#pg-send').click(); true"
    )
    last = "[...document.querySelectorAll('.msg.assistant')].at(-1)"
    await until(
        browser,
        f"document.querySelectorAll('.msg.assistant').length > {before}"
        f" && ['done', 'error'].includes({last}.dataset.state)",
        bool,
        timeout=180,
    )
    return dict(
        await browser.evaluate(
            f"({{state: {last}.dataset.state, text: {last}.querySelector('.text').textContent,"
            f" meta: {last}.querySelector('.meta').textContent}})"
        )
    )


async def test_studio_follows_a_real_run_chats_with_its_checkpoint_and_cancels_it(
    runs_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    backend = LocalBackend(LocalSettings(runs_dir=runs_dir, sidecar_linger_seconds=1))
    config = validate_config(
        {
            "name": "triage-tiny",
            "model": str(tiny_model_dir),
            "dataset": {"type": "file", "path": str(ROWS)},
            "lora": {"r": 8, "alpha": 8, "max_length": 512},
            "max_steps": 5000,  # alive until Cancel
            "save_steps": 4,
            "logging_steps": 1,
            "eval_steps": 4,
            "dataset_split": {"enabled": True, "test_size": 0.05},
            "batch_size": 2,
        }
    )
    job = await backend.submit(config)
    studio = Studio(runs_dir, tmp_path / "studio.log")
    try:
        async with Browser(tmp_path / "profile") as browser:
            await browser.call(
                "Emulation.setDeviceMetricsOverride",
                width=1280,
                height=900,
                deviceScaleFactor=1,
                mobile=False,
            )
            await login(browser, studio)
            await until(browser, f"!!document.querySelector('tr[data-job=\"{job.id}\"]')", bool)

            # run detail: the train-loss line grows while the run logs
            await browser.evaluate(f"location.hash = '#/runs/{job.id}'; true")
            first = await until(browser, TRAIN_VERTICES, lambda n: n >= 2)
            await until(browser, TRAIN_VERTICES, lambda n: n > first)
            await until(browser, "document.querySelectorAll('#chart .eval-pt').length", bool)
            uri = await until(
                browser, "document.querySelector('#checkpoints .uri a')?.textContent || ''", bool
            )
            assert uri.startswith("file://") and f"/{job.id}/checkpoints/step-" in uri
            status = "document.querySelector('#run-status [data-field=Status]').textContent"
            assert await until(browser, status, bool) == "running"
            await until(browser, TRAIN_VERTICES, lambda n: n >= 12)  # a curve worth a picture
            await shoot(browser, tmp_path, "run")

            # runs list: the run is there; search narrows it away
            await browser.evaluate("location.hash = '#/'; true")
            row = f"document.querySelector('tr[data-job=\"{job.id}\"]')?.innerText || ''"
            listed = await until(browser, row, lambda text: "running" in text)
            assert "triage-tiny" in listed
            await shoot(browser, tmp_path, "runs")
            await browser.evaluate(
                "{ const s = document.querySelector('#search'); s.value = 'no-such-run';"
                "s.dispatchEvent(new Event('input')); } true"
            )
            empty = "document.querySelector('#runs-empty').textContent"
            assert await until(browser, empty, bool) == "No matches."
            assert await browser.evaluate("document.querySelectorAll('#runs tr').length") == 0
            await browser.evaluate(
                "{ const s = document.querySelector('#search'); s.value = 'TRIAGE';"  # any case
                "s.dispatchEvent(new Event('input'));"
                "const f = document.querySelector('#status-filter'); f.value = 'completed';"
                "f.dispatchEvent(new Event('change')); } true"
            )
            assert await until(browser, empty, bool) == "No matches."  # it is running
            await browser.evaluate(
                "{ const f = document.querySelector('#status-filter'); f.value = 'running';"
                "f.dispatchEvent(new Event('change')); } true"
            )
            assert "triage-tiny" in await until(browser, row, bool)

            # playground: the newest committed checkpoint answers through infer()
            await browser.evaluate(f"location.hash = '#/playground?job={job.id}'; true")
            await until(browser, "document.querySelectorAll('#pg-step option').length", bool)
            answer = await ask(browser, "I was charged twice for my invoice this month.")
            assert answer["state"] == "done", answer
            assert answer["text"].strip(), answer
            answered = re.search(rf"{job.id}@step-(\d+)", answer["meta"])  # who answered
            assert answered, answer
            step = int(answered.group(1))
            assert step > 0 and step % 4 == 0  # a committed checkpoint (save_steps 4)
            assert "training paused" in answer["meta"]
            await shoot(browser, tmp_path, "playground")

            # Cancel on the run page stops the run
            await browser.evaluate(f"location.hash = '#/runs/{job.id}'; true")
            await until(browser, "!document.querySelector('#cancel').disabled", bool, timeout=30)
            await browser.evaluate("document.querySelector('#cancel').click(); true")
            assert await until(browser, status, lambda s: s == "cancelled", timeout=120)
            log = "document.querySelector('#event-log').innerText"
            assert "cancelled at step" in await until(browser, log, lambda t: "cancelled" in t)
            assert (await backend.describe(job.id)).job.status == "cancelled"

            # the playground now says the run ended, as a message
            await browser.evaluate(f"location.hash = '#/playground?job={job.id}&step={step}'; true")
            await until(browser, "document.querySelectorAll('#pg-step option').length", bool)
            ended = await ask(browser, "Still there?")
            assert ended["state"] == "error"
            assert ended["text"].startswith("run_ended:"), ended
    finally:
        studio.stop()
        await backend.cancel(job.id)
        await backend.aclose()
