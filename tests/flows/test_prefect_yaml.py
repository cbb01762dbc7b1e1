"""prefect.yaml (the work-pool deployments operators run) and the deployments `serve()` builds
(arkor_ops/flows/deploy.py) stay alike: names, entrypoints, schedules, triggers, parameters.

No server is needed; tests/flows/test_kubernetes_worker.py runs `prefect deploy` on the file.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from arkor_ops.config import validate_config
from arkor_ops.flows.deploy import build_deployments
from arkor_ops.flows.settings import BackendSettings

REPO = Path(__file__).resolve().parents[2]


def _from_yaml() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return {d["name"]: d for d in data["deployments"]}


def _schedule(deployment: Any) -> list[Any]:
    out: list[Any] = []
    for s in deployment.schedules or []:
        inner = s.schedule
        if getattr(inner, "cron", None):
            out.append({"cron": inner.cron})
        else:
            out.append({"interval": int(inner.interval / timedelta(seconds=1))})
    return out


def test_prefect_yaml_has_the_deployments_that_serve_builds() -> None:
    in_yaml = _from_yaml()
    retrain = in_yaml["retrain-nightly"]["parameters"]["config"]
    watched = in_yaml["dataset-watcher"]["parameters"]["datasets"]
    built = build_deployments(
        backend=BackendSettings(backend="kubernetes"),
        retrain_config=validate_config(retrain),
        watched=watched,
    )

    assert sorted(in_yaml) == sorted(d.name for d in built)
    for d in built:
        y = in_yaml[d.name]
        assert y["entrypoint"].replace(":", ".") == d.entrypoint, d.name
        assert y["work_pool"]["name"] == "arkor-ops"
        assert y.get("schedules", []) == _schedule(d), d.name
        assert y.get("concurrency_limit") == d.concurrency_limit, d.name
        params = dict(d.parameters)
        if "config" in params:  # the wire form of the same config
            assert validate_config(y["parameters"]["config"]) == validate_config(params["config"])
            params["config"] = y["parameters"]["config"]
        assert y["parameters"] == params, d.name
        triggers = [t.model_dump(mode="json", exclude_none=True) for t in d.triggers]
        assert len(y.get("triggers", [])) == len(triggers), d.name
        for want, got in zip(y.get("triggers", []), triggers, strict=True):
            assert {k: got[k] for k in want} == want, d.name
