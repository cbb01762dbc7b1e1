"""The promotion gate in a flow run, with a real Prefect server and a real MLflow server: the first
version promotes itself, a challenger that is not better enough leaves the champion and says so,
a better one takes the alias and is announced by a Prefect event; each run shows the comparison."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from arkor_ops.promotion import PromotionSettings, Scores
from tests.flows.helpers import eventually, run_artifacts
from tests.registry.test_models import versions
from tests.registry.test_register_run import client

pytestmark = [pytest.mark.prefect, pytest.mark.mlflow, pytest.mark.s3]

GATE = PromotionSettings(metric="json_valid", min_improvement=0.05)


def samples(tag: str) -> list[dict[str, Any]]:
    return [
        {
            "prompt": f"ticket {i}: printer | on fire",
            "reference": '{"priority": "high"}',
            "answer": f'{{"priority": "{tag}-{i}"}}',
            "scores": {"json_valid": 1.0},
        }
        for i in range(5)
    ]


async def run_gate(name: str, challenger: Scores, champion: Scores | None) -> Any:
    from prefect import flow

    from arkor_ops.flows.promotion import gate_state, promotion_gate

    @flow(name="gate-test")
    async def gate_flow() -> Any:
        outcome = await promotion_gate(
            name, GATE, challenger, champion, samples("new"), samples("old")
        )
        return gate_state(outcome)

    return await gate_flow(return_state=True)


async def promoted_events(name: str) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()
    async with get_client() as prefect:
        resp = await prefect._client.post(
            "/events/filter",
            json={
                "filter": {
                    "event": {"name": ["arkor-ops.model.promoted"]},
                    "resource": {"id": [f"arkor-ops.model.{name}"]},
                },
                "limit": 50,
            },
        )
        resp.raise_for_status()
        return list(resp.json()["events"])


async def announced(name: str, count: int) -> list[dict[str, Any]]:
    """The model's promotion events once ``count`` of them reached the server (ingest is async)."""

    async def probe() -> list[dict[str, Any]]:
        got = await promoted_events(name)
        return got if len(got) >= count else []

    return await eventually(probe, 30)


async def markdown_of(flow_run_id: uuid.UUID) -> Any:
    from prefect.client.orchestration import get_client

    async with get_client() as prefect:
        (art,) = [a for a in await run_artifacts(prefect, flow_run_id) if a.type == "markdown"]
    return art


async def test_the_first_version_promotes_itself_and_is_announced(
    prefect_server: str, mlflow_env: dict[str, str], s3_prefix: str
) -> None:
    name, _ = versions(s3_prefix, [("s3://d/a", "1")])
    state = await run_gate(name, Scores("1", {"json_valid": 0.6, "loss": 1.4}), None)
    assert state.is_completed()
    assert state.message == "promoted v1: first version (json_valid 0.6)"
    mlflow = client()
    version = mlflow.get_model_version_by_alias(name, "champion")
    assert version.version == "1" and version.tags["arkor-ops.promoted_by"] == "gate"
    assert version.tags["arkor-ops.promotion_reason"] == state.message

    (event,) = await announced(name, 1)
    assert event["resource"]["prefect.resource.name"] == name
    assert event["resource"]["arkor-ops.model.version"] == "1"
    assert event["payload"]["previous_champion"] is None


async def test_a_challenger_not_better_enough_keeps_the_champion_and_stays_a_candidate(
    prefect_server: str, mlflow_env: dict[str, str], s3_prefix: str
) -> None:
    name, _ = versions(s3_prefix, [("s3://d/a", "1"), ("s3://d/a", "2")])
    first = await run_gate(name, Scores("1", {"json_valid": 0.8}), None)
    assert first.is_completed()
    state = await run_gate(
        name,
        Scores("2", {"json_valid": 0.82, "loss": 1.1}),
        Scores("1", {"json_valid": 0.8, "loss": 1.3}),
    )
    assert state.is_completed()
    assert state.message.startswith("kept champion v1: json_valid 0.82 vs 0.8 ")
    result = await state.result()
    assert result["promoted"] is False and result["champion"] == "1"

    mlflow = client()
    assert mlflow.get_model_version_by_alias(name, "champion").version == "1"
    candidate = mlflow.get_model_version(name, "2")
    assert candidate.status == "READY" and "arkor-ops.promoted_by" not in candidate.tags
    assert [e["resource"]["arkor-ops.model.version"] for e in await announced(name, 1)] == ["1"]

    art = await markdown_of(state.state_details.flow_run_id)
    assert art.description == state.message
    table = art.data
    assert "| metric | challenger v2 | champion v1 | delta |" in table
    assert "| **json_valid** (gate) | 0.82 | 0.8 | +0.02 |" in table
    assert "| loss | 1.1 | 1.3 | -0.2 |" in table
    # three sample answers side by side, the prompt's pipe escaped
    assert table.count("| ticket ") == 3
    assert (
        '| ticket 0: printer \\| on fire | {"priority": "high"} | {"priority": "new-0"} | ' in table
    )
    assert '{"priority": "old-0"} |' in table


