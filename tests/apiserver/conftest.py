"""A real API server on loopback (HTTPS, throwaway PKI) for the tests in this folder.

One server per test module (fast); each test works in namespaces of its own.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import os
import secrets
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


@dataclass
class TestPki:
    dir: Path
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path
    sa_key: Path
    sa_pub: Path
    token: str


def _pem_key(k: Any) -> bytes:
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_cert(ca_key: Any, ca_name: x509.Name, dns: list[str], ips: list[str]) -> tuple[bytes, bytes]:
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0] if dns else "server")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns]
                                                   + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]), False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def make_ca(name: str) -> tuple[Any, x509.Name, bytes]:
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    n = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder().subject_name(n).issuer_name(n).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    return key, n, cert.public_bytes(serialization.Encoding.PEM)


def make_pki(d: Path) -> TestPki:
    ca_key, ca_name, ca_pem = make_ca("test-ca")
    cert, key = make_cert(ca_key, ca_name, ["localhost"], ["127.0.0.1"])
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        "ca.crt": ca_pem, "ca.key": _pem_key(ca_key), "apiserver.crt": cert, "apiserver.key": key, "sa.key": _pem_key(sa),
        "sa.pub": sa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    }
    for n, data in files.items():
        (d / n).write_bytes(data)
    return TestPki(d, d / "ca.crt", d / "ca.key", d / "apiserver.crt", d / "apiserver.key", d / "sa.key", d / "sa.pub",
                   secrets.token_urlsafe(24))


class ServerThread:
    """Runs an ApiServer on its own event loop in a thread, so sync clients can call it."""

    def __init__(self, pki: TestPki, db: Path, pods_dir: Path, **kw: Any):
        from minimesh.cluster.local.apiserver.server import ApiServer

        self.pki, self.db, self.pods_dir, self.kw = pki, db, pods_dir, kw
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: ApiServer | None = None
        self.port = 0

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        from minimesh.cluster.local.apiserver.server import ApiServer

        async def go() -> ApiServer:
            s = ApiServer(cert_file=self.pki.cert, key_file=self.pki.key, ca_file=self.pki.ca_cert,
                          sa_private_key_file=self.pki.sa_key, sa_public_key_file=self.pki.sa_pub,
                          admin_token=self.pki.token, db_path=self.db, pods_dir=self.pods_dir,
                          listen=[("127.0.0.1", self.port)], **self.kw)
            await s.start()
            return s

        self.server = self.call(go())
        self.port = self.server.port

    def stop(self) -> None:
        if self.server is not None:
            self.call(self.server.stop())
            self.server = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def write_kubeconfig(path: Path, url: str, ca: Path, token: str) -> Path:
    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": url, "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode()}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@dataclass
class Cluster:
    srv: ServerThread
    kubeconfig: Path
    dir: Path

    def client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def namespace(self, prefix: str = "t") -> str:
        """A fresh namespace with its default service account (what the controllers would add)."""
        from kubernetes import client

        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        api = client.CoreV1Api(self.client())
        api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        api.create_namespaced_service_account(name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="default")))
        return name


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    d = tmp_path_factory.mktemp("apiserver")
    pki = make_pki(d)
    (d / "pods").mkdir()
    srv = ServerThread(pki, d / "etcd.sqlite3", d / "pods", bookmark_interval=1.0)
    srv.start()
    kc = write_kubeconfig(d / "kubeconfig", srv.url, pki.ca_cert, pki.token)
    os.environ.setdefault("KUBECACHEDIR", str(d / "kubecache"))
    try:
        yield Cluster(srv, kc, d)
    finally:
        srv.close()
