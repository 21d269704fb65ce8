"""CustomResourceDefinitions: registration, discovery, schema pruning/validation, status subresource,
printer columns, versions, deletion."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from typing import Any

import pytest
from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException


def crd_body(group: str, *, versions: tuple[str, ...] = ("v1alpha1",)) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["hosts"],
                "properties": {
                    "hosts": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    "mode": {"type": "string", "enum": ["STRICT", "PERMISSIVE"], "default": "PERMISSIVE"},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "target": {"x-kubernetes-int-or-string": True},
                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
            },
            "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"gadgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "shortNames": ["gd"]},
            "versions": [
                {"name": v, "served": True, "storage": i == 0, "schema": {"openAPIV3Schema": schema},
                 "subresources": {"status": {}},
                 "additionalPrinterColumns": [
                     {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
                     {"name": "Port", "type": "integer", "jsonPath": ".spec.port"},
                     {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]}
                for i, v in enumerate(versions)
            ],
        },
    }


def test_crd_lifecycle(cluster: Any) -> None:
    group = f"g{uuid.uuid4().hex[:6]}.example.com"
    ns = cluster.namespace("crd")
    c = cluster.client()
    ext = client.ApiextensionsV1Api(c)
    custom = client.CustomObjectsApi(c)
    created = ext.create_custom_resource_definition(crd_body(group, versions=("v1beta1", "v1")))
    assert created.metadata.generation == 1
    got = ext.read_custom_resource_definition(f"gadgets.{group}")
    conds = {x.type: x.status for x in got.status.conditions}
    assert conds == {"NamesAccepted": "True", "Established": "True"}
    assert got.status.accepted_names.kind == "Gadget" and got.status.stored_versions == ["v1beta1"]
    # discovery: preferred version is v1 (GA beats beta)
    groups = {g.name: g for g in client.ApisApi(c).get_api_versions().groups}
    assert groups[group].preferred_version.version == "v1"
    dyn = dynamic.DynamicClient(c)
    res = dyn.resources.get(api_version=f"{group}/v1", kind="Gadget")
    assert res.short_names == ["gd"] and res.namespaced
    # create: unknown fields pruned, defaults applied, status ignored on the main resource
    obj = custom.create_namespaced_custom_object(group, "v1", ns, "gadgets", {
        "apiVersion": f"{group}/v1", "kind": "Gadget", "metadata": {"name": "g1"},
        "spec": {"hosts": ["a"], "port": 8080, "target": "http", "bogus": 1, "extra": {"anything": {"goes": True}}},
        "status": {"phase": "Ready"}})
    assert obj["spec"]["mode"] == "PERMISSIVE" and "bogus" not in obj["spec"]
    assert obj["spec"]["extra"] == {"anything": {"goes": True}} and "status" not in obj
    assert obj["metadata"]["generation"] == 1
    # stored once, served in both versions
    old = custom.get_namespaced_custom_object(group, "v1beta1", ns, "gadgets", "g1")
    assert old["apiVersion"] == f"{group}/v1beta1" and old["metadata"]["uid"] == obj["metadata"]["uid"]
    # status subresource
    st = custom.patch_namespaced_custom_object_status(group, "v1", ns, "gadgets", "g1", {"status": {"phase": "Ready"}})
    assert st["status"] == {"phase": "Ready"} and st["metadata"]["generation"] == 1
    upd = custom.patch_namespaced_custom_object(group, "v1", ns, "gadgets", "g1", {"spec": {"port": 9090}})
    assert upd["metadata"]["generation"] == 2 and upd["status"] == {"phase": "Ready"}
    # schema validation: 422 with field paths
    with pytest.raises(ApiException) as e:
        custom.create_namespaced_custom_object(group, "v1", ns, "gadgets", {
            "apiVersion": f"{group}/v1", "kind": "Gadget", "metadata": {"name": "bad"},
            "spec": {"hosts": [], "mode": "OFF", "port": "x"}})
    s = json.loads(e.value.body)
    assert e.value.status == 422 and s["reason"] == "Invalid"
    fields = {x["field"]: x for x in s["details"]["causes"]}
    assert fields["spec.mode"]["reason"] == "FieldValueNotSupported"
    assert "spec.port in body must be of type integer" in fields["spec.port"]["message"]
    assert "spec.hosts" in fields
    with pytest.raises(ApiException) as e:
        custom.create_namespaced_custom_object(group, "v1", ns, "gadgets", {
            "apiVersion": f"{group}/v1", "kind": "Gadget", "metadata": {"name": "bad"}, "spec": {}})
    assert json.loads(e.value.body)["details"]["causes"][0] == {
        "reason": "FieldValueRequired", "message": "Required value", "field": "spec.hosts"}
    # strategic merge patch is not supported for custom resources
    api = c
    r = api.call_api(*api.param_serialize("PATCH", f"/apis/{group}/v1/namespaces/{ns}/gadgets/g1", body={"spec": {}},
                                          header_params={"Content-Type": "application/strategic-merge-patch+json"},
                                          auth_settings=["BearerToken"]))
    r.read()
    assert r.status == 415
    # the real kubectl: table columns from additionalPrinterColumns, short names
    out = subprocess.run(["kubectl", "--kubeconfig", str(cluster.kubeconfig), "--cache-dir", str(cluster.dir / "kc2"),
                          "-n", ns, "get", "gd"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAME", "MODE", "PORT", "AGE"] and lines[1].split()[:3] == ["g1", "PERMISSIVE", "9090"]
    # deleting the CRD deletes its objects and stops serving it
    ext.delete_custom_resource_definition(f"gadgets.{group}")
    time.sleep(0.2)
    with pytest.raises(ApiException) as e:
        custom.list_namespaced_custom_object(group, "v1", ns, "gadgets")
    assert e.value.status == 404
    assert not any(k.startswith(f"{group}/") and v for k, v in cluster.srv.server.store.data.items())


def test_invalid_crd(cluster: Any) -> None:
    ext = client.ApiextensionsV1Api(cluster.client())
    body = crd_body("x.example.com")
    body["metadata"]["name"] = "wrong.example.com"
    body["spec"]["versions"][0]["storage"] = False
    with pytest.raises(ApiException) as e:
        ext.create_custom_resource_definition(body)
    s = json.loads(e.value.body)
    assert e.value.status == 422
    assert {x["field"] for x in s["details"]["causes"]} == {"metadata.name", "spec.versions"}


def test_cluster_scoped_custom_resource_and_watch(cluster: Any) -> None:
    from kubernetes import watch

    group = f"c{uuid.uuid4().hex[:6]}.example.com"
    body = crd_body(group)
    body["spec"]["scope"] = "Cluster"
    c = cluster.client()
    client.ApiextensionsV1Api(c).create_custom_resource_definition(body)
    custom = client.CustomObjectsApi(c)
    rv = custom.list_cluster_custom_object(group, "v1alpha1", "gadgets")["metadata"]["resourceVersion"]
    custom.create_cluster_custom_object(group, "v1alpha1", "gadgets", {
        "apiVersion": f"{group}/v1alpha1", "kind": "Gadget", "metadata": {"name": "top"}, "spec": {"hosts": ["h"]}})
    evs = [(e["type"], e["object"]["metadata"]["name"]) for e in watch.Watch().stream(
        custom.list_cluster_custom_object, group, "v1alpha1", "gadgets", resource_version=rv, timeout_seconds=1)]
    assert evs == [("ADDED", "top")]
