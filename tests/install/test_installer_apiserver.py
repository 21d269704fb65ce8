"""The installer's secrets and `rollout restart` against the local cluster's real API server (no node)."""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from minimesh.install import installer, pki, plan, rollout
from minimesh.k8s.manifests import Applier

_spec = importlib.util.spec_from_file_location("install_apiserver_harness",
                                               Path(__file__).resolve().parent.parent / "apiserver" / "conftest.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
sys.modules["install_apiserver_harness"] = harness
_spec.loader.exec_module(harness)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("apiserver")
    keys = harness.make_pki(d)
    (d / "pods").mkdir()
    srv = harness.ServerThread(keys, d / "etcd.sqlite3", d / "pods", bookmark_interval=1.0)
    srv.start()
    kc = harness.write_kubeconfig(d / "kubeconfig", srv.url, keys.ca_cert, keys.token)
    os.environ.setdefault("KUBECACHEDIR", str(d / "kubecache"))
    cluster = harness.Cluster(srv, kc, d)
    try:
        yield cluster
    finally:
        srv.close()


@pytest.fixture(scope="module")
def core(api: Any) -> Any:
    c = client.CoreV1Api(api.client())
    Applier(api.client()).apply(plan.control_plane(plan.Options(), b"")[0])  # the mesh-system namespace
    return c


def test_the_ca_is_made_once_and_reused(core: Any) -> None:
    now = dt.datetime.now(dt.UTC)
    first, created = installer.ensure_ca(core, now)
    again, created_again = installer.ensure_ca(core, now)
    assert created and not created_again and again == first
    secret = core.read_namespaced_secret(plan.CA_SECRET, plan.NAMESPACE)
    assert base64.b64decode(secret.data["ca.crt"]) == first.cert_pem


def test_serving_cert_is_issued_kept_and_renewed_for_a_new_ca(core: Any) -> None:
    now = dt.datetime.now(dt.UTC)
    ca, _ = installer.ensure_ca(core, now)
    assert installer.ensure_serving_cert(core, ca, now) == "missing"
    assert installer.ensure_serving_cert(core, ca, now) is None
    secret = core.read_namespaced_secret(plan.WEBHOOK_TLS_SECRET, plan.NAMESPACE)
    assert secret.type == "kubernetes.io/tls"
    pair = pki.KeyPair(base64.b64decode(secret.data["tls.crt"]), base64.b64decode(secret.data["tls.key"]))
    assert pki.serving_cert_problem(pair, ca.cert_pem, plan.SERVICE_DNS_NAMES, now) is None
    other = pki.new_root_ca(now)
    assert installer.ensure_serving_cert(core, other, now) == "not signed by the current mesh CA"
    assert installer.ensure_serving_cert(core, other, now + dt.timedelta(days=340)).startswith("expires ")


def test_a_broken_ca_secret_stops_the_install_with_advice(api: Any, core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ns = api.namespace("broken")
    body = {"metadata": {"name": plan.CA_SECRET}, "data": {"ca.crt": base64.b64encode(b"x").decode()}}
    core.create_namespaced_secret(ns, body)
    monkeypatch.setattr(plan, "NAMESPACE", ns)  # the same code, pointed at a namespace with a broken Secret
    with pytest.raises(installer.InstallError, match=r"lacks ca.crt or ca.key; delete it"):
        installer.ensure_ca(core, dt.datetime.now(dt.UTC))
    core.patch_namespaced_secret(plan.CA_SECRET, ns, {"data": {"ca.key": base64.b64encode(b"y").decode()}})
    with pytest.raises(installer.InstallError, match=r"not valid PEM.*delete it to make a new mesh CA"):
        installer.ensure_ca(core, dt.datetime.now(dt.UTC))


def _deployment(name: str, paused: bool = False) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "paused": paused, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


def test_rollout_restart_patches_the_template(api: Any) -> None:
    apps = client.AppsV1Api(api.client())
    ns = api.namespace("roll")
    for name in ("a", "b"):
        apps.create_namespaced_deployment(ns, _deployment(name))
    apps.create_namespaced_deployment(ns, _deployment("held", paused=True))
    now = dt.datetime(2026, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    assert rollout.restart(api.client(), ns, [rollout.parse_target("deploy/a")], now=now) == [
        "deployment.apps/a restarted"]
    a = apps.read_namespaced_deployment("a", ns)
    assert a.spec.template.metadata.annotations == {rollout.RESTARTED_AT: "2026-05-06T07:08:09Z"}
    assert a.metadata.generation == 2 and a.spec.template.metadata.labels == {"app": "a"}  # merged, not replaced
    with pytest.raises(rollout.RolloutError, match="can't restart paused deployment held"):
        rollout.restart(api.client(), ns, [], all_deployments=True, now=now)
    apps.patch_namespaced_deployment("held", ns, {"spec": {"paused": False}})
    lines = rollout.restart(api.client(), ns, [], all_deployments=True, now=now + dt.timedelta(seconds=1))
    assert sorted(lines) == ["deployment.apps/a restarted", "deployment.apps/b restarted", "deployment.apps/held restarted"]
    with pytest.raises(rollout.RolloutError, match=r'deployments\.apps "nope" not found in namespace'):
        rollout.restart(api.client(), ns, [rollout.Target("Deployment", "nope")])
    # no controllers here, so the rollout is never observed: wait says what it waits for when it gives up
    with pytest.raises(rollout.RolloutError, match="timed out after 1s: Waiting for deployment spec update"):
        rollout.wait(api.client(), ns, "a", timeout=1, interval=0.2)
