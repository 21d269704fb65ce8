"""PushContext: an immutable snapshot of the mesh that one push translates (Istio's PushContext).

Watch events change the store (`store.py`) at any time; a push works on a snapshot, so every proxy of
one push sees the same mesh and the same version. Derived data (a proxy's Sidecar scope, the index of
cluster names) is computed once per snapshot and shared by every proxy that needs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from minimesh.pilot import sidecar as sidecars
from minimesh.pilot.model import Config, EndpointSlice, Pod, Proxy, Service, ServicePort, Sidecar
from minimesh.pilot.protocol import Protocol, detect_protocol
from minimesh.xds.resources import outbound_cluster_name


@dataclass(frozen=True)
class Scope:
    """What a proxy may see: the Sidecar that applies (None: no Sidecar, everything) and the services."""

    namespace: str
    sidecar: Sidecar | None
    services: tuple[Service, ...]
    keys: frozenset[str] = frozenset()  # the services' keys (ns/name), to test membership fast

    @property
    def outbound_policy(self) -> str:
        return self.sidecar.outbound_policy if self.sidecar else "ALLOW_ANY"

    @property
    def key(self) -> tuple[str, str | None]:
        """Proxies with equal keys get equal outbound config."""
        return self.namespace, f"{self.sidecar.namespace}/{self.sidecar.name}" if self.sidecar else None


@dataclass(frozen=True)
class PushContext:
    version: str
    services: tuple[Service, ...] = ()  # sorted by hostname
    slices: Mapping[str, tuple[EndpointSlice, ...]] = field(default_factory=dict)  # by service key ns/name
    pods: Mapping[tuple[str, str], Pod] = field(default_factory=dict)  # (namespace, name)
    namespaces: frozenset[str] = frozenset()
    sidecars: tuple[Sidecar, ...] = ()
    configs: Mapping[str, tuple[Config, ...]] = field(default_factory=dict)  # by kind
    _memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    def service_slices(self, service: Service) -> tuple[EndpointSlice, ...]:
        return self.slices.get(service.key, ())

    def pod(self, proxy: Proxy) -> Pod | None:
        return self.pods.get((proxy.namespace, proxy.pod))

    def scope(self, proxy: Proxy) -> Scope:
        by_labels = ("scope-of", proxy.namespace, proxy.labels)  # the Sidecar depends on nothing else
        found = self._memo.get(by_labels)
        if found is None:
            sc = sidecars.select_sidecar(self.sidecars, proxy)
            key = ("scope", proxy.namespace, sc)  # proxies of many workloads share one Sidecar's scope
            found = self._memo.get(key)
            if found is None:
                visible = tuple(sidecars.visible_services(self.services, sc, proxy.namespace))
                found = self._memo[key] = Scope(proxy.namespace, sc, visible, frozenset(s.key for s in visible))
            self._memo[by_labels] = found
        return found  # type: ignore[no-any-return]

    def cluster_index(self) -> dict[str, tuple[Service, ServicePort]]:
        """Outbound cluster name → (service, port), for answering EDS requests by name."""
        found = self._memo.get("clusters")
        if found is None:
            found = self._memo["clusters"] = {
                outbound_cluster_name(p.port, s.hostname): (s, p)
                for s in self.services for p in s.ports if detect_protocol(p) is not Protocol.UDP
            }
        return found  # type: ignore[no-any-return]

    def services_in(self, namespace: str) -> tuple[Service, ...]:
        found = self._memo.get(("ns", namespace))
        if found is None:
            found = self._memo[("ns", namespace)] = tuple(s for s in self.services if s.namespace == namespace)
        return found  # type: ignore[no-any-return]

    def service(self, hostname: str) -> Service | None:
        found = self._memo.get("by_host")
        if found is None:
            found = self._memo["by_host"] = {s.hostname: s for s in self.services}
        return found.get(hostname)  # type: ignore[no-any-return]
