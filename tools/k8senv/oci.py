"""Run one container from a local image with runc, the way kubelet and a CRI runtime do.

Images live in the buildah store that ``scripts/build-images.sh`` fills (``~/.cache/arkor-ops/
images/storage``, or ``$ARKOR_IMAGE_STORE``). A container's root filesystem is a buildah working
container made from the image: an overlay mount of the image's layers, read-only below a private
upper layer, like containerd's snapshots. Its process is the image's config merged with the
container spec as kubelet merges them (``command`` replaces ENTRYPOINT and drops CMD, ``args``
replaces CMD; the image's ENV first, the spec's env over it; ``runAsUser``/``runAsGroup`` over
USER; ``workingDir`` over WORKDIR). ``runc run`` runs it in the foreground, in new pid, ipc, uts
and mount namespaces (network: the host's, or a given network namespace), with volumes as bind
mounts, and exits with the container's status (128 + signal when killed).

The memory limit is set on a cgroup this module owns (v1 memory controller), one level above
runc's own, with an OOM eventfd registered on it (``cgroup.event_control``, what Docker does on
cgroup v1): the kernel signals it when the cgroup runs out of memory and its OOM killer kills a
process inside, so the exit is reported as ``OOMKilled``. (The ``oom_kill`` counter in
``memory.oom_control`` counts in the victim's own cgroup, runc's, which runc removes as the
container ends.)

What it does not do: seccomp profiles, AppArmor, user namespaces, image pulls (a missing image is
:class:`ImageNotFoundError`, what kubelet reports as ``ErrImagePull``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STORE = Path(
    os.environ.get("ARKOR_IMAGE_STORE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "arkor-ops"
    / "images"
    / "storage"
)
RUNROOT = Path(os.environ.get("ARKOR_IMAGE_RUNROOT") or "/run/arkor-ops/containers")
RUNC_ROOT = Path("/run/arkor-ops/runc")
CGROUP_MEMORY = Path("/sys/fs/cgroup/memory")
CGROUP_PARENT = "arkor-ops"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What containerd grants a container that drops nothing (the Kubernetes default).
DEFAULT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip


class ImageNotFoundError(RuntimeError):
    """The image is not in the local store (kubelet: ``ErrImagePull``)."""


def buildah(*args: str) -> str:
    """Run buildah against the project's image store; returns stdout.

    Raises:
        RuntimeError: buildah failed (its stderr is in the message).
    """
    cmd = ["buildah", "--root", str(STORE), "--runroot", str(RUNROOT), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:5])} {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image's OCI config that decide how its containers run."""

    name: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    user: str
    workdir: str
    env: dict[str, str]


def image_config(image: str) -> ImageConfig:
    """Read ``image``'s config from the local store.

    Raises:
        ImageNotFoundError: no image of that name is stored here.
    """
    try:
        info = json.loads(buildah("inspect", "--type", "image", image))
    except RuntimeError as exc:
        raise ImageNotFoundError(f'image "{image}" is not in the local store {STORE}') from exc
    cfg = (info.get("OCIv1") or {}).get("config") or {}
    env = dict(item.partition("=")[::2] for item in cfg.get("Env") or [])
    return ImageConfig(
        name=image,
        entrypoint=tuple(cfg.get("Entrypoint") or ()),
        cmd=tuple(cfg.get("Cmd") or ()),
        user=str(cfg.get("User") or ""),
        workdir=str(cfg.get("WorkingDir") or "/"),
        env=env,
    )


@dataclass(frozen=True)
class Mount:
    """A bind mount of a host path into the container."""

    destination: str
    source: Path
    read_only: bool = False


