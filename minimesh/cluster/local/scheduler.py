"""The local cluster's scheduler (kube-scheduler's default profile, the filters that matter here).

A pod with no `spec.nodeName` and `schedulerName: default-scheduler` is bound to a node that passes, in
this order: NodeUnschedulable, TaintToleration (NoSchedule/NoExecute), NodeAffinity (nodeSelector and
required node affinity), NodePorts (hostPort conflicts), NodeResourcesFit (pod count, cpu, memory,
ephemeral-storage, extended resources). Resources use the real effective pod requests:

    max( sum(regular containers) + sum(native sidecars),
         max over init containers i of (i + native sidecars declared before i) ) + spec.overhead

(k8s.io/component-helpers/resource.PodRequests; a limit without a request counts as the request, as
the API server defaults it), compared with the node's allocatable minus the requests of the pods
already bound to it and not terminated. This module is the ground truth the stage-1 exercise is
graded against, so it is deliberately independent of the exercise code.

Unschedulable pods get `PodScheduled=False, reason Unschedulable` with the real message
(`0/1 nodes are available: 1 Insufficient cpu.`) and a `FailedScheduling` event; they are retried when
something changes (a pod goes away, a node changes) and at the latest after five minutes. A bound pod
gets a `Scheduled` event (`Successfully assigned NS/NAME to NODE`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubernetes.utils import parse_quantity

from minimesh.cluster.local.controllers.events import EventRecorder
from minimesh.cluster.local.controllers.informers import Informers
from minimesh.cluster.local.controllers.objects import (
    Obj,
    fmt_time,
    get_condition,
    is_deleting,
    is_native_sidecar,
    is_pod_terminal,
    key_of,
    labels_of,
    meta,
    name_of,
    namespace_of,
    split_key,
    uid_of,
    utcnow,
)
from minimesh.cluster.local.controllers.workqueue import ShutDown, WorkQueue
from minimesh.k8s.aclient import ApiError, resource_path

if TYPE_CHECKING:
    from minimesh.cluster.local.layout import ClusterLayout
    from minimesh.k8s.aclient import AsyncKube

log = logging.getLogger(__name__)

SCHEDULER_NAME = "default-scheduler"
DEFAULT_MAX_PODS = 110
INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 10.0
UNSCHEDULABLE_FLUSH = 300.0  # podMaxInUnschedulablePodsDuration
ASSUME_TTL = 30.0
BASIC_RESOURCES = ("cpu", "memory", "ephemeral-storage")

ResourceList = dict[str, int]


class QuantityError(ValueError):
    """A resource quantity that cannot be parsed; the message names the field."""


# ---- effective pod requests (pure) ----------------------------------------------------------------


def quantity(resource: str, value: Any, where: str = "quantity") -> int:
    """A quantity in canonical integer units: millicores for cpu, plain units (bytes) otherwise,
    rounded up like Quantity.MilliValue()/Value()."""
    try:
        q = parse_quantity(value)
    except (ValueError, TypeError) as e:
        raise QuantityError(f"{where}: {value!r} is not a valid quantity") from e
    return math.ceil(q * 1000) if resource == "cpu" else math.ceil(q)


def resource_list(values: Mapping[str, Any] | None, where: str) -> ResourceList:
    return {name: quantity(name, v, f"{where}.{name}") for name, v in (values or {}).items()}


def container_requests(container: Mapping[str, Any], where: str) -> ResourceList:
    """Requests of one container; a resource with only a limit requests its limit (API defaulting)."""
    res = container.get("resources") or {}
    return {**resource_list(res.get("limits"), f"{where}.resources.limits"),
            **resource_list(res.get("requests"), f"{where}.resources.requests")}


def _add(a: ResourceList, b: ResourceList) -> ResourceList:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {**a, **b}}


def _max(a: ResourceList, b: ResourceList) -> ResourceList:
    return {k: max(a.get(k, 0), b.get(k, 0)) for k in {**a, **b}}


def pod_requests(pod: Mapping[str, Any]) -> ResourceList:
    """resourcehelper.PodRequests for a pod (or a bare pod spec)."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), Mapping) else pod
    assert isinstance(spec, Mapping)
    reqs: ResourceList = {}
    for i, c in enumerate(spec.get("containers") or []):
        reqs = _add(reqs, container_requests(c, f"spec.containers[{i}]"))
    sidecars: ResourceList = {}
    init_max: ResourceList = {}
    for i, c in enumerate(spec.get("initContainers") or []):
        own = container_requests(c, f"spec.initContainers[{i}]")
        if is_native_sidecar(c):
            reqs = _add(reqs, own)  # runs alongside the app containers
            sidecars = _add(sidecars, own)
            need = sidecars  # while it starts, it and the sidecars before it run
        else:
            need = _add(own, sidecars)  # runs alone next to the sidecars started before it
        init_max = _max(init_max, need)
    reqs = _max(reqs, init_max)
    overhead = resource_list(spec.get("overhead"), "spec.overhead")
    return _add(reqs, overhead)


