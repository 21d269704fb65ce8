"""pod_effective_resources (the stage-1 solution) follows Kubernetes' PodRequests/PodLimits rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minimesh.k8s.resources import (
    PodResources,
    ResourceError,
    format_resources,
    pod_effective_resources,
    quantity,
    spec_dict,
)

MI = 1 << 20


def c(name: str, cpu: str | None = None, mem: str | None = None, *, lcpu: str | None = None,
      lmem: str | None = None, always: bool = False) -> dict:
    res: dict = {}
    req = {k: v for k, v in (("cpu", cpu), ("memory", mem)) if v}
    lim = {k: v for k, v in (("cpu", lcpu), ("memory", lmem)) if v}
    if req:
        res["requests"] = req
    if lim:
        res["limits"] = lim
    out = {"name": name, "image": "busybox", "resources": res}
    if always:
        out["restartPolicy"] = "Always"
    return out


def test_regular_containers_add_up() -> None:
    got = pod_effective_resources({"containers": [c("a", "100m", "64Mi"), c("b", "0.25", "32Mi")]})
    assert got == PodResources({"cpu": 350, "memory": 96 * MI}, {})


def test_init_containers_take_the_maximum() -> None:
    spec = {"initContainers": [c("i1", "500m"), c("i2", "200m", "300Mi")], "containers": [c("a", "100m", "64Mi")]}
    assert pod_effective_resources(spec).requests == {"cpu": 500, "memory": 300 * MI}


def test_native_sidecars_add_up_and_join_later_init_containers() -> None:
    # sidecar s1 (100m) starts first; init i1 runs next to it (needs 400 + 100); then sidecar s2 (50m).
    spec = {
        "initContainers": [c("s1", "100m", always=True), c("i1", "400m"), c("s2", "50m", always=True)],
        "containers": [c("a", "200m")],
    }
    # running: a + s1 + s2 = 350m; i1's time: 400 + 100 = 500m
    assert pod_effective_resources(spec).requests == {"cpu": 500}
    # an init container after both sidecars sees both of them
    spec["initContainers"].append(c("i2", "300m"))
    assert pod_effective_resources(spec).requests == {"cpu": 500}  # i2: 300 + 150 = 450 < 500
    spec["initContainers"][-1] = c("i2", "360m")
    assert pod_effective_resources(spec).requests == {"cpu": 510}


def test_overhead_is_added_to_requests_and_to_set_limits() -> None:
    spec = {"containers": [c("a", "100m", "64Mi", lcpu="200m")], "overhead": {"cpu": "10m", "memory": "8Mi"}}
    assert pod_effective_resources(spec) == PodResources({"cpu": 110, "memory": 72 * MI}, {"cpu": 210})


def test_limits_follow_the_same_rules_and_default_requests() -> None:
    spec = {
        "initContainers": [c("s", lcpu="100m", lmem="32Mi", always=True), c("i", lcpu="1")],
        "containers": [c("a", lcpu="300m", lmem="64Mi")],
    }
    got = pod_effective_resources(spec)
    # a limit without a request defaults the request to the limit (API defaulting)
    assert got.limits == {"cpu": 1100, "memory": 96 * MI}
    assert got.requests == {"cpu": 1100, "memory": 96 * MI}


def test_accepts_a_whole_pod_and_client_models() -> None:
    from kubernetes import client

    pod = client.V1Pod(spec=client.V1PodSpec(
        init_containers=[client.V1Container(name="s", restart_policy="Always",
                                            resources=client.V1ResourceRequirements(requests={"cpu": "20m"}))],
        containers=[client.V1Container(name="a", resources=client.V1ResourceRequirements(requests={"cpu": "30m"}))],
    ))
    assert pod_effective_resources(pod).requests == {"cpu": 50}
    assert pod_effective_resources({"spec": spec_dict(pod)}).requests == {"cpu": 50}


def test_bad_quantities_name_the_field() -> None:
    with pytest.raises(ResourceError, match=r"spec.initContainers\[1\].resources.requests.cpu: 'lots' is not"):
        pod_effective_resources({"initContainers": [c("s", "1m"), c("i", "lots")], "containers": []})
    with pytest.raises(ResourceError, match=r"spec.overhead.memory: '-1Mi' is negative"):
        pod_effective_resources({"containers": [], "overhead": {"memory": "-1Mi"}})


def test_quantity_rounds_up_like_milli_value() -> None:
    assert quantity("cpu", "0.0001", "x") == 1
    assert quantity("cpu", 2, "x") == 2000
    assert quantity("memory", "1Gi", "x") == 1 << 30
    assert format_resources({"cpu": 1250, "memory": 64 * MI}) == "cpu=1250m memory=64Mi"


cpus = st.integers(min_value=0, max_value=4000)


@st.composite
def specs(draw: st.DrawFn) -> dict:
    inits = [c(f"i{n}", f"{draw(cpus)}m", always=draw(st.booleans())) for n in range(draw(st.integers(0, 4)))]
    regs = [c(f"c{n}", f"{draw(cpus)}m") for n in range(draw(st.integers(1, 4)))]
    return {"initContainers": inits, "containers": regs}


@given(specs(), cpus)
def test_another_container_adds_exactly_its_request_when_containers_dominate(spec: dict, extra: int) -> None:
    before = pod_effective_resources(spec).requests["cpu"]
    spec["containers"].append(c("more", f"{extra + before}m"))  # big enough to dominate every init need
    after = pod_effective_resources(spec).requests["cpu"]
    sidecars = sum(int(i["resources"]["requests"]["cpu"][:-1]) for i in spec["initContainers"] if i.get("restartPolicy"))
    regular = sum(int(x["resources"]["requests"]["cpu"][:-1]) for x in spec["containers"])
    assert after == regular + sidecars


@given(specs())
def test_the_pod_needs_at_least_each_init_container_and_each_phase(spec: dict) -> None:
    got = pod_effective_resources(spec).requests["cpu"]
    running_sidecars = 0
    for i in spec["initContainers"]:
        own = int(i["resources"]["requests"]["cpu"][:-1])
        if i.get("restartPolicy"):
            running_sidecars += own
        else:
            assert got >= own + running_sidecars
    assert got >= sum(int(x["resources"]["requests"]["cpu"][:-1]) for x in spec["containers"]) + running_sidecars
