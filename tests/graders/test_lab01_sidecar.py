"""Stage 1 grader: the sidecar pattern.

Checks what runs (the seed example, 5 replicas behind a NodePort, probes, a native sidecar, a Job that
completes) and proves the trainee's `pod_effective_resources` against the scheduler of the live cluster:
with the node's allocatable CPU and the function's view of every pod on it, one pod sized to just fit must
be scheduled and one a millicore bigger must stay Pending with "Insufficient cpu".
"""

from __future__ import annotations

import re
import secrets
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from minimesh.k8s.resources import (
    PodResources,
    pod_effective_resources,
    quantity,
    spec_dict,
)
from minimesh.lab.grading import GradeFailure, check, eventually, expect, fail, is_ready, missing

APPLY = "minimesh apply -f minimesh/manifests/lab01/"
EXERCISE = "minimesh/k8s/resources.py: pod_effective_resources"
LINE = re.compile(r"^\S+ hello from the sidecar in (\S+)$")


def _pod(core: Any, name: str) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return core.read_namespaced_pod(name, "default")
    except ApiException as e:
        if e.status == 404:
            missing(f"pod {name}", APPLY)
        raise


def _ready_pod(core: Any, name: str) -> Any:
    def ready() -> Any:
        pod = _pod(core, name)
        check(is_ready(pod), want=f"pod {name} Running and Ready", got=_pod_state(pod),
              hint=f"minimesh kubectl describe pod {name}")
        return pod

    return eventually(ready, timeout=90)


def _pod_state(pod: Any) -> str:
    st = pod.status
    parts = [st.phase or "?"]
    for cs in [*(st.init_container_statuses or []), *(st.container_statuses or [])]:
        state = cs.state
        now = "running" if state.running else ("waiting: " + (state.waiting.reason or "") if state.waiting
                                               else "terminated" if state.terminated else "?")
        parts.append(f"{cs.name} {now}{' ready' if cs.ready else ''}")
    return ", ".join(parts)


# ---- the seed example ----------------------------------------------------------------------------


def test_sidecar_pod_runs(core: Any) -> None:
    """the sidecar pod runs nginx and a busybox sidecar, both ready"""
    pod = _ready_pod(core, "sidecar-demo")
    images = {c.name: c.image for c in pod.spec.containers}
    check(len(images) >= 2 and any("nginx" in i for i in images.values()) and any("busybox" in i for i in images.values()),
          want="two containers: nginx and busybox", got=images, hint=APPLY)
    statuses = {c.name: c.ready for c in pod.status.container_statuses or []}
    expect(statuses, dict.fromkeys(images, True), f"minimesh logs sidecar-demo -c {next(iter(images))}",
           what="ready containers")


def _lines(body: str) -> list[str]:
    return [ln for ln in body.splitlines() if LINE.match(ln.strip())]


def test_page_changes_between_requests(core: Any, http_from: Callable[..., Any], sleep_pod: str) -> None:
    """the page grows between requests: the sidecar writes it, nginx serves it"""
    pod = _ready_pod(core, "sidecar-demo")
    url = f"http://{pod.status.pod_ip}/"
    first = eventually(lambda: _page(http_from, sleep_pod, url), timeout=20)
    time.sleep(4)  # the sidecar appends a line every 3 seconds
    second = eventually(lambda: _page(http_from, sleep_pod, url), timeout=20)
    check(len(second) > len(first) and second[: len(first)] == first,
          want="a longer page the second time (lines appended)", got=f"{len(first)} then {len(second)} lines",
          hint="minimesh logs sidecar-demo -c sidecar; is the sidecar writing to the shared volume?")


def _page(http_from: Callable[..., Any], pod: str, url: str) -> list[str]:
    res = http_from(pod, url)
    expect(res.status, 200, "minimesh kubectl describe pod sidecar-demo", what=f"GET {url} from sleep")
    lines = _lines(res.body)
    check(lines, want="lines like '2025-01-01T12:00:00Z hello from the sidecar in sidecar-demo'",
          got=str(res), hint="the sidecar writes to the volume nginx serves")
    return lines


def test_sidecar_has_health_checks(core: Any) -> None:
    """the sidecar has readiness and liveness probes, and passes them"""
    pod = _ready_pod(core, "sidecar-demo")
    sidecar = next((c for c in pod.spec.containers if "busybox" in c.image), None)
    check(sidecar, want="a busybox sidecar container", got=[c.name for c in pod.spec.containers], hint=APPLY)
    probes = {"readinessProbe": bool(sidecar.readiness_probe), "livenessProbe": bool(sidecar.liveness_probe)}
    expect(probes, {"readinessProbe": True, "livenessProbe": True}, "add both probes to the sidecar container",
           what="probes on the sidecar")
    status = next(c for c in pod.status.container_statuses if c.name == sidecar.name)
    check(status.ready, want="the sidecar Ready (its readiness probe passes)", got=_pod_state(pod),
          hint="minimesh kubectl describe pod sidecar-demo  (Events: probe failures)")


