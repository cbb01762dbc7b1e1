"""An endpoint on the cluster: a Deployment of the serving image, reached at its pod's IP with the
official ``openai`` client; its target moved under load, a corrupted adapter refused, keys revoked.

The two adapters are random-weight adapters with different seeds (they answer differently,
which is what the swap needs to be told apart), committed in S3 like a run's; the base model is
the tiny model in S3. The pod fetches both itself, as on a cluster.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from arkor_ops.errors import ServingError
from arkor_ops.serving.cluster import ENDPOINT_LABEL, Endpoints, EndpointSpec, Target
from arkor_ops.storage import open_storage
from arkor_ops.worker.checkpoints import RunIdentity, upload_committed
from arkor_ops.worker.tiny import build_random_adapter
from tests.fixtures.cluster import K8sCluster
from tests.fixtures.s3 import S3Server
from tests.kubernetes.helpers import RunInputs, make_settings, s3_secret_yaml

pytestmark = [pytest.mark.cluster, pytest.mark.images, pytest.mark.serving, pytest.mark.s3]

MESSAGES = [{"role": "user", "content": "ticket 7: the app crashes on login"}]


def _adapters(bucket: str, model: Path, work: Path) -> dict[str, str]:
    identity = RunIdentity("cfg", "data", str(model), {})
    storage = open_storage(f"s3://{bucket}")
    uris = {}
    for name, seed in (("a", 1), ("b", 2), ("corrupt", 3)):
        uri = f"s3://{bucket}/adapters/{name}"
        upload_committed(
            storage, uri, build_random_adapter(model, work / name, seed=seed), 10, identity
        )
        uris[name] = uri
    weights = f"{uris['corrupt']}/adapter_model.safetensors"
    data = bytearray(storage.get_bytes(weights))
    data[-1] ^= 0xFF  # after the manifest: the sha256 no longer matches
    storage.put_bytes(weights, bytes(data))
    return uris


def _ask(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(
        model="triage", messages=MESSAGES, max_tokens=8, temperature=0
    )


def _wait(what: str, check: Any, timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:.0f} s")
        time.sleep(every)


def _events(cluster: K8sCluster, namespace: str, reason: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", "events", "-n", namespace, "-o", "json",
        "--field-selector", f"involvedObject.kind=Deployment,reason={reason}",
    ).stdout  # fmt: skip
    return list(json.loads(out)["items"])


def test_an_endpoint_answers_swaps_under_load_refuses_bad_adapters_and_revokes_keys(  # noqa: PLR0917
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    s3_server: S3Server,
    s3_prefix: str,
    s3_bucket: str,
    run_inputs: RunInputs,
    run_files: Path,
    serving_image: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    uris = _adapters(s3_bucket, run_files / "model", tmp_path)
    k8s_cluster.kubectl("apply", "-f", "-", input=s3_secret_yaml(k8s_namespace, s3_server))
    settings = make_settings(
        k8s_cluster, k8s_namespace, s3_server, s3_prefix,
        serving_image=serving_image, memory_limit="4Gi",
    )  # fmt: skip
    request.addfinalizer(lambda: _show_logs(k8s_cluster, k8s_namespace))
    followed = Target("1", uris["a"], "champion", "support-triage")
    spec = EndpointSpec("triage", run_inputs.model, followed, vocab_pre="gpt-2")
    with Endpoints(settings) as endpoints:
        key = endpoints.create(spec)
        assert key is not None and key.startswith("ak-")
        # the key is in no object of the endpoint: its Secret holds only its sha256
        everything = k8s_cluster.kubectl(
            "get", "deploy,svc,cm,secret,sa,role,rolebinding", "-n", k8s_namespace,
            "-l", f"{ENDPOINT_LABEL}=triage", "-o", "json",
        ).stdout  # fmt: skip
        assert key not in everything
        assert len(json.loads(everything)["items"]) == 7
        with pytest.raises(Exception, match="exists"):
            endpoints.create(spec)

        def ready() -> Any:
            info = endpoints.show("triage")
            if not (info.ready and info.url):
                return None
            try:
                ok = httpx.get(info.url.removesuffix("/v1") + "/health", timeout=5).status_code
            except httpx.TransportError:
                return None
            return info if ok == 200 else None

        info = _wait("the endpoint serves version 1", ready, timeout=300, every=2)
        assert info.target is not None and info.target.version == "1"
        assert info.target.adapter == uris["a"]
        client = openai.OpenAI(base_url=info.url, api_key=key, max_retries=0, timeout=60)
        first = _ask(client)
        assert first.model == "triage@1" and first.choices[0].message.content
        stream = client.chat.completions.create(
            model="triage", messages=MESSAGES, max_tokens=8, temperature=0, stream=True
        )
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert len(pieces) > 1 and "".join(pieces) == first.choices[0].message.content
        unsigned = httpx.post(
            info.url + "/chat/completions",
            json={"model": "triage", "messages": MESSAGES, "max_tokens": 4},
            timeout=30,
        )
        assert unsigned.status_code == 401
        assert unsigned.json()["error"]["code"] == "invalid_api_key"
        wrong = openai.OpenAI(base_url=info.url, api_key="ak-wrong", max_retries=0, timeout=30)
        with pytest.raises(openai.AuthenticationError):
            _ask(wrong)

        # the champion moves while a client asks every 100 ms: every request is answered, by
        # version 1 and then version 2, and the switch lands within 30 s
        answers: list[tuple[float, str, str]] = []
        failures: list[str] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                try:
                    a = _ask(client)
                    answers.append((time.monotonic(), a.model, a.choices[0].message.content or ""))
                except openai.OpenAIError as exc:
                    failures.append(repr(exc))
                stop.wait(0.1)

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        _wait("answers before the swap", lambda: len(answers) >= 3, timeout=30, every=0.2)
        moved_at = time.monotonic()
        moved = endpoints.follow_promotion("support-triage", "2", uris["b"])
        assert list(moved) == ["triage"]
        endpoints.wait_serving("triage", moved["triage"], timeout=60)
        _wait(
            "version 2 answers",
            lambda: any(m == "triage@2" for _, m, _ in answers),
            timeout=30,
            every=0.2,
        )
        time.sleep(1)
        stop.set()
        worker.join(timeout=60)
        assert not failures, failures
        models = [m for _, m, _ in answers]
        switch = models.index("triage@2")
        assert set(models[:switch]) == {"triage@1"} and set(models[switch:]) == {"triage@2"}
        assert answers[switch][0] - moved_at < 30
        assert answers[switch][2] != first.choices[0].message.content  # another adapter answers
        assert endpoints.follow_promotion("another-model", "9", uris["a"]) == {}

        # an adapter that fails its manifest is refused; version 2 keeps answering
        bad = endpoints.set_target("triage", Target("3", uris["corrupt"]))
        with pytest.raises(ServingError, match="version 3 refused"):
            endpoints.wait_serving("triage", bad, timeout=60)
        refused = _events(k8s_cluster, k8s_namespace, "AdapterRefused")
        assert refused[0]["type"] == "Warning"
        assert refused[0]["involvedObject"]["name"] == "endpoint-triage"
        assert (
            "sha256" in refused[0]["message"] and "version 2 keeps serving" in refused[0]["message"]
        )
        assert _ask(client).model == "triage@2"

        # a key made later works; revoked, it is refused within seconds
        second = endpoints.create_key("triage", "ci")
        other = openai.OpenAI(base_url=info.url, api_key=second, max_retries=0, timeout=60)
        _wait("the new key is accepted", lambda: _accepted(other), timeout=30)
        endpoints.revoke_key("triage", "ci")
        _wait("the revoked key is refused", lambda: not _accepted(other), timeout=30)
        assert _ask(client).model == "triage@2"  # the first key still works
        assert endpoints.show("triage").keys == ["default"]

        assert [e.name for e in endpoints.list_all()] == ["triage"]
        endpoints.delete("triage")
        with pytest.raises(Exception, match="no endpoint triage"):
            endpoints.delete("triage")
    left = k8s_cluster.kubectl(
        "get", "deploy,svc,cm,secret,sa,role,rolebinding", "-n", k8s_namespace,
        "-l", f"{ENDPOINT_LABEL}=triage", "-o", "name",
    ).stdout  # fmt: skip
    assert left.strip() == ""


def _accepted(client: openai.OpenAI) -> bool:
    try:
        _ask(client)
    except openai.AuthenticationError:
        return False
    return True


def _show_logs(cluster: K8sCluster, namespace: str) -> None:
    """The endpoint pod's log, on stderr (pytest shows it when the test fails)."""
    out = cluster.kubectl(
        "logs", "-n", namespace, "-l", f"{ENDPOINT_LABEL}=triage", "--tail", "80", check=False
    )
    print(out.stdout, out.stderr, file=sys.stderr)
