"""Who a proxy is: Istio's node id and node metadata (pure).

The injector writes these into the proxy's bootstrap, the proxy sends them in its first
DiscoveryRequest, and the push server reads them to decide which config the proxy gets.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NODE_TYPES = ("sidecar", "router")  # router: a standalone gateway proxy (stage 8)

# Istio's metadata keys (`pilot/pkg/model/context.go` NodeMetadata).
META_NAMESPACE = "NAMESPACE"
META_LABELS = "LABELS"
META_SERVICE_ACCOUNT = "SERVICE_ACCOUNT"
META_WORKLOAD_NAME = "WORKLOAD_NAME"
META_INSTANCE_IPS = "INSTANCE_IPS"
META_NAME = "NAME"


class NodeIdError(ValueError):
    """A node id that is not `type~ip~pod.namespace~namespace.svc.domain`."""


@dataclass(frozen=True)
class NodeId:
    type: str
    ip: str
    pod: str
    namespace: str
    domain: str

    def __str__(self) -> str:
        return f"{self.type}~{self.ip}~{self.pod}.{self.namespace}~{self.namespace}.svc.{self.domain}"


def sidecar_node_id(ip: str, pod: str, namespace: str, domain: str = "cluster.local") -> str:
    """`sidecar~10.244.0.5~details-v1-abc.default~default.svc.cluster.local`."""
    return str(NodeId("sidecar", ip, pod, namespace, domain))


def parse_node_id(node_id: str) -> NodeId:
    parts = node_id.split("~")
    if len(parts) != 4:
        raise NodeIdError(
            f"node id {node_id!r}: want 4 parts separated by '~' (type~ip~pod.namespace~namespace.svc.domain),"
            f" got {len(parts)}"
        )
    kind, ip, pod_ns, dns = parts
    if kind not in NODE_TYPES:
        raise NodeIdError(f"node id {node_id!r}: type {kind!r} is not one of {', '.join(NODE_TYPES)}")
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise NodeIdError(f"node id {node_id!r}: {ip!r} is not an IP address") from None
    pod, dot, namespace = pod_ns.rpartition(".")
    if not dot or not pod or not namespace:
        raise NodeIdError(f"node id {node_id!r}: third part {pod_ns!r} is not pod.namespace")
    prefix = f"{namespace}.svc."
    if not dns.startswith(prefix) or len(dns) == len(prefix):
        raise NodeIdError(f"node id {node_id!r}: fourth part {dns!r} is not {namespace}.svc.<domain>")
    return NodeId(kind, ip, pod, namespace, dns[len(prefix):])


def node_dict(
    ip: str,
    pod: str,
    namespace: str,
    *,
    labels: Mapping[str, str] | None = None,
    service_account: str = "default",
    workload: str | None = None,
    domain: str = "cluster.local",
) -> dict[str, Any]:
    """The Envoy `node` of a sidecar (bootstrap `node:` and the first DiscoveryRequest's `node`)."""
    workload = workload or pod
    return {
        "id": sidecar_node_id(ip, pod, namespace, domain),
        "cluster": f"{workload}.{namespace}",
        "metadata": {
            META_NAME: pod,
            META_NAMESPACE: namespace,
            META_LABELS: dict(labels or {}),
            META_SERVICE_ACCOUNT: service_account,
            META_WORKLOAD_NAME: workload,
            META_INSTANCE_IPS: ip,
        },
    }
