"""Endpoints/EndpointSlices, namespaces and the scheduler against a real API server."""

from __future__ import annotations

import time
import uuid
from typing import Any

from kubernetes import client
from mm_controllers_support import Env, FakeKubelet, node_body, wait_for

from minimesh.cluster.local.controllers.endpoints import MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL


def service(name: str = "web", selector: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"ports": [{"name": "http", "port": 80, "targetPort": "http"}], **spec}
    if selector is not None:
        s["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": {"team": "a"}}, "spec": s}


def pod(name: str, labels: dict[str, str], port: int = 8080, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"name": "http", "containerPort": port}]}],
                     **spec}}


def slices(env: Env, ns: str, svc: str) -> list[Any]:
    from kubernetes.client import DiscoveryV1Api

    return DiscoveryV1Api(env.client()).list_namespaced_endpoint_slice(
        ns, label_selector=f"{SERVICE_NAME_LABEL}={svc}").items


def endpoints(env: Env, ns: str, name: str) -> Any:
    try:
        return env.core.read_namespaced_endpoints(name, ns)
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise


def test_endpoints_and_slices_follow_pod_readiness(env: Env) -> None:
    ns = env.namespace("ep")
    env.core.create_namespaced_service(ns, service(selector={"app": "web"}))
    # no pods yet: an empty Endpoints and a placeholder slice
    wait_for("placeholder slice", lambda: len(slices(env, ns, "web")) == 1)
    placeholder = slices(env, ns, "web")[0]
    assert not placeholder.endpoints and placeholder.metadata.labels[MANAGED_BY_LABEL] == MANAGED_BY
    assert placeholder.metadata.owner_references[0].kind == "Service"
    wait_for("endpoints object", lambda: endpoints(env, ns, "web"))

    for name, port in (("a", 8080), ("b", 8080), ("c", 8080)):
        env.core.create_namespaced_pod(ns, pod(name, {"app": "web"}, port))
    env.core.create_namespaced_pod(ns, pod("other", {"app": "other"}))
    wait_for("scheduled", lambda: all(p.spec.node_name for p in env.pods(ns)))
    env.set_pod_status(ns, "a", ip="10.244.1.1")
    env.set_pod_status(ns, "b", ip="10.244.1.2", ready=False)
    env.set_pod_status(ns, "other", ip="10.244.1.9")

    def ep_state() -> Any:
        e = endpoints(env, ns, "web")
        if not e or not e.subsets:
            return None
        s = e.subsets[0]
        return ([a.ip for a in s.addresses or []], [a.ip for a in s.not_ready_addresses or []],
                [(p.name, p.port, p.protocol) for p in s.ports])
    assert wait_for("endpoints", lambda: ep_state() == (["10.244.1.1"], ["10.244.1.2"], [("http", 8080, "TCP")]))
    e = endpoints(env, ns, "web")
    assert e.subsets[0].addresses[0].target_ref.name == "a" and e.subsets[0].addresses[0].node_name
    assert e.metadata.labels == {"team": "a"}

    def slice_state() -> Any:
        eps = [ep for s in slices(env, ns, "web") for ep in s.endpoints or []]
        return sorted((ep.addresses[0], ep.conditions.ready, ep.conditions.serving, ep.conditions.terminating)
                      for ep in eps)
    wait_for("slices", lambda: slice_state() == [("10.244.1.1", True, True, False), ("10.244.1.2", False, False, False)])
    [slc] = slices(env, ns, "web")
    assert slc.metadata.name.startswith("web-") and len(slc.metadata.name) == len("web-") + 5
    assert slc.address_type == "IPv4"
    assert [(p.name, p.port, p.protocol) for p in slc.ports] == [("http", 8080, "TCP")]
    assert slc.metadata.labels["team"] == "a"
    ep_a = next(ep for ep in slc.endpoints if ep.target_ref.name == "a")
    assert ep_a.node_name and ep_a.target_ref.kind == "Pod"

    # readiness flips are reflected at once; measured here, not asserted (2 shared cores)
    start = time.monotonic()
    env.set_pod_status(ns, "b", ip="10.244.1.2", ready=True)
    wait_for("b ready in slice", lambda: ("10.244.1.2", True, True, False) in slice_state(), interval=0.005)
    print(f"\nreadiness change → EndpointSlice: {1000 * (time.monotonic() - start):.0f} ms (including polling)")

    # a terminating pod: ready false, serving per readiness, terminating true; gone from Endpoints
    env.core.delete_namespaced_pod("a", ns)
    wait_for("terminating", lambda: ("10.244.1.1", False, True, True) in slice_state())
    wait_for("a out of endpoints", lambda: ep_state() and "10.244.1.1" not in ep_state()[0] + ep_state()[1])
    env.kubelet_delete(ns, "a")
    wait_for("a gone", lambda: all(s[0] != "10.244.1.1" for s in slice_state()))


