"""The webhook behind the local cluster's real API server (HTTPS both ways, AdmissionReview v1, caBundle,
selectors, failurePolicy), created through the official client. No node: pods stay Pending, which is
enough to see what the API server stored. The webhook watches namespaces through the same API server.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from minimesh.inject import names
from minimesh.inject.offline import inject_object
from minimesh.install import pki

HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


harness = _load("inject_apiserver_harness", HERE.parent / "apiserver" / "conftest.py")
hooks = _load("inject_webhook_fixtures", HERE / "conftest.py")
HOOK_NAME = "sidecar-injector.minimesh.io"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("apiserver")
    pki = harness.make_pki(d)
    (d / "pods").mkdir()
    srv = harness.ServerThread(pki, d / "etcd.sqlite3", d / "pods", bookmark_interval=1.0)
    srv.start()
    kc = harness.write_kubeconfig(d / "kubeconfig", srv.url, pki.ca_cert, pki.token)
    os.environ.setdefault("KUBECACHEDIR", str(d / "kubecache"))
    try:
        yield harness.Cluster(srv, kc, d)
    finally:
        srv.close()


def _webhook_config(name: str, port: int, ca: bytes, namespace_selector: dict[str, Any]) -> dict[str, Any]:
    """Shaped like the one `minimesh install` writes, but with a URL (there is no node to run minimeshd)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": HOOK_NAME,
            "clientConfig": {"url": f"https://127.0.0.1:{port}/inject", "caBundle": base64.b64encode(ca).decode()},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "namespaceSelector": namespace_selector,
            "objectSelector": {"matchExpressions": [{"key": names.INJECT_KEY, "operator": "NotIn", "values": ["false"]}]},
            "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"], "timeoutSeconds": 10,
            "reinvocationPolicy": "Never",
        }],
    }


ENABLED_SELECTOR = {"matchLabels": {names.NAMESPACE_LABEL: names.NAMESPACE_ENABLED}}


@contextmanager
def running_injector(cluster: Any, tmp: Path) -> Iterator[Injector]:
    """The webhook process (namespace check on, through the API server) and a webhook configuration for it."""
    tls = hooks.Tls(tmp, tmp / "ca.crt", pki.new_root_ca(dt.datetime.now(dt.UTC)), tmp / "tls.crt", tmp / "tls.key")
    tls.reissue(tls.ca_pair)
    w = hooks.start_webhook(tls, "--kubeconfig", str(cluster.kubeconfig))
    adm = client.AdmissionregistrationV1Api(cluster.client())
    inj = Injector(w, f"minimesh-sidecar-injector-{uuid.uuid4().hex[:6]}", tls.ca.read_bytes())
    adm.create_mutating_webhook_configuration(_webhook_config(inj.config, w.port, inj.ca, ENABLED_SELECTOR))
    try:
        pool = urllib3.HTTPSConnectionPool("127.0.0.1", w.port, ca_certs=str(tls.ca), assert_hostname="localhost",
                                           retries=False, timeout=5)
        deadline = time.monotonic() + 30
        while pool.request("GET", "/ready").status != 200:  # the namespace list has arrived
            assert time.monotonic() < deadline, w.logs()
            time.sleep(0.1)
        yield inj
    finally:
        adm.delete_mutating_webhook_configuration(inj.config)
        hooks.stop_webhook(w)


@dataclass
class Injector:
    webhook: Any
    config: str
    ca: bytes

    def logs(self) -> str:
        return str(self.webhook.logs())


@pytest.fixture(scope="module")
def injector(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Injector]:
    with running_injector(cluster, tmp_path_factory.mktemp("injector")) as inj:
        yield inj