@dataclass
class ContainerSpec:
    """One container, as the pod spec describes it (kubelet's view, before the image merge).

    Attributes:
        image: image name in the local store.
        command: the spec's ``command`` (replaces ENTRYPOINT, drops CMD); None keeps both.
        args: the spec's ``args`` (replaces CMD); None keeps it.
        env: the spec's resolved environment, set over the image's ENV.
        uid: ``runAsUser``; None uses the image's USER.
        gid: ``runAsGroup``; None uses the image's (or the user's primary group).
        groups: supplementary groups (``fsGroup``, ``supplementalGroups``).
        workdir: ``workingDir``; None uses the image's WORKDIR.
        mounts: volumes, bind-mounted in order.
        read_only_root: ``readOnlyRootFilesystem``.
        memory_limit_bytes: ``resources.limits.memory``; None is unlimited.
        capabilities: the process's capabilities (``drop: [ALL]`` is the empty tuple).
        no_new_privileges: not ``allowPrivilegeEscalation``.
        run_as_non_root: ``runAsNonRoot``: refuse to run as UID 0.
        netns: a network namespace to join; None shares the host's.
        hostname: the container's hostname.
    """

    image: str
    command: list[str] | None = None
    args: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()
    workdir: str | None = None
    mounts: list[Mount] = field(default_factory=list)
    read_only_root: bool = False
    memory_limit_bytes: int | None = None
    capabilities: tuple[str, ...] = DEFAULT_CAPS
    no_new_privileges: bool = False
    run_as_non_root: bool = False
    netns: Path | None = None
    hostname: str = "container"


@dataclass(frozen=True)
class Exit:
    """How a container ended."""

    code: int
    oom_killed: bool

    @property
    def reason(self) -> str:
        """kubelet's ``terminated.reason``."""
        if self.oom_killed:
            return "OOMKilled"
        return "Completed" if self.code == 0 else "Error"


def _capabilities(security: dict[str, Any]) -> tuple[str, ...]:
    caps = security.get("capabilities") or {}
    drop = {f"CAP_{c.upper()}" for c in caps.get("drop") or []}
    add = [f"CAP_{c.upper()}" for c in caps.get("add") or []]
    kept = () if "CAP_ALL" in drop else tuple(c for c in DEFAULT_CAPS if c not in drop)
    return (*kept, *(c for c in add if c not in kept))


def spec_from_pod(
    pod_spec: dict[str, Any],
    container: dict[str, Any],
    env: dict[str, str],
    volumes: dict[str, Path],
    *,
    netns: Path | None = None,
    hostname: str = "container",
) -> ContainerSpec:
    """A container of a pod spec as kubelet would run it: security context, mounts, limits.

    Args:
        pod_spec: the pod's ``spec``.
        container: one of its containers.
        env: the container's resolved environment (values, Secret and ConfigMap keys); its
            ``$(VAR)`` references in ``command`` and ``args`` are expanded.
        volumes: volume name to the host directory that holds it.
        netns: the pod's network namespace; None shares the host's.
        hostname: the pod's hostname.

    Raises:
        KeyError: a volume mount names a volume that is not in ``volumes``.
    """
    from kubernetes.utils import parse_quantity

    from tools.k8senv.pod_setup import expand

    pod_sc = pod_spec.get("securityContext") or {}
    sc = {**pod_sc, **(container.get("securityContext") or {})}
    groups = [*pod_sc.get("supplementalGroups", [])]
    if "fsGroup" in pod_sc:
        groups.append(pod_sc["fsGroup"])
    mounts = []
    for m in container.get("volumeMounts") or []:
        source = volumes[m["name"]]
        if m.get("subPath"):
            source = source / m["subPath"]
            source.mkdir(parents=True, exist_ok=True)
        mounts.append(Mount(m["mountPath"], source, bool(m.get("readOnly"))))
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    command, args = container.get("command"), container.get("args")
    return ContainerSpec(
        image=container["image"],
        command=None if command is None else [expand(c, env) for c in command],
        args=None if args is None else [expand(a, env) for a in args],
        env=env,
        uid=sc.get("runAsUser"),
        gid=sc.get("runAsGroup"),
        groups=tuple(groups),
        workdir=container.get("workingDir"),
        mounts=mounts,
        read_only_root=bool(sc.get("readOnlyRootFilesystem")),
        memory_limit_bytes=int(parse_quantity(limit)) if limit else None,
        capabilities=_capabilities(sc),
        no_new_privileges=sc.get("allowPrivilegeEscalation") is False,
        run_as_non_root=bool(sc.get("runAsNonRoot")),
        netns=netns,
        hostname=hostname,
    )


def argv(image: ImageConfig, spec: ContainerSpec) -> list[str]:
    """The process's argv, kubelet's way."""
    if spec.command is not None:
        return [*spec.command, *(spec.args or [])]
    return [*image.entrypoint, *(spec.args if spec.args is not None else image.cmd)]