async def test_a_better_challenger_takes_the_alias_and_the_old_champion_keeps_its_history(
    prefect_server: str, mlflow_env: dict[str, str], s3_prefix: str
) -> None:
    name, _ = versions(s3_prefix, [("s3://d/a", "1"), ("s3://d/a", "2")])
    assert (await run_gate(name, Scores("1", {"json_valid": 0.7}), None)).is_completed()
    state = await run_gate(name, Scores("2", {"json_valid": 0.9}), Scores("1", {"json_valid": 0.7}))
    assert state.is_completed() and state.message == "promoted v2 over v1: json_valid 0.9 vs 0.7"

    mlflow = client()
    assert mlflow.get_model_version_by_alias(name, "champion").version == "2"
    assert mlflow.get_model_version(name, "2").tags["arkor-ops.previous_champion"] == "1"
    assert mlflow.get_model_version(name, "1").tags["arkor-ops.superseded_by"] == "2"

    events = {e["resource"]["arkor-ops.model.version"]: e for e in await announced(name, 2)}
    assert len(events) == 2
    assert events["2"]["payload"]["previous_champion"] == "1"
    assert events["2"]["payload"]["delta"] == pytest.approx(0.2)
    art = await markdown_of(state.state_details.flow_run_id)
    assert art.data.startswith(f"## {name}: promoted\n")


async def test_a_stale_champion_score_fails_before_anything_moves(
    prefect_server: str, mlflow_env: dict[str, str], s3_prefix: str
) -> None:
    name, _ = versions(s3_prefix, [("s3://d/a", "1"), ("s3://d/a", "2"), ("s3://d/a", "3")])
    assert (await run_gate(name, Scores("1", {"json_valid": 0.5}), None)).is_completed()
    # v2 was never the champion: its score says nothing about v1
    state = await run_gate(name, Scores("3", {"json_valid": 0.9}), Scores("2", {"json_valid": 0.1}))
    assert state.is_failed()
    assert "the champion is v1 but v2 was scored" in state.message
    assert client().get_model_version_by_alias(name, "champion").version == "1"


async def test_the_champion_is_scored_again_when_the_evaluation_set_changed(
    prefect_server: str, mlflow_env: dict[str, str], s3_prefix: str
) -> None:
    from prefect import flow

    from arkor_ops.flows.promotion import champion_scores, record_scores

    name, _ = versions(s3_prefix, [("s3://d/a", "1")])

    @flow(name="scores-test")
    async def scores_flow() -> Any:
        before = await champion_scores(name, "s3://evals/set.jsonl#a")
        await record_scores(name, "1", {"json_valid": 0.75}, "s3://evals/set.jsonl#a")
        assert (await run_gate(name, Scores("1", {"json_valid": 0.75}), None)).is_completed()
        same = await champion_scores(name, "s3://evals/set.jsonl#a")
        changed = await champion_scores(name, "s3://evals/set.jsonl#b")
        return before, same, changed

    before, same, changed = await scores_flow()
    assert before is None  # no champion yet: the first version promotes itself
    assert (same["version"], same["metrics"]) == ("1", {"json_valid": 0.75})
    assert (changed["version"], changed["metrics"]) == ("1", None)  # never scored on set b
    # and where its adapter is, from its lineage tags, to score it on set b
    assert same["job_id"] == f"{name}-j0"
    assert same["final_adapter"].endswith(f"/{name}-j0/final")
