"""The rendered control plane (pure) and kubectl's rollout rules (pure)."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import kubernetes_validate
import pytest

from minimesh.install import plan, rollout


def _by(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (obj,) = [o for o in objs if o["kind"] == kind]
    return obj


def test_rendered_objects_are_valid_and_carry_the_options() -> None:
    objs = plan.control_plane(plan.Options(image="example.org/minimesh:1", native_sidecars=True), b"CA PEM")
    for o in objs:
        kubernetes_validate.validate(o, "1.32.0", strict=True)
    dep = _by(objs, "Deployment")
    containers = {c["name"]: c for c in dep["spec"]["template"]["spec"]["containers"]}
    assert {c["image"] for c in containers.values()} == {"example.org/minimesh:1"}
    assert containers["discovery"]["command"] == ["python", "-m", "minimesh.pilot"]
    args = containers["injector"]["args"]
    assert containers["injector"]["command"] == ["python", "-m", "minimesh.inject"]
    assert args[:2] == ["--port", "15017"] and args[-3:] == ["--image", "example.org/minimesh:1", "--native-sidecars"]
    assert containers["injector"]["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 15017, "scheme": "HTTPS"}
    assert dep["spec"]["template"]["metadata"]["labels"]["sidecar.minimesh.io/inject"] == "false"
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert vols["webhook-tls"]["secret"]["secretName"] == plan.WEBHOOK_TLS_SECRET
    assert vols["minimesh-source"]["hostPath"]["path"] == "/opt/minimesh"

    svc = _by(objs, "Service")
    assert {(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]} == {
        ("grpc-xds", 15010, 15010), ("https-webhook", 443, 15017), ("http-monitoring", 15014, 15014),
        ("tls-ca", 15012, 15012)}

    (hook,) = _by(objs, "MutatingWebhookConfiguration")["webhooks"]
    assert _by(objs, "MutatingWebhookConfiguration")["metadata"]["name"] == "minimesh-sidecar-injector"
    assert hook["clientConfig"] == {"service": {"name": "minimeshd", "namespace": "mesh-system", "path": "/inject",
                                                "port": 443}, "caBundle": base64.b64encode(b"CA PEM").decode()}
    assert hook["namespaceSelector"] == {"matchLabels": {"minimesh-injection": "enabled"}}
    assert hook["objectSelector"] == {"matchExpressions": [
        {"key": "sidecar.minimesh.io/inject", "operator": "NotIn", "values": ["false"]}]}
    assert hook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]
    assert (hook["failurePolicy"], hook["sideEffects"], hook["admissionReviewVersions"], hook["timeoutSeconds"],
            hook["reinvocationPolicy"]) == ("Fail", "None", ["v1"], 10, "Never")

    (check,) = _by(objs, "ValidatingWebhookConfiguration")["webhooks"]
    assert check["clientConfig"] == {"service": {"name": "minimeshd", "namespace": "mesh-system", "path": "/validate",
                                                 "port": 443}, "caBundle": base64.b64encode(b"CA PEM").decode()}
    assert check["rules"] == [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["security.minimesh.io"],
                               "apiVersions": ["*"], "resources": ["authorizationpolicies"]}]


def test_rbac_covers_what_minimeshd_watches() -> None:
    objs = plan.control_plane(plan.Options(), b"")
    rules = [r for o in objs if o["kind"] == "ClusterRole" for r in o["rules"]]

    def allowed(group: str, resource: str, verb: str) -> bool:
        return any(group in r["apiGroups"] and (resource in r["resources"] or "*" in r["resources"]) and verb in r["verbs"]
                   for r in rules)

    for group, resource in (("", "services"), ("", "pods"), ("", "namespaces"), ("discovery.k8s.io", "endpointslices"),
                            ("networking.minimesh.io", "sidecars"), ("security.minimesh.io", "peerauthentications")):
        assert allowed(group, resource, "watch") and allowed(group, resource, "list"), (group, resource)
    assert allowed("authentication.k8s.io", "tokenreviews", "create")
    assert not allowed("", "secrets", "get")  # secrets only in mesh-system, by a Role
    role = _by(objs, "Role")
    assert role["metadata"]["namespace"] == "mesh-system" and role["rules"][0]["resources"] == ["secrets"]


def test_install_order_puts_the_webhook_last() -> None:
    first, workload, last = plan.split(plan.control_plane(plan.Options(), b""))
    assert first[0]["kind"] == "Namespace"
    assert {o["kind"] for o in workload} == {"Service", "Deployment"}
    assert [o["kind"] for o in last] == ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]


def test_restart_patch_is_kubectls() -> None:
    now = dt.datetime(2026, 3, 4, 5, 6, 7, 890, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert rollout.restart_patch(now) == {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-03-04T03:06:07Z"}}}}}


@pytest.mark.parametrize(("text", "want"), [
    ("deploy/web", rollout.Target("Deployment", "web")),
    ("deployment.apps/web", rollout.Target("Deployment", "web")),
    ("ds/agent", rollout.Target("DaemonSet", "agent")),
    ("statefulsets/db", rollout.Target("StatefulSet", "db")),
])
def test_targets(text: str, want: rollout.Target) -> None:
    assert rollout.parse_target(text) == want


@pytest.mark.parametrize("text", ["web", "pod/web", "deploy/", "cronjob/x"])
def test_bad_targets_are_named(text: str) -> None:
    with pytest.raises(rollout.RolloutError, match=f"got {text!r}"):
        rollout.parse_target(text)


def _dep(gen: int = 2, observed: int = 2, want: int = 3, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "generation": gen}, "spec": {"replicas": want},
            "status": {"observedGeneration": observed, **status}}


@pytest.mark.parametrize(("d", "done", "message"), [
    (_dep(gen=3), False, "Waiting for deployment spec update to be observed..."),
    (_dep(updatedReplicas=1, replicas=4), False,
     'Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been updated...'),
    (_dep(updatedReplicas=3, replicas=4, availableReplicas=3), False,
     'Waiting for deployment "web" rollout to finish: 1 old replicas are pending termination...'),
    (_dep(updatedReplicas=3, replicas=3, availableReplicas=2), False,
     'Waiting for deployment "web" rollout to finish: 2 of 3 updated replicas are available...'),
    (_dep(updatedReplicas=3, replicas=3, availableReplicas=3), True, 'deployment "web" successfully rolled out'),
])
def test_deployment_status_follows_kubectl(d: dict[str, Any], done: bool, message: str) -> None:
    assert rollout.deployment_status(d) == (done, message)


def test_progress_deadline_is_an_error() -> None:
    d = _dep(conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}])
    with pytest.raises(rollout.RolloutError, match='deployment "web" exceeded its progress deadline'):
        rollout.deployment_status(d)