def test_deployment_behind_nodeport(apps: Any, core: Any, cluster: Any) -> None:
    """5 replicas ready behind a NodePort service that the host reaches"""

    if not apps.list_namespaced_deployment("default", label_selector="app=sidecar-web").items:
        missing("deployment sidecar-web", APPLY)

    def five() -> None:
        dep = apps.read_namespaced_deployment("sidecar-web", "default")
        expect(dep.status.ready_replicas or 0, 5, "minimesh kubectl get deploy sidecar-web", what="ready replicas")

    eventually(five, timeout=120)
    svc = core.read_namespaced_service("sidecar-web", "default")
    expect(svc.spec.type, "NodePort", APPLY, what="service type")
    node_port = svc.spec.ports[0].node_port
    url = f"http://{cluster.node_address()}:{node_port}/"

    def from_host() -> str:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read().decode(errors="replace")
        check(_lines(body), want="the sidecar's page", got=body[:200], hint=f"curl {url}")
        return LINE.match(_lines(body)[-1].strip()).group(1)  # type: ignore[union-attr]

    hosts = {eventually(from_host, timeout=30) for _ in range(20)}
    check(len(hosts) >= 2, want="answers from several replicas (the Service balances)", got=sorted(hosts),
          hint="minimesh kubectl get endpoints sidecar-web")


def test_native_sidecar_keeps_running(core: Any) -> None:
    """a native sidecar (initContainer, restartPolicy Always) runs next to nginx"""
    pod = _ready_pod(core, "native-sidecar-demo")
    natives = [c.name for c in pod.spec.init_containers or [] if c.restart_policy == "Always"]
    check(natives, want="an init container with restartPolicy: Always",
          got=[c.name for c in pod.spec.init_containers or []], hint=APPLY)
    status = {c.name: c for c in pod.status.init_container_statuses or []}
    sc = status.get(natives[0])
    check(sc is not None and sc.state.running and sc.ready, want=f"init container {natives[0]} running and ready",
          got=_pod_state(pod), hint="minimesh kubectl describe pod native-sidecar-demo")


def test_job_with_native_sidecar_completes(batch: Any) -> None:
    """a Job whose pod has a native sidecar completes"""
    from kubernetes.client.exceptions import ApiException

    def complete() -> None:
        try:
            job = batch.read_namespaced_job("sidecar-job", "default")
        except ApiException as e:
            if e.status == 404:
                missing("job sidecar-job", f"{APPLY}sidecar-job.yaml")
            raise
        conds = {c.type: c.status for c in job.status.conditions or []}
        check(conds.get("Failed") != "True", want="the Job not failed", got=conds,
              hint="minimesh logs job/sidecar-job -c task")
        expect(conds.get("Complete"), "True", "does the sidecar keep the pod alive? it must be a native sidecar",
               what="condition Complete of job sidecar-job")

    eventually(complete, timeout=90)


# ---- pod_effective_resources against known pods --------------------------------------------------

MI = 1 << 20


def _c(name: str, req: dict[str, str] | None = None, lim: dict[str, str] | None = None, always: bool = False) -> dict:
    res: dict[str, Any] = {}
    if req:
        res["requests"] = req
    if lim:
        res["limits"] = lim
    return {"name": name, "image": "busybox", "resources": res, **({"restartPolicy": "Always"} if always else {})}


