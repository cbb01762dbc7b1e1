"""Certificates and keys for the local control plane, made with the ``openssl`` command.

One self-signed CA signs every certificate: the API server's serving certificate, the admin
client certificate, the controller-manager and scheduler client certificates, the API server's
client certificate towards kubelets, and the node agent's kubelet serving certificate. A separate
RSA key signs service-account tokens.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_DAYS = "3650"


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key on disk."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """All files the control plane and the node agent need."""

    directory: Path
    ca: CertPair
    apiserver: CertPair
    admin: CertPair
    controller_manager: CertPair
    scheduler: CertPair
    kubelet_client: CertPair
    kubelet_serving: CertPair
    sa_key: Path
    sa_pub: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _issue(
    directory: Path, ca: CertPair, name: str, subject: str, *, sans: list[str], client: bool
) -> CertPair:
    """Issue a certificate signed by ``ca``.

    Args:
        directory: Where the files go.
        ca: The signing CA.
        name: File stem.
        subject: The certificate subject, e.g. ``/CN=admin/O=system:masters``.
        sans: subjectAltName entries (``IP:1.2.3.4``, ``DNS:name``); empty for none.
        client: True for a client certificate, False for a serving certificate.

    Returns:
        The issued pair.
    """
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    usage = "clientAuth" if client else "serverAuth"
    lines = [
        "basicConstraints=CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if sans:
        lines.append("subjectAltName=" + ",".join(sans))
    ext.write_text("\n".join(lines) + "\n")
    _openssl("genrsa", "-out", str(pair.key), "2048")
    _openssl("req", "-new", "-key", str(pair.key), "-subj", subject, "-out", str(csr))
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-days", _DAYS, "-sha256", "-extfile", str(ext), "-out", str(pair.cert),
    )  # fmt: skip
    csr.unlink()
    ext.unlink()
    return pair


def create_pki(directory: Path, *, host_ips: list[str], service_ip: str) -> Pki:
    """Create (or reuse, when complete) the PKI in ``directory``.

    Args:
        directory: Target directory, created when missing.
        host_ips: Addresses the API server and the kubelet endpoint are reached at.
        service_ip: The ``kubernetes`` Service ClusterIP, added to the API server's SANs.

    Returns:
        The paths of every file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / "complete"
    ca = CertPair(directory / "ca.crt", directory / "ca.key")
    pki = Pki(
        directory=directory,
        ca=ca,
        apiserver=CertPair(directory / "apiserver.crt", directory / "apiserver.key"),
        admin=CertPair(directory / "admin.crt", directory / "admin.key"),
        controller_manager=CertPair(
            directory / "controller-manager.crt", directory / "controller-manager.key"
        ),
        scheduler=CertPair(directory / "scheduler.crt", directory / "scheduler.key"),
        kubelet_client=CertPair(directory / "kubelet-client.crt", directory / "kubelet-client.key"),
        kubelet_serving=CertPair(directory / "kubelet.crt", directory / "kubelet.key"),
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )
    wanted = ",".join(sorted(host_ips))
    if stamp.exists() and stamp.read_text() == wanted:
        return pki
    logger.info("creating PKI in %s", directory)
    _openssl("genrsa", "-out", str(ca.key), "2048")
    _openssl(
        "req", "-x509", "-new", "-key", str(ca.key), "-subj", "/CN=arkor-ops-local-ca",
        "-days", _DAYS, "-sha256", "-out", str(ca.cert),
    )  # fmt: skip
    ip_sans = [f"IP:{ip}" for ip in [*host_ips, service_ip]]
    dns_sans = [
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
    ]
    _issue(directory, ca, "apiserver", "/CN=kube-apiserver", sans=ip_sans + dns_sans, client=False)
    _issue(directory, ca, "admin", "/O=system:masters/CN=arkor-admin", sans=[], client=True)
    _issue(
        directory, ca, "controller-manager", "/CN=system:kube-controller-manager",
        sans=[], client=True,
    )  # fmt: skip
    _issue(directory, ca, "scheduler", "/CN=system:kube-scheduler", sans=[], client=True)
    _issue(
        directory, ca, "kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client",
        sans=[], client=True,
    )  # fmt: skip
    _issue(
        directory, ca, "kubelet", "/CN=arkor-node-agent",
        sans=[f"IP:{ip}" for ip in host_ips] + ["DNS:localhost"], client=False,
    )  # fmt: skip
    _openssl("genrsa", "-out", str(pki.sa_key), "2048")
    _openssl("rsa", "-in", str(pki.sa_key), "-pubout", "-out", str(pki.sa_pub))
    stamp.write_text(wanted)
    return pki
