"""Endpoints and EndpointSlices for Services with a selector (pkg/controller/endpoint and
pkg/controller/endpointslice).

Pure parts: `pod_endpoint_ports` (named targetPort resolution per pod), `build_subsets` (Endpoints with
ready / notReady addresses, repacked canonically), `desired_slice_endpoints` and `reconcile_slices`
(the slice reconciler: keep unchanged slices, fill partly used ones, create at most what is needed,
a placeholder when there is nothing). Services without a selector are never touched.

Both controllers react to a pod change at once (no batching), so a readiness change reaches the
EndpointSlices in one API round trip.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from minimesh.cluster.local.controllers import actions as act
from minimesh.cluster.local.controllers.objects import (
    Obj,
    controller_ref,
    creation_time,
    deepcopy,
    is_deleting,
    is_native_sidecar,
    is_pod_ready,
    is_pod_terminal,
    key_of,
    labels_of,
    name_of,
    namespace_of,
    new_controller_ref,
    parse_time,
    pod_ip,
    pod_ready_condition,
    split_key,
    uid_of,
)
from minimesh.cluster.local.controllers.runner import Context, Controller
from minimesh.k8s.aclient import ApiError, resource_path
from minimesh.k8s.selectors import selector_map_matches

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
ZONE_LABEL = "topology.kubernetes.io/zone"
MAX_ENDPOINTS_PER_SLICE = 100
RESERVED_SLICE_LABELS = {SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL}


def slice_path(namespace: str, name: str | None = None) -> str:
    return resource_path("discovery.k8s.io/v1", "endpointslices", namespace, name)


def endpoints_path(namespace: str, name: str | None = None) -> str:
    return resource_path("v1", "endpoints", namespace, name)


# ---- shared pure helpers -------------------------------------------------------------------------


def has_selector(svc: Mapping[str, Any]) -> bool:
    spec = svc.get("spec") or {}
    return bool(spec.get("selector")) and spec.get("type") != "ExternalName"


def selects(svc: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    return selector_map_matches((svc.get("spec") or {}).get("selector"), labels_of(pod))


def is_ip_set(svc: Mapping[str, Any]) -> bool:
    ip = (svc.get("spec") or {}).get("clusterIP", "")
    return bool(ip) and ip != "None"


def should_be_in_endpoints(pod: Mapping[str, Any], include_terminating: bool) -> bool:
    """endpointsliceutil.ShouldPodBeInEndpoints."""
    if is_pod_terminal(pod) or not pod_ip(pod):
        return False
    return include_terminating or not is_deleting(pod)


def find_port(pod: Mapping[str, Any], svc_port: Mapping[str, Any]) -> int | None:
    """podutil.FindPort: a numeric targetPort as is; a named one from the pod's containers (and native
    sidecars) with the same protocol."""
    target = svc_port.get("targetPort", svc_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    proto = svc_port.get("protocol") or "TCP"
    spec = pod.get("spec") or {}
    containers = [*(spec.get("containers") or []), *(c for c in spec.get("initContainers") or [] if is_native_sidecar(c))]
    for c in containers:
        for p in c.get("ports") or []:
            if p.get("name") == target and (p.get("protocol") or "TCP") == proto:
                return int(p["containerPort"])
    return None


def pod_endpoint_ports(svc: Mapping[str, Any], pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    """getEndpointPorts: one entry per service port the pod resolves (pointer fields: name even if "")."""
    spec = svc.get("spec") or {}
    out = []
    for sp in spec.get("ports") or []:
        num = find_port(pod, sp)
        if num is None:
            continue
        port: dict[str, Any] = {"name": sp.get("name", ""), "protocol": sp.get("protocol") or "TCP", "port": num}
        if sp.get("appProtocol"):
            port["appProtocol"] = sp["appProtocol"]
        out.append(port)
    return out


def should_set_hostname(pod: Mapping[str, Any], svc: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return bool(spec.get("hostname")) and spec.get("subdomain") == name_of(svc) and namespace_of(svc) == namespace_of(pod)


def target_ref(pod: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "Pod", "namespace": namespace_of(pod), "name": name_of(pod), "uid": uid_of(pod)}


def pod_trigger_time(pod: Mapping[str, Any]) -> datetime | None:
    """When the pod last changed in a way endpoints care about (its readiness, else its creation)."""
    cond = pod_ready_condition(pod)
    t = parse_time(cond.get("lastTransitionTime")) if cond else None
    return t or creation_time(pod)


def rfc3339nano(t: datetime) -> str:
    """Go's time.RFC3339Nano in UTC: fractional seconds without trailing zeros."""
    t = t.astimezone(UTC)
    frac = f"{t.microsecond:06d}".rstrip("0")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