def _passwd_gid(rootfs: Path, uid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in (rootfs / "etc" / "passwd").read_text().splitlines():
            parts = line.split(":")
            if len(parts) > 3 and parts[2] == str(uid):
                return int(parts[3])
    return None


def _user(image: ImageConfig, spec: ContainerSpec, rootfs: Path) -> tuple[int, int]:
    name, _, group = image.user.partition(":")
    uid = spec.uid
    if uid is None:
        uid = int(name) if name.isdigit() else 0
        if name and not name.isdigit():
            raise ValueError(f'image "{image.name}": USER {name!r} is not numeric')
    gid = spec.gid
    if gid is None:
        from_image = spec.uid is None and group.isdigit()
        gid = int(group) if from_image else (_passwd_gid(rootfs, uid) or 0)
    return uid, gid


def _mounts(spec: ContainerSpec) -> list[dict[str, Any]]:
    base = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]  # fmt: skip
    for m in spec.mounts:
        opts = ["rbind", "nosuid", "nodev", "ro" if m.read_only else "rw"]
        base.append({"destination": m.destination, "type": "bind", "source": str(m.source),
                     "options": opts})  # fmt: skip
    return base


def runtime_config(
    image: ImageConfig, spec: ContainerSpec, rootfs: Path, cgroups_path: str
) -> dict[str, Any]:
    """The OCI runtime config (``config.json``) of one container."""
    uid, gid = _user(image, spec, rootfs)
    if spec.run_as_non_root and uid == 0:
        # kubelet: CreateContainerConfigError.
        raise ValueError(f'image "{image.name}" runs as root and the pod sets runAsNonRoot')
    env = {"PATH": DEFAULT_PATH, **image.env, "HOSTNAME": spec.hostname, **spec.env}
    caps = list(spec.capabilities)
    namespaces: list[dict[str, str]] = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if spec.netns is not None:
        namespaces.append({"type": "network", "path": str(spec.netns)})
    linux = {
        "cgroupsPath": cgroups_path,
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": namespaces,
        "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                        "/proc/scsi", "/sys/firmware"],
        "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger"],
    }  # fmt: skip
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, "additionalGids": sorted(set(spec.groups))},
            "args": argv(image, spec),
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": spec.workdir or image.workdir or "/",
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": spec.no_new_privileges,
        },
        "root": {"path": str(rootfs), "readonly": spec.read_only_root},
        "hostname": spec.hostname,
        "mounts": _mounts(spec),
        "linux": linux,
    }


