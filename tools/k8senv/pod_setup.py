"""Turn a pod spec into what a local process needs: environment, volume files and a command line.

Volumes (emptyDir, secret, configMap, downwardAPI, projected incl. service-account tokens,
hostPath) are materialized as directories under the pod's state directory and bind-mounted at
their ``mountPath`` inside a private mount namespace (``unshare --mount``) that runs inside the
pod's network namespace (``nsenter --net``). Images are ignored: the command runs on this machine
with the repository's ``.venv/bin`` first on ``PATH``. ``downwardAPI`` volumes are rewritten
(file by file, by rename) when the pod's labels or annotations change, as kubelet does
(:func:`refresh_downward_volumes`).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Runs inside the pod's mount namespace: bind volumes, cd to the working dir, exec the command.
# Arguments: WORKDIR then triples SOURCE TARGET ro|rw, then "--" and the command.
# Runs in the pod's private mount namespace: bind each volume at its mountPath, then make sure
# the project (whose .venv runs the containers' commands) is still visible: the host filesystem is
# shared, so an emptyDir at /tmp would hide a checkout that lives under /tmp. A real container has
# its own root filesystem and never has this problem.
_MOUNT_SCRIPT = r"""
set -e
wd=$1; repo=$2; shift 2
keep=/run/arkor-ops/project
mkdir -p "$keep"; mount --bind "$repo" "$keep"
# Every source is bound to a staging point first: a volume mounted over a host directory (an
# emptyDir at /tmp) would otherwise hide the sources of the volumes after it (the pod's own
# volume directories live under the agent's state dir, which may be under /tmp).
# The arguments are MOUNTS -- COMMAND; the staged mounts replace MOUNTS by rotation.
# The staging points are on a tmpfs of this mount namespace: nothing is left on the host.
stage=/run/arkor-ops/stage; n=0; end=--arkor-end--
mkdir -p "$stage"; mount -t tmpfs -o mode=700 arkor-stage "$stage"
set -- "$@" "$end"
while [ "$1" != "--" ]; do
  n=$((n + 1))
  if [ -d "$1" ]; then mkdir "$stage/$n"; else : > "$stage/$n"; fi
  mount --bind "$1" "$stage/$n"
  set -- "$@" "$stage/$n" "$2" "$3"
  shift 3
done
shift; set -- "$@" --
while [ "$1" != "$end" ]; do set -- "$@" "$1"; shift; done
shift
while [ "$1" != "--" ]; do
  if [ -d "$1" ]; then mkdir -p "$2"; else mkdir -p "$(dirname "$2")"; [ -e "$2" ] || : > "$2"; fi
  mount --bind "$1" "$2"
  if [ "$3" = ro ]; then mount -o remount,bind,ro "$2"; fi
  shift 3
done
shift
if [ ! -d "$repo/.venv" ]; then mkdir -p "$repo"; mount --bind "$keep" "$repo"; fi
mkdir -p "$wd"; cd "$wd"
exec "$@"
"""


class ConfigError(Exception):
    """A referenced Secret/ConfigMap/key is missing (kubelet: CreateContainerConfigError)."""


@dataclass
class PodContext:
    """What env and volume resolution need to know about the pod."""

    pod: dict[str, Any]
    node_name: str
    pod_ip: str
    host_ip: str
    apiserver_port: int
    pod_dir: Path

    @property
    def namespace(self) -> str:
        """The pod's namespace."""
        return str(self.pod["metadata"]["namespace"])

    @property
    def name(self) -> str:
        """The pod's name."""
        return str(self.pod["metadata"]["name"])


class Resolver:
    """Reads Secrets, ConfigMaps and tokens through the API, with a per-pod cache."""

    def __init__(self, api: client.ApiClient) -> None:
        """Args: API client of the agent."""
        self.core = client.CoreV1Api(api)

    def _read(self, kind: str, namespace: str, name: str, optional: bool) -> dict[str, Any] | None:
        try:
            if kind == "secret":
                resp = self.core.read_namespaced_secret(name, namespace, _preload_content=False)
            else:
                resp = self.core.read_namespaced_config_map(name, namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404 and optional:
                return None
            raise ConfigError(f'{kind} "{name}" not found') from exc
        return dict(json.loads(resp.data))

    def data(self, kind: str, namespace: str, name: str, optional: bool) -> dict[str, bytes]:
        """Key to bytes for a Secret or ConfigMap (empty when optional and missing)."""
        obj = self._read(kind, namespace, name, optional)
        if obj is None:
            return {}
        if kind == "secret":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        out = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return out

    def token(self, ctx: PodContext, source: dict[str, Any]) -> bytes:
        """A bound service-account token for the pod (TokenRequest)."""
        spec: dict[str, Any] = {
            "expirationSeconds": source.get("expirationSeconds", 3607),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": ctx.name,
                "uid": ctx.pod["metadata"]["uid"],
            },
        }
        if source.get("audience"):
            spec["audiences"] = [source["audience"]]
        sa = ctx.pod["spec"].get("serviceAccountName") or "default"
        resp = self.core.create_namespaced_service_account_token(
            sa, ctx.namespace, {"spec": spec}, _preload_content=False
        )
        return str(json.loads(resp.data)["status"]["token"]).encode()


