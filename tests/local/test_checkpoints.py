"""Checkpoints as objects on the local backend: `trainer.checkpoints()`, `arkor-ops checkpoints`,
and a second run started from one of them (the real worker, the tiny model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.local import LocalBackend, LocalSettings
from arkor_ops.errors import CheckpointError
from arkor_ops.storage import RunLayout, open_storage
from tests.local.helpers import REPO

pytestmark = [pytest.mark.train, pytest.mark.timeout(420)]

TEST_ROWS = REPO / "examples" / "triage" / "test.jsonl"


def _fields(model: Path, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": "tiny-checkpoints",
        "model": str(model),
        "dataset": {"type": "file", "path": str(TEST_ROWS)},
        "lora": {"r": 8, "alpha": 8, "max_length": 512},
        "max_steps": 4,
        "save_steps": 2,
        "logging_steps": 1,
        "batch_size": 2,
    }
    fields.update(extra)
    return fields


def _cli(runs_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ARKOR_RUNS_DIR": str(runs_dir), "COLUMNS": "300"}
    return subprocess.run(
        [sys.executable, "-m", "arkor_ops.cli", *args, "--backend", "local"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_checkpoints_are_listed_and_a_run_starts_from_one(
    runs_dir: Path, tiny_model_dir: Path
) -> None:
    backend = LocalBackend(LocalSettings(runs_dir=runs_dir, sidecar_linger_seconds=1))
    losses: dict[int, float | None] = {}
    trainer = create_async_trainer(
        _fields(tiny_model_dir),
        backend=backend,
        on_log=lambda ctx: losses.__setitem__(ctx.step, ctx.loss),
    )
    assert await trainer.checkpoints() == []  # nothing started, nothing to list
    result = await trainer.wait()
    assert result.job.status == "completed"

    infos = await trainer.checkpoints()
    assert [(c.kind, c.step) for c in infos] == [("checkpoint", 2), ("checkpoint", 4), ("final", 4)]
    storage = open_storage(backend.storage_uri)
    layout = RunLayout(backend.storage_uri, result.job.id)
    assert [c.uri for c in infos] == [layout.checkpoint(2), layout.checkpoint(4), layout.final]
    assert {a.uri for a in result.artifacts} == {c.uri for c in infos}
    for c in infos:
        assert c.train_loss == losses[c.step]  # the loss the callbacks saw at that step
        assert c.eval_loss is None  # no eval split
        assert c.base_model == str(tiny_model_dir)
        files = [u for u in storage.list(c.uri + "/") if not u.endswith("/manifest.json")]
        assert c.size == sum(len(storage.get_bytes(u)) for u in files) > 0

    listed = _cli(runs_dir, "checkpoints", result.job.id, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["step"] for r in rows] == [2, 4, 4]
    assert rows[0]["ref"] == {"kind": "checkpoint", "jobId": result.job.id, "step": 2}
    assert rows[-1]["ref"] == {"kind": "final", "jobId": result.job.id}
    table = _cli(runs_dir, "checkpoints", result.job.id)
    assert table.returncode == 0 and "step-00000002" in table.stdout and "final" in table.stdout
    missing = _cli(runs_dir, "checkpoints", "no-such-run")
    assert missing.returncode == 1 and "no-such-run" in missing.stderr

    # a second run from the first checkpoint, by the ref the listing printed
    started: list[dict[str, Any]] = []
    child = create_async_trainer(
        _fields(tiny_model_dir, name="tiny-child", max_steps=2, init_adapter=rows[0]["ref"]),
        backend=backend,
        on_started=started.append,
    )
    done = await child.wait()
    assert done.job.status == "completed", done.job.error
    assert done.job.config["initAdapter"] == rows[0]["ref"]
    events = (runs_dir / done.job.id / "events.jsonl").read_text().splitlines()
    meta = next(json.loads(e)["metadata"] for e in events if '"training.started"' in e)
    assert meta["initAdapter"] == layout.checkpoint(2) and meta["initAdapterStep"] == 2
    assert len(started) == 1

    # refs that cannot fit are refused by start() itself: no run, no process
    before = sorted(p.name for p in runs_dir.iterdir())
    refusals = {
        "nothing is committed at": {"jobId": result.job.id, "step": 3},
        "no run 'no-such-run' here": {"jobId": "no-such-run", "step": 2},
        "has LoRA rank 8, this run has lora.r=4": rows[-1]["ref"],
        "trained on base model": {"uri": layout.checkpoint(2)},
    }
    for expected, ref in refusals.items():
        extra: dict[str, Any] = {"init_adapter": ref}
        if "rank" in expected:
            extra["lora"] = {"r": 4, "alpha": 8, "max_length": 512}
        model = runs_dir / "another-model" if "base model" in expected else tiny_model_dir
        bad = create_async_trainer(_fields(model, name="tiny-bad", **extra), backend=backend)
        with pytest.raises(CheckpointError, match=expected):
            await bad.start()
        assert bad.job is None
    assert sorted(p.name for p in runs_dir.iterdir()) == before
