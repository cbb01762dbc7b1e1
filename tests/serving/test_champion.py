"""An endpoint that follows a registered model's champion: the real MLflow server holds the alias,
the adapters are in the S3-protocol server, and promoting a version moves what answers."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import openai
import pytest

from arkor_ops.models import promote
from arkor_ops.registry import RegistrySettings, register_run
from arkor_ops.serving.champion import ChampionFollower
from arkor_ops.serving.endpoint import LocalEndpoint
from arkor_ops.storage import join_uri, open_storage
from arkor_ops.worker.checkpoints import RunIdentity, upload_committed
from tests.registry.test_register_run import blob_config, events
from tests.serving.helpers import TICKET

pytestmark = [pytest.mark.serving, pytest.mark.mlflow, pytest.mark.s3]


def register(name: str, prefix: str, job: str, local: Path, base: str) -> str:
    """Commit ``local`` as ``job``'s final adapter in S3 and register it; returns the version."""
    config = blob_config(name)
    final = join_uri(prefix, job, "final")
    identity = RunIdentity(config.config_hash(), "f" * 64, base, config.to_wire())
    upload_committed(open_storage(final), final, local, 4, identity)
    registered: Any = register_run(
        RegistrySettings(), job_id=job, config=config, events=events(job), final_uri=final
    )
    return str(registered.version)


def test_promoting_a_version_moves_what_answers(
    endpoint: LocalEndpoint,
    adapters: dict[str, str],
    mlflow_env: dict[str, str],
    s3_prefix: str,
    tiny_model_dir: Path,
) -> None:
    name = f"serve-{uuid.uuid4().hex[:6]}"
    local = {k: Path(v.removeprefix("file://")) for k, v in adapters.items()}
    v1 = register(name, s3_prefix, f"{name}-a", local["a"], str(tiny_model_dir))
    v2 = register(name, s3_prefix, f"{name}-b", local["b"], str(tiny_model_dir))
    settings = RegistrySettings()
    follower = ChampionFollower(endpoint, settings, name)
    key = endpoint.keys.create("ci")
    c = openai.OpenAI(base_url=endpoint.url + "/v1", api_key=key, max_retries=0)

    def answer() -> tuple[str, str | None]:
        r = c.chat.completions.create(model="triage", messages=TICKET, max_tokens=8, temperature=0)
        return r.model, r.choices[0].message.content

    assert follower.sync() is None  # no champion yet: nothing serves
    promote(settings, name, v1, reason="first", by="gate")
    assert follower.sync() == v1
    model_1, text_1 = answer()
    assert model_1 == f"triage@{v1}"

    promote(settings, name, v2, reason="better", by="person:alice")
    assert follower.sync() == v2
    model_2, text_2 = answer()
    assert model_2 == f"triage@{v2}" and text_2 != text_1

    # a champion whose adapter was damaged in storage is refused once; v2 keeps serving
    v3 = register(name, s3_prefix, f"{name}-c", local["b"], str(tiny_model_dir))
    weights = join_uri(s3_prefix, f"{name}-c", "final", "adapter_model.safetensors")
    storage = open_storage(weights)
    data = storage.get_bytes(weights)
    storage.put_bytes(weights, data[:-1] + bytes([data[-1] ^ 0xFF]))
    promote(settings, name, v3, reason="broken", by="gate")
    assert follower.sync() == v2
    assert "fails its sha256" in follower.refused[v3]
    assert follower.sync() == v2 and len(endpoint.history) == 3  # not tried again
    assert answer() == (model_2, text_2)