# ---- Endpoints (core/v1) ---------------------------------------------------------------------------


def _addr_key(addr: Mapping[str, Any]) -> tuple[str, str]:
    return addr.get("ip", ""), (addr.get("targetRef") or {}).get("uid", "")


def _hash(obj: Any) -> str:
    return hashlib.md5(json.dumps(obj, sort_keys=True).encode(), usedforsecurity=False).hexdigest()


def repack_subsets(entries: list[tuple[dict[str, Any], bool, dict[str, Any] | None]]) -> list[dict[str, Any]]:
    """endpoints.RepackSubsets: group addresses that offer the same ports; ready wins over not ready."""
    addr_by_key: dict[tuple[str, str], dict[str, Any]] = {}
    port_to_addrs: dict[str, tuple[dict[str, Any] | None, dict[tuple[str, str], bool]]] = {}
    for addr, ready, port in entries:
        k = _addr_key(addr)
        addr_by_key.setdefault(k, addr)
        pk = _hash(port) if port is not None else "-"
        _, addrs = port_to_addrs.setdefault(pk, (port, {}))
        if not addrs.get(k, False):
            addrs[k] = ready
    groups: dict[str, tuple[dict[tuple[str, str], bool], list[dict[str, Any]]]] = {}
    for port, addrs in port_to_addrs.values():
        gk = _hash(sorted(([list(k), v] for k, v in addrs.items())))
        _, ports = groups.setdefault(gk, (addrs, []))
        if port is not None:
            ports.append(port)
    subsets = []
    for addrs, ports in groups.values():
        ready = sorted((addr_by_key[k] for k, r in addrs.items() if r), key=_addr_key)
        not_ready = sorted((addr_by_key[k] for k, r in addrs.items() if not r), key=_addr_key)
        subset: dict[str, Any] = {}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        if ports:
            subset["ports"] = sorted(ports, key=lambda p: (p.get("name", ""), p.get("port", 0), p.get("protocol", "")))
        subsets.append(subset)
    return sorted(subsets, key=_hash)


def build_subsets(svc: Mapping[str, Any], pods: list[Obj]) -> list[dict[str, Any]]:
    """The Endpoints controller's subsets for a service and the pods of its namespace."""
    spec = svc.get("spec") or {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    entries: list[tuple[dict[str, Any], bool, dict[str, Any] | None]] = []
    for pod in pods:
        if not selects(svc, pod) or not should_be_in_endpoints(pod, publish):
            continue
        addr: dict[str, Any] = {"ip": pod_ip(pod)}
        if should_set_hostname(pod, svc):
            addr["hostname"] = pod["spec"]["hostname"]
        addr["nodeName"] = (pod.get("spec") or {}).get("nodeName", "")
        addr["targetRef"] = target_ref(pod)
        ready = publish or is_pod_ready(pod)
        if not spec.get("ports"):
            if spec.get("clusterIP") == "None":
                entries.append((addr, ready, None))
            continue
        for sp in spec["ports"]:
            num = find_port(pod, sp)
            if num is None:
                continue
            port: dict[str, Any] = {"port": num, "protocol": sp.get("protocol") or "TCP"}
            if sp.get("name"):
                port = {"name": sp["name"], **port}
            if sp.get("appProtocol"):
                port["appProtocol"] = sp["appProtocol"]
            entries.append((addr, ready, port))
    return repack_subsets(entries)


def desired_endpoints_object(svc: Obj, current: Obj | None, subsets: list[dict[str, Any]],
                             trigger: datetime | None) -> Obj | None:
    """The Endpoints to write, or None if `current` is already right."""
    want_labels = dict(labels_of(svc))
    if not is_ip_set(svc):
        want_labels[HEADLESS_LABEL] = ""
    if current is not None:
        cur_labels = {k: v for k, v in labels_of(current).items() if k != HEADLESS_LABEL}
        svc_labels = {k: v for k, v in labels_of(svc).items() if k != HEADLESS_LABEL}
        same_subsets = _strip_rv(current.get("subsets") or []) == _strip_rv(subsets)
        if same_subsets and cur_labels == svc_labels and (HEADLESS_LABEL in labels_of(current)) == (not is_ip_set(svc)):
            return None
    out = deepcopy(current) if current is not None else {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name_of(svc), "namespace": namespace_of(svc)}}
    out.pop("status", None)
    out["metadata"]["labels"] = want_labels
    annotations = dict(out["metadata"].get("annotations") or {})
    if trigger is not None:
        annotations[TRIGGER_TIME_ANNOTATION] = rfc3339nano(trigger)
    else:
        annotations.pop(TRIGGER_TIME_ANNOTATION, None)
    if annotations:
        out["metadata"]["annotations"] = annotations
    else:
        out["metadata"].pop("annotations", None)
    if not out["metadata"]["labels"]:
        out["metadata"].pop("labels")
    if subsets:
        out["subsets"] = subsets
    else:
        out.pop("subsets", None)
    return out


