"""`arkor-ops start` as a subprocess: completed, failed, cancel and detach (SIGINT), bad input."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.local.helpers import FAKE_WORKER, REPO, make_backend

pytestmark = pytest.mark.timeout(120)

TRAINER = """
from arkor_ops import create_trainer

trainer = create_trainer(
    name="cli-triage",
    model="tiny",
    dataset={{"type": "file", "path": {dataset!r}}},
    max_steps={steps},
    save_steps=5,
)
"""


def trainer_file(tmp_path: Path, dataset: Path, steps: int) -> Path:
    path = tmp_path / "trainer.py"
    path.write_text(TRAINER.format(dataset=str(dataset), steps=steps))
    return path


def cli_env(runs_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "ARKOR_RUNS_DIR": str(runs_dir),
        "ARKOR_WORKER_MODULE": FAKE_WORKER,
        "ARKOR_SIDECAR_LINGER_SECONDS": "1",
        "ARKOR_CANCEL_TIMEOUT_SECONDS": "15",
    }
    env.pop("ARKOR_BACKEND", None)
    env.update(extra)
    return env


def start_cli(path: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "arkor_ops.cli", "start", str(path), "--backend", "local", *extra],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def started(proc: subprocess.Popen[str]) -> str:
    """The first line of output ("started job …"): the CLI is past start() and waiting."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("started job "), line
    return line


def wait_for_training(runs_dir: Path, timeout: float = 30) -> str:
    """The job id once its worker has logged a step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in runs_dir.glob("*/events.jsonl"):
            if '"training.log"' in log.read_text():
                return log.parent.name
        time.sleep(0.05)
    raise AssertionError("no training step within the timeout")


def final_status(runs_dir: Path, job_id: str) -> str:
    """The run's status once it is no longer running (checked for up to 30 s)."""
    backend = make_backend(runs_dir)
    for _ in range(300):
        desc = asyncio.run(backend.describe(job_id))
        if desc.job.status != "running":
            break
        time.sleep(0.1)
    return desc.job.status


def test_start_completes_and_reports_the_adapter(
    tmp_path: Path, runs_dir: Path, dataset_file: Path
) -> None:
    result_file = tmp_path / "result.json"
    proc = start_cli(
        trainer_file(tmp_path, dataset_file, 8),
        cli_env(runs_dir),
        "--result-file",
        str(result_file),
    )
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert "started job cli-triage-" in out
    result = json.loads(result_file.read_text())  # for scripts: no scraping of the output
    assert f"started job {result['job']['id']} " in out
    assert result["job"]["status"] == "completed" and result["metrics"]["totalSteps"] == 8
    assert [a["kind"] for a in result["artifacts"]] == ["final"]
    assert ": completed" in out
    assert "adapter: file://" in out and "/final" in out
    # no terminal: the progress bar prints plain lines, from the run's own on_log
    assert "running: step 1/8, loss " in err, err


def test_start_exits_1_when_the_run_fails(
    tmp_path: Path, runs_dir: Path, dataset_file: Path
) -> None:
    env = cli_env(runs_dir, FAKE_FAIL_AT_STEP="3")
    proc = start_cli(trainer_file(tmp_path, dataset_file, 8), env)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 1, err
    assert ": failed" in out and "scripted failure" in out


def test_ctrl_c_then_c_cancels_the_run(tmp_path: Path, runs_dir: Path, dataset_file: Path) -> None:
    env = cli_env(runs_dir, FAKE_STEP_SECONDS="0.2")
    proc = start_cli(trainer_file(tmp_path, dataset_file, 500), env)
    first = started(proc)
    job_id = wait_for_training(runs_dir)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate("c\n", timeout=60)
    out = first + out
    assert proc.returncode == 130, err
    assert "Cancel the run" in err
    assert f"job {job_id}: cancelled" in out
    desc = asyncio.run(make_backend(runs_dir).describe(job_id))
    assert desc.job.status == "cancelled"


def test_ctrl_c_then_d_stops_waiting_and_the_run_goes_on(
    tmp_path: Path, runs_dir: Path, dataset_file: Path
) -> None:
    env = cli_env(runs_dir, FAKE_STEP_SECONDS="0.1")
    proc = start_cli(trainer_file(tmp_path, dataset_file, 60), env)
    first = started(proc)
    job_id = wait_for_training(runs_dir)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate("d\n", timeout=60)
    out = first + out
    assert proc.returncode == 130, err
    assert f"stopped waiting; job {job_id} keeps running" in out
    assert final_status(runs_dir, job_id) == "completed"  # the Ctrl-C did not touch the worker


def test_bad_input_exits_2(tmp_path: Path, runs_dir: Path) -> None:
    missing = start_cli(tmp_path / "nope.py", cli_env(runs_dir))
    _, err = missing.communicate(timeout=60)
    assert missing.returncode == 2
    assert "not found" in err
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from arkor_ops import create_trainer\n"
        "trainer = create_trainer(name='x', model='m', dataset={'type': 'file', 'path': 'p'},"
        " max_steps=-1)\n"
    )
    proc = start_cli(bad, cli_env(runs_dir))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "max_steps" in err


def test_an_abort_signal_stops_waiting_and_the_run_goes_on(
    tmp_path: Path, runs_dir: Path, dataset_file: Path
) -> None:
    path = tmp_path / "abort_trainer.py"
    path.write_text(
        "from arkor_ops import AbortController, create_trainer\n"
        "controller = AbortController()\n"
        "trainer = create_trainer(\n"
        "    name='cli-abort', model='tiny',\n"
        f"    dataset={{'type': 'file', 'path': {str(dataset_file)!r}}}, max_steps=30,\n"
        "    abort_signal=controller.signal,\n"
        "    on_log=lambda ctx: controller.abort('enough') if ctx.step >= 2 else None,\n"
        ")\n"
    )
    proc = start_cli(path, cli_env(runs_dir, FAKE_STEP_SECONDS="0.1"))
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    assert "stopped waiting" in out and "keeps running" in out
    job_id = out.split("started job ", 1)[1].split()[0]
    assert final_status(runs_dir, job_id) == "completed"  # aborting never cancels the run


def test_misconfigured_backend_exits_2(tmp_path: Path, runs_dir: Path, dataset_file: Path) -> None:
    env = cli_env(runs_dir, ARKOR_STORAGE_URI="ftp://nowhere")
    proc = start_cli(trainer_file(tmp_path, dataset_file, 3), env)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "ARKOR_STORAGE_URI" in err