class Container:
    """One run of one container: create its root filesystem, run it, report how it ended.

    Use as a context manager, or call :meth:`remove` (idempotent) when done.
    """

    def __init__(
        self,
        spec: ContainerSpec,
        state_dir: Path,
        name: str | None = None,
        log_path: Path | None = None,
    ) -> None:
        """Args: the spec; a directory for the bundle; a unique name; where stdout and stderr
        are appended (default: ``output.log`` in the bundle)."""
        self.spec = spec
        self.name = name or f"arkor-{uuid.uuid4().hex[:12]}"
        self.bundle = state_dir / self.name
        self.log_path = log_path or self.bundle / "output.log"
        self.image = image_config(spec.image)
        self._cgroup = CGROUP_MEMORY / CGROUP_PARENT / self.name
        self._cgroups_path = f"/{CGROUP_PARENT}/{self.name}/ctr"
        self._builder: str | None = None
        self._oom_fd: int | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self.exit: Exit | None = None

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def start(self) -> None:
        """Make the root filesystem and start ``runc run`` in the background."""
        self.bundle.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        image = self.spec.image
        self._builder = buildah("from", "--pull-never", "--name", self.name, image).strip()
        rootfs = Path(buildah("mount", self._builder).strip())
        self._cgroup.mkdir(parents=True, exist_ok=True)
        if self.spec.memory_limit_bytes is not None:
            (self._cgroup / "memory.limit_in_bytes").write_text(str(self.spec.memory_limit_bytes))
        self._watch_oom()
        config = runtime_config(self.image, self.spec, rootfs, self._cgroups_path)
        (self.bundle / "config.json").write_text(json.dumps(config, indent=2))
        RUNC_ROOT.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                ["runc", "--root", str(RUNC_ROOT), "run", "--bundle", str(self.bundle), self.name],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self._wait_created()
        logger.info("container %s started from %s", self.name, self.spec.image)

    def _wait_created(self, timeout: float = 30.0) -> None:
        """Return once runc knows the container (or ``runc run`` has already exited), as a
        CRI's StartContainer returns only then: kubelet reports a container running after it."""
        deadline = time.monotonic() + timeout
        while self._popen is not None and self._popen.poll() is None:
            state = subprocess.run(
                ["runc", "--root", str(RUNC_ROOT), "state", self.name],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if state.returncode == 0 and '"running"' in state.stdout:
                return
            if time.monotonic() > deadline:
                logger.warning(
                    "container %s: runc has not started it after %.0f s", self.name, timeout
                )
                return
            time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        """The pid of ``runc run`` (it forwards the signals it gets to the container)."""
        return self._popen.pid if self._popen is not None else None

    def poll(self) -> Exit | None:
        """How the container ended, or None while it runs."""
        if self.exit is not None or self._popen is None:
            return self.exit
        code = self._popen.poll()
        if code is None:
            return None
        self.exit = Exit(code=128 - code if code < 0 else code, oom_killed=self._oom_kills() > 0)
        return self.exit

    def wait(self, timeout: float) -> Exit:
        """Wait until the container ends.

        Raises:
            TimeoutError: it still runs after ``timeout`` seconds (it is left running).
        """
        deadline = time.monotonic() + timeout
        while (result := self.poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"container {self.name} still runs after {timeout:.0f} s")
            time.sleep(0.2)
        return result

    def kill(self, signal: str = "KILL") -> None:
        """Send ``signal`` to the container's init process."""
        subprocess.run(
            ["runc", "--root", str(RUNC_ROOT), "kill", self.name, signal],
            capture_output=True, check=False,
        )  # fmt: skip

    def output(self) -> str:
        """What the container wrote to stdout and stderr."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _watch_oom(self) -> None:
        self._oom_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        control = os.open(self._cgroup / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        try:
            (self._cgroup / "cgroup.event_control").write_text(f"{self._oom_fd} {control}")
        finally:
            os.close(control)

    def _oom_kills(self) -> int:
        if self._oom_fd is None:
            return 0
        try:
            return os.eventfd_read(self._oom_fd)
        except BlockingIOError:
            return 0

    def remove(self) -> None:
        """Stop the container if it runs, delete it, its root filesystem and cgroups."""
        if self._popen is not None and self._popen.poll() is None:
            self.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=10)
        self.poll()
        _delete(self.name, builder=self._builder is not None)
        self._builder = None
        if self._oom_fd is not None:
            os.close(self._oom_fd)
            self._oom_fd = None
        with contextlib.suppress(OSError):
            (self.bundle / "config.json").unlink()


def _delete(name: str, *, builder: bool = True) -> None:
    """Delete container ``name`` from runc (killing it), its root filesystem and its cgroups."""
    subprocess.run(
        ["runc", "--root", str(RUNC_ROOT), "delete", "--force", name],
        capture_output=True, check=False,
    )  # fmt: skip
    if builder:
        with contextlib.suppress(RuntimeError):
            buildah("rm", name)
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        for leaf in (f"{name}/ctr", name):
            with contextlib.suppress(OSError):
                (hierarchy / CGROUP_PARENT / leaf).rmdir()


def sweep(prefix: str) -> list[str]:
    """Delete every container whose name starts with ``prefix`` (a crashed agent's leftovers):
    from runc, and buildah's working containers with their overlay mounts.

    Returns:
        The names deleted.
    """
    names: set[str] = set()
    if RUNC_ROOT.exists():
        listed = subprocess.run(
            ["runc", "--root", str(RUNC_ROOT), "list", "--format", "json"],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        names |= {c["id"] for c in json.loads(listed or "null") or []}
    with contextlib.suppress(RuntimeError, FileNotFoundError):
        working = json.loads(buildah("containers", "--json") or "null") or []
        names |= {c.get("containername", "") for c in working}
    left = sorted(n for n in names if n.startswith(prefix))
    for name in left:
        _delete(name)
    if left:
        logger.info("swept containers %s", ", ".join(left))
    return left