def _strip_rv(subsets: list[dict[str, Any]]) -> Any:
    def clean(addr: dict[str, Any]) -> dict[str, Any]:
        a = dict(addr)
        if "targetRef" in a:
            a["targetRef"] = {k: v for k, v in a["targetRef"].items() if k != "resourceVersion"}
        return a

    return [{**s, **{k: [clean(a) for a in s.get(k) or []] for k in ("addresses", "notReadyAddresses") if k in s}}
            for s in subsets]


# ---- EndpointSlices (discovery.k8s.io/v1) ------------------------------------------------------------


def pod_to_slice_endpoint(pod: Obj, svc: Obj, node: Obj | None) -> dict[str, Any]:
    """podToEndpoint: serving = ready; ready is never true while terminating (unless publishNotReady)."""
    serving = is_pod_ready(pod)
    terminating = is_deleting(pod)
    ready = bool((svc.get("spec") or {}).get("publishNotReadyAddresses")) or (serving and not terminating)
    ep: dict[str, Any] = {"addresses": [pod_ip(pod)],
                          "conditions": {"ready": ready, "serving": serving, "terminating": terminating}}
    if should_set_hostname(pod, svc):
        ep["hostname"] = pod["spec"]["hostname"]
    ep["targetRef"] = target_ref(pod)
    node_name = (pod.get("spec") or {}).get("nodeName")
    if node_name:
        ep["nodeName"] = node_name
    zone = labels_of(node).get(ZONE_LABEL) if node is not None else None
    if zone:
        ep["zone"] = zone
    return ep


def ports_key(ports: list[dict[str, Any]] | None) -> str:
    return _hash(sorted(json.dumps(p, sort_keys=True) for p in ports or []))


def endpoint_key(ep: Mapping[str, Any]) -> str:
    """What identifies an endpoint across syncs: its addresses, hostname and pod."""
    ref = ep.get("targetRef") or {}
    return json.dumps([sorted(ep.get("addresses") or []), ep.get("hostname", ""), ref.get("namespace", ""),
                       ref.get("name", "")])


def desired_slice_endpoints(svc: Obj, pods: list[Obj], nodes: Mapping[str, Obj] | None
                            ) -> tuple[dict[str, tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]], bool]:
    """Endpoints grouped by their resolved port set: {ports_key: (ports, {endpoint_key: endpoint})}.

    The flag says some pod was skipped because its node is unknown (retry later)."""
    spec = svc.get("spec") or {}
    out: dict[str, tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]] = {}
    missing_node = False
    for pod in pods:
        if not selects(svc, pod) or not should_be_in_endpoints(pod, True):
            continue
        ports = [] if (not spec.get("ports") and spec.get("clusterIP") == "None") else pod_endpoint_ports(svc, pod)
        pk = ports_key(ports)
        _, eps = out.setdefault(pk, (ports, {}))
        node_name = (pod.get("spec") or {}).get("nodeName", "")
        node = nodes.get(node_name) if nodes is not None else None
        if nodes is not None and node is None and not spec.get("publishNotReadyAddresses"):
            missing_node = True
            continue
        ep = pod_to_slice_endpoint(pod, svc, node)
        eps[endpoint_key(ep)] = ep
    return out, missing_node