def test_named_ports_publish_not_ready_and_service_deletion(env: Env) -> None:
    ns = env.namespace("ep2")
    env.core.create_namespaced_service(ns, service(selector={"app": "x"}, publishNotReadyAddresses=True))
    env.core.create_namespaced_pod(ns, pod("p1", {"app": "x"}, 8080))
    env.core.create_namespaced_pod(ns, pod("p2", {"app": "x"}, 9090))
    wait_for("scheduled", lambda: all(p.spec.node_name for p in env.pods(ns)))
    env.set_pod_status(ns, "p1", ip="10.244.2.1", ready=False)
    env.set_pod_status(ns, "p2", ip="10.244.2.2", ready=False)

    def per_port() -> Any:
        return sorted((s.ports[0].port, [ep.addresses[0] for ep in s.endpoints or []], s.endpoints[0].conditions.ready)
                      for s in slices(env, ns, "web") if s.endpoints)
    wait_for("one slice per port set", lambda: per_port() == [(8080, ["10.244.2.1"], True), (9090, ["10.244.2.2"], True)])
    wait_for("both addresses ready in Endpoints", lambda: (e := endpoints(env, ns, "web")) and e.subsets
             and sorted(a.ip for s in e.subsets for a in s.addresses or []) == ["10.244.2.1", "10.244.2.2"])
    env.core.delete_namespaced_service("web", ns)
    wait_for("endpoints deleted", lambda: endpoints(env, ns, "web") is None)
    wait_for("slices collected", lambda: not slices(env, ns, "web"))


def test_services_without_selector_are_left_alone(env: Env) -> None:
    ns = env.namespace("manual")
    env.core.create_namespaced_service(ns, service("ext"))
    body = {"metadata": {"name": "ext"}, "subsets": [{"addresses": [{"ip": "198.18.0.1"}], "ports": [{"port": 443}]}]}
    env.core.create_namespaced_endpoints(ns, body)
    time.sleep(1)
    e = endpoints(env, ns, "ext")
    assert [a.ip for a in e.subsets[0].addresses] == ["198.18.0.1"]
    assert not slices(env, ns, "ext")


def test_namespace_gets_default_account_and_root_ca_back(env: Env) -> None:
    ns = env.namespace("defaults")
    wait_for("default sa", lambda: [s.metadata.name for s in env.core.list_namespaced_service_account(ns).items]
             == ["default"])
    cm = wait_for("root ca", lambda: next((c for c in env.core.list_namespaced_config_map(ns).items
                                          if c.metadata.name == "kube-root-ca.crt"), None))
    assert cm.data == {"ca.crt": env.ca_file.read_text()}
    assert "kubernetes.io/description" in cm.metadata.annotations
    env.core.delete_namespaced_config_map("kube-root-ca.crt", ns)
    env.core.delete_namespaced_service_account("default", ns)
    wait_for("root ca back", lambda: [c for c in env.core.list_namespaced_config_map(ns).items
                                      if c.metadata.name == "kube-root-ca.crt"])
    wait_for("sa back", lambda: env.core.list_namespaced_service_account(ns).items)
    env.core.patch_namespaced_config_map("kube-root-ca.crt", ns, {"data": {"ca.crt": "tampered"}})
    wait_for("root ca repaired", lambda: env.core.read_namespaced_config_map("kube-root-ca.crt", ns).data["ca.crt"]
             == env.ca_file.read_text())


