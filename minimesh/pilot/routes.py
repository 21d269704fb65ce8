"""RDS: outbound route configurations, one per HTTP port, as Envoy-shaped dicts (Istio's layout).

Every HTTP service on port 9080 shares the listener `0.0.0.0_9080`, so the route configuration `9080`
tells them apart by the Host header: a virtual host per service whose domains are every name a caller
may use for it (`details`, `details.default`, ..., the ClusterIP), each also with `:9080`. Unknown hosts
reach `allow_any` (on to the original destination) or, with REGISTRY_ONLY, `block_all` (502).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from minimesh.pilot import virtualservices
from minimesh.pilot.model import Config, Service, ServicePort
from minimesh.xds.resources import PASSTHROUGH_CLUSTER, outbound_cluster_name, route_config_name


def service_domains(service: Service, port: int, proxy_namespace: str) -> list[str]:
    """The Host headers that mean `service`: the short name only from the same namespace, as in Istio
    (in another namespace `details` is some other service, or nothing)."""
    names = [service.hostname]
    if service.namespace == proxy_namespace:
        names.append(service.name)
    names += [f"{service.name}.{service.namespace}.svc", f"{service.name}.{service.namespace}"]
    if service.cluster_ip:
        names.append(service.cluster_ip)
    out: list[str] = []
    for n in names:
        out += [n, f"{n}:{port}"]
    return out


def virtual_host(service: Service, port: ServicePort, proxy_namespace: str,
                 virtual_services: tuple[Config, ...] = ()) -> dict[str, Any]:
    """The service's routes: its VirtualServices' http routes if it has any (see virtualservices.py),
    else one default route to its cluster."""
    vs_routes = [r for vs in virtualservices.for_service(virtual_services, service)
                 for r in virtualservices.http_routes(vs, service, port.port)]
    return {
        "name": f"{service.hostname}:{port.port}",
        "domains": service_domains(service, port.port, proxy_namespace),
        "routes": vs_routes or [{
            "name": "default",
            "match": {"prefix": "/"},
            # Istio disables Envoy's 15 s default: timeouts come from VirtualServices (stage 8).
            "route": {"cluster": outbound_cluster_name(port.port, service.hostname), "timeout": "0s"},
        }],
    }


def fallback_virtual_host(outbound_policy: str) -> dict[str, Any]:
    if outbound_policy == "REGISTRY_ONLY":
        return {"name": "block_all", "domains": ["*"],
                "routes": [{"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}}]}
    return {"name": "allow_any", "domains": ["*"],
            "routes": [{"name": "allow_any", "match": {"prefix": "/"},
                        "route": {"cluster": PASSTHROUGH_CLUSTER, "timeout": "0s"}}]}


def route_configuration(port: int, services: Iterable[tuple[Service, ServicePort]], proxy_namespace: str,
                        outbound_policy: str = "ALLOW_ANY", virtual_services: tuple[Config, ...] = ()) -> dict[str, Any]:
    """Route configuration `<port>`: the HTTP services on that port (given), then the fallback."""
    hosts = sorted((virtual_host(s, p, proxy_namespace, virtual_services) for s, p in services),
                   key=lambda v: v["name"])
    return {"name": route_config_name(port), "virtual_hosts": [*hosts, fallback_virtual_host(outbound_policy)],
            "validate_clusters": False}