KNOWN: dict[str, tuple[dict, PodResources, str]] = {
    "regular containers add up": (
        {"containers": [_c("a", {"cpu": "100m", "memory": "64Mi"}), _c("b", {"cpu": "250m", "memory": "32Mi"})]},
        PodResources({"cpu": 350, "memory": 96 * MI}, {}),
        "all regular containers run at once: add them",
    ),
    "init containers: the biggest one counts": (
        {"initContainers": [_c("i1", {"cpu": "500m"}), _c("i2", {"cpu": "200m", "memory": "300Mi"})],
         "containers": [_c("a", {"cpu": "100m", "memory": "64Mi"})]},
        PodResources({"cpu": 500, "memory": 300 * MI}, {}),
        "init containers run one at a time, before the app: take the maximum per resource",
    ),
    "native sidecars run with the app": (
        {"initContainers": [_c("proxy", {"cpu": "100m"}, always=True)], "containers": [_c("a", {"cpu": "200m"})]},
        PodResources({"cpu": 300}, {}),
        "an init container with restartPolicy: Always keeps running: add it to the containers' sum",
    ),
    "an init container runs next to the sidecars started before it": (
        {"initContainers": [_c("s1", {"cpu": "100m"}, always=True), _c("i1", {"cpu": "400m"}),
                            _c("s2", {"cpu": "50m"}, always=True)],
         "containers": [_c("a", {"cpu": "200m"})]},
        PodResources({"cpu": 500}, {}),
        "i1 runs while s1 (declared before it) runs: it needs 400m + 100m; s2 starts only after i1",
    ),
    "overhead adds to requests and to the limits that are set": (
        {"containers": [_c("a", {"cpu": "100m", "memory": "64Mi"}, {"cpu": "200m"})],
         "overhead": {"cpu": "10m", "memory": "8Mi"}},
        PodResources({"cpu": 110, "memory": 72 * MI}, {"cpu": 210}),
        "add spec.overhead to every request, and to each limit that is set (memory has no limit here)",
    ),
    "limits follow the same rules": (
        {"initContainers": [_c("s", None, {"cpu": "100m", "memory": "32Mi"}, always=True), _c("i", None, {"cpu": "1"})],
         "containers": [_c("a", None, {"cpu": "300m", "memory": "64Mi"})]},
        PodResources({"cpu": 1100, "memory": 96 * MI}, {"cpu": 1100, "memory": 96 * MI}),
        "same rules for limits; a limit without a request makes the request equal (use container_resources)",
    ),
}


@pytest.mark.parametrize("case", list(KNOWN))
def test_effective_resources_of_known_pods(case: str) -> None:
    """pod_effective_resources on a known pod"""
    spec, want, hint = KNOWN[case]
    got = pod_effective_resources(spec)
    check(isinstance(got, PodResources), want="a PodResources", got=type(got).__name__, hint=EXERCISE)
    if got != want:
        raise GradeFailure(str(want), str(got), f"{hint} ({EXERCISE})")


# ---- pod_effective_resources against the scheduler -------------------------------------------------

PROBE_LABEL = "lab01-probe"


def _busybox(name: str, cpu: int, argv: list[str], always: bool = False) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": "busybox", "command": argv,
                         "resources": {"requests": {"cpu": f"{cpu}m"}}}
    if always:
        c["restartPolicy"] = "Always"
    return c


def _init_heavy(x: int) -> dict[str, Any]:
    """a sidecar, then a big init container, then two small containers"""
    return {"initContainers": [_busybox("sidecar", 10, ["sleep", "3600"], always=True),
                               _busybox("setup", x, ["true"])],
            "containers": [_busybox("main", 10, ["sleep", "3600"]), _busybox("helper", 5, ["sleep", "3600"])]}


def _app_heavy(x: int) -> dict[str, Any]:
    """a sidecar, a small init container, then a big main container"""
    return {"initContainers": [_busybox("sidecar", 20, ["sleep", "3600"], always=True),
                               _busybox("setup", 15, ["true"])],
            "containers": [_busybox("main", x, ["sleep", "3600"]), _busybox("helper", 5, ["sleep", "3600"])]}


SHAPES = {"init container dominates": _init_heavy, "containers and sidecar dominate": _app_heavy}


def _cpu(spec: dict[str, Any]) -> int:
    return pod_effective_resources(spec).requests.get("cpu", 0)


def _size_to(shape: Callable[[int], dict[str, Any]], target: int) -> dict[str, Any]:
    """The pod of this shape whose effective CPU request is `target` by the trainee's function."""
    lo, hi = 0, max(target, 1)
    while lo < hi:  # smallest x with cpu(shape(x)) >= target
        mid = (lo + hi) // 2
        if _cpu(shape(mid)) >= target:
            hi = mid
        else:
            lo = mid + 1
    got = _cpu(shape(lo))
    if got != target:
        fail(f"a probe pod ({shape.__doc__}) that needs exactly {target}m by your function",
             f"{got}m at most, however big that container's request",
             f"the pod needs at least each container's request: pod_effective_resources ignores one ({EXERCISE})",
             final=True)
    return shape(lo)


def _node_view(core: Any) -> tuple[str, int, int, bool]:
    """(node, allocatable cpu, cpu used by its pods per the trainee's function, several nodes?)"""
    nodes = [n for n in core.list_node().items if not n.spec.unschedulable]
    check(nodes, want="a schedulable node", got="none", hint="minimesh cluster status")
    node = sorted(nodes, key=lambda n: n.metadata.name)[0]
    name = node.metadata.name
    alloc = quantity("cpu", node.status.allocatable["cpu"], f"node {name} allocatable cpu")
    used = 0
    for p in core.list_pod_for_all_namespaces().items:
        if p.spec.node_name == name and p.status.phase not in ("Succeeded", "Failed"):
            used += _cpu(spec_dict(p.spec))
    return name, alloc, used, len(nodes) > 1


