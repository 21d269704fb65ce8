"""Every failure answers with the real Status (code, reason, message, details) and changes nothing."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException


def status(exc: ApiException) -> dict[str, Any]:
    body = json.loads(exc.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == exc.status
    return body


def raw(cluster: Any, method: str, path: str, body: bytes | None = None, *, token: str | None = "admin",
        content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    ctx = ssl.create_default_context(cafile=str(cluster.dir / "ca.crt"))
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {cluster.srv.pki.token if token == 'admin' else token}"
    req = urllib.request.Request(cluster.srv.url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, context=ctx) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def test_not_found(cluster: Any) -> None:
    core = client.CoreV1Api(cluster.client())
    ns = cluster.namespace("nf")
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("ghost", ns)
    s = status(e.value)
    assert (s["reason"], s["message"]) == ("NotFound", 'pods "ghost" not found')
    assert s["details"] == {"name": "ghost", "kind": "pods"}
    with pytest.raises(ApiException) as e:
        client.AppsV1Api(cluster.client()).read_namespaced_deployment("ghost", ns)
    assert status(e.value)["message"] == 'deployments.apps "ghost" not found'
    # creating in a namespace that does not exist
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("no-such-ns", {"metadata": {"name": "x"}})
    s = status(e.value)
    assert (s["code"], s["message"]) == (404, 'namespaces "no-such-ns" not found')


def test_already_exists_and_conflict(cluster: Any) -> None:
    core = client.CoreV1Api(cluster.client())
    ns = cluster.namespace("ae")
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "x"}, "data": {"v": "1"}})
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "x"}})
    s = status(e.value)
    assert (s["code"], s["reason"], s["message"]) == (409, "AlreadyExists", 'configmaps "x" already exists')
    core.patch_namespaced_config_map("x", ns, {"data": {"v": "2"}})
    stale = {"metadata": {"name": "x", "resourceVersion": cm.metadata.resource_version}, "data": {"v": "3"}}
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("x", ns, stale)
    s = status(e.value)
    assert (s["code"], s["reason"]) == (409, "Conflict")
    assert s["message"] == ('Operation cannot be fulfilled on configmaps "x": the object has been modified; '
                            "please apply your changes to the latest version and try again")
    assert core.read_namespaced_config_map("x", ns).data == {"v": "2"}


def test_invalid_has_causes(cluster: Any) -> None:
    core = client.CoreV1Api(cluster.client())
    ns = cluster.namespace("inv")
    body = {"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c"}, {"name": "c", "image": "x",
                                                                                     "ports": [{"containerPort": 70000}]}]}}
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod(ns, body)
    s = status(e.value)
    assert (s["code"], s["reason"]) == (422, "Invalid")
    assert s["details"]["kind"] == "Pod" and s["details"]["name"] == "Bad_Name"
    fields = {c["field"]: c for c in s["details"]["causes"]}
    assert fields["spec.containers[0].image"] == {"reason": "FieldValueRequired", "message": "Required value",
                                                  "field": "spec.containers[0].image"}
    assert fields["spec.containers[1].name"]["reason"] == "FieldValueDuplicate"
    assert fields["spec.containers[1].ports[0].containerPort"]["message"] == \
        "Invalid value: 70000: must be between 1 and 65535, inclusive"
    assert "a lowercase RFC 1123 subdomain" in fields["metadata.name"]["message"]
    assert s["message"].startswith('Pod "Bad_Name" is invalid: [')
    assert "spec.containers[0].image: Required value" in s["message"]
    assert core.list_namespaced_pod(ns).items == []
    code, s = raw(cluster, "POST", f"/api/v1/namespaces/{ns}/pods", json.dumps({"metadata": {"name": "x"}, "spec": {}}).encode())
    assert code == 422 and s["message"] == 'Pod "x" is invalid: spec.containers: Required value'
    with pytest.raises(ApiException) as e:
        core.create_namespaced_service(ns, {"metadata": {"name": "9svc"}, "spec": {"ports": [{"port": 80}]}})
    assert "a DNS-1035 label" in status(e.value)["message"]
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "c", "labels": {"bad key": "v"}}})
    assert status(e.value)["details"]["causes"][0]["field"] == "metadata.labels"


def test_immutable_pod_spec(cluster: Any) -> None:
    core = client.CoreV1Api(cluster.client())
    ns = cluster.namespace("imm")
    core.create_namespaced_pod(ns, pod("p"))
    core.patch_namespaced_pod("p", ns, {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}})  # images may change
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_pod("p", ns, {"spec": {"restartPolicy": "Never"}})
    s = status(e.value)
    assert s["code"] == 422 and s["details"]["causes"][0]["field"] == "spec"
    assert "pod updates may not change fields other than" in s["message"]
    assert core.read_namespaced_pod("p", ns).spec.restart_policy == "Always"


def test_bad_request(cluster: Any) -> None:
    ns = cluster.namespace("br")
    code, s = raw(cluster, "POST", f"/api/v1/namespaces/{ns}/configmaps", b"{not json")
    assert (code, s["reason"]) == (400, "BadRequest") and "json parse error" in s["message"]
    code, s = raw(cluster, "POST", f"/api/v1/namespaces/{ns}/configmaps", b"kind: ConfigMap\nmetadata: [x", content_type="application/yaml")
    assert (code, s["reason"]) == (400, "BadRequest")
    code, s = raw(cluster, "POST", f"/api/v1/namespaces/{ns}/configmaps",
                  json.dumps({"metadata": {"name": "a"}, "data": {"k": 5}}).encode())
    assert code == 400 and "cannot unmarshal number into Go struct field ConfigMap.data of type string" in s["message"]
    core = client.CoreV1Api(cluster.client())
    core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("a", ns, {"metadata": {"name": "b"}})
    assert status(e.value)["message"] == "the name of the object (b) does not match the name on the URL (a)"
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "z", "namespace": "other"}})
    assert status(e.value)["reason"] == "BadRequest"
    # unknown fields: Strict -> 400, Warn -> accepted with a Warning header, Ignore -> dropped
    body = json.dumps({"metadata": {"name": "u"}, "bogus": 1, "data": {}}).encode()
    code, s = raw(cluster, "POST", f"/api/v1/namespaces/{ns}/configmaps?fieldValidation=Strict", body)
    assert code == 400 and s["message"].endswith('strict decoding error: unknown field "bogus"')
    code, s = raw(cluster, "POST", f"/api/v1/namespaces/{ns}/configmaps?fieldValidation=Ignore", body)
    assert code == 201 and "bogus" not in s


def test_method_not_allowed_unauthorized_gone(cluster: Any) -> None:
    code, s = raw(cluster, "PUT", "/api/v1/namespaces/default/pods", b"{}")
    assert (code, s["reason"]) == (405, "MethodNotAllowed")
    code, s = raw(cluster, "GET", "/api/v1/namespaces", token=None)
    assert (code, s["reason"], s["message"]) == (401, "Unauthorized", "Unauthorized")
    code, s = raw(cluster, "GET", "/api/v1/namespaces", token="wrong")
    assert code == 401
    code, s = raw(cluster, "GET", "/version", token=None)
    assert code == 200 and s["gitVersion"] == "v1.32.0"


def test_terminating_namespace_forbids_create(cluster: Any) -> None:
    core = client.CoreV1Api(cluster.client())
    ns = cluster.namespace("term")
    deleted = core.delete_namespace(ns)
    assert deleted.status.phase == "Terminating" if hasattr(deleted, "status") and deleted.status else True
    got = core.read_namespace(ns)
    assert got.status.phase == "Terminating" and got.metadata.deletion_timestamp
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "x"}})
    s = status(e.value)
    assert (s["code"], s["reason"]) == (403, "Forbidden")
    assert s["message"] == f'configmaps "x" is forbidden: unable to create new content in namespace {ns} because it is being terminated'
    # the namespace controller finalizes it
    core.replace_namespace_finalize(ns, {"metadata": {"name": ns}, "spec": {"finalizers": []}})
    with pytest.raises(ApiException) as e:
        core.read_namespace(ns)
    assert e.value.status == 404


def test_delete_semantics(cluster: Any) -> None:
    core = client.CoreV1Api(cluster.client())
    ns = cluster.namespace("del")
    # a scheduled pod is deleted gracefully: it stays with deletionTimestamp until the kubelet deletes it
    core.create_namespaced_pod(ns, pod("running", nodeName="n1"))
    gone = core.delete_namespaced_pod("running", ns)
    assert gone.metadata.deletion_timestamp and gone.metadata.deletion_grace_period_seconds == 30
    still = core.read_namespaced_pod("running", ns)
    assert still.metadata.deletion_timestamp
    with pytest.raises(ApiException) as e:  # preconditions
        core.delete_namespaced_pod("running", ns, body=client.V1DeleteOptions(grace_period_seconds=0,
                                                                              preconditions=client.V1Preconditions(uid="wrong")))
    assert status(e.value)["reason"] == "Conflict"
    core.delete_namespaced_pod("running", ns, body=client.V1DeleteOptions(
        grace_period_seconds=0, preconditions=client.V1Preconditions(uid=still.metadata.uid)))
    with pytest.raises(ApiException):
        core.read_namespaced_pod("running", ns)
    # an unscheduled pod goes at once
    core.create_namespaced_pod(ns, pod("pending"))
    core.delete_namespaced_pod("pending", ns)
    assert core.list_namespaced_pod(ns).items == []
    # finalizers hold an object until they are removed
    core.create_namespaced_config_map(ns, {"metadata": {"name": "f", "finalizers": ["example.com/hold"]}})
    core.delete_namespaced_config_map("f", ns)
    held = core.read_namespaced_config_map("f", ns)
    assert held.metadata.deletion_timestamp and held.metadata.finalizers == ["example.com/hold"]
    core.patch_namespaced_config_map("f", ns, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("f", ns)
    # propagationPolicy adds the garbage collector's finalizers
    core.create_namespaced_config_map(ns, {"metadata": {"name": "fg"}})
    core.delete_namespaced_config_map("fg", ns, propagation_policy="Foreground")
    assert core.read_namespaced_config_map("fg", ns).metadata.finalizers == ["foregroundDeletion"]
    core.create_namespaced_config_map(ns, {"metadata": {"name": "or"}})
    core.delete_namespaced_config_map("or", ns, propagation_policy="Orphan")
    assert core.read_namespaced_config_map("or", ns).metadata.finalizers == ["orphan"]
    # deletecollection with a selector
    for i in range(3):
        core.create_namespaced_secret(ns, {"metadata": {"name": f"s{i}", "labels": {"del": "yes" if i else "no"}}})
    core.delete_collection_namespaced_secret(ns, label_selector="del=yes")
    assert [s.metadata.name for s in core.list_namespaced_secret(ns).items] == ["s0"]


def test_dry_run(cluster: Any) -> None:
    core = client.CoreV1Api(cluster.client())
    ns = cluster.namespace("dry")
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    out = core.create_namespaced_config_map(ns, {"metadata": {"name": "d"}}, dry_run="All")
    assert out.metadata.uid and out.metadata.name == "d"
    assert core.list_namespaced_config_map(ns).items == []
    core.create_namespaced_config_map(ns, {"metadata": {"name": "d"}, "data": {"a": "1"}})
    core.patch_namespaced_config_map("d", ns, {"data": {"a": "2"}}, dry_run="All")
    core.delete_namespaced_config_map("d", ns, dry_run="All")
    assert core.read_namespaced_config_map("d", ns).data == {"a": "1"}
    assert int(core.list_namespaced_config_map(ns).metadata.resource_version) > int(rv)
