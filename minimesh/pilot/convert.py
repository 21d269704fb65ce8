"""Kubernetes objects (JSON dicts as the API serves them) and xDS nodes → the model's records.

Errors name the object and the field (`Service default/details: spec.ports[0].port: ...`), so one bad
object is reported and skipped instead of breaking every proxy's config.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from minimesh.pilot.model import (
    Config,
    ContainerPort,
    EndpointSlice,
    Pod,
    Proxy,
    Service,
    ServicePort,
    Sidecar,
    SliceEndpoint,
    SlicePort,
    labels_of,
)
from minimesh.pilot.sidecar import parse_egress_host
from minimesh.xds import node as xnode

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class ConvertError(ValueError):
    """An object the push server cannot use; the message says which and where."""


def _meta(obj: Mapping[str, Any], kind: str) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    name, ns = meta.get("name"), meta.get("namespace") or ""
    if not isinstance(name, str) or not name:
        raise ConvertError(f"{kind} without metadata.name")
    return name, ns, f"{kind} {ns}/{name}" if ns else f"{kind} {name}"


def _port_number(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConvertError(f"{where}: {value!r} is not a port number (1-65535)")
    return value


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConvertError(f"{where}: want a map of strings, got {value!r}")
    return dict(value)


def service(obj: Mapping[str, Any], domain: str = "cluster.local") -> Service:
    name, ns, where = _meta(obj, "Service")
    spec = obj.get("spec") or {}
    ports = []
    for i, p in enumerate(spec.get("ports") or []):
        at = f"{where}: spec.ports[{i}]"
        number = _port_number(p.get("port"), f"{at}.port")
        target = p.get("targetPort", number)
        if isinstance(target, str) and target.isdigit():
            target = int(target)
        if isinstance(target, int):
            _port_number(target, f"{at}.targetPort")
        elif not isinstance(target, str) or not target:
            raise ConvertError(f"{at}.targetPort: want a port number or a container port name, got {target!r}")
        ports.append(ServicePort(p.get("name") or "", number, target, p.get("protocol") or "TCP", p.get("appProtocol")))
    ip = spec.get("clusterIP")
    if ip in (None, "", "None"):
        ip = None
    else:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ConvertError(f"{where}: spec.clusterIP {ip!r} is not an IP address") from None
    return Service(name, ns, ip, tuple(ports), labels_of(_str_map(spec.get("selector"), f"{where}: spec.selector")), domain)


def endpoint_slice(obj: Mapping[str, Any]) -> EndpointSlice:
    name, ns, where = _meta(obj, "EndpointSlice")
    labels = _str_map((obj.get("metadata") or {}).get("labels"), f"{where}: metadata.labels")
    ports = []
    for i, p in enumerate(obj.get("ports") or []):
        if p.get("port") is None:
            continue  # "all ports" slices (no port) are not routable by port
        ports.append(SlicePort(p.get("name") or "", _port_number(p.get("port"), f"{where}: ports[{i}].port"),
                               p.get("protocol") or "TCP"))
    endpoints = []
    for i, e in enumerate(obj.get("endpoints") or []):
        addresses = e.get("addresses") or []
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise ConvertError(f"{where}: endpoints[{i}].addresses: want a list of IP addresses, got {addresses!r}")
        cond = e.get("conditions") or {}
        ref = e.get("targetRef") or {}
        endpoints.append(SliceEndpoint(
            tuple(addresses), cond.get("ready"), bool(cond.get("terminating")),
            ref.get("name") if ref.get("kind") == "Pod" else None,
        ))
    return EndpointSlice(name, ns, labels.get(SERVICE_NAME_LABEL, ""), tuple(ports), tuple(endpoints),
                         obj.get("addressType") or "IPv4")


def pod(obj: Mapping[str, Any]) -> Pod:
    name, ns, where = _meta(obj, "Pod")
    spec = obj.get("spec") or {}
    ports = []
    for c in (spec.get("containers") or []):
        for p in c.get("ports") or []:
            if p.get("containerPort") is not None:
                ports.append(ContainerPort(p.get("name") or "", _port_number(p["containerPort"], f"{where}: containerPort")))
    return Pod(name, ns, (obj.get("status") or {}).get("podIP") or None,
               labels_of(_str_map((obj.get("metadata") or {}).get("labels"), f"{where}: metadata.labels")),
               spec.get("serviceAccountName") or "default", tuple(ports))


def sidecar(obj: Mapping[str, Any]) -> Sidecar:
    name, ns, where = _meta(obj, "Sidecar")
    spec = obj.get("spec") or {}
    hosts: list[str] = []
    for i, listener in enumerate(spec.get("egress") or []):
        entries = listener.get("hosts")
        if not isinstance(entries, list) or not entries:
            raise ConvertError(f"{where}: spec.egress[{i}].hosts: want a non-empty list of 'namespace/dnsName'")
        for j, h in enumerate(entries):
            try:
                parse_egress_host(h)
            except ValueError as e:
                raise ConvertError(f"{where}: spec.egress[{i}].hosts[{j}]: {e}") from None
            if h not in hosts:
                hosts.append(h)
    selector = spec.get("workloadSelector")
    labels = None
    if selector is not None:
        labels = labels_of(_str_map(selector.get("labels"), f"{where}: spec.workloadSelector.labels"))
    mode = ((spec.get("outboundTrafficPolicy") or {}).get("mode")) or "ALLOW_ANY"
    if mode not in ("ALLOW_ANY", "REGISTRY_ONLY"):
        raise ConvertError(f"{where}: spec.outboundTrafficPolicy.mode {mode!r}: want ALLOW_ANY or REGISTRY_ONLY")
    # No egress section at all means "everything", as in Istio.
    return Sidecar(name, ns, tuple(hosts) if spec.get("egress") else ("*/*",), labels, mode)


def config(kind: str, obj: Mapping[str, Any]) -> Config:
    name, ns, _ = _meta(obj, kind)
    return Config(kind, name, ns, obj.get("spec") or {}, (obj.get("metadata") or {}).get("resourceVersion") or "")


def proxy(node: base_pb2.Node) -> Proxy:
    """The proxy behind a DiscoveryRequest's node: identity from the id, labels etc. from metadata."""
    node_id = xnode.parse_node_id(node.id)
    meta = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
    labels = meta.get(xnode.META_LABELS) or {}
    if not isinstance(labels, dict):
        raise ConvertError(f"node {node.id!r}: metadata {xnode.META_LABELS} must be a map, got {labels!r}")
    namespace = meta.get(xnode.META_NAMESPACE) or node_id.namespace
    if namespace != node_id.namespace:
        raise ConvertError(f"node {node.id!r}: metadata NAMESPACE {namespace!r} contradicts the id's {node_id.namespace!r}")
    return Proxy(
        id=node.id,
        type=node_id.type,
        ip=node_id.ip,
        pod=node_id.pod,
        namespace=node_id.namespace,
        labels=labels_of({str(k): str(v) for k, v in labels.items()}),
        service_account=str(meta.get(xnode.META_SERVICE_ACCOUNT) or "default"),
        workload=str(meta.get(xnode.META_WORKLOAD_NAME) or node_id.pod),
        domain=node_id.domain,
    )