def _probe(name: str, spec: dict[str, Any], node: str, pin: bool) -> dict[str, Any]:
    spec = {**spec, "restartPolicy": "Never", "terminationGracePeriodSeconds": 0}
    if pin:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {"apiVersion": "v1", "kind": "Pod",
            # opted out of injection: once stage 5 enables it in `default`, a sidecar would change the sizes
            "metadata": {"name": name, "labels": {"app": PROBE_LABEL, "sidecar.minimesh.io/inject": "false"}},
            "spec": spec}


def _delete_and_wait(core: Any, names: list[str]) -> None:
    from kubernetes.client.exceptions import ApiException

    for n in names:
        try:
            core.delete_namespaced_pod(n, "default", grace_period_seconds=0)
        except ApiException as e:
            if e.status != 404:
                raise

    def gone() -> None:
        left = [p.metadata.name for p in core.list_namespaced_pod("default", label_selector=f"app={PROBE_LABEL}").items
                if p.metadata.name in names]
        check(not left, want="probe pods deleted", got=left, hint="minimesh kubectl get pods")

    eventually(gone, timeout=60)


def _unschedulable_reason(core: Any, pod: Any) -> str:
    """The scheduler's explanation for a Pending pod: its PodScheduled condition, else its events."""
    for c in pod.status.conditions or []:
        if c.type == "PodScheduled" and c.status == "False" and c.message:
            return c.message
    events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={pod.metadata.name}").items
    msgs = [e.message for e in events if e.reason == "FailedScheduling" and e.message]
    return msgs[-1] if msgs else ""


@pytest.mark.parametrize("shape", list(SHAPES))
def test_scheduler_agrees_with_effective_resources(core: Any, shape: str) -> None:
    """the scheduler agrees with pod_effective_resources: a pod that just fits is scheduled, 1m more is not"""
    old = [p.metadata.name for p in core.list_namespaced_pod("default", label_selector=f"app={PROBE_LABEL}").items]
    if old:
        _delete_and_wait(core, old)
    node, alloc, used, pin = _node_view(core)
    free = alloc - used
    smallest = _cpu(SHAPES[shape](0))
    check(free > smallest + 50, want=f"at least {smallest + 50}m of CPU free on node {node} for the probe pods",
          got=f"{free}m free ({alloc}m allocatable, {used}m requested by its pods per your function)",
          hint="delete some pods, or check pod_effective_resources")
    suffix = secrets.token_hex(3)
    too_big, just_fits = f"lab01-nofit-{suffix}", f"lab01-fit-{suffix}"
    try:
        # One millicore more than is free: the scheduler must say no.
        core.create_namespaced_pod("default", _probe(too_big, _size_to(SHAPES[shape], free + 1), node, pin))

        def pending() -> None:
            pod = core.read_namespaced_pod(too_big, "default")
            if pod.spec.node_name:  # bound for good: no point in waiting
                fail(f"pod {too_big} (needs {free + 1}m by your function) to stay Pending: Insufficient cpu",
                     f"scheduled on {pod.spec.node_name}",
                     "the scheduler found room, so your function counts more than Kubernetes does, for the pods"
                     f" on the node or for this one; {EXERCISE}", final=True)
            reason = _unschedulable_reason(core, pod)
            check("Insufficient cpu" in reason, want=f"pod {too_big} Pending with 'Insufficient cpu'",
                  got=reason or "no scheduling decision yet", hint="minimesh kubectl describe pod " + too_big)

        eventually(pending, timeout=30)
        _delete_and_wait(core, [too_big])

        # Exactly what is free: the scheduler must place it.
        core.create_namespaced_pod("default", _probe(just_fits, _size_to(SHAPES[shape], free), node, pin))

        def scheduled() -> None:
            pod = core.read_namespaced_pod(just_fits, "default")
            if not pod.spec.node_name:
                reason = _unschedulable_reason(core, pod)
                fail(f"pod {just_fits} (needs {free}m by your function, exactly what is free) scheduled",
                     f"Pending: {reason or 'not scheduled yet'}",
                     "if 'Insufficient cpu': your function counts less than Kubernetes does, for the pods on"
                     f" the node or for this one; {EXERCISE}")

        eventually(scheduled, timeout=30)
    finally:
        _delete_and_wait(core, [too_big, just_fits])
