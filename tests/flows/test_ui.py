"""The Prefect UI shows a run's loss table and checkpoint links (headless Chromium).

Needs Debian's ``chromium`` (``scripts/ensure-chromium.sh``). The screenshot it takes is the
picture in docs/prefect.md: ``ARKOR_UPDATE_SCREENSHOTS=1`` copies it to docs/img/prefect-run.png
(otherwise a test run leaves the checkout as it was).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from arkor_ops.testing import FakeBackend, scripted_events
from tests.flows.helpers import latest, run_artifacts, tiny_config
from tests.sidecar.browser import BASE_FLAGS

pytestmark = [pytest.mark.prefect, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "img" / "prefect-run.png"
FLAGS = [
    *BASE_FLAGS,
    "--hide-scrollbars",
    "--window-size=1400,1000",
    "--virtual-time-budget=20000",
]


def render(tmp_path: Path, url: str, expect: str) -> str:
    """The DOM of ``url`` once it contains ``expect`` (a loaded machine may need a retry)."""
    dom = ""
    for _ in range(3):
        dom = chromium(tmp_path, "--dump-dom", url)
        if expect in dom:
            break
    return dom


def chromium(tmp_path: Path, *args: str) -> str:
    """Run headless Chromium with a fresh profile; returns its stdout."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: run scripts/ensure-chromium.sh")
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    out = subprocess.run(
        [exe, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return out.stdout


async def test_flow_run_page_shows_loss_table_and_checkpoints(
    ui_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.training
    from flows.fine_tune import fine_tune

    fake = FakeBackend(
        scripted_events("support-bot-3f2a9c1e", steps=8), job_id="support-bot-3f2a9c1e"
    )
    monkeypatch.setattr(flows.training, "make_backend", lambda settings, flow_run_id=None: fake)
    try:
        config = tiny_config("/data/support.jsonl", name="support-bot", maxSteps=8)
        state = await fine_tune(config=config, return_state=True)
    finally:
        fake.close()
    assert state.is_completed()
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all()
    page = f"{ui_url}/v2/runs/flow-run/{state.state_details.flow_run_id}?tab=Artifacts"
    dom = render(tmp_path, page, "support-bot-3f2a9c1e-loss")
    # the Artifacts tab of the flow run page lists the loss table and the checkpoint links
    assert "support-bot-3f2a9c1e-loss" in dom, dom[-2000:]
    assert "support-bot-3f2a9c1e-checkpoints" in dom
    assert "support-bot-3f2a9c1e-checkpoint-8" in dom
    # and each artifact's page renders its content: the table's rows, the links
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        arts = await run_artifacts(client, state.state_details.flow_run_id)
    table = latest(arts, "table")[0]
    listing = next(a for a in latest(arts, "markdown") if a.key.endswith("-checkpoints"))
    table_dom = render(tmp_path, f"{ui_url}/v2/artifacts/artifact/{table.id}", "0.2857")
    assert "<table" in table_dom and "0.2857" in table_dom
    links_dom = render(tmp_path, f"{ui_url}/v2/artifacts/artifact/{listing.id}", "step-00000008")
    rendered = links_dom.split("checkpoints/step-00000008", 1)
    assert len(rendered) == 2 and "<a" in rendered[0][-600:], "checkpoint link not rendered"
    shot = tmp_path / SCREENSHOT.name
    for _ in range(3):  # a blank page (app not loaded yet on a busy machine) is a few KB
        chromium(tmp_path, f"--screenshot={shot}", page)
        if shot.stat().st_size > 10_000:
            break
    assert shot.stat().st_size > 10_000
    if os.environ.get("ARKOR_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, SCREENSHOT)
