"""The Backend contract on Kubernetes without a cluster: built from the environment plus
overrides, keyed job names known in advance."""

from __future__ import annotations

import pytest

from arkor_ops.backends import resolve_backend
from arkor_ops.backends.kubernetes import KubernetesBackend, manifests
from arkor_ops.config import validate_config
from arkor_ops.errors import BackendError

CONFIG = {
    "name": "support-bot-v1",
    "model": "unsloth/gemma-3-270m-it",
    "dataset": {"type": "huggingface", "name": "arkorlab/triage-demo"},
}


def test_overrides_replace_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARKOR_K8S_NAMESPACE", "from-env")
    monkeypatch.setenv("ARKOR_K8S_GPU_COUNT", "2")
    backend = resolve_backend(
        "kubernetes", namespace="ml", active_deadline_seconds=600, flow_run_id="flow-1"
    )
    assert isinstance(backend, KubernetesBackend)
    assert backend.settings.namespace == "ml" and backend.settings.gpu_count == 2
    assert backend.settings.active_deadline_seconds == 600
    assert backend.flow_run_id == "flow-1"


def test_a_bad_override_is_a_backend_error_naming_it() -> None:
    with pytest.raises(BackendError, match="ARKOR_K8S_NAMESPACE"):
        resolve_backend("kubernetes", namespace="Not A Name")
    with pytest.raises(BackendError, match="NO_SUCH_SETTING: Extra inputs"):
        resolve_backend("kubernetes", no_such_setting=1)


async def test_the_keyed_job_name_is_known_before_submitting() -> None:
    config = validate_config(CONFIG)
    async with KubernetesBackend.from_env() as backend:  # contacts nothing
        assert backend.job_id_for(config, "flow-1") == manifests.job_name(config.name, "flow-1")
