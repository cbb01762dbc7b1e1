"""Deployments on a real Prefect server: the cron schedule and UI-style parameters."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.flows.helpers import eventually, tiny_config

pytestmark = [pytest.mark.prefect]


async def _apply(**kwargs: Any) -> dict[str, uuid.UUID]:
    from arkor_ops.config import validate_config
    from arkor_ops.flows.deploy import build_deployments

    suffix = "-" + uuid.uuid4().hex[:8]
    config = validate_config(tiny_config("/data/train.jsonl"))
    deployments = build_deployments(retrain_config=config, suffix=suffix, **kwargs)
    return {d.name.removesuffix(suffix): await d.aapply() for d in deployments}


async def test_cron_deployment_creates_scheduled_runs(prefect_server: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    ids = await _apply(cron="* * * * *")
    nightly = ids["retrain-nightly"]
    async with get_client() as client:
        deployment = await client.read_deployment(nightly)
        assert [s.schedule.cron for s in deployment.schedules] == ["* * * * *"]

        async def scheduled() -> list[Any]:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[nightly]))
            )
            return [r for r in runs if r.state_name == "Scheduled" and r.auto_scheduled]

        runs = await eventually(scheduled, timeout=60)
    assert runs[0].parameters["config"]["name"] == "flow-test"


async def test_ui_style_parameters_are_validated(prefect_server: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    fine_tune_id = (await _apply())["fine-tune"]
    async with get_client() as client:
        good = tiny_config("/data/train.jsonl")
        run = await client.create_flow_run_from_deployment(
            fine_tune_id, parameters={"config": good, "backend": {"backend": "local"}}
        )
        assert run.parameters["config"]["maxSteps"] == 4
        assert run.state_name == "Scheduled"

        bad = tiny_config("/data/train.jsonl", lora={"r": 0, "alpha": 8})
        with pytest.raises(PrefectHTTPStatusError) as info:
            await client.create_flow_run_from_deployment(fine_tune_id, parameters={"config": bad})
        assert info.value.response.status_code in (409, 422)
        assert "'config.lora.r'" in info.value.response.text

        typo = tiny_config("/data/train.jsonl", maxStep=3)
        with pytest.raises(PrefectHTTPStatusError) as info:
            await client.create_flow_run_from_deployment(fine_tune_id, parameters={"config": typo})
        assert "maxStep" in info.value.response.text


async def test_retrain_deployments_carry_the_evaluation_and_the_gate(prefect_server: str) -> None:
    from prefect.client.orchestration import get_client
    from pydantic import ValidationError

    from arkor_ops.flows.deploy import RetrainGate

    evaluation = {"dataset": {"type": "file", "path": "/data/test.jsonl"}, "metrics": ["loss"]}
    gate = RetrainGate.model_validate(
        {"evaluation": evaluation, "promotion": {"metric": "loss", "minImprovement": 0.05}}
    )
    ids = await _apply(retrain_gate=gate)
    async with get_client() as client:
        nightly = await client.read_deployment(ids["retrain-nightly"])
        assert nightly.parameters["evaluation"]["metrics"] == ["loss"]
        promotion = nightly.parameters["promotion"]
        assert (promotion["metric"], promotion["minImprovement"]) == ("loss", 0.05)
        plain = await client.read_deployment(ids["fine-tune"])
        assert "evaluation" not in plain.parameters

    unscored = {"evaluation": evaluation, "promotion": {"metric": "json_valid"}}
    with pytest.raises(ValidationError, match=r"promotion\.metric 'json_valid' is not one of"):
        RetrainGate.model_validate(unscored)