def field_value(ctx: PodContext, path: str) -> str:
    """Value of a downward-API ``fieldPath``."""
    meta = ctx.pod["metadata"]
    simple = {
        "metadata.name": ctx.name,
        "metadata.namespace": ctx.namespace,
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": ctx.node_name,
        "spec.serviceAccountName": ctx.pod["spec"].get("serviceAccountName", "default"),
        "status.podIP": ctx.pod_ip,
        "status.podIPs": ctx.pod_ip,
        "status.hostIP": ctx.host_ip,
        "status.hostIPs": ctx.host_ip,
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = (meta.get(path.split(".")[1]) or {}).items()
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items))
    raise ConfigError(f"unsupported fieldPath {path}")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion (of ``command``, ``args`` and env values); ``$$(VAR)``
    escapes."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0).startswith("$$"):
            return match.group(0)[1:]
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$?\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", repl, text)


def container_env(
    ctx: PodContext, container: dict[str, Any], resolver: Resolver, *, image: bool = False
) -> dict[str, str]:
    """The environment of one container.

    Args:
        ctx: The pod.
        container: One of its containers.
        resolver: Reads the Secrets and ConfigMaps it references.
        image: It runs from its image, whose ENV sets ``PATH`` and ``HOME`` (else, as a
            process, they point at the project's virtual environment and root's home).

    Raises:
        ConfigError: A referenced Secret/ConfigMap key is missing and not optional.
    """
    env: dict[str, str] = {} if image else {
        "PATH": f"{REPO_ROOT / '.venv' / 'bin'}:{BASE_PATH}",
        "HOME": "/root",
    }  # fmt: skip
    env |= {
        "HOSTNAME": ctx.name,
        "KUBERNETES_SERVICE_HOST": ctx.host_ip,
        "KUBERNETES_SERVICE_PORT": str(ctx.apiserver_port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(ctx.apiserver_port),
    }
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("configMap", "configMapRef"), ("secret", "secretRef")):
            if key in source:
                ref = source[key]
                kind_name = "secret" if kind == "secret" else "configmap"
                values = resolver.data(
                    kind_name, ctx.namespace, ref["name"], ref.get("optional", False)
                )
                env.update({prefix + k: v.decode() for k, v in values.items()})
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(item.get("value", ""), env)
            continue
        value_from = item["valueFrom"]
        if "fieldRef" in value_from:
            env[name] = field_value(ctx, value_from["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in value_from or "configMapKeyRef" in value_from:
            is_secret = "secretKeyRef" in value_from
            ref = value_from["secretKeyRef" if is_secret else "configMapKeyRef"]
            optional = bool(ref.get("optional", False))
            values = resolver.data(
                "secret" if is_secret else "configmap", ctx.namespace, ref["name"], optional
            )
            if ref["key"] in values:
                env[name] = values[ref["key"]].decode()
            elif not optional:
                raise ConfigError(f'key "{ref["key"]}" not found in {ref["name"]}')
        elif "resourceFieldRef" in value_from:
            ref = value_from["resourceFieldRef"]
            section, _, resource = ref["resource"].partition(".")
            env[name] = str((container.get("resources", {}).get(section) or {}).get(resource, "0"))
    return env


def _write_files(target: Path, files: dict[str, bytes], mode: int) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)


def _write_atomically(target: Path, files: dict[str, bytes], mode: int) -> None:
    """Replace each file by a rename, so a reader sees the old or the new content, never a
    partial one (kubelet swaps a ``..data`` symlink for the same reason)."""
    target.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(content)
        tmp.chmod(mode)
        os.replace(tmp, path)


def refresh_downward_volumes(ctx: PodContext) -> None:
    """Rewrite the pod's ``downwardAPI`` volumes from ``ctx.pod`` (kubelet does this when the
    pod's labels or annotations change); the directories stay bind-mounted in the containers."""
    for volume in ctx.pod["spec"].get("volumes") or []:
        if "downwardAPI" in volume:
            items = volume["downwardAPI"].get("items") or []
            mode = volume["downwardAPI"].get("defaultMode", 0o644)
            target = ctx.pod_dir / "volumes" / volume["name"]
            _write_atomically(target, _downward_files(ctx, items), mode)


def _select(values: dict[str, bytes], items: list[dict[str, Any]] | None) -> dict[str, bytes]:
    if not items:
        return values
    return {i["path"]: values[i["key"]] for i in items if i["key"] in values}


def _projected_files(
    ctx: PodContext, sources: list[dict[str, Any]], resolver: Resolver
) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for source in sources:
        if "serviceAccountToken" in source:
            sat = source["serviceAccountToken"]
            files[sat["path"]] = resolver.token(ctx, sat)
        for kind, key in (("secret", "secret"), ("configmap", "configMap")):
            if key in source:
                ref = source[key]
                values = resolver.data(kind, ctx.namespace, ref["name"], ref.get("optional", False))
                files.update(_select(values, ref.get("items")))
        if "downwardAPI" in source:
            files.update(_downward_files(ctx, source["downwardAPI"].get("items") or []))
    return files


def _downward_files(ctx: PodContext, items: list[dict[str, Any]]) -> dict[str, bytes]:
    return {
        i["path"]: field_value(ctx, i["fieldRef"]["fieldPath"]).encode()
        for i in items
        if "fieldRef" in i
    }


def materialize_volumes(ctx: PodContext, resolver: Resolver) -> dict[str, Path]:
    """Create every volume of the pod on disk.

    Returns:
        Volume name to host directory.

    Raises:
        ConfigError: A referenced object is missing and not optional.
    """
    out: dict[str, Path] = {}
    for volume in ctx.pod["spec"].get("volumes") or []:
        name = volume["name"]
        target = ctx.pod_dir / "volumes" / name
        mode = 0o644
        if "hostPath" in volume:
            out[name] = Path(volume["hostPath"]["path"])
            continue
        if "secret" in volume:
            src = volume["secret"]
            values = resolver.data(
                "secret", ctx.namespace, src["secretName"], src.get("optional", False)
            )
            _write_files(target, _select(values, src.get("items")), src.get("defaultMode", mode))
        elif "configMap" in volume:
            src = volume["configMap"]
            values = resolver.data(
                "configmap", ctx.namespace, src["name"], src.get("optional", False)
            )
            _write_files(target, _select(values, src.get("items")), src.get("defaultMode", mode))
        elif "projected" in volume:
            src = volume["projected"]
            files = _projected_files(ctx, src.get("sources") or [], resolver)
            _write_files(target, files, src.get("defaultMode", mode))
        elif "downwardAPI" in volume:
            src = volume["downwardAPI"]
            files = _downward_files(ctx, src.get("items") or [])
            _write_atomically(target, files, src.get("defaultMode", mode))
        else:
            if "emptyDir" not in volume:
                logger.warning(
                    "%s/%s: volume %s: unsupported type, using an empty dir",
                    ctx.namespace,
                    ctx.name,
                    name,
                )
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o777)
        out[name] = target
    return out


