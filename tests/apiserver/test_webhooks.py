"""Admission webhooks over real HTTPS: mutation by JSONPatch, denial, failurePolicy, selectors."""

from __future__ import annotations

import base64
import importlib.util
import json
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from minimesh.cluster.local.apiserver.registry import Registry
from minimesh.cluster.local.apiserver.webhooks import rule_matches

_spec = importlib.util.spec_from_file_location("apiserver_conftest_wh", Path(__file__).with_name("conftest.py"))
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
sys.modules["apiserver_conftest_wh"] = harness
_spec.loader.exec_module(harness)


class Hook(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *a: Any) -> None:
        pass

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        req = review["request"]
        Hook.seen.append({"path": self.path, **req})
        resp: dict[str, Any] = {"uid": req["uid"], "allowed": True}
        labels = ((req.get("object") or {}).get("metadata") or {}).get("labels") or {}
        containers = ((req.get("object") or {}).get("spec") or {}).get("containers") or []
        if self.path.startswith("/addcontainer") and not any(c.get("name") == "sidecar" for c in containers):
            ops = [{"op": "add", "path": "/spec/containers/-",
                    "value": {"name": "sidecar", "image": "busybox", "command": ["sleep", "1d"],
                              "readinessProbe": {"tcpSocket": {"port": 15021}}}}]
            resp["patchType"] = "JSONPatch"
            resp["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
        elif self.path.startswith("/addcontainer"):
            pass  # idempotent, like an injector: already there
        elif self.path.startswith("/mutate"):
            ops = [{"op": "add", "path": "/metadata/labels", "value": {**labels, "injected": "yes"}}]
            resp["patchType"] = "JSONPatch"
            resp["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
        elif self.path.startswith("/validate") and labels.get("deny") == "yes":
            resp = {"uid": req["uid"], "allowed": False, "status": {"code": 403, "message": "label deny=yes is not welcome"}}
        elif self.path.startswith("/baduid"):
            resp["uid"] = "nope"
        elif self.path.startswith("/badpatch"):
            resp["patchType"] = "JSONPatch"
            resp["patch"] = base64.b64encode(json.dumps([{"op": "remove", "path": "/nope/nope"}]).encode()).decode()
        data = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def hook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    d = tmp_path_factory.mktemp("hook")
    ca_key, ca_name, ca_pem = harness.make_ca("hook-ca")
    cert, key = harness.make_cert(ca_key, ca_name, ["localhost"], ["127.0.0.1"])
    (d / "tls.crt").write_bytes(cert)
    (d / "tls.key").write_bytes(key)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "tls.crt", d / "tls.key")
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"https://127.0.0.1:{srv.server_address[1]}", base64.b64encode(ca_pem).decode()
    finally:
        srv.shutdown()
        srv.server_close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def config(kind: str, name: str, url: str, ca: str, *, ns_label: str, policy: str = "Fail",
           resources: tuple[str, ...] = ("configmaps",)) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name},
        "webhooks": [{
            "name": f"{name}.hooks.example.com", "clientConfig": {"url": url, "caBundle": ca},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": list(resources)}],
            "namespaceSelector": {"matchLabels": {"hooks": ns_label}},
            "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": policy, "timeoutSeconds": 3,
        }],
    }