def slice_labels(svc: Obj, current: Mapping[str, str] | None = None) -> tuple[dict[str, str], bool]:
    """setEndpointSliceLabels: the service's labels plus the reserved ones; changed or not."""
    svc_labels = {k: v for k, v in labels_of(svc).items() if k not in RESERVED_SLICE_LABELS}
    labels = dict(svc_labels)
    if not is_ip_set(svc):
        labels[HEADLESS_LABEL] = ""
    labels[SERVICE_NAME_LABEL] = name_of(svc)
    labels[MANAGED_BY_LABEL] = MANAGED_BY
    changed = current is not None and dict(current) != labels
    return labels, changed


def new_slice(svc: Obj, ports: list[dict[str, Any]]) -> Obj:
    labels, _ = slice_labels(svc)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"generateName": f"{name_of(svc)}-", "namespace": namespace_of(svc), "labels": labels,
                     "ownerReferences": [new_controller_ref(svc, "v1", "Service")]},
        "addressType": "IPv4",
        "endpoints": [],
        "ports": list(ports),
    }


def owned_by(slc: Obj, svc: Obj) -> bool:
    ref = controller_ref(slc)
    return ref is not None and ref.get("uid") == uid_of(svc)


def _is_placeholder(slc: Obj, svc: Obj) -> bool:
    return (not slc.get("endpoints") and not slc.get("ports") and slc.get("addressType") == "IPv4"
            and labels_of(slc) == slice_labels(svc)[0] and owned_by(slc, svc))


def reconcile_slices(svc: Obj, existing: list[Obj], desired: Mapping[str, tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]],
                     max_per_slice: int = MAX_ENDPOINTS_PER_SLICE) -> tuple[list[Obj], list[Obj], list[Obj]]:
    """The EndpointSlice reconciler for one service: (to create, to update, to delete)."""
    to_create: list[Obj] = []
    to_update: list[Obj] = []
    to_delete: list[Obj] = []
    by_ports: dict[str, list[Obj]] = {}
    for slc in existing:
        if owned_by(slc, svc) and slc.get("addressType", "IPv4") == "IPv4":
            by_ports.setdefault(ports_key(slc.get("ports")), []).append(slc)
        else:
            to_delete.append(slc)
    for pk, (ports, wanted) in desired.items():
        c, u, d = _reconcile_port_group(svc, by_ports.get(pk, []), ports, dict(wanted), max_per_slice)
        to_create += c
        to_update += u
        to_delete += d
    for pk, slices in by_ports.items():
        if pk not in desired:
            to_delete += slices
    if len(existing) == len(to_delete) and not to_create:
        placeholder = new_slice(svc, [])
        if len(to_delete) == 1 and _is_placeholder(to_delete[0], svc):
            to_delete = []
        else:
            to_create.append(placeholder)
    # Reuse slices that would be deleted for the ones we would create.
    reusable = [s for s in to_delete if owned_by(s, svc)]
    while to_create and reusable:
        victim = reusable.pop(0)
        to_delete.remove(victim)
        fresh = to_create.pop(0)
        reused = deepcopy(victim)
        reused["metadata"]["labels"] = fresh["metadata"]["labels"]
        reused["endpoints"] = fresh["endpoints"]
        reused["ports"] = fresh["ports"]
        to_update.append(reused)
    return to_create, to_update, to_delete


