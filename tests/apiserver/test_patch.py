"""Patches: pure strategic-merge semantics, and every patch type through the API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from minimesh.cluster.local.apiserver.patch import PatchError, json_patch, merge_patch, strategic_merge

POD = "io.k8s.api.core.v1.Pod"


def base_pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "labels": {"a": "1", "b": "2"}, "finalizers": ["x/y", "x/z"]},
        "spec": {
            "containers": [
                {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}], "args": ["--one"]},
                {"name": "side", "image": "side:1", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
            ],
            "volumes": [{"name": "v", "emptyDir": {}}],
        },
    }


def test_smp_merges_containers_by_name() -> None:
    out = strategic_merge(base_pod(), {"spec": {"containers": [{"name": "side", "image": "side:2"},
                                                               {"name": "new", "image": "n"}]}}, POD)
    cs = out["spec"]["containers"]
    assert [c["name"] for c in cs] == ["app", "side", "new"]
    assert cs[1] == {"name": "side", "image": "side:2", "ports": [{"containerPort": 80, "protocol": "TCP"}]}
    assert cs[0]["image"] == "app:1"


def test_smp_merges_env_and_keeps_primitive_lists_replaced() -> None:
    out = strategic_merge(base_pod(), {"spec": {"containers": [{"name": "app", "env": [{"name": "B", "value": "2"}],
                                                                "args": ["--two"]}]}}, POD)
    app = out["spec"]["containers"][0]
    assert app["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert app["args"] == ["--two"]  # args has no merge strategy: replaced


def test_smp_directives() -> None:
    p = base_pod()
    assert [c["name"] for c in strategic_merge(p, {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}, POD)["spec"]["containers"]] == ["app"]
    out = strategic_merge(p, {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "o"}]}}, POD)
    assert out["spec"]["containers"] == [{"name": "only", "image": "o"}]
    out = strategic_merge(p, {"metadata": {"labels": {"$patch": "replace", "c": "3"}}}, POD)
    assert out["metadata"]["labels"] == {"c": "3"}
    out = strategic_merge(p, {"metadata": {"labels": {"a": None}}}, POD)
    assert out["metadata"]["labels"] == {"b": "2"}
    out = strategic_merge(p, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["x/y"]}}, POD)
    assert out["metadata"]["finalizers"] == ["x/z"]
    out = strategic_merge(p, {"metadata": {"finalizers": ["x/w"]}}, POD)  # finalizers merge: union
    assert out["metadata"]["finalizers"] == ["x/y", "x/z", "x/w"]
    out = strategic_merge(p, {"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "app"}],
                                       "containers": [{"name": "app", "image": "app:2"}]}}, POD)
    assert [c["name"] for c in out["spec"]["containers"]] == ["side", "app"]
    # volumes use retainKeys: switching the source drops the old one
    out = strategic_merge(p, {"spec": {"volumes": [{"name": "v", "$retainKeys": ["name", "configMap"], "configMap": {"name": "c"}}]}}, POD)
    assert out["spec"]["volumes"] == [{"name": "v", "configMap": {"name": "c"}}]
    with pytest.raises(PatchError):
        strategic_merge(p, {"spec": {"containers": [{"image": "no-name"}]}}, POD)


def test_merge_and_json_patch() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"b": None, "d": 3}, "l": [3]}) == {"a": {"c": 2, "d": 3}, "l": [3]}
    assert json_patch({"a": [1]}, [{"op": "add", "path": "/a/-", "value": 2}]) == {"a": [1, 2]}
    with pytest.raises(PatchError):
        json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])


def test_patch_types_through_the_api(cluster: Any) -> None:
    ns = cluster.namespace("patch")
    c = cluster.client()
    apps = client.AppsV1Api(c)
    dep = {"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {
        "metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "app", "image": "a:1"}, {"name": "side", "image": "s:1"}]}}}}
    apps.create_namespaced_deployment(ns, dep)
    # strategic merge (the python client's default for dict bodies on built-ins)
    out = apps.patch_namespaced_deployment("d", ns, {"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "s:2"}]}}}})
    assert [(x.name, x.image) for x in out.spec.template.spec.containers] == [("app", "a:1"), ("side", "s:2")]
    # rollout restart = strategic patch of a template annotation -> generation bump
    out = apps.patch_namespaced_deployment("d", ns, {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z"}}}}})
    assert out.metadata.generation == 3
    # JSON patch
    api = c
    body = [{"op": "replace", "path": "/spec/replicas", "value": 4}]
    out = api.call_api(*api.param_serialize("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/d", body=body,
                                            header_params={"Content-Type": "application/json-patch+json", "Accept": "application/json"},
                                            auth_settings=["BearerToken"]))
    out.read()
    assert json.loads(out.data)["spec"]["replicas"] == 4
    # merge patch replaces lists wholesale
    core = client.CoreV1Api(c)
    core.create_namespaced_config_map(ns, {"metadata": {"name": "m"}, "data": {"a": "1", "b": "2"}})
    r = api.call_api(*api.param_serialize("PATCH", f"/api/v1/namespaces/{ns}/configmaps/m", body={"data": {"a": None, "c": "3"}},
                                          header_params={"Content-Type": "application/merge-patch+json", "Accept": "application/json"},
                                          auth_settings=["BearerToken"]))
    r.read()
    assert json.loads(r.data)["data"] == {"b": "2", "c": "3"}
    # a failing JSON patch test op is 422 and changes nothing
    bad = [{"op": "test", "path": "/data/b", "value": "nope"}, {"op": "remove", "path": "/data/b"}]
    r = api.call_api(*api.param_serialize("PATCH", f"/api/v1/namespaces/{ns}/configmaps/m", body=bad,
                                          header_params={"Content-Type": "application/json-patch+json", "Accept": "application/json"},
                                          auth_settings=["BearerToken"]))
    r.read()
    assert r.status == 422
    assert core.read_namespaced_config_map("m", ns).data == {"b": "2", "c": "3"}


def test_server_side_apply_create_or_merge(cluster: Any) -> None:
    ns = cluster.namespace("ssa")
    api = cluster.client()
    path = f"/api/v1/namespaces/{ns}/configmaps/applied"

    def apply(doc: str, manager: str | None = "test") -> Any:
        qp = [("fieldManager", manager)] if manager else []
        r = api.call_api(*api.param_serialize("PATCH", path, body=doc, query_params=qp,
                                              header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
                                              auth_settings=["BearerToken"]))
        r.read()
        return r.status, json.loads(r.data)

    code, obj = apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: '1'\n")
    assert code == 201 and obj["data"] == {"a": "1"}
    code, obj = apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  b: '2'\n")
    assert code == 200 and obj["data"] == {"a": "1", "b": "2"}
    code, obj = apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n", manager=None)
    assert code == 400 and "fieldManager" in obj["message"]


def test_patch_of_missing_object_is_404(cluster: Any) -> None:
    ns = cluster.namespace("p415")
    core = client.CoreV1Api(cluster.client())
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_config_map("missing", ns, {"data": {}})
    assert e.value.status == 404