def _pod(name: str, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {"app": name}, "annotations": annotations or {}},
            "spec": {"containers": [{"name": "app", "image": "minimesh/minimesh:dev",
                                     "ports": [{"name": "http", "containerPort": 9080}],
                                     "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}}}]}}


def _names(pod: Any) -> tuple[list[str], list[str]]:
    return ([c.name for c in pod.spec.init_containers or []], [c.name for c in pod.spec.containers])


def test_pods_in_an_enabled_namespace_are_injected(cluster: Any, injector: Any) -> None:
    core = client.CoreV1Api(cluster.client())
    ns = cluster.namespace("mesh")
    core.patch_namespace(ns, {"metadata": {"labels": {names.NAMESPACE_LABEL: names.NAMESPACE_ENABLED}}})
    pod = core.create_namespaced_pod(ns, _pod("web"))
    assert _names(pod) == (["minimesh-init"], ["app", "minimesh-proxy"])
    assert pod.metadata.labels["security.minimesh.io/tlsMode"] == "minimesh"
    status = json.loads(pod.metadata.annotations[names.STATUS_ANNOTATION])
    assert status["containers"] == ["minimesh-proxy"] and "minimesh-token" in status["volumes"]
    assert pod.spec.containers[0].readiness_probe.http_get.port == 15020
    stored = core.read_namespaced_pod("web", ns)
    assert _names(stored) == _names(pod)

    # a pod created from offline-injected YAML is already injected: the webhook leaves it as it is
    pre = inject_object(_pod("pre"))
    created = core.create_namespaced_pod(ns, pre)
    assert _names(created) == (["minimesh-init"], ["app", "minimesh-proxy"])
    assert created.metadata.annotations[names.STATUS_ANNOTATION] == pre["metadata"]["annotations"][names.STATUS_ANNOTATION]
    assert f"skipped pod {ns}/pre: the pod already has" in injector.logs()


def test_opted_out_and_plain_namespaces_are_not_injected(cluster: Any, injector: Any) -> None:
    core = client.CoreV1Api(cluster.client())
    ns = cluster.namespace("mesh")
    core.patch_namespace(ns, {"metadata": {"labels": {names.NAMESPACE_LABEL: names.NAMESPACE_ENABLED}}})
    # the label is filtered by the objectSelector: the API server does not even call the webhook
    by_label = core.create_namespaced_pod(ns, _pod("job-a", labels={names.INJECT_KEY: "false"}))
    # the annotation reaches the webhook, which skips the pod
    by_annotation = core.create_namespaced_pod(ns, _pod("job-b", annotations={names.INJECT_KEY: "false"}))
    plain_ns = cluster.namespace("plain")
    plain = core.create_namespaced_pod(plain_ns, _pod("web"))
    for pod in (by_label, by_annotation, plain):
        assert _names(pod) == ([], ["app"]) and names.STATUS_ANNOTATION not in (pod.metadata.annotations or {})
    assert f"skipped pod {ns}/job-b: the pod opted out" in injector.logs()
    assert "job-a" not in injector.logs()


def test_the_webhook_double_checks_the_namespace(cluster: Any, injector: Any) -> None:
    """A webhook configuration edited to select other namespaces still injects only enabled ones."""
    core = client.CoreV1Api(cluster.client())
    adm = client.AdmissionregistrationV1Api(cluster.client())
    ns = cluster.namespace("other")
    core.patch_namespace(ns, {"metadata": {"labels": {"team": "payments"}}})
    edited = f"{injector.config}-edited"
    adm.create_mutating_webhook_configuration(
        _webhook_config(edited, injector.webhook.port, injector.ca, {"matchLabels": {"team": "payments"}}))
    try:
        pod = core.create_namespaced_pod(ns, _pod("web"))
    finally:
        adm.delete_mutating_webhook_configuration(edited)
    assert _names(pod) == ([], ["app"])
    assert f"skipped pod {ns}/web: namespace {ns} is not labelled minimesh-injection=enabled" in injector.logs()


def test_bad_annotation_refuses_the_pod_with_the_reason(cluster: Any, injector: Any) -> None:
    core = client.CoreV1Api(cluster.client())
    ns = cluster.namespace("mesh")
    core.patch_namespace(ns, {"metadata": {"labels": {names.NAMESPACE_LABEL: names.NAMESPACE_ENABLED}}})
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod(ns, _pod("web", annotations={"traffic.sidecar.minimesh.io/includeInboundPorts": "http"}))
    body = json.loads(e.value.body)
    assert e.value.status == 400
    assert body["message"] == (f'admission webhook "{HOOK_NAME}" denied the request: sidecar injection failed: annotation'
                               " traffic.sidecar.minimesh.io/includeInboundPorts='http': 'http' is not a port number (1-65535)")
    assert core.list_namespaced_pod(ns).items == []


def test_webhook_down_with_failure_policy_fail_refuses_pods(cluster: Any, tmp_path: Path) -> None:
    core = client.CoreV1Api(cluster.client())
    ns = cluster.namespace("mesh")
    core.patch_namespace(ns, {"metadata": {"labels": {names.NAMESPACE_LABEL: names.NAMESPACE_ENABLED}}})
    with running_injector(cluster, tmp_path) as inj, pytest.raises(ApiException) as e:
        w = inj.webhook
        assert _names(core.create_namespaced_pod(ns, _pod("before")))[1] == ["app", "minimesh-proxy"]
        hooks.stop_webhook(w)
        core.create_namespaced_pod(ns, _pod("web"))
    body = json.loads(e.value.body)
    assert e.value.status == 500
    assert body["message"] == (f'Internal error occurred: failed calling webhook "{HOOK_NAME}": failed to call webhook:'
                               f' Post "https://127.0.0.1:{w.port}/inject?timeout=10s": dial tcp 127.0.0.1:{w.port}:'
                               " connect: connection refused")
    assert [p.metadata.name for p in core.list_namespaced_pod(ns).items] == ["before"]
    # pods in namespaces the webhook does not select are not affected
    assert _names(core.create_namespaced_pod(cluster.namespace("plain"), _pod("web"))) == ([], ["app"])


def test_offline_injected_yaml_is_valid_for_the_api_server(cluster: Any) -> None:
    """`minimesh inject -f` output of a Deployment is accepted as is (server-side validation)."""
    apps = client.AppsV1Api(cluster.client())
    ns = cluster.namespace("off")
    docs = yaml.safe_load_all((Path(os.environ["MINIMESH_REPO"]) / "minimesh/manifests/sleep.yaml").read_text())
    dep = next(d for d in docs if d and d["kind"] == "Deployment")
    made = apps.create_namespaced_deployment(ns, inject_object(dep))
    assert [c.name for c in made.spec.template.spec.containers] == ["sleep", "minimesh-proxy"]
