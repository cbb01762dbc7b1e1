"""The images run as the Job runs them: the Dockerfiles' USER, ENV and VOLUME against the
rendered Job (same UID/GID, every path the image writes on a writable volume of the pod).

A static check: it reads ``images/*/Dockerfile`` as text. Running the real images as the Job
does (runc, read-only root, the Job's user) is the node agent's job in the cluster tier.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from arkor_ops.backends.kubernetes import images
from arkor_ops.backends.kubernetes import manifests as m
from arkor_ops.config import validate_config
from arkor_ops.settings import KubernetesSettings

IMAGES = Path(__file__).resolve().parents[2] / "images"


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out: list[tuple[str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            out = []  # only the final stage is what runs
        out.append((word.upper(), rest.strip()))
    return out


def _image(name: str) -> dict[str, Any]:
    env: dict[str, str] = {}
    user = workdir = ""
    volumes: list[str] = []
    for word, rest in _instructions(IMAGES / name / "Dockerfile"):
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
        elif word == "USER":
            user = rest
        elif word == "WORKDIR":
            workdir = rest
        elif word == "VOLUME":
            volumes = json.loads(rest) if rest.startswith("[") else rest.split()
    return {"env": env, "user": user, "workdir": workdir, "volumes": volumes}


def _job_pod() -> dict[str, Any]:
    config = validate_config(
        {
            "name": "image-check",
            "model": "unsloth/gemma-3-270m-it",
            "dataset": {"type": "s3", "uri": "s3://b/d.jsonl"},
        }
    )
    objs = m.build_run(config, KubernetesSettings(), name="image-check-1", storage_uri="s3://b/r")
    return dict(objs.job["spec"]["template"]["spec"])


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in (*pod["initContainers"], *pod["containers"]) if c["name"] == name)


def _writable(container: dict[str, Any]) -> list[str]:
    return [v["mountPath"] for v in container["volumeMounts"] if not v.get("readOnly")]


def _on(path: str, mounts: list[str]) -> bool:
    return any(path == mp or path.startswith(mp.rstrip("/") + "/") for mp in mounts)


@pytest.mark.parametrize(
    ("image", "container", "path_env"),
    [
        ("trainer", m.TRAINER, images.TRAINER_PATH_ENV),
        ("sidecar", m.SIDECAR, images.SIDECAR_PATH_ENV),
    ],
)
def test_image_and_job_agree_on_user_and_writable_paths(
    image: str, container: str, path_env: dict[str, str]
) -> None:
    img = _image(image)
    pod = _job_pod()
    ctr = _container(pod, container)
    ctx = pod["securityContext"]

    uid, _, gid = img["user"].partition(":")
    assert (int(uid), int(gid)) == (images.RUN_UID, images.RUN_GID), img["user"]
    assert (ctx["runAsUser"], ctx["runAsGroup"], ctx["fsGroup"]) == (int(uid), int(gid), int(gid))
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True

    # What the process sees: the image's ENV, overridden by the Job's.
    job_env = {e["name"]: e["value"] for e in ctr["env"] if "value" in e}
    effective = {**img["env"], **job_env}
    for key, value in path_env.items():
        if key in img["env"]:
            assert img["env"][key] == value, f"{image} Dockerfile ENV {key}"
        assert effective.get(key, value) == value, f"Job env {key}"

    writable = _writable(ctr)
    paths = {k: v for k, v in effective.items() if v.startswith("/") and k != "PATH"}
    paths = {k: v for k, v in paths.items() if not v.startswith(("/opt/", "/etc/arkor/"))}
    read_only = [v["mountPath"] for v in ctr["volumeMounts"] if v.get("readOnly")]
    paths = {k: v for k, v in paths.items() if not _on(v, read_only)}  # read, never written
    assert paths, "no path environment found"
    for key, value in paths.items():
        assert _on(value, writable), f"{key}={value} is not on a writable volume of {container}"
    if img["workdir"]:
        assert _on(img["workdir"], writable), f"WORKDIR {img['workdir']}"
    for volume in img["volumes"]:
        assert volume in writable, f"the image's VOLUME {volume} is not mounted in {container}"
    for mount in ctr["volumeMounts"]:
        source = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        if not mount.get("readOnly") and mount["mountPath"] != m.SHM_DIR:
            assert "emptyDir" in source, mount


def test_every_scratch_volume_has_a_size_and_the_trainer_an_ephemeral_storage_limit() -> None:
    settings = KubernetesSettings(
        scratch_size_limit="9Gi",
        cache_size_limit="40Gi",
        ephemeral_storage_request="5Gi",
        ephemeral_storage_limit="60Gi",
    )
    config = validate_config(
        {"name": "sizes", "model": "m", "dataset": {"type": "s3", "uri": "s3://b/d.jsonl"}}
    )
    pod = m.build_run(config, settings, name="sizes-1", storage_uri="s3://b/r").job["spec"][
        "template"
    ]["spec"]

    sizes = {v["name"]: v["emptyDir"].get("sizeLimit") for v in pod["volumes"] if "emptyDir" in v}
    assert sizes == {"run": "1Gi", "tmp": "9Gi", "cache": "40Gi", "dshm": "1Gi"}
    trainer = _container(pod, m.TRAINER)
    assert trainer["resources"]["requests"]["ephemeral-storage"] == "5Gi"
    assert trainer["resources"]["limits"]["ephemeral-storage"] == "60Gi"
    env = {e["name"]: e.get("value") for e in trainer["env"]}
    assert env["ARKOR_MAX_RESTARTS"] == str(KubernetesSettings().max_pod_restarts)


def test_the_example_kueue_cluster_queue_covers_every_resource_a_run_requests() -> None:
    import yaml

    docs = yaml.safe_load_all((IMAGES.parent / "k8s" / "kueue" / "queues.yaml").read_text())
    queue = next(d for d in docs if d["kind"] == "ClusterQueue")
    covered = {r for g in queue["spec"]["resourceGroups"] for r in g["coveredResources"]}
    pod = _job_pod()
    requested = {
        name
        for c in (*pod["initContainers"], *pod["containers"])
        for name in c["resources"].get("requests", {})
    }
    assert requested <= covered
