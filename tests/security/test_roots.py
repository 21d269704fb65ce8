"""ConfigMap minimesh-ca-root-cert in every namespace, put back when deleted or edited (real API server)."""

from __future__ import annotations

import time
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from minimesh.security import roots

from .conftest import Api, MeshPki


def _wait(what: str, cond: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _root_in(core: client.CoreV1Api, ns: str) -> str | None:
    try:
        return (core.read_namespaced_config_map(roots.CONFIGMAP, ns).data or {}).get(roots.KEY)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def test_pure_decisions() -> None:
    assert roots.needs_write(None, "R")
    assert not roots.needs_write({"data": {roots.KEY: "R"}}, "R")
    assert roots.needs_write({"data": {roots.KEY: "old"}}, "R")
    assert not roots.publishes_to({"metadata": {"name": "kube-system"}})
    assert not roots.publishes_to({"metadata": {"name": "x"}, "status": {"phase": "Terminating"}})
    assert roots.publishes_to({"metadata": {"name": "default"}, "status": {"phase": "Active"}})


def test_published_everywhere_and_repaired(api: Api, mesh_pki: MeshPki) -> None:
    core = client.CoreV1Api(api.client())
    before = api.namespace("pre")
    root = mesh_pki.ca_cert.decode()
    pub = roots.RootCertPublisher(api.client(), root, retry_delay=0.5)
    pub.start()
    try:
        _wait("the root in a namespace that existed before", lambda: _root_in(core, before) == root)
        after = api.namespace("post")
        _wait("the root in a new namespace", lambda: _root_in(core, after) == root)
        core.delete_namespaced_config_map(roots.CONFIGMAP, after)
        _wait("the deleted ConfigMap back", lambda: _root_in(core, after) == root)
        core.patch_namespaced_config_map(roots.CONFIGMAP, before, {"data": {roots.KEY: "tampered"}})
        _wait("the edited ConfigMap corrected", lambda: _root_in(core, before) == root)
        cm = core.read_namespaced_config_map(roots.CONFIGMAP, before)
        assert cm.metadata.labels["app.kubernetes.io/part-of"] == "minimesh"
    finally:
        pub.stop()