def test_rule_matching() -> None:
    reg = Registry()
    assert rule_matches({"operations": ["*"], "apiGroups": [""], "apiVersions": ["*"], "resources": ["pods"]},
                        "CREATE", "", "v1", "pods", "", True)
    assert not rule_matches({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]},
                            "CREATE", "", "v1", "pods", "status", True)
    assert rule_matches({"operations": ["UPDATE"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/status"]},
                        "UPDATE", "apps", "v1", "deployments", "status", True)
    assert not rule_matches({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"],
                             "scope": "Cluster"}, "CREATE", "", "v1", "pods", "", True)
    assert reg.find("", "v1", "pods") is not None


def test_mutating_and_validating(cluster: Any, hook_server: tuple[str, str]) -> None:
    url, ca = hook_server
    c = cluster.client()
    adm = client.AdmissionregistrationV1Api(c)
    core = client.CoreV1Api(c)
    label = "mv"
    adm.create_mutating_webhook_configuration(config("MutatingWebhookConfiguration", "inject", url + "/mutate", ca, ns_label=label))
    adm.create_validating_webhook_configuration(config("ValidatingWebhookConfiguration", "guard", url + "/validate", ca, ns_label=label))
    try:
        ns = cluster.namespace("wh")
        other = cluster.namespace("plain")
        core.patch_namespace(ns, {"metadata": {"labels": {"hooks": label}}})
        Hook.seen.clear()
        cm = core.create_namespaced_config_map(ns, {"metadata": {"generateName": "cm-", "labels": {"app": "x"}}})
        assert cm.metadata.labels == {"app": "x", "injected": "yes"}
        mut = next(r for r in Hook.seen if r["path"].startswith("/mutate"))
        assert mut["operation"] == "CREATE" and mut["namespace"] == ns and mut["name"] == ""  # named after admission
        assert mut["kind"] == {"group": "", "version": "v1", "kind": "ConfigMap"}
        assert mut["resource"] == {"group": "", "version": "v1", "resource": "configmaps"}
        assert mut["userInfo"]["username"] == "kubernetes-admin" and mut["dryRun"] is False
        assert mut["path"].endswith("?timeout=3s")
        val = next(r for r in Hook.seen if r["path"].startswith("/validate"))
        assert val["object"]["metadata"]["labels"]["injected"] == "yes"  # validation sees the mutated object
        with pytest.raises(ApiException) as e:
            core.create_namespaced_config_map(ns, {"metadata": {"name": "no", "labels": {"deny": "yes"}}})
        s = json.loads(e.value.body)
        assert e.value.status == 403
        assert s["message"] == 'admission webhook "guard.hooks.example.com" denied the request: label deny=yes is not welcome'
        assert [x.metadata.name for x in core.list_namespaced_config_map(ns).items if x.metadata.name == "no"] == []
        # updates go through the webhooks too; namespaces without the label do not
        upd = core.patch_namespaced_config_map(cm.metadata.name, ns, {"data": {"a": "b"}})
        assert upd.metadata.labels["injected"] == "yes"
        Hook.seen.clear()
        plain = core.create_namespaced_config_map(other, {"metadata": {"name": "p"}})
        assert Hook.seen == [] and not plain.metadata.labels
    finally:
        adm.delete_mutating_webhook_configuration("inject")
        adm.delete_validating_webhook_configuration("guard")


def test_failure_policy(cluster: Any, hook_server: tuple[str, str]) -> None:
    url, ca = hook_server
    c = cluster.client()
    adm = client.AdmissionregistrationV1Api(c)
    core = client.CoreV1Api(c)
    dead = f"https://127.0.0.1:{_closed_port()}/mutate"
    ns = cluster.namespace("fp")
    core.patch_namespace(ns, {"metadata": {"labels": {"hooks": "fp"}}})
    adm.create_mutating_webhook_configuration(config("MutatingWebhookConfiguration", "dead", dead, ca, ns_label="fp"))
    try:
        with pytest.raises(ApiException) as e:
            core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
        s = json.loads(e.value.body)
        assert e.value.status == 500 and s["reason"] == "InternalError"
        assert s["message"].startswith('Internal error occurred: failed calling webhook "dead.hooks.example.com": '
                                       f'failed to call webhook: Post "{dead}?timeout=3s"')
        adm.patch_mutating_webhook_configuration("dead", [{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}])
        assert core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}}).metadata.name == "a"
        # a response for another request uid fails the call; a wrong CA too
        adm.patch_mutating_webhook_configuration("dead", [
            {"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Fail"},
            {"op": "replace", "path": "/webhooks/0/clientConfig/url", "value": url + "/baduid"}])
        with pytest.raises(ApiException) as e:
            core.create_namespaced_config_map(ns, {"metadata": {"name": "b"}})
        assert "expected response.uid" in json.loads(e.value.body)["message"]
        _, _, other_ca = harness.make_ca("other")
        adm.patch_mutating_webhook_configuration("dead", [
            {"op": "replace", "path": "/webhooks/0/clientConfig/url", "value": url + "/mutate"},
            {"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": base64.b64encode(other_ca).decode()}])
        with pytest.raises(ApiException) as e:
            core.create_namespaced_config_map(ns, {"metadata": {"name": "b"}})
        assert "certificate verify failed" in json.loads(e.value.body)["message"]
    finally:
        adm.delete_mutating_webhook_configuration("dead")


def test_fields_a_webhook_adds_are_defaulted_and_the_pod_stays_updatable(cluster: Any, hook_server: tuple[str, str]) -> None:
    """As on the real server, a mutating webhook's patch is defaulted: an injected container gets its
    terminationMessagePath and probe thresholds, so later updates (a label, a finalizer) are not refused as
    changes to the immutable pod spec."""
    url, ca = hook_server
    c = cluster.client()
    adm = client.AdmissionregistrationV1Api(c)
    core = client.CoreV1Api(c)
    ns = cluster.namespace("inj")
    core.patch_namespace(ns, {"metadata": {"labels": {"hooks": "addc"}}})
    adm.create_mutating_webhook_configuration(config("MutatingWebhookConfiguration", "addc", url + "/addcontainer", ca,
                                                     ns_label="addc", resources=("pods",)))
    try:
        pod = core.create_namespaced_pod(ns, {"metadata": {"name": "p"},
                                              "spec": {"containers": [{"name": "app", "image": "busybox"}]}})
        sidecar = next(x for x in pod.spec.containers if x.name == "sidecar")
        assert sidecar.termination_message_path == "/dev/termination-log"
        assert sidecar.image_pull_policy == "Always"
        assert sidecar.readiness_probe.failure_threshold == 3 and sidecar.readiness_probe.period_seconds == 10
        labelled = core.patch_namespaced_pod("p", ns, {"metadata": {"labels": {"after": "injection"}}})
        assert labelled.metadata.labels == {"after": "injection"}
    finally:
        adm.delete_mutating_webhook_configuration("addc")
