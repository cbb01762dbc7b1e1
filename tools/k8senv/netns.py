"""Pod network: one network namespace per pod, joined to a host bridge by a veth pair.

Layout (for one agent instance, identified by a one-letter ``tag``; slot ``i`` uses tag
``SLOT_TAGS[i]`` and ``10.244.<16*i>.0/20``; the local cluster is slot 0, test sessions claim a
free slot)::

    host netns                                  pod netns ``ark<tag>-<n>``
    bridge ``ark<tag>br0`` 10.244.16.1/20  <--  veth ``ark<tag>v<n>`` == eth0 10.244.16.<k>/20
                                                   default route via 10.244.16.1, lo up

The bridge address is the gateway of every pod, the nodes' ``InternalIP`` (the API server reaches
the agent's kubelet endpoint there) and the address pods use to reach servers on the host
(``host_ip``). Nothing is forwarded or NATed beyond this machine. Every name starts with
``ark<tag>``, so :func:`sweep` removes leftovers of a crashed agent.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@dataclass(frozen=True)
class NetConfig:
    """Names and addresses of one pod network.

    Attributes:
        tag: One lowercase letter that keeps two instances (tests, local cluster) apart.
        cidr: The pod range; the first address is the host's gateway address.
    """

    tag: str
    cidr: str

    @property
    def prefix(self) -> str:
        """Name prefix of every namespace and link of this network."""
        return f"ark{self.tag}"

    @property
    def bridge(self) -> str:
        """Host bridge name."""
        return f"{self.prefix}br0"

    @property
    def network(self) -> ipaddress.IPv4Network:
        """The pod range as a network object."""
        return ipaddress.IPv4Network(self.cidr)

    @property
    def gateway(self) -> str:
        """The host's address on the pod network (``host_ip``)."""
        return str(self.network.network_address + 1)


SLOT_TAGS = "abcdefghijklmnop"
CLAIM_DIR = Path("/run/arkor-ops")


def slot(index: int) -> NetConfig:
    """Network slot ``index``: tag ``SLOT_TAGS[index]``, range ``10.244.<16*index>.0/20``."""
    return NetConfig(tag=SLOT_TAGS[index], cidr=f"10.244.{16 * index}.0/20")


LOCAL_NET = slot(0)


def _owner_alive(claim: Path) -> bool:
    try:
        pid = int(claim.read_text().strip() or "0")
    except (OSError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_net(owner_pid: int | None = None) -> NetConfig:
    """Claim a free network slot (1..15) for a test session, so sessions never share names.

    A slot is claimed by creating ``/run/arkor-ops/net-<tag>.pid`` holding the owner's pid; a
    claim whose owner died is taken over after sweeping its leftovers.

    Raises:
        RuntimeError: Every slot is held by a live process.
    """
    CLAIM_DIR.mkdir(parents=True, exist_ok=True)
    pid = owner_pid or os.getpid()
    for index in range(1, len(SLOT_TAGS)):
        config = slot(index)
        claim = CLAIM_DIR / f"net-{config.tag}.pid"
        if claim.exists() and not _owner_alive(claim):
            claim.unlink(missing_ok=True)
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as out:
            out.write(f"{pid}\n")
        sweep(config)
        return config
    raise RuntimeError(f"all pod network slots in {CLAIM_DIR} are in use")


def release_net(config: NetConfig) -> None:
    """Give a slot claimed by :func:`claim_net` back."""
    (CLAIM_DIR / f"net-{config.tag}.pid").unlink(missing_ok=True)


def ensure_bridge(config: NetConfig) -> None:
    """Create the host bridge with the gateway address, if missing."""
    if _ip("link", "show", config.bridge, check=False).returncode != 0:
        _ip("link", "add", config.bridge, "type", "bridge")
    plen = config.network.prefixlen
    shown = _ip("-o", "addr", "show", "dev", config.bridge).stdout
    if f"{config.gateway}/{plen}" not in shown:
        _ip("addr", "add", f"{config.gateway}/{plen}", "dev", config.bridge)
    _ip("link", "set", config.bridge, "up")


def sweep(config: NetConfig) -> list[str]:
    """Remove every namespace and link of ``config`` (leftovers included).

    Returns:
        The names removed.
    """
    removed: list[str] = []
    for name in list_netns(config):
        kill_processes_in(name)
        _ip("netns", "delete", name, check=False)
        removed.append(name)
    for name in list_links(config):
        _ip("link", "delete", name, check=False)
        removed.append(name)
    if removed:
        logger.info("swept %s", ", ".join(removed))
    return removed


def kill_processes_in(name: str) -> None:
    """SIGKILL every process inside network namespace ``name`` (orphans of a crashed agent)."""
    out = _ip("netns", "pids", name, check=False).stdout
    for pid in out.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def list_netns(config: NetConfig) -> list[str]:
    """Names of this network's pod namespaces that exist now."""
    out = _ip("netns", "list", check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(config.prefix + "-")]


def list_links(config: NetConfig) -> list[str]:
    """Names of this network's host links (bridge, veth ends) that exist now."""
    out = _ip("-o", "link", "show", check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return [n for n in names if n.startswith(config.prefix)]


@dataclass
class PodNet:
    """One pod's network namespace."""

    name: str
    host_link: str
    address: str

    @property
    def path(self) -> Path:
        """The namespace's bind-mount path, for ``nsenter --net=``."""
        return NETNS_DIR / self.name


@dataclass
class PodNetworks:
    """Allocates addresses and creates / deletes pod namespaces for one agent."""

    config: NetConfig
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next: int = 0
    _in_use: set[int] = field(default_factory=set)

    def _allocate(self) -> int:
        size = self.config.network.num_addresses
        with self._lock:
            for _ in range(size):
                self._next = self._next % (size - 3) + 1
                index = self._next + 1  # skip the network address and the gateway
                if index not in self._in_use:
                    self._in_use.add(index)
                    return index
        raise RuntimeError(f"pod range {self.config.cidr} is exhausted")

    def create(self) -> PodNet:
        """Create a namespace with ``eth0`` on the bridge, ``lo`` up and a default route.

        Returns:
            The new pod network.
        """
        index = self._allocate()
        cfg = self.config
        address = str(cfg.network.network_address + index)
        net = PodNet(
            name=f"{cfg.prefix}-{index}", host_link=f"{cfg.prefix}v{index}", address=address
        )
        peer = f"{cfg.prefix}p{index}"
        plen = cfg.network.prefixlen
        try:
            _ip("netns", "add", net.name)
            _ip("link", "add", net.host_link, "type", "veth", "peer", "name", peer)
            _ip("link", "set", net.host_link, "master", cfg.bridge)
            _ip("link", "set", net.host_link, "up")
            _ip("link", "set", peer, "netns", net.name)
            _ip("-n", net.name, "link", "set", peer, "name", "eth0")
            _ip("-n", net.name, "addr", "add", f"{address}/{plen}", "dev", "eth0")
            _ip("-n", net.name, "link", "set", "eth0", "up")
            _ip("-n", net.name, "link", "set", "lo", "up")
            _ip("-n", net.name, "route", "add", "default", "via", cfg.gateway)
        except subprocess.CalledProcessError as exc:
            logger.error("pod network %s: %s", net.name, exc.stderr)
            self.delete(net)
            raise
        return net

    def delete(self, net: PodNet) -> None:
        """Delete the namespace and both veth ends; idempotent."""
        _ip("netns", "delete", net.name, check=False)
        _ip("link", "delete", net.host_link, check=False)
        index = int(net.name.rsplit("-", 1)[1])
        with self._lock:
            self._in_use.discard(index)