def test_namespace_deletion_removes_everything_including_custom_resources(env: Env) -> None:
    ns = env.namespace("doomed")
    group = f"t{uuid.uuid4().hex[:6]}.example.com"
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": f"widgets.{group}"},
           "spec": {"group": group, "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object",
                                                                 "x-kubernetes-preserve-unknown-fields": True}}}]}}
    ext = client.ApiextensionsV1Api(env.client())
    ext.create_custom_resource_definition(crd)
    try:
        wait_for("crd served", lambda: _can_list(env, group, ns))
        env.custom.create_namespaced_custom_object(group, "v1", ns, "widgets",
                                                   {"apiVersion": f"{group}/v1", "kind": "Widget",
                                                    "metadata": {"name": "w1"}})
        with FakeKubelet(env, ns, fate=lambda p: "ready", interval=0.5):
            env.apps.create_namespaced_deployment(ns, {
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}},
                         "template": {"metadata": {"labels": {"app": "d"}},
                                      "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
            env.core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}, "data": {"a": "b"}})
            wait_for("pods running", lambda: len([p for p in env.pods(ns) if p.status.phase == "Running"]) == 2)
            env.core.delete_namespace(ns)

            def state() -> Any:
                try:
                    return env.core.read_namespace(ns)
                except client.ApiException as e:
                    if e.status == 404:
                        return "gone"
                    raise
            seen_conditions: set[str] = set()

            def gone() -> bool:
                s = state()
                if s == "gone":
                    return True
                seen_conditions.update(f"{c.type}={c.status}" for c in s.status.conditions or [])
                return False
            wait_for("namespace finalized", gone, timeout=60)
        assert "NamespaceDeletionDiscoveryFailure=False" in seen_conditions
    finally:
        ext.delete_custom_resource_definition(f"widgets.{group}")


def _can_list(env: Env, group: str, ns: str) -> bool:
    try:
        env.custom.list_namespaced_custom_object(group, "v1", ns, "widgets")
    except client.ApiException:
        return False
    return True


def test_scheduler_reports_unschedulable_and_retries_when_resources_free_up(env: Env) -> None:
    ns = env.namespace("sched")
    node = f"small-{uuid.uuid4().hex[:6]}"
    body = node_body(node, cpu="1", memory="1Gi", pods="10")
    body["spec"] = {"taints": [{"key": "dedicated", "value": node, "effect": "NoSchedule"}]}
    body["metadata"]["labels"]["dedicated"] = node
    env.core.create_node(body)
    pin = {"nodeSelector": {"dedicated": node},
           "tolerations": [{"key": "dedicated", "operator": "Equal", "value": node, "effect": "NoSchedule"}]}

    def sized(name: str, cpu: str, init: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
        p = pod(name, {"app": name}, **pin, **extra)
        p["spec"]["containers"][0]["resources"] = {"requests": {"cpu": cpu}}
        if init:
            p["spec"]["initContainers"] = init
        return p
    try:
        # 1 cpu node: app 500m + native sidecar 200m, an init container of 700m next to the sidecar → 900m
        sidecar = {"name": "proxy", "image": "x", "restartPolicy": "Always", "resources": {"requests": {"cpu": "200m"}}}
        setup = {"name": "setup", "image": "x", "resources": {"limits": {"cpu": "700m"}}}
        env.core.create_namespaced_pod(ns, sized("first", "500m", [sidecar, setup], overhead={"cpu": "100m"}))
        first = wait_for("first bound", lambda: env.core.read_namespaced_pod("first", ns).spec.node_name)
        assert first == node
        env.core.create_namespaced_pod(ns, sized("second", "1m"))

        def scheduled_condition() -> Any:
            p = env.core.read_namespaced_pod("second", ns)
            return next((c for c in p.status.conditions or [] if c.type == "PodScheduled"), None)
        cond = wait_for("unschedulable", scheduled_condition)
        n_nodes = len(env.core.list_node().items)
        assert (cond.status, cond.reason) == ("False", "Unschedulable")
        assert cond.message == (f"0/{n_nodes} nodes are available: 1 Insufficient cpu, "
                                f"{n_nodes - 1} node(s) didn't match Pod's node affinity/selector.")
        events = wait_for("FailedScheduling event", lambda: [e for e in env.core.list_namespaced_event(
            ns, field_selector="involvedObject.name=second").items if e.reason == "FailedScheduling"])
        assert events[0].type == "Warning" and events[0].reporting_component == "default-scheduler"
        assert events[0].message == cond.message
        # freeing the node lets it in
        env.core.delete_namespaced_pod("first", ns)
        env.kubelet_delete(ns, "first")
        assert wait_for("second bound", lambda: env.core.read_namespaced_pod("second", ns).spec.node_name) == node
        ok = wait_for("Scheduled event", lambda: [e for e in env.core.list_namespaced_event(
            ns, field_selector="involvedObject.name=second").items if e.reason == "Scheduled"])
        assert ok[0].message == f"Successfully assigned {ns}/second to {node}"
    finally:
        env.core.delete_node(node)
