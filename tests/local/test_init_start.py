"""Each template, scaffolded by `arkor-ops init` and run unchanged by `arkor-ops start` on the
local backend: real training of the tiny model, and the checkpoints' `infer()` answers printed
by the template's `on_checkpoint` fit its schema."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from arkor_ops.cli.init import TEMPLATES

pytestmark = [pytest.mark.train, pytest.mark.timeout(420)]

ANSWER = re.compile(r"^checkpoint (\d+) answers: (.*)$", re.MULTILINE)
STEPS = 12  # checkpoints at 4, 8 and 12: the first two answer while training goes on


def schema_of(trainer_file: Path) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("scaffolded_trainer", trainer_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    schema: dict[str, Any] = module.SCHEMA
    return schema


@pytest.mark.parametrize("template", TEMPLATES)
def test_the_scaffolded_trainer_runs_unchanged_and_its_checkpoints_answer_the_schema(
    tmp_path: Path, runs_dir: Path, tiny_model_dir: Path, template: str
) -> None:
    project = tmp_path / "project"
    cli = [sys.executable, "-m", "arkor_ops.cli"]
    init = subprocess.run(
        [*cli, "init", str(project), "--template", template],
        capture_output=True,
        text=True,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    env = {
        **os.environ,
        "ARKOR_RUNS_DIR": str(runs_dir),
        "ARKOR_SIDECAR_LINGER_SECONDS": "1",
        "ARKOR_TEMPLATE_MODEL": str(tiny_model_dir),
        "ARKOR_TEMPLATE_MAX_STEPS": str(STEPS),
    }
    env.pop("ARKOR_BACKEND", None)
    proc = subprocess.run(
        [*cli, "start", "trainer.py", "--backend", "local"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert f"started job {template}-run-" in out
    assert ": completed" in out and f"steps: {STEPS}," in out
    answers = ANSWER.findall(out)
    assert answers, out  # at least one checkpoint answered while the run went on
    schema = schema_of(project / "trainer.py")
    for step, text in answers:
        assert int(step) in (4, 8, 12)
        jsonschema.validate(json.loads(text), schema)
