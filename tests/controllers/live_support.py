"""Helpers for the live controller tests: throwaway PKI, the Env handle, a fake kubelet, kubectl.

The server and the controllers share one event loop in a background thread, as in the control-plane
process. There is no kubelet: tests play its part through the API (set a pod Running/Ready with an IP,
let it succeed or fail), which is all the controllers ever see of a kubelet.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

NODE = "minimesh-control-plane"


def _pem_key(k: Any) -> bytes:
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_pki(d: Path) -> dict[str, Path | str]:
    """A throwaway CA, a serving certificate for 127.0.0.1 and a service-account key."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "controllers-test-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(ca_key, hashes.SHA256()))
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM), "apiserver.crt": cert.public_bytes(serialization.Encoding.PEM),
        "apiserver.key": _pem_key(key), "sa.key": _pem_key(sa),
        "sa.pub": sa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    }
    for n, data in files.items():
        (d / n).write_bytes(data)
    return {**{n: d / n for n in files}, "token": secrets.token_urlsafe(24)}


@dataclass
class Env:
    """The running control plane and helpers to drive it from a test."""

    url: str
    kubeconfig: Path
    ca_file: Path
    token: str
    loop: asyncio.AbstractEventLoop
    manager: Any
    scheduler: Any

    def client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.client())

    @property
    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.client())

    @property
    def batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self.client())

    @property
    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.client())

    def namespace(self, prefix: str = "c") -> str:
        from kubernetes import client

        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        return name

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # ---- a kubelet's part, through the API ------------------------------------------------------------
    def set_pod_status(self, ns: str, name: str, *, phase: str = "Running", ready: bool = True,
                       ip: str | None = None, restarts: int = 0, exit_code: int | None = None) -> None:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        pod = self.core.read_namespaced_pod(name, ns)
        containers = [c.name for c in pod.spec.containers]
        ip = ip or f"10.244.{(hash(name) >> 8) % 250}.{hash(name) % 250 + 2}"
        if phase in ("Succeeded", "Failed"):
            code = exit_code if exit_code is not None else (0 if phase == "Succeeded" else 1)
            state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                    "startedAt": now, "finishedAt": now}}
            ready = False
        else:
            state = {"running": {"startedAt": now}}
        status = {
            "phase": phase,
            "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "198.18.0.6",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True" if ready else "False", "lastTransitionTime": now},
                {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now},
            ],
            "containerStatuses": [{"name": c, "ready": ready, "restartCount": restarts, "image": "x", "imageID": "",
                                   "state": state} for c in containers],
            "startTime": now,
        }
        self.core.patch_namespaced_pod_status(name, ns, {"status": status})

    def kubelet_delete(self, ns: str, name: str) -> None:
        """What the kubelet does once a deleted pod's containers are gone: delete it with grace 0."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        try:
            self.core.delete_namespaced_pod(name, ns, body=client.V1DeleteOptions(grace_period_seconds=0))
        except ApiException as e:
            if e.status != 404:
                raise

    def pods(self, ns: str, selector: str | None = None) -> list[Any]:
        return self.core.list_namespaced_pod(ns, label_selector=selector).items


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll until fn() returns something truthy; fail with the last value (or error) seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # not there yet (404, a status field still missing, ...)
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def _kubeconfig(path: Path, url: str, ca: Path, token: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": url, "certificate-authority-data":
                                                base64.b64encode(ca.read_bytes()).decode()}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "admin"}}],
    }))
    return path


def node_body(name: str = NODE, cpu: str = "2", memory: str = "4Gi", pods: str = "110") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
            "status": {"capacity": {"cpu": cpu, "memory": memory, "pods": pods},
                       "allocatable": {"cpu": cpu, "memory": memory, "pods": pods},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}


class FakeKubelet:
    """Plays the kubelet for the pods of some namespaces, through the API: a bound pod is started as the
    `fate` callback says ("ready", "running" (not ready), "succeed", "fail", or None to leave it pending),
    and a pod being deleted is removed with grace 0 once "its containers stopped"."""

    def __init__(self, env: Env, *namespaces: str, fate: Callable[[Any], str | None] = lambda p: "ready",
                 interval: float = 0.05):
        self.env, self.namespaces, self.fate, self.interval = env, namespaces, fate, interval
        self.started: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="fake-kubelet")
        self.errors: list[BaseException] = []

    def __enter__(self) -> FakeKubelet:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        from kubernetes.client.rest import ApiException

        core = self.env.core
        while not self._stop.is_set():
            for ns in self.namespaces:
                try:
                    for p in core.list_namespaced_pod(ns).items:
                        self._handle(ns, p)
                except ApiException as e:
                    if e.status != 404:
                        self.errors.append(e)
                except Exception as e:  # pragma: no cover - surfaced by the tests
                    self.errors.append(e)
            self._stop.wait(self.interval)

    def _handle(self, ns: str, p: Any) -> None:
        name = p.metadata.name
        if p.metadata.deletion_timestamp is not None:
            if p.status.phase not in ("Succeeded", "Failed") or not p.metadata.finalizers:
                self.env.kubelet_delete(ns, name)
            return
        if not p.spec.node_name or p.metadata.uid in self.started:
            return
        fate = self.fate(p)
        if fate is None:
            return
        self.started.add(p.metadata.uid)
        if fate == "ready":
            self.env.set_pod_status(ns, name)
        elif fate == "running":
            self.env.set_pod_status(ns, name, ready=False)
        elif fate == "succeed":
            self.env.set_pod_status(ns, name, phase="Succeeded")
        elif fate == "fail":
            self.env.set_pod_status(ns, name, phase="Failed")
        else:
            raise ValueError(fate)


def kubectl(env: Env, *args: str, timeout: float = 60) -> Any:
    import subprocess

    return subprocess.run(["kubectl", "--kubeconfig", str(env.kubeconfig), *args], capture_output=True, text=True,
                          timeout=timeout)
