"""The push server's view of the mesh: small frozen records made from Kubernetes objects.

Frozen (hashable) on purpose: translated config is cached by the record it came from, so an unchanged
Service or EndpointSlice costs nothing on the next push.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from minimesh.xds.resources import DEFAULT_DOMAIN, service_hostname

Labels = tuple[tuple[str, str], ...]  # sorted (key, value) pairs: a hashable label map


def labels_of(mapping: Mapping[str, str] | None) -> Labels:
    return tuple(sorted((mapping or {}).items()))


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str  # "" for the single unnamed port of a service
    port: int
    target_port: int | str  # a number, or the name of a container port
    protocol: str = "TCP"  # the Kubernetes L4 protocol: TCP, UDP, SCTP
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    namespace: str
    cluster_ip: str | None  # None: headless (clusterIP: None) or not allocated
    ports: tuple[ServicePort, ...]
    selector: Labels = ()
    domain: str = DEFAULT_DOMAIN

    @property
    def hostname(self) -> str:
        """`details.default.svc.cluster.local`."""
        return service_hostname(self.name, self.namespace, self.domain)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    """One endpoint of an EndpointSlice: its addresses (usually one pod IP) and conditions."""

    addresses: tuple[str, ...]
    ready: bool | None = None  # None means ready (Kubernetes: "a nil value should be interpreted as true")
    terminating: bool = False
    pod: str | None = None  # targetRef name, when the endpoint is a pod


@dataclass(frozen=True, slots=True)
class SlicePort:
    name: str  # matches the Service port's name ("" for an unnamed port)
    port: int  # the port the endpoints listen on (the Service's targetPort, resolved)
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    name: str
    namespace: str
    service: str  # label kubernetes.io/service-name
    ports: tuple[SlicePort, ...]
    endpoints: tuple[SliceEndpoint, ...]
    address_type: str = "IPv4"


@dataclass(frozen=True, slots=True)
class ContainerPort:
    name: str
    port: int


@dataclass(frozen=True, slots=True)
class Pod:
    name: str
    namespace: str
    ip: str | None
    labels: Labels = ()
    service_account: str = "default"
    ports: tuple[ContainerPort, ...] = ()


@dataclass(frozen=True, slots=True)
class Sidecar:
    """networking.minimesh.io/v1 Sidecar: which hosts the selected proxies may reach (and so receive)."""

    name: str
    namespace: str
    egress_hosts: tuple[str, ...]  # "ns/dnsName" entries of every egress listener
    workload_selector: Labels | None = None  # None: the whole namespace
    outbound_policy: str = "ALLOW_ANY"  # outboundTrafficPolicy.mode: ALLOW_ANY | REGISTRY_ONLY


@dataclass(frozen=True, slots=True)
class Config:
    """Any other mesh custom resource (VirtualService, DestinationRule, Gateway, PeerAuthentication,
    AuthorizationPolicy): kept as its spec for the stages that translate it."""

    kind: str
    name: str
    namespace: str
    spec: Mapping[str, Any] = field(hash=False, compare=True)
    resource_version: str = ""

    def __hash__(self) -> int:  # specs are dicts; the resourceVersion identifies a revision
        return hash((self.kind, self.namespace, self.name, self.resource_version))


@dataclass(frozen=True, slots=True)
class Proxy:
    """A connected proxy, from its node id and metadata (see `minimesh.xds.node`)."""

    id: str
    type: str  # sidecar | router
    ip: str
    pod: str
    namespace: str
    labels: Labels = ()
    service_account: str = "default"
    workload: str = ""
    domain: str = DEFAULT_DOMAIN

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)