def command_line(
    ctx: PodContext,
    container: dict[str, Any],
    env: dict[str, str],
    volumes: dict[str, Path],
    netns_path: Path,
) -> list[str]:
    """The argv that runs ``container`` in the pod's network and a private mount namespace.

    Raises:
        ConfigError: The container has neither ``command`` nor ``args`` (its image is not run).
    """
    cmd = [expand(c, env) for c in (container.get("command") or [])]
    cmd += [expand(a, env) for a in (container.get("args") or [])]
    if not cmd:
        raise ConfigError(
            "container has no command: the node agent runs only images under localhost/ "
            "(scripts/build-images.sh); others need command or args"
        )
    mounts: list[str] = []
    for mount in container.get("volumeMounts") or []:
        source = volumes.get(mount["name"])
        if source is None:
            raise ConfigError(f'volume "{mount["name"]}" not found')
        if mount.get("subPath"):
            source = source / mount["subPath"]
            if not source.exists():
                source.mkdir(parents=True)
        mounts += [str(source), mount["mountPath"], "ro" if mount.get("readOnly") else "rw"]
    workdir = container.get("workingDir") or str(ctx.pod_dir / "work" / container["name"])
    return [
        "nsenter", f"--net={netns_path}", "--", "unshare", "--mount", "--propagation", "private",
        "--", "sh", "-c", _MOUNT_SCRIPT, "pod-mounts", workdir, str(REPO_ROOT), *mounts, "--", *cmd,
    ]  # fmt: skip


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and parents); returns it."""
    os.makedirs(path, exist_ok=True)
    return path
