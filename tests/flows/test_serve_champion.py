"""The retrain flows' last step on the cluster: after a promotion, the endpoint that follows the
model's champion serves the new version (the real MLflow server, Prefect server, control plane,
serving image and S3-protocol server)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import flow

from arkor_ops.flows.promotion import serve_champion
from arkor_ops.flows.settings import BackendSettings
from arkor_ops.models import promote
from arkor_ops.registry import RegistrySettings
from arkor_ops.serving.cluster import Endpoints, EndpointSpec, resolve_target
from arkor_ops.settings import KubernetesSettings, read
from arkor_ops.worker.tiny import build_random_adapter
from tests.flows.test_kubernetes import kube_env  # noqa: F401 - the fixture
from tests.kubernetes.helpers import RunInputs
from tests.serving.test_champion import register

pytestmark = [
    pytest.mark.prefect,
    pytest.mark.cluster,
    pytest.mark.images,
    pytest.mark.serving,
    pytest.mark.mlflow,
    pytest.mark.s3,
]


@flow(name="serve-champion-test")
async def last_step(model: str, version: str, namespace: str) -> dict[str, str]:
    """The step as the retrain flows run it, in a flow run of its own."""
    return await serve_champion(
        model, version, BackendSettings(backend="kubernetes", namespace=namespace)
    )


def _answered_by(url: str, key: str) -> str | None:
    try:
        resp = httpx.post(
            url + "/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": "triage",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
            },
            timeout=30,
        )
    except httpx.TransportError:
        return None
    return str(resp.json()["model"]) if resp.status_code == 200 else None


async def test_a_promotion_moves_the_endpoint_that_follows_the_champion(  # noqa: PLR0917
    kube_env: dict[str, str],  # noqa: F811 - the fixture imported above
    k8s_namespace: str,
    mlflow_env: dict[str, str],
    serving_image: str,
    s3_prefix: str,
    run_inputs: RunInputs,
    run_files: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ARKOR_K8S_SERVING_IMAGE", serving_image)
    name = f"triage-{uuid.uuid4().hex[:6]}"
    model = run_files / "model"
    versions = {}
    for label, seed in (("a", 1), ("b", 2)):
        local = build_random_adapter(model, tmp_path / label, seed=seed)
        versions[label] = register(name, s3_prefix, f"{name}-{label}", local, run_inputs.model)
    registry = RegistrySettings()
    promote(registry, name, versions["a"], reason="first", by="gate")
    target, base = resolve_target(registry, name, "champion")
    assert (target.version, target.source, base) == (versions["a"], "champion", run_inputs.model)

    with Endpoints(read(KubernetesSettings)) as endpoints:
        key = endpoints.create(EndpointSpec("triage", base, target, vocab_pre="gpt-2"))
        assert key is not None
        deadline = time.monotonic() + 300
        url: Any = None
        while time.monotonic() < deadline:
            url = endpoints.show("triage").url
            if url and _answered_by(url, key) == f"triage@{versions['a']}":
                break
            time.sleep(2)
        else:
            pytest.fail("the endpoint did not serve the first champion within 300 s")

        promote(registry, name, versions["b"], reason="better", by="gate")
        outcome = await last_step(name, versions["b"], k8s_namespace)
        assert outcome == {"triage": "serving"}
        assert _answered_by(url, key) == f"triage@{versions['b']}"

        # a model no endpoint follows moves nothing
        assert await last_step(f"{name}-other", versions["b"], k8s_namespace) == {}

        # a promotion by hand moves it too (back to v1 here), and says so
        cmd = [sys.executable, "-m", "arkor_ops.cli", "models", "promote", name, versions["a"]]
        cmd += ["--reason", "roll back", "--endpoints", "yes"]
        back = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
        assert back.returncode == 0, back.stderr
        assert "endpoint triage: serving" in back.stderr
        assert _answered_by(url, key) == f"triage@{versions['a']}"