# ---- nodes (pure) ----------------------------------------------------------------------------------


def node_allocatable(node: Mapping[str, Any]) -> ResourceList:
    status = node.get("status") or {}
    values = status.get("allocatable") or status.get("capacity") or {}
    out = {}
    for name, v in values.items():
        try:
            out[name] = quantity(name, v, f"node.status.allocatable.{name}")
        except QuantityError:
            continue
    out.setdefault("pods", DEFAULT_MAX_PODS)
    return out


def host_ports(pod: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """(hostIP, protocol, hostPort) the pod wants on the node."""
    spec = pod.get("spec") or {}
    containers = [*(spec.get("containers") or []), *(c for c in spec.get("initContainers") or [] if is_native_sidecar(c))]
    out = []
    for c in containers:
        for p in c.get("ports") or []:
            if int(p.get("hostPort") or 0) > 0:
                out.append((p.get("hostIP") or "0.0.0.0", p.get("protocol") or "TCP", int(p["hostPort"])))
    return out


@dataclass
class NodeInfo:
    node: Obj
    allocatable: ResourceList
    requested: ResourceList = field(default_factory=dict)
    pods: int = 0
    ports: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return name_of(self.node)

    def add(self, requests: ResourceList, ports: Iterable[tuple[str, str, int]]) -> None:
        self.requested = _add(self.requested, requests)
        self.pods += 1
        self.ports.extend(ports)


def counts_on_node(pod: Mapping[str, Any]) -> bool:
    """Bound, and not terminated (the scheduler's informer ignores Succeeded/Failed pods)."""
    return bool((pod.get("spec") or {}).get("nodeName")) and not is_pod_terminal(pod)


def build_node_infos(nodes: Iterable[Obj], pods: Iterable[Obj],
                     assumed: Mapping[str, tuple[str, ResourceList, list[tuple[str, str, int]]]] = {},
                     requests_of: Callable[[Obj], ResourceList] = pod_requests) -> dict[str, NodeInfo]:
    infos = {name_of(n): NodeInfo(n, node_allocatable(n)) for n in nodes}
    seen: set[str] = set()
    for p in pods:
        if not counts_on_node(p):
            continue
        info = infos.get(p["spec"]["nodeName"])
        if info is None:
            continue
        seen.add(uid_of(p))
        try:
            info.add(requests_of(p), host_ports(p))
        except QuantityError:
            info.add({}, host_ports(p))
    for uid, (node_name, reqs, ports) in assumed.items():
        if uid not in seen and node_name in infos:
            infos[node_name].add(reqs, ports)
    return infos


# ---- filters (pure) --------------------------------------------------------------------------------


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """v1.Toleration.ToleratesTaint."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("key") and toleration["key"] != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return op == "Exists"


def node_taints(node: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The node's taints, plus `not-ready` when its Ready condition says so (TaintNodesByCondition)."""
    taints = list((node.get("spec") or {}).get("taints") or [])
    ready = get_condition(node.get("status"), "Ready")
    if ready is not None and ready.get("status") != "True" and \
            not any(t.get("key") == "node.kubernetes.io/not-ready" for t in taints):
        taints.append({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"})
    return taints


def filter_unschedulable(pod: Mapping[str, Any], node: Mapping[str, Any]) -> list[str]:
    if not (node.get("spec") or {}).get("unschedulable"):
        return []
    taint = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
    if any(tolerates(t, taint) for t in (pod.get("spec") or {}).get("tolerations") or []):
        return []
    return ["node(s) were unschedulable"]


def filter_taints(pod: Mapping[str, Any], node: Mapping[str, Any]) -> list[str]:
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    for taint in node_taints(node):
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(tolerates(t, taint) for t in tolerations):
            return [f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value', '')}}}"]
    return []


def _requirement_matches(req: Mapping[str, Any], value: str | None) -> bool:
    op = req.get("operator")
    values = req.get("values") or []
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt"):
        try:
            have, want = int(value or ""), int(values[0])
        except (ValueError, IndexError):
            return False
        return have > want if op == "Gt" else have < want
    return False


def node_selector_term_matches(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term matches nothing
    labels = labels_of(node)
    if not all(_requirement_matches(r, labels.get(r.get("key", ""))) for r in exprs):
        return False
    for r in fields:
        value = name_of(node) if r.get("key") == "metadata.name" else None
        if not _requirement_matches(r, value):
            return False
    return True


def filter_node_affinity(pod: Mapping[str, Any], node: Mapping[str, Any]) -> list[str]:
    spec = pod.get("spec") or {}
    labels = labels_of(node)
    ok = all(labels.get(k) == v for k, v in (spec.get("nodeSelector") or {}).items())
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if ok and required is not None:
        ok = any(node_selector_term_matches(t, node) for t in required.get("nodeSelectorTerms") or [])
    return [] if ok else ["node(s) didn't match Pod's node affinity/selector"]


def filter_node_ports(pod: Mapping[str, Any], info: NodeInfo) -> list[str]:
    for ip, proto, port in host_ports(pod):
        for uip, uproto, uport in info.ports:
            if proto == uproto and port == uport and (ip == uip or "0.0.0.0" in (ip, uip)):
                return ["node(s) didn't have free ports for the requested pod ports"]
    return []


def filter_resources(requests: ResourceList, info: NodeInfo) -> list[str]:
    """NodeResourcesFit.fitsRequest: every reason, in the real order."""
    reasons = []
    if info.pods + 1 > info.allocatable.get("pods", DEFAULT_MAX_PODS):
        reasons.append("Too many pods")
    if not any(v for v in requests.values()):
        return reasons
    for name in BASIC_RESOURCES:
        want = requests.get(name, 0)
        if want > 0 and want > info.allocatable.get(name, 0) - info.requested.get(name, 0):
            reasons.append(f"Insufficient {name}")
    for name in sorted(requests):
        if name in BASIC_RESOURCES or name == "pods" or requests[name] == 0:
            continue
        if requests[name] > info.allocatable.get(name, 0) - info.requested.get(name, 0):
            reasons.append(f"Insufficient {name}")
    return reasons


def node_reasons(pod: Mapping[str, Any], requests: ResourceList, info: NodeInfo) -> list[str]:
    """Run the filters in the default profile's order; stop at the first that fails."""
    for reasons in (filter_unschedulable(pod, info.node), filter_taints(pod, info.node),
                    filter_node_affinity(pod, info.node), filter_node_ports(pod, info)):
        if reasons:
            return reasons
    return filter_resources(requests, info)


def fit_error(num_nodes: int, reasons_by_node: Mapping[str, list[str]]) -> str:
    """FitError.Error(): `0/N nodes are available: <count> <reason>, ... .` (sorted)."""
    msg = f"0/{num_nodes} nodes are available"
    histogram: dict[str, int] = {}
    for reasons in reasons_by_node.values():
        for r in reasons:
            histogram[r] = histogram.get(r, 0) + 1
    parts = sorted(f"{n} {r}" for r, n in histogram.items())
    return f"{msg}: {', '.join(parts)}." if parts else f"{msg}."


def score(requests: ResourceList, info: NodeInfo) -> float:
    """LeastAllocated over cpu and memory (the default scoring strategy)."""
    total = 0.0
    for name in ("cpu", "memory"):
        cap = info.allocatable.get(name, 0)
        if cap <= 0:
            continue
        used = info.requested.get(name, 0) + requests.get(name, 0)
        total += max(0.0, (cap - used) * 100.0 / cap)
    return total / 2


@dataclass
class Decision:
    node: str | None
    message: str = ""


def schedule_one(pod: Mapping[str, Any], infos: Mapping[str, NodeInfo]) -> Decision:
    """Pick a node for the pod, or explain why none fits."""
    if not infos:
        return Decision(None, "no nodes available to schedule pods")
    try:
        requests = pod_requests(pod)
    except QuantityError as e:
        return Decision(None, f"invalid resource requests: {e}")
    feasible = []
    reasons_by_node: dict[str, list[str]] = {}
    for name in sorted(infos):
        reasons = node_reasons(pod, requests, infos[name])
        if reasons:
            reasons_by_node[name] = reasons
        else:
            feasible.append(infos[name])
    if not feasible:
        return Decision(None, fit_error(len(infos), reasons_by_node))
    best = max(feasible, key=lambda i: (score(requests, i), [-ord(ch) for ch in i.name]))
    return Decision(best.name)


def is_ours(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return ((spec.get("schedulerName") or SCHEDULER_NAME) == SCHEDULER_NAME and not spec.get("nodeName")
            and not is_deleting(pod) and not is_pod_terminal(pod))


def condition_update(pod: Mapping[str, Any], reason: str, message: str, now: str) -> list[dict[str, Any]] | None:
    """The pod's conditions with PodScheduled=False (reason, message), or None if already so."""
    conds = list((pod.get("status") or {}).get("conditions") or [])
    current = next((c for c in conds if c.get("type") == "PodScheduled"), None)
    if current is not None and current.get("status") == "False" and current.get("reason") == reason \
            and current.get("message") == message:
        return None
    new = {"type": "PodScheduled", "status": "False", "lastProbeTime": None,
           "lastTransitionTime": current.get("lastTransitionTime") if current is not None
           and current.get("status") == "False" else now,
           "reason": reason, "message": message}
    return [new if c.get("type") == "PodScheduled" else c for c in conds] if current is not None else [*conds, new]


# ---- the scheduler (I/O) -----------------------------------------------------------------------------


class Scheduler:
    def __init__(self, kube: AsyncKube, informers: Informers | None = None):
        self.kube = kube
        self.informers = informers or Informers(kube)
        self._own_informers = informers is None
        self.pods = self.informers.store("v1", "pods")
        self.nodes = self.informers.store("v1", "nodes")
        self.pods.add_handler(self._on_pod)
        self.nodes.add_handler(self._on_node)
        self.queue = WorkQueue("scheduler", base_delay=INITIAL_BACKOFF, max_delay=MAX_BACKOFF)
        self.recorder = EventRecorder(kube, SCHEDULER_NAME, instance=f"{SCHEDULER_NAME}-{socket.gethostname()}")
        self.unschedulable: set[str] = set()
        self.attempts: dict[str, int] = {}  # failed attempts per pod, for the retry back-off
        self.assumed: dict[str, tuple[str, ResourceList, list[tuple[str, str, int]]]] = {}
        self._assumed_at: dict[str, float] = {}
        self._requests: dict[str, tuple[str, ResourceList]] = {}  # uid → (resourceVersion, requests)
        self._binds: set[asyncio.Task[None]] = set()

    # ---- events from the informers -------------------------------------------------------------------
    async def _on_pod(self, typ: str, pod: Obj, old: Obj | None) -> None:
        key = key_of(pod)
        if typ == "DELETED":
            self._requests.pop(uid_of(pod), None)
        if typ == "DELETED" or (pod.get("spec") or {}).get("nodeName"):
            self._forget_assumed(uid_of(pod))
            self.unschedulable.discard(key)
            self.attempts.pop(key, None)
            freed = typ == "DELETED" or (is_pod_terminal(pod) and (old is None or not is_pod_terminal(old)))
            if freed and self.unschedulable:
                self._retry_unschedulable()  # resources were freed
            return
        if is_ours(pod):
            if key in self.unschedulable and old is not None and _scheduling_spec(old) == _scheduling_spec(pod):
                return  # only its status changed (our own condition update): stay parked
            self.unschedulable.discard(key)
            self.queue.add(key)

    async def _on_node(self, typ: str, node: Obj, old: Obj | None) -> None:
        if typ == "MODIFIED" and old is not None and _node_view(old) == _node_view(node):
            return
        self._retry_unschedulable()

    def backoff(self, key: str) -> float:
        """1 s after the first failed attempt, doubling up to 10 s."""
        n = self.attempts.get(key, 0)
        return min(INITIAL_BACKOFF * 2 ** (n - 1), MAX_BACKOFF) if n else 0.0

    def _retry_unschedulable(self) -> None:
        for key in list(self.unschedulable):
            self.unschedulable.discard(key)
            self.queue.add_after(key, self.backoff(key))

    def _forget_assumed(self, uid: str) -> None:
        self.assumed.pop(uid, None)
        self._assumed_at.pop(uid, None)

    def _expire_assumed(self) -> None:
        now = time.monotonic()
        for uid, t in list(self._assumed_at.items()):
            if now - t > ASSUME_TTL:
                self._forget_assumed(uid)

    # ---- loop ----------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        if self._own_informers:
            self.informers.start()
        await self.informers.wait_synced(self.pods, self.nodes)
        for pod in self.pods.list():
            if is_ours(pod):
                self.queue.add(key_of(pod))
        worker = asyncio.create_task(self._worker(), name="scheduler-worker")
        try:
            await stop.wait()
        finally:
            self.queue.shutdown()
            worker.cancel()
            for t in self._binds:
                t.cancel()
            await asyncio.gather(worker, *self._binds, return_exceptions=True)
            if self._own_informers:
                await self.informers.stop()

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                await self.schedule(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = self.queue.add_rate_limited(key)
                log.exception("scheduling %s failed; retrying in %.1fs", key, delay)
            finally:
                self.queue.done(key)

    async def schedule(self, key: str) -> None:
        ns, name = split_key(key)
        pod = self.pods.get(ns, name)
        if pod is None or not is_ours(pod):
            return
        now = fmt_time(utcnow())
        if (pod.get("spec") or {}).get("schedulingGates"):
            await self._set_unschedulable(pod, "SchedulingGated",
                                          "Scheduling is blocked due to non-empty scheduling gates", now, event=False)
            return
        if uid_of(pod) in self.assumed:
            return  # being bound right now
        self._expire_assumed()
        infos = build_node_infos(self.nodes.list(""), self.pods.list(), self.assumed, self.requests_of)
        decision = schedule_one(pod, infos)
        if decision.node is None:
            self.attempts[key] = self.attempts.get(key, 0) + 1
            self.unschedulable.add(key)  # waits for a cluster change, or the periodic flush
            self.queue.add_after(key, UNSCHEDULABLE_FLUSH)
            await self._set_unschedulable(pod, "Unschedulable", decision.message, now, event=True)
            return
        # Assume the pod on its node at once and bind in the background, like the real scheduler's
        # binding cycle: the next pod is scheduled meanwhile, counting this one.
        self.assumed[uid_of(pod)] = (decision.node, self.requests_of(pod), host_ports(pod))
        self._assumed_at[uid_of(pod)] = time.monotonic()
        task = asyncio.create_task(self._bind(pod, decision.node))
        self._binds.add(task)
        task.add_done_callback(self._binds.discard)

    def requests_of(self, pod: Obj) -> ResourceList:
        """pod_requests, cached per pod version (every scheduling decision sums up every bound pod)."""
        uid, rv = uid_of(pod), meta(pod).get("resourceVersion", "")
        hit = self._requests.get(uid)
        if hit is not None and hit[0] == rv:
            return hit[1]
        reqs = pod_requests(pod)
        self._requests[uid] = (rv, reqs)
        return reqs

    async def _set_unschedulable(self, pod: Obj, reason: str, message: str, now: str, *, event: bool) -> None:
        if event:
            self.recorder.event(pod, "v1", "Pod", "Warning", "FailedScheduling", message, action="Scheduling")
        conditions = condition_update(pod, reason, message, now)
        if conditions is None:
            return
        try:
            await self.kube.patch(resource_path("v1", "pods", namespace_of(pod), name_of(pod), "status"),
                                  {"status": {"conditions": conditions}})
        except ApiError as e:
            if e.code not in (404, 409):
                raise

    async def _bind(self, pod: Obj, node: str) -> None:
        ns, name = namespace_of(pod), name_of(pod)
        binding = {"apiVersion": "v1", "kind": "Binding",
                   "metadata": {"name": name, "namespace": ns, "uid": uid_of(pod)},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        try:
            await self.kube.create(resource_path("v1", "pods", ns, name, "binding"), binding)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._forget_assumed(uid_of(pod))
            if isinstance(e, ApiError) and e.code in (404, 409):
                return  # gone, or bound by someone else meanwhile
            delay = self.queue.add_rate_limited(key_of(pod))
            log.warning("binding %s/%s to %s failed (%s); retrying in %.1fs", ns, name, node, e, delay)
            return
        self.attempts.pop(key_of(pod), None)
        self.recorder.event(pod, "v1", "Pod", "Normal", "Scheduled", f"Successfully assigned {ns}/{name} to {node}",
                            action="Binding")


def _scheduling_spec(pod: Obj) -> Any:
    spec = pod.get("spec") or {}
    return (meta(pod).get("generation"), spec.get("nodeSelector"), spec.get("affinity"), spec.get("tolerations"),
            spec.get("schedulingGates"),
            [(c.get("resources"), c.get("ports")) for c in [*(spec.get("containers") or []),
                                                            *(spec.get("initContainers") or [])]])


def _node_view(node: Obj) -> Any:
    status = node.get("status") or {}
    ready = get_condition(status, "Ready")
    return (labels_of(node), (node.get("spec") or {}).get("taints"), (node.get("spec") or {}).get("unschedulable"),
            status.get("allocatable"), status.get("capacity"), ready.get("status") if ready else None)


async def run_scheduler(kube: AsyncKube, layout: ClusterLayout, stop: asyncio.Event) -> None:
    """Entry point for the control-plane process: schedule pods until `stop` is set."""
    await Scheduler(kube).run(stop)