def _reconcile_port_group(svc: Obj, existing: list[Obj], ports: list[dict[str, Any]], wanted: dict[str, dict[str, Any]],
                          max_per_slice: int) -> tuple[list[Obj], list[Obj], list[Obj]]:
    by_name: dict[str, Obj] = {}
    unchanged: list[str] = []
    update: list[str] = []
    delete: list[str] = []
    for slc in existing:
        name = name_of(slc)
        by_name[name] = slc
        keep: list[dict[str, Any]] = []
        changed = False
        for ep in slc.get("endpoints") or []:
            got = wanted.pop(endpoint_key(ep), None)
            if got is not None:
                keep.append(got)
                if got != ep:
                    changed = True
        labels, labels_changed = slice_labels(svc, labels_of(slc))
        if changed or len(keep) != len(slc.get("endpoints") or []):
            if not keep:
                delete.append(name)
            else:
                copy = deepcopy(slc)
                copy["endpoints"] = keep
                copy["metadata"]["labels"] = labels
                by_name[name] = copy
                update.append(name)
        elif labels_changed:
            copy = deepcopy(slc)
            copy["metadata"]["labels"] = labels
            by_name[name] = copy
            update.append(name)
        else:
            unchanged.append(name)
    remaining = [wanted[k] for k in sorted(wanted, key=lambda k: wanted[k]["addresses"])]
    # fill the slices we update anyway, fullest first
    for name in sorted(update, key=lambda n: -len(by_name[n]["endpoints"])):
        slc = by_name[name]
        while remaining and len(slc["endpoints"]) < max_per_slice:
            slc["endpoints"].append(remaining.pop(0))
    creates: list[Obj] = []
    while remaining:
        target: Obj | None = None
        if len(remaining) < max_per_slice and unchanged:
            # the unchanged slice that fits the rest best (closest to full)
            fits = [n for n in unchanged if len(by_name[n].get("endpoints") or []) + len(remaining) <= max_per_slice]
            if fits:
                name = max(fits, key=lambda n: len(by_name[n].get("endpoints") or []))
                target = deepcopy(by_name[name])
                target.setdefault("endpoints", [])
                by_name[name] = target
        if target is None:
            target = new_slice(svc, ports)
        while remaining and len(target["endpoints"]) < max_per_slice:
            target["endpoints"].append(remaining.pop(0))
        if name_of(target):
            unchanged.remove(name_of(target))
            update.append(name_of(target))
        else:
            creates.append(target)
    return creates, [by_name[n] for n in update], [by_name[n] for n in delete]


# ---- controllers ---------------------------------------------------------------------------------


class _ServicePodController(Controller):
    """Shared wiring: services and pods of a namespace; a pod change enqueues the services selecting it."""

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.svc_store = ctx.informers.store("v1", "services")
        self.pod_store = ctx.informers.store("v1", "pods")
        self.svc_store.add_handler(self._on_service)
        self.pod_store.add_handler(self._on_pod)
        self._triggers: dict[str, datetime] = {}

    def stores(self) -> list[Any]:
        return [self.svc_store, self.pod_store]

    async def started(self) -> None:
        for svc in self.svc_store.list():
            self.queue.add(key_of(svc))

    def resync_keys(self) -> list[str]:
        return [key_of(s) for s in self.svc_store.list()]

    def _trigger(self, key: str, t: datetime | None) -> None:
        if t is None:
            return
        cur = self._triggers.get(key)
        if cur is None or t < cur:
            self._triggers[key] = t

    def take_trigger(self, key: str) -> datetime | None:
        return self._triggers.pop(key, None)

    async def _on_service(self, typ: str, svc: Obj, old: Obj | None) -> None:
        if typ != "DELETED":
            self._trigger(key_of(svc), creation_time(svc))
        self.queue.add(key_of(svc))

    async def _on_pod(self, typ: str, pod: Obj, old: Obj | None) -> None:
        if typ == "MODIFIED" and old is not None and not _pod_changed_for_endpoints(old, pod):
            return
        for svc in self.svc_store.list(namespace_of(pod)):
            if has_selector(svc) and (selects(svc, pod) or (old is not None and selects(svc, old))):
                self._trigger(key_of(svc), pod_trigger_time(pod))
                self.queue.add(key_of(svc))


def _pod_changed_for_endpoints(old: Obj, new: Obj) -> bool:
    """Only changes that can move an endpoint (labels, IP, readiness, phase, deletion, node, ports)."""
    def view(p: Obj) -> Any:
        spec = p.get("spec") or {}
        return (labels_of(p), pod_ip(p), is_pod_ready(p), is_pod_terminal(p), is_deleting(p),
                spec.get("nodeName"), spec.get("hostname"), spec.get("subdomain"),
                [c.get("ports") for c in spec.get("containers") or []],
                [c.get("ports") for c in spec.get("initContainers") or []])
    return view(old) != view(new)


