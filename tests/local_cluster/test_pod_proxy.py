"""Pods get their own address and are reachable through the API server's pod proxy."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import threading
import time
from pathlib import Path

import pytest
import urllib3
from kubernetes import client

from tests.fixtures.cluster import K8sCluster
from tests.local_cluster.helpers import pod_manifest, pod_phase, wait_for, wait_running

pytestmark = pytest.mark.cluster

SERVER = Path(__file__).with_name("stream_server.py")


def _start_server_pod(core: client.CoreV1Api, namespace: str) -> dict:
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "app"}, "data": {"server.py": SERVER.read_text()}}
    )
    core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "creds"}, "data": {"token": base64.b64encode(b"s3cr3t").decode()}},
    )
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "SCRIPT", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "server.py"}}},
        {"name": "PLAIN", "value": "plain-$(POD_NS)"},
    ]
    spec_container = {
        "name": "web",
        "image": "python:3.11",
        "command": ["python", "/opt/app/server.py", "8080"],
        "env": env,
        "ports": [{"containerPort": 8080}],
        "volumeMounts": [
            {"name": "app", "mountPath": "/opt/app", "readOnly": True},
            {"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
            {"name": "scratch", "mountPath": "/scratch"},
        ],
    }
    volumes = [
        {"name": "app", "configMap": {"name": "app"}},
        {"name": "creds", "secret": {"secretName": "creds"}},
        {"name": "scratch", "emptyDir": {}},
    ]
    core.create_namespaced_pod(namespace, pod_manifest("web", [spec_container], volumes=volumes))
    return wait_running(core, namespace, "web")


def test_pod_http_server_through_api_proxy(k8s_cluster: K8sCluster, k8s_namespace: str) -> None:
    core = client.CoreV1Api(k8s_cluster.api_client())
    pod = _start_server_pod(core, k8s_namespace)
    pod_ip = pod["status"]["podIP"]
    assert pod_ip.startswith("10.244.")
    assert pod_ip != k8s_cluster.host_ip
    base = f"/api/v1/namespaces/{k8s_namespace}/pods/web:8080/proxy"

    hello = wait_for(
        "pod server answering",
        lambda: k8s_cluster.kubectl("get", "--raw", f"{base}/", check=False).stdout,
    )
    assert hello == "hello from web"

    names = "POD_NAME,POD_NS,POD_IP,TOKEN,PLAIN,SCRIPT"
    env = json.loads(k8s_cluster.kubectl("get", "--raw", f"{base}/env?names={names}").stdout)
    assert env["POD_NAME"] == "web"
    assert env["POD_NS"] == k8s_namespace
    assert env["POD_IP"] == pod_ip
    assert env["TOKEN"] == "s3cr3t"
    assert env["PLAIN"] == f"plain-{k8s_namespace}"
    assert env["SCRIPT"] == SERVER.read_text()

    secret = k8s_cluster.kubectl("get", "--raw", f"{base}/file?path=/etc/creds/token").stdout
    assert secret == "s3cr3t"
    sa_ns = k8s_cluster.kubectl(
        "get", "--raw", f"{base}/file?path=/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    ).stdout
    assert sa_ns == k8s_namespace


def test_streaming_response_is_read_incrementally_through_proxy(
    k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    core = client.CoreV1Api(k8s_cluster.api_client())
    _start_server_pod(core, k8s_namespace)
    wait_for(
        "pod server answering",
        lambda: (
            k8s_cluster.kubectl(
                "get",
                "--raw",
                f"/api/v1/namespaces/{k8s_namespace}/pods/web:8080/proxy/",
                check=False,
            ).stdout
        ),
    )
    cfg = k8s_cluster.configuration()
    headers = {}
    if cfg.api_key.get("authorization"):
        headers["Authorization"] = cfg.api_key["authorization"]
    pool = urllib3.PoolManager(
        cert_reqs="CERT_REQUIRED",
        ca_certs=cfg.ssl_ca_cert,
        cert_file=cfg.cert_file,
        key_file=cfg.key_file,
    )
    url = f"{cfg.host}/api/v1/namespaces/{k8s_namespace}/pods/web:8080/proxy/events"
    resp = pool.request(
        "GET", url + "?n=6&interval=0.5", headers=headers, preload_content=False, timeout=30
    )
    assert resp.status == 200
    arrivals: list[tuple[float, bytes]] = []
    started = time.monotonic()
    for chunk in resp.stream(1024):
        arrivals.append((time.monotonic() - started, chunk))
    resp.release_conn()
    body = b"".join(c for _, c in arrivals).decode()
    assert body.count("data: ") == 6
    first_event_at = next(t for t, c in arrivals if b"data: " in c)
    assert arrivals[-1][0] - first_event_at > 1.5, arrivals


def test_pod_reaches_host_servers_through_host_ip(
    k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path
) -> None:
    if not k8s_cluster.host_ip:
        pytest.skip("ARKOR_TEST_HOST_IP is not set for this cluster")
    (tmp_path / "object.txt").write_text("from-the-host")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer((k8s_cluster.host_ip, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    script = (
        "import os, ssl, urllib.request\n"
        f"print(urllib.request.urlopen('http://{k8s_cluster.host_ip}:{port}/object.txt').read()"
        ".decode())\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
        "ctx = ssl.create_default_context(cafile=sa + '/ca.crt')\n"
        "url = 'https://%s:%s/api/v1/namespaces/%s/pods' % (os.environ['KUBERNETES_SERVICE_HOST'],"
        " os.environ['KUBERNETES_SERVICE_PORT'], open(sa + '/namespace').read())\n"
        "req = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + "
        "open(sa + '/token').read()})\n"
        "try:\n    urllib.request.urlopen(req, context=ctx)\n"
        "except urllib.error.HTTPError as exc:\n    print('api', exc.code)\n"
    )
    core = client.CoreV1Api(k8s_cluster.api_client())
    body = pod_manifest(
        "client", [{"name": "c", "image": "python", "command": ["python", "-c", script]}]
    )
    core.create_namespaced_pod(k8s_namespace, body)
    try:
        wait_for("pod to finish", lambda: pod_phase(core, k8s_namespace, "client") in (
            "Succeeded", "Failed"
        ))  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    logs = k8s_cluster.kubectl("logs", "-n", k8s_namespace, "client").stdout
    # The default ServiceAccount is authenticated (its token works) but may not list pods.
    assert logs.splitlines() == ["from-the-host", "api 403"], logs
    assert pod_phase(core, k8s_namespace, "client") == "Succeeded"
