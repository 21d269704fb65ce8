"""The scheduler's pure rules: effective pod requests (the stage-1 ground truth), the filters and the
real failure messages."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimesh.cluster.local.scheduler import (
    NodeInfo,
    QuantityError,
    build_node_infos,
    condition_update,
    fit_error,
    is_ours,
    node_allocatable,
    pod_requests,
    quantity,
    schedule_one,
    tolerates,
)

MI = 1 << 20


def c(name: str, cpu: str | None = None, mem: str | None = None, *, lcpu: str | None = None,
      lmem: str | None = None, sidecar: bool = False, ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if cpu or mem:
        res["requests"] = {k: v for k, v in (("cpu", cpu), ("memory", mem)) if v}
    if lcpu or lmem:
        res["limits"] = {k: v for k, v in (("cpu", lcpu), ("memory", lmem)) if v}
    out: dict[str, Any] = {"name": name, "image": "busybox", "resources": res}
    if sidecar:
        out["restartPolicy"] = "Always"
    if ports:
        out["ports"] = ports
    return out


def pod(containers: list[dict[str, Any]], init: list[dict[str, Any]] | None = None, *, name: str = "p",
        node: str = "", **spec: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"containers": containers, **spec}
    if init:
        s["initContainers"] = init
    if node:
        s["nodeName"] = node
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"}, "spec": s,
            "status": {"phase": "Running" if node else "Pending"}}


def node(name: str = "n1", cpu: str = "2", memory: str = "4Gi", pods: str = "110", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}, "spec": spec,
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": pods},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


# ---- effective requests ------------------------------------------------------------------------------


def test_regular_containers_add_up() -> None:
    assert pod_requests(pod([c("a", "100m", "64Mi"), c("b", "0.25", "32Mi")])) == {"cpu": 350, "memory": 96 * MI}


def test_init_containers_take_the_maximum_not_the_sum() -> None:
    p = pod([c("a", "100m", "64Mi")], [c("i1", "500m"), c("i2", "200m", "300Mi")])
    assert pod_requests(p) == {"cpu": 500, "memory": 300 * MI}


def test_native_sidecars_add_to_containers_and_to_later_init_containers() -> None:
    # s1 starts first; i1 runs next to it (400 + 100); s2 joins; app a runs with s1 and s2.
    init = [c("s1", "100m", sidecar=True), c("i1", "400m"), c("s2", "50m", sidecar=True)]
    assert pod_requests(pod([c("a", "200m")], init)) == {"cpu": 500}  # max(200+100+50, 400+100)
    init.append(c("i2", "360m"))  # runs next to s1 and s2: 360 + 150 = 510
    assert pod_requests(pod([c("a", "200m")], init)) == {"cpu": 510}


def test_a_sidecar_declared_after_an_init_container_does_not_count_for_it() -> None:
    init = [c("i1", "400m"), c("s1", "300m", sidecar=True)]
    # i1 alone: 400; running: a + s1 = 100 + 300 = 400; s1 starting: 300
    assert pod_requests(pod([c("a", "100m")], init)) == {"cpu": 400}
    init = [c("s1", "300m", sidecar=True), c("i1", "400m")]
    assert pod_requests(pod([c("a", "100m")], init)) == {"cpu": 700}


def test_overhead_is_added() -> None:
    p = pod([c("a", "100m", "64Mi")], overhead={"cpu": "10m", "memory": "8Mi"})
    assert pod_requests(p) == {"cpu": 110, "memory": 72 * MI}


def test_limits_without_requests_count_as_requests() -> None:
    p = pod([c("a", lcpu="300m", lmem="64Mi"), c("b", "100m", lcpu="1")], [c("s", lcpu="50m", sidecar=True)])
    # a: 300m (from its limit); b: its request 100m wins over its limit; s: 50m
    assert pod_requests(p) == {"cpu": 450, "memory": 64 * MI}


def test_no_requests_is_an_empty_list_and_extended_resources_are_kept() -> None:
    assert pod_requests(pod([c("a")])) == {}
    p = pod([{"name": "a", "resources": {"limits": {"example.com/gpu": "2"}}}])
    assert pod_requests(p) == {"example.com/gpu": 2}


def test_quantities_round_up() -> None:
    assert quantity("cpu", "0.0001") == 1
    assert quantity("cpu", 2) == 2000
    assert quantity("memory", "1Gi") == 1 << 30
    assert quantity("memory", "1.5k") == 1500
    with pytest.raises(QuantityError, match=r"spec.containers\[0\].resources.requests.cpu: 'lots'"):
        pod_requests(pod([{"name": "a", "resources": {"requests": {"cpu": "lots"}}}]))


cpus = st.integers(0, 3000)


@settings(deadline=None)
@given(st.lists(st.tuples(cpus, st.booleans()), max_size=5), st.lists(cpus, min_size=1, max_size=4), cpus)
def test_effective_cpu_matches_the_phase_by_phase_definition(init: list[tuple[int, bool]], regular: list[int],
                                                             overhead: int) -> None:
    p = pod([c(f"c{i}", f"{v}m") for i, v in enumerate(regular)],
            [c(f"i{i}", f"{v}m", sidecar=s) for i, (v, s) in enumerate(init)], overhead={"cpu": f"{overhead}m"})
    # every phase of the pod's life: each init container's turn, then the steady state
    phases, sidecars = [], 0
    for v, s in init:
        if s:
            sidecars += v
            phases.append(sidecars)
        else:
            phases.append(v + sidecars)
    phases.append(sum(regular) + sidecars)
    assert pod_requests(p).get("cpu", 0) == max(phases) + overhead


# ---- filters and messages ----------------------------------------------------------------------------


def infos(nodes: list[dict[str, Any]], pods: list[dict[str, Any]] = ()) -> dict[str, NodeInfo]:  # type: ignore[assignment]
    return build_node_infos(nodes, pods)


def test_fits_exactly_and_fails_one_millicore_over_with_the_real_message() -> None:
    running = [pod([c("a", "1500m")], name="r", node="n1")]
    assert schedule_one(pod([c("a", "500m")]), infos([node()], running)).node == "n1"
    d = schedule_one(pod([c("a", "501m")]), infos([node()], running))
    assert d.node is None
    assert d.message == "0/1 nodes are available: 1 Insufficient cpu."


def test_sidecars_and_overhead_count_against_the_node() -> None:
    # 2 cpus; the pod needs max(1000 + 500, 1200 + 500) + 300 = 2000m with its sidecar and overhead
    p = pod([c("app", "1000m")], [c("mesh", "500m", sidecar=True), c("setup", "1200m")], overhead={"cpu": "300m"})
    assert schedule_one(p, infos([node()])).node == "n1"
    p["spec"]["overhead"] = {"cpu": "301m"}
    assert schedule_one(p, infos([node()])).message == "0/1 nodes are available: 1 Insufficient cpu."


def test_terminated_pods_do_not_hold_resources() -> None:
    done = pod([c("a", "2")], name="done", node="n1")
    done["status"]["phase"] = "Succeeded"
    assert schedule_one(pod([c("a", "1")]), infos([node()], [done])).node == "n1"
    done["status"]["phase"] = "Running"
    assert schedule_one(pod([c("a", "1")]), infos([node()], [done])).node is None


def test_several_reasons_and_several_nodes_are_counted_and_sorted() -> None:
    big = pod([c("a", "3", "8Gi")])
    msg = schedule_one(big, infos([node("n1"), node("n2")])).message
    assert msg == "0/2 nodes are available: 2 Insufficient cpu, 2 Insufficient memory."
    tainted = node("n2", taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}])
    msg = schedule_one(big, infos([node("n1"), tainted])).message
    assert msg == ("0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, "
                   "1 node(s) had untolerated taint {dedicated: db}.")


def test_pod_count_limit() -> None:
    running = [pod([c("a")], name=f"r{i}", node="n1") for i in range(3)]
    assert schedule_one(pod([c("a")]), infos([node(pods="3")], running)).message == \
        "0/1 nodes are available: 1 Too many pods."


def test_extended_resources_must_be_allocatable() -> None:
    p = pod([{"name": "a", "resources": {"limits": {"example.com/gpu": "1"}}}])
    assert schedule_one(p, infos([node()])).message == "0/1 nodes are available: 1 Insufficient example.com/gpu."


def test_taints_and_tolerations() -> None:
    n = node(taints=[{"key": "k", "value": "v", "effect": "NoSchedule"},
                     {"key": "soft", "effect": "PreferNoSchedule"}])
    assert schedule_one(pod([c("a")]), infos([n])).message == \
        "0/1 nodes are available: 1 node(s) had untolerated taint {k: v}."
    for tol in ({"key": "k", "operator": "Equal", "value": "v"}, {"key": "k", "operator": "Exists"},
                {"operator": "Exists"}, {"key": "k", "value": "v", "effect": "NoSchedule"}):
        assert schedule_one(pod([c("a")], tolerations=[tol]), infos([n])).node == "n1", tol
    assert not tolerates({"key": "k", "value": "other"}, n["spec"]["taints"][0])
    assert not tolerates({"key": "k", "operator": "Exists", "effect": "NoExecute"}, n["spec"]["taints"][0])


def test_a_not_ready_node_is_tainted_like_taint_nodes_by_condition() -> None:
    n = node()
    n["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    assert schedule_one(pod([c("a")]), infos([n])).message == \
        "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."


def test_unschedulable_node() -> None:
    n = node(unschedulable=True)
    assert schedule_one(pod([c("a")]), infos([n])).message == "0/1 nodes are available: 1 node(s) were unschedulable."
    tol = {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}
    assert schedule_one(pod([c("a")], tolerations=[tol]), infos([n])).node == "n1"


def test_node_selector_and_required_affinity() -> None:
    n = node()
    n["metadata"]["labels"].update({"disk": "ssd", "gen": "5"})
    miss = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    assert schedule_one(pod([c("a")], nodeSelector={"disk": "ssd"}), infos([n])).node == "n1"
    assert schedule_one(pod([c("a")], nodeSelector={"disk": "hdd"}), infos([n])).message == miss

    def aff(*terms: dict[str, Any]) -> dict[str, Any]:
        return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}}

    ok_terms = [
        {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd", "nvme"]}]},
        {"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["4"]}]},
        {"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
    ]
    for term in ok_terms:
        assert schedule_one(pod([c("a")], affinity=aff(term)), infos([n])).node == "n1", term
    bad_terms = [
        {"matchExpressions": [{"key": "disk", "operator": "NotIn", "values": ["ssd"]}]},
        {"matchExpressions": [{"key": "gen", "operator": "Lt", "values": ["5"]}]},
        {},  # an empty term matches nothing
    ]
    for term in bad_terms:
        assert schedule_one(pod([c("a")], affinity=aff(term)), infos([n])).message == miss, term
    # terms are ORed
    assert schedule_one(pod([c("a")], affinity=aff(bad_terms[0], ok_terms[0])), infos([n])).node == "n1"


def test_host_port_conflicts() -> None:
    running = [pod([c("a", ports=[{"containerPort": 80, "hostPort": 8080}])], name="r", node="n1")]
    want = pod([c("a", ports=[{"containerPort": 80, "hostPort": 8080}])])
    assert schedule_one(want, infos([node()], running)).message == \
        "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."
    other = pod([c("a", ports=[{"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}])])
    assert schedule_one(other, infos([node()], running)).node == "n1"


def test_assumed_pods_count_until_the_informer_sees_them() -> None:
    ni = build_node_infos([node()], [], {"uid-x": ("n1", {"cpu": 1800}, [])})
    assert schedule_one(pod([c("a", "300m")]), ni).node is None


def test_least_allocated_node_wins() -> None:
    running = [pod([c("a", "1")], name="r", node="n1")]
    assert schedule_one(pod([c("a", "100m")]), infos([node("n1"), node("n2")], running)).node == "n2"


def test_which_pods_are_ours() -> None:
    assert is_ours(pod([c("a")]))
    assert not is_ours(pod([c("a")], node="n1"))
    assert not is_ours(pod([c("a")], schedulerName="other"))
    assert is_ours(pod([c("a")], schedulerName="default-scheduler"))


def test_allocatable_defaults() -> None:
    n = {"metadata": {"name": "x"}, "status": {"capacity": {"cpu": "4", "memory": "1Gi"}}}
    assert node_allocatable(n) == {"cpu": 4000, "memory": 1 << 30, "pods": 110}


def test_condition_update_only_when_it_changes() -> None:
    p = pod([c("a")])
    conds = condition_update(p, "Unschedulable", "msg", "2024-05-01T10:00:00Z")
    assert conds == [{"type": "PodScheduled", "status": "False", "lastProbeTime": None,
                      "lastTransitionTime": "2024-05-01T10:00:00Z", "reason": "Unschedulable", "message": "msg"}]
    p["status"]["conditions"] = conds
    assert condition_update(p, "Unschedulable", "msg", "2024-05-01T10:05:00Z") is None
    again = condition_update(p, "Unschedulable", "other", "2024-05-01T10:05:00Z")
    assert again is not None and again[0]["lastTransitionTime"] == "2024-05-01T10:00:00Z"


def test_fit_error_without_reasons() -> None:
    assert fit_error(0, {}) == "0/0 nodes are available."
