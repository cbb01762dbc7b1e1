"""Secrets reach the fine-tune deployment by reference (Prefect Secret blocks), never by value:
the API refuses a token or a credentialed URL in the parameters, the flow refuses them when
called directly, and a token by reference reaches the worker's download as the bearer token."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.flows.helpers import eventually, serve_runner, tiny_config, wait_final
from tests.flows.test_local_backend import ROW, deployment_named

pytestmark = [pytest.mark.prefect]

TOKEN = "tok-flow-9c1f5e-do-not-store"
SIG = "sig-flow-4b7d20-do-not-store"
BLOB = "https://data.example.com/rows.jsonl"


async def _fine_tune_deployment() -> uuid.UUID:
    from arkor_ops.flows.deploy import build_deployments

    suffix = "-" + uuid.uuid4().hex[:8]
    for d in build_deployments(suffix=suffix):
        if d.name == f"fine-tune{suffix}":
            return await d.aapply()
    raise AssertionError("no fine-tune deployment")


@pytest.mark.parametrize(
    "dataset",
    [
        {"type": "blob", "url": BLOB, "token": TOKEN},
        {"type": "blob", "url": f"{BLOB}?X-Amz-Signature={SIG}"},
        {"type": "blob", "url": f"https://user:{SIG}@data.example.com/rows.jsonl"},
    ],
)
async def test_the_api_refuses_a_secret_by_value_and_stores_no_flow_run(
    prefect_server: str, dataset: dict[str, Any]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.exceptions import PrefectHTTPStatusError

    deployment_id = await _fine_tune_deployment()
    async with get_client() as client:
        with pytest.raises(PrefectHTTPStatusError) as info:
            await client.create_flow_run_from_deployment(
                deployment_id, parameters={"config": tiny_config("/x", dataset=dataset)}
            )
        # Prefect's own schema check: it names the field (its text cannot carry our hint;
        # the UI form and the parameter descriptions say to use dataset_*_block instead)
        assert info.value.response.status_code in (409, 422)
        assert "config.dataset" in info.value.response.text
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
    assert runs == []


@pytest.mark.parametrize(
    ("dataset", "param"),
    [
        ({"type": "blob", "url": BLOB, "token": TOKEN}, "dataset_token_block"),
        ({"type": "blob", "url": f"{BLOB}?sig={SIG}"}, "dataset_url_block"),
    ],
)
async def test_the_flow_refuses_a_secret_by_value_and_names_the_reference_parameter(
    prefect_server: str, dataset: dict[str, Any], param: str
) -> None:
    from arkor_ops.flows.fine_tune import fine_tune

    state = await fine_tune(
        config=tiny_config("/x", dataset=dataset), backend={"backend": "local"}, return_state=True
    )
    assert state.is_failed()
    with pytest.raises(ValueError, match=param) as info:
        await state.result()
    assert TOKEN not in str(info.value) and SIG not in str(info.value)


class _Bearer(BaseHTTPRequestHandler):
    """Serves the rows only with the right bearer token; records what it was sent."""

    rows = ("\n".join(ROW % (i, i) for i in range(16)) + "\n").encode()
    auth: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.auth.append(self.headers.get("Authorization", ""))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send_response(401)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.rows)))
        self.end_headers()
        self.wfile.write(self.rows)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def bearer_url() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Bearer)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/rows.jsonl"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.train
@pytest.mark.timeout(400)
async def test_a_token_by_reference_reaches_the_download_and_no_parameter(
    prefect_server: str,
    tmp_path: Path,
    tiny_model_dir: Path,
    bearer_url: str,
    request: pytest.FixtureRequest,
) -> None:
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    block = f"blob-token-{uuid.uuid4().hex[:8]}"
    await Secret(value=TOKEN).asave(block)
    env = dict(
        os.environ,
        ARKOR_BACKEND="local",
        ARKOR_RUNS_DIR=str(tmp_path / "runs"),
        ARKOR_SIDECAR_LINGER_SECONDS="1",
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    config = tiny_config(
        "/x", model=str(tiny_model_dir), dataset={"type": "blob", "url": bearer_url}
    )
    with serve_runner(env, request) as suffix:
        async with get_client() as client:
            deployment = await eventually(
                lambda: deployment_named(client, f"fine-tune{suffix}"), 60
            )
            run = await client.create_flow_run_from_deployment(
                deployment.id,
                parameters={
                    "config": config,
                    "backend": {"backend": "local"},
                    "dataset_token_block": block,
                },
            )
            final = await wait_final(client, run.id, timeout=360)
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))
            )
    assert final.state.is_completed(), final.state.message
    assert _Bearer.auth and set(_Bearer.auth) == {f"Bearer {TOKEN}"}
    assert TOKEN not in json.dumps(final.parameters, default=str)
    assert final.parameters["dataset_token_block"] == block
    assert all(TOKEN not in log.message for log in logs)
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".log"):
            assert TOKEN not in path.read_text(errors="replace"), path
