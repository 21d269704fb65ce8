"""Pure rules of the Endpoints/EndpointSlice controllers, the garbage collector and namespace deletion."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from minimesh.cluster.local.controllers import endpoints as ep
from minimesh.cluster.local.controllers import garbagecollector as gc
from minimesh.cluster.local.controllers import namespace as nsc

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def svc(ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"team": "a"}},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.20",
                     "ports": ports if ports is not None else [{"name": "http", "port": 80, "targetPort": "http",
                                                                "protocol": "TCP"}], **spec}}


def pod(name: str, ip: str, *, ready: bool = True, port: int = 8080, deleting: bool = False,
        phase: str = "Running", app: str = "web") -> dict[str, Any]:
    p: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "labels": {"app": app}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": port}]}]},
        "status": {"phase": phase, "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }
    if deleting:
        p["metadata"]["deletionTimestamp"] = "2024-05-01T12:00:00Z"
    return p


NODES = {"n1": {"metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "z1"}}}}


def test_named_target_port_resolves_per_pod_including_native_sidecars() -> None:
    p = pod("a", "10.0.0.1")
    assert ep.find_port(p, {"targetPort": "http"}) == 8080
    assert ep.find_port(p, {"targetPort": 9000}) == 9000
    assert ep.find_port(p, {"targetPort": "http", "protocol": "UDP"}) is None
    p["spec"]["initContainers"] = [{"name": "proxy", "restartPolicy": "Always",
                                    "ports": [{"name": "admin", "containerPort": 15000}]},
                                   {"name": "init", "ports": [{"name": "setup", "containerPort": 1}]}]
    assert ep.find_port(p, {"targetPort": "admin"}) == 15000
    assert ep.find_port(p, {"targetPort": "setup"}) is None


def test_endpoints_subsets_ready_and_not_ready() -> None:
    pods = [pod("a", "10.0.0.2"), pod("b", "10.0.0.1", ready=False), pod("c", "10.0.0.3", deleting=True),
            pod("d", "10.0.0.4", phase="Succeeded"), pod("e", "", ready=True), pod("f", "10.0.0.5", app="other")]
    subsets = ep.build_subsets(svc(), pods)
    assert subsets == [{
        "addresses": [{"ip": "10.0.0.2", "nodeName": "n1",
                       "targetRef": {"kind": "Pod", "namespace": "ns", "name": "a", "uid": "uid-a"}}],
        "notReadyAddresses": [{"ip": "10.0.0.1", "nodeName": "n1",
                               "targetRef": {"kind": "Pod", "namespace": "ns", "name": "b", "uid": "uid-b"}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }]
    published = ep.build_subsets(svc(publishNotReadyAddresses=True), pods)
    assert [a["ip"] for a in published[0]["addresses"]] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_pods_resolving_different_ports_get_different_subsets() -> None:
    subsets = ep.build_subsets(svc(), [pod("a", "10.0.0.1", port=8080), pod("b", "10.0.0.2", port=9090)])
    assert sorted(s["ports"][0]["port"] for s in subsets) == [8080, 9090]


def test_endpoints_object_only_when_something_changed() -> None:
    s = svc()
    subsets = ep.build_subsets(s, [pod("a", "10.0.0.1")])
    want = ep.desired_endpoints_object(s, None, subsets, NOW)
    assert want is not None
    assert want["metadata"]["labels"] == {"team": "a"}
    assert want["metadata"]["annotations"][ep.TRIGGER_TIME_ANNOTATION] == "2024-05-01T12:00:00Z"
    assert ep.desired_endpoints_object(s, want, subsets, None) is None
    headless = svc(clusterIP="None")
    assert ep.desired_endpoints_object(headless, None, [], None)["metadata"]["labels"][ep.HEADLESS_LABEL] == ""


def test_slice_endpoint_conditions() -> None:
    s = svc()
    ready = ep.pod_to_slice_endpoint(pod("a", "10.0.0.1"), s, NODES["n1"])
    assert ready == {"addresses": ["10.0.0.1"], "conditions": {"ready": True, "serving": True, "terminating": False},
                     "targetRef": {"kind": "Pod", "namespace": "ns", "name": "a", "uid": "uid-a"},
                     "nodeName": "n1", "zone": "z1"}
    going = ep.pod_to_slice_endpoint(pod("b", "10.0.0.2", deleting=True), s, None)
    assert going["conditions"] == {"ready": False, "serving": True, "terminating": True}
    published = ep.pod_to_slice_endpoint(pod("b", "10.0.0.2", ready=False), svc(publishNotReadyAddresses=True), None)
    assert published["conditions"] == {"ready": True, "serving": False, "terminating": False}


def test_new_service_gets_one_slice_and_an_empty_one_a_placeholder() -> None:
    s = svc()
    desired, missing = ep.desired_slice_endpoints(s, [pod("a", "10.0.0.1"), pod("b", "10.0.0.2", deleting=True)], NODES)
    assert not missing
    create, update, delete = ep.reconcile_slices(s, [], desired)
    assert not update and not delete and len(create) == 1
    slc = create[0]
    assert slc["metadata"]["generateName"] == "web-"
    assert slc["metadata"]["labels"] == {"team": "a", ep.SERVICE_NAME_LABEL: "web", ep.MANAGED_BY_LABEL: ep.MANAGED_BY}
    assert slc["metadata"]["ownerReferences"][0]["kind"] == "Service"
    assert slc["addressType"] == "IPv4"
    assert slc["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    assert [e["conditions"]["terminating"] for e in slc["endpoints"]] == [False, True]
    placeholder = ep.reconcile_slices(s, [], {})[0]
    assert len(placeholder) == 1 and placeholder[0]["endpoints"] == [] and placeholder[0]["ports"] == []


def existing(slc: dict[str, Any], name: str) -> dict[str, Any]:
    return {**slc, "metadata": {**slc["metadata"], "name": name}}


def test_slices_are_updated_in_place_and_left_alone_when_unchanged() -> None:
    s = svc()
    desired, _ = ep.desired_slice_endpoints(s, [pod("a", "10.0.0.1")], NODES)
    current = existing(ep.reconcile_slices(s, [], desired)[0][0], "web-abcde")
    assert ep.reconcile_slices(s, [current], desired) == ([], [], [])
    # readiness flips: the same slice is updated
    desired, _ = ep.desired_slice_endpoints(s, [pod("a", "10.0.0.1", ready=False)], NODES)
    create, update, delete = ep.reconcile_slices(s, [current], desired)
    assert not create and not delete and update[0]["metadata"]["name"] == "web-abcde"
    assert update[0]["endpoints"][0]["conditions"]["ready"] is False
    # all pods gone: the slice becomes the placeholder (reused, not deleted and recreated)
    create, update, delete = ep.reconcile_slices(s, [current], {})
    assert not create and not delete and update[0]["endpoints"] == [] and update[0]["metadata"]["name"] == "web-abcde"


def test_slices_hold_at_most_the_maximum_and_foreign_owners_are_replaced() -> None:
    s = svc()
    pods = [pod(f"p{i}", f"10.0.{i // 250}.{i % 250 + 1}") for i in range(7)]
    desired, _ = ep.desired_slice_endpoints(s, pods, NODES)
    create, _, _ = ep.reconcile_slices(s, [], desired, max_per_slice=3)
    assert sorted(len(c["endpoints"]) for c in create) == [1, 3, 3]
    stale = existing(create[0], "web-old")
    stale["metadata"]["ownerReferences"] = [{"uid": "previous-service", "controller": True}]
    _, update, delete = ep.reconcile_slices(s, [stale], desired, max_per_slice=3)
    assert [d["metadata"]["name"] for d in delete] == ["web-old"] and not update


# ---- garbage collector -------------------------------------------------------------------------------


def obj(fins: list[str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "x", "uid": "x", "finalizers": fins or [],
                         "ownerReferences": [{"uid": "o1"}, {"uid": "o2"}]}}


def test_gc_decisions() -> None:
    present = gc.OwnerView({"uid": "o1"}, True)
    gone = gc.OwnerView({"uid": "o2"}, False)
    waiting = gc.OwnerView({"uid": "o2"}, True, deleting_dependents=True)
    assert gc.decide(obj(), [present], False) == ("keep", None)
    assert gc.decide(obj(), [present, gone], False) == ("patch", ["o2"])
    assert gc.decide(obj(), [present, waiting], False) == ("patch", ["o2"])
    assert gc.decide(obj(), [gone], False) == ("delete", "Background")
    assert gc.decide(obj(["orphan"]), [gone], False) == ("delete", "Orphan")
    assert gc.decide(obj(), [waiting], True) == ("delete", "Foreground")
    assert gc.decide(obj(), [waiting], False) == ("delete", "Background")


def test_gc_patches_test_what_they_change() -> None:
    o = obj(["foregroundDeletion", "x"])
    ops = gc.drop_owner_refs_patch(o, ["o1"])
    assert ops[1] == {"op": "test", "path": "/metadata/ownerReferences", "value": [{"uid": "o1"}, {"uid": "o2"}]}
    assert ops[2] == {"op": "replace", "path": "/metadata/ownerReferences", "value": [{"uid": "o2"}]}
    assert gc.remove_finalizer_patch(o, "foregroundDeletion")[-1]["value"] == ["x"]
    assert gc.remove_finalizer_patch(o, "orphan") is None


# ---- namespace deletion ------------------------------------------------------------------------------


def test_namespace_conditions_say_what_is_left() -> None:
    report = nsc.DeletionReport(remaining={"pods.": 2}, finalizers={"batch.kubernetes.io/job-tracking": 1})
    conds = {c["type"]: c for c in nsc.namespace_conditions(report, [], NOW)}
    assert conds["NamespaceContentRemaining"]["message"] == "Some resources are remaining: pods. has 2 resource instances"
    assert conds["NamespaceFinalizersRemaining"]["message"] == (
        "Some content in the namespace has finalizers remaining: batch.kubernetes.io/job-tracking in 1 resource instances")
    assert conds["NamespaceDeletionDiscoveryFailure"]["status"] == "False"
    done = nsc.namespace_conditions(nsc.DeletionReport(), list(conds.values()), NOW)
    assert {c["type"]: c["reason"] for c in done}["NamespaceContentRemaining"] == "ContentRemoved"


def test_root_ca_configmap() -> None:
    cm = nsc.root_ca_configmap("ns", "PEM")
    assert cm["data"] == {"ca.crt": "PEM"}
    assert not nsc.root_ca_needs_update(cm, "PEM") and nsc.root_ca_needs_update(cm, "OTHER")
