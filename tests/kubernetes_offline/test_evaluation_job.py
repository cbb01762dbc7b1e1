"""An evaluation job on Kubernetes: the run's Job shape, same image and worker, its own stage.

Checked as plain dicts (the pure builder) and through the replay of a log whose Job is gone:
an evaluation that never wrote its ending is ended with ``evaluation.*``, not ``training.*``.
"""

from __future__ import annotations

import json
from typing import Any

from arkor_ops.backends.kubernetes import manifests as m
from arkor_ops.backends.kubernetes.diagnostics import Diagnosis
from arkor_ops.backends.kubernetes.stream import replay_frames
from arkor_ops.config import validate_config
from arkor_ops.evaluation import validate_evaluation_config
from arkor_ops.events import EvaluationFailed, parse_event
from arkor_ops.settings import KubernetesSettings

TOKEN = "blob-token-do-not-leak"


def _evaluation() -> Any:
    return validate_evaluation_config(
        {
            "name": "Triage eval",
            "model": "unsloth/gemma-3-270m-it",
            "adapter": {"kind": "final", "jobId": "support-bot-v1-abcd1234"},
            "evaluation": {
                "dataset": {"type": "blob", "url": "https://example.com/e.jsonl", "token": TOKEN},
                "metrics": ["loss", "field_match:category"],
            },
        }
    )


def _build(config: Any, name: str) -> m.RunObjects:
    settings = KubernetesSettings(s3_endpoint_url="http://minio:9000")
    return m.build_run(config, settings, name=name, storage_uri="s3://b/runs")


def test_an_evaluation_job_is_a_run_job_in_the_evaluation_stage() -> None:
    train = validate_config(
        {
            "name": "Support Bot v1",
            "model": "unsloth/gemma-3-270m-it",
            "dataset": {"type": "file", "path": "/d.jsonl"},
        }
    )
    run = _build(train, "support-bot-v1-abcd1234")
    objs = _build(_evaluation(), "triage-eval-12345678")
    pod = objs.job["spec"]["template"]["spec"]
    run_pod = run.job["spec"]["template"]["spec"]
    (trainer,) = pod["containers"]
    assert trainer["image"] == run_pod["containers"][0]["image"]
    assert trainer["command"] == ["python", "-m", "arkor_ops.worker"]
    assert pod["initContainers"][0]["name"] == "sidecar"
    assert objs.job["metadata"]["labels"][m.STAGE_LABEL] == "evaluation"
    assert m.STAGE_LABEL not in run.job["metadata"]["labels"]
    config = json.loads(objs.config_map["data"]["config.json"])
    assert config["kind"] == "evaluation"
    assert config["adapter"] == {"kind": "final", "jobId": "support-bot-v1-abcd1234"}
    assert TOKEN not in json.dumps(objs.job) + json.dumps(objs.config_map)
    assert objs.secret is not None and TOKEN in json.dumps(objs.secret)


def test_a_gone_evaluation_without_an_ending_is_ended_as_an_evaluation() -> None:
    line = {"id": 1, "type": "evaluation.started", "jobId": "e", "timestamp": "t"}
    data = (json.dumps(line) + "\n").encode()
    why = Diagnosis("failed", "DeadlineExceeded", "Job was active longer than specified deadline")
    frames = replay_frames("e", data, None, fallback=why, cancelled=False)
    assert [f.event for f in frames] == ["evaluation.started", "evaluation.failed", "end"]
    failed = parse_event(frames[1].data)
    assert isinstance(failed, EvaluationFailed) and "deadline" in failed.error
    frames = replay_frames("e", data, None, fallback=None, cancelled=True)
    assert [f.event for f in frames][-2:] == ["evaluation.cancelled", "end"]


def test_an_evaluation_gone_before_its_first_line_is_ended_as_an_evaluation() -> None:
    """Cancelled (or failed) while pending: no log at all, so only the Job's stage says what
    it was; ``training.cancelled`` would leave the evaluator waiting on an ended stream."""
    frames = replay_frames("e", b"", None, fallback=None, cancelled=True, evaluation=True)
    assert [f.event for f in frames] == ["evaluation.cancelled", "end"]
    why = Diagnosis("failed", "DeadlineExceeded", "Job was active longer than specified deadline")
    frames = replay_frames("e", b"", None, fallback=why, cancelled=False, evaluation=True)
    assert [f.event for f in frames] == ["evaluation.failed", "end"]