class EndpointsController(_ServicePodController):
    name = "endpoint-controller"

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.ep_store = ctx.informers.store("v1", "endpoints")
        self.ep_store.add_handler(self._on_endpoints)

    def stores(self) -> list[Any]:
        return [*super().stores(), self.ep_store]

    async def _on_endpoints(self, typ: str, ep: Obj, old: Obj | None) -> None:
        # Someone changed or deleted an Endpoints we manage: put it back.
        svc = self.svc_store.get(namespace_of(ep), name_of(ep))
        if svc is not None and has_selector(svc):
            self.queue.add(key_of(svc))

    async def sync(self, key: str) -> float | None:
        ns, name = split_key(key)
        svc = self.svc_store.get(ns, name)
        if svc is None:
            # The service is gone: so are its endpoints (only those we would have made).
            if self.ep_store.get(ns, name) is not None:
                try:
                    await self.kube.delete(endpoints_path(ns, name))
                except ApiError as e:
                    if e.code != 404:
                        raise
            self._triggers.pop(key, None)
            return None
        if not has_selector(svc):
            return None  # selectorless services keep the endpoints someone else made
        subsets = build_subsets(svc, self.pod_store.list(ns))
        current = self.ep_store.get(ns, name)
        want = desired_endpoints_object(svc, current, subsets, self.take_trigger(key))
        if want is None:
            return None
        if current is None:
            await self.kube.create(endpoints_path(ns), want)  # 409: not cached yet, retried with back-off
        else:
            await self.kube.replace(endpoints_path(ns, name), want)
        return None


class EndpointSliceController(_ServicePodController):
    name = "endpointslice-controller"

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.slice_store = ctx.informers.store("discovery.k8s.io/v1", "endpointslices")
        self.node_store = ctx.informers.store("v1", "nodes")
        self.slice_store.add_handler(self._on_slice)
        self.node_store.add_handler(self._on_node)

    def stores(self) -> list[Any]:
        return [*super().stores(), self.slice_store, self.node_store]

    async def _on_slice(self, typ: str, slc: Obj, old: Obj | None) -> None:
        if labels_of(slc).get(MANAGED_BY_LABEL) != MANAGED_BY:
            return
        svc_name = labels_of(slc).get(SERVICE_NAME_LABEL)
        if svc_name:
            self.queue.add(f"{namespace_of(slc)}/{svc_name}")

    async def _on_node(self, typ: str, node: Obj, old: Obj | None) -> None:
        if typ == "MODIFIED" and old is not None and labels_of(old).get(ZONE_LABEL) == labels_of(node).get(ZONE_LABEL):
            return
        for svc in self.svc_store.list():
            if has_selector(svc):
                self.queue.add(key_of(svc))

    def _slices_of(self, ns: str, name: str) -> list[Obj]:
        return [s for s in self.slice_store.list(ns)
                if labels_of(s).get(SERVICE_NAME_LABEL) == name and labels_of(s).get(MANAGED_BY_LABEL) == MANAGED_BY]

    async def sync(self, key: str) -> float | None:
        ns, name = split_key(key)
        svc = self.svc_store.get(ns, name)
        if svc is None or not has_selector(svc):
            self._triggers.pop(key, None)
            return None  # slices of deleted services go with their owner (garbage collector)
        nodes = {name_of(n): n for n in self.node_store.list("")}
        desired, missing_node = desired_slice_endpoints(svc, self.pod_store.list(ns), nodes)
        create, update, delete = reconcile_slices(svc, self._slices_of(ns, name), desired)
        trigger = self.take_trigger(key)
        stamp = rfc3339nano(trigger) if trigger is not None else None
        plan: list[act.Action] = []
        if not is_deleting(svc):
            for slc in create:
                if stamp:
                    slc["metadata"].setdefault("annotations", {})[TRIGGER_TIME_ANNOTATION] = stamp
                plan.append(act.create(slice_path(ns), slc))
        for slc in update:
            if stamp:
                slc["metadata"].setdefault("annotations", {})[TRIGGER_TIME_ANNOTATION] = stamp
            plan.append(act.replace(slice_path(ns, name_of(slc)), slc))
        for slc in delete:
            plan.append(act.delete(slice_path(ns, name_of(slc))))
        await act.execute(self.kube, plan)
        return 5.0 if missing_node else None
