"""`arkor-ops validate` and `arkor-ops schema`, run as the installed command."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.core.helpers import CONFIG

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "arkor-ops")

BAD = {
    "name": "bad-run",
    "model": "m",
    "dataset": {"type": "huggingface"},
    "lora": {"r": 0, "alpha": 16},
    "learningRate": -1,
    "maxStep": 5,
}
BAD_PATHS = ["dataset.name", "lora.r", "learningRate", "maxStep"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def _write(tmp_path: Path, kind: str, data: dict) -> Path:
    if kind == "yaml":
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
    elif kind == "json":
        path = tmp_path / "config.json"
        path.write_text(json.dumps(data))
    else:
        path = tmp_path / "train.py"
        path.write_text(
            textwrap.dedent(
                f"""
                from arkor_ops import create_trainer
                trainer = create_trainer({data!r})
                """
            )
        )
    return path


@pytest.mark.parametrize("kind", ["yaml", "json", "py"])
def test_validate_accepts_a_good_config(tmp_path, kind):
    proc = _cli("validate", str(_write(tmp_path, kind, CONFIG)))
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout
    assert "support-bot-v1" in proc.stdout


@pytest.mark.parametrize("kind", ["yaml", "json", "py"])
def test_validate_rejects_a_bad_config_naming_each_field(tmp_path, kind):
    proc = _cli("validate", str(_write(tmp_path, kind, BAD)))
    assert proc.returncode != 0
    for path in BAD_PATHS:
        assert path in proc.stderr, (path, proc.stderr)


def test_validate_rejects_unparseable_and_missing_files(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    proc = _cli("validate", str(broken))
    assert proc.returncode != 0
    assert "not valid YAML" in proc.stderr
    proc = _cli("validate", str(tmp_path / "absent.json"))
    assert proc.returncode != 0
    assert "not found" in proc.stderr


def test_schema_prints_a_json_schema_of_the_config():
    proc = _cli("schema")
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert schema["type"] == "object"
    assert {"name", "model", "dataset", "lora", "max_steps"} <= set(schema["properties"])
    assert set(schema["required"]) >= {"name", "model", "dataset"}
