"""Fixtures: the local cluster's real API server on loopback (tests/apiserver's harness), the mesh CA in
Secret mesh-system/minimesh-ca, and minimeshd's serving certificate, as `minimesh install` makes them."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_NAME = "security_apiserver_harness"


def harness() -> Any:
    if _NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(_NAME, Path(__file__).resolve().parent.parent / "apiserver" / "conftest.py")
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        sys.modules[_NAME] = mod
        spec.loader.exec_module(mod)
    return sys.modules[_NAME]


@dataclass
class Api:
    cluster: Any  # the harness's Cluster

    def client(self) -> Any:
        return self.cluster.client()

    def namespace(self, prefix: str = "sec") -> str:
        return self.cluster.namespace(prefix)

    def service_account(self, namespace: str, name: str) -> None:
        from kubernetes import client

        client.CoreV1Api(self.client()).create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))

    def token(self, namespace: str, sa: str, audience: str = "minimesh-ca", seconds: int = 3600) -> str:
        from kubernetes import client

        tr = client.CoreV1Api(self.client()).create_namespaced_service_account_token(
            sa, namespace, {"spec": {"audiences": [audience], "expirationSeconds": seconds}})
        return str(tr.status.token)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    h = harness()
    d = tmp_path_factory.mktemp("apiserver")
    keys = h.make_pki(d)
    (d / "pods").mkdir()
    srv = h.ServerThread(keys, d / "etcd.sqlite3", d / "pods", bookmark_interval=1.0)
    srv.start()
    kc = h.write_kubeconfig(d / "kubeconfig", srv.url, keys.ca_cert, keys.token)
    os.environ.setdefault("KUBECACHEDIR", str(d / "kubecache"))
    try:
        yield Api(h.Cluster(srv, kc, d))
    finally:
        srv.close()


@dataclass
class MeshPki:
    ca_cert: bytes
    ca_key: bytes
    serving_cert: bytes
    serving_key: bytes
    dir: Path


SERVER_NAME = "minimeshd.mesh-system.svc"


@pytest.fixture(scope="module")
def mesh_pki(tmp_path_factory: pytest.TempPathFactory) -> MeshPki:
    from minimesh.install import pki

    now = dt.datetime.now(dt.UTC)
    root = pki.new_root_ca(now)
    serving = pki.new_serving_cert(root, [SERVER_NAME, "localhost"], now, ips=["127.0.0.1"])
    d = tmp_path_factory.mktemp("meshpki")
    for name, data in (("ca.crt", root.cert_pem), ("tls.crt", serving.cert_pem), ("tls.key", serving.key_pem)):
        (d / name).write_bytes(data)
    return MeshPki(root.cert_pem, root.key_pem, serving.cert_pem, serving.key_pem, d)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
