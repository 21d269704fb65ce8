"""The proxy's bootstrap, as Istio's pilot-agent writes Envoy's (pure).

    node              id `sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local` and Istio's metadata
    admin             127.0.0.1:15000 (only the agent and `kubectl exec` reach it)
    dynamic_resources ADS to the static cluster `xds-grpc`: CDS and LDS (and through them EDS and RDS)
    static_resources  `xds-grpc` (the push server, STRICT_DNS on the discovery address) and Istio's
                      `prometheus_stats` listener on 0.0.0.0:15090 serving the admin's /stats/prometheus
    minimesh          access log to stdout (`kubectl logs -c minimesh-proxy`), drain time

Everything else (listeners 15001/15006, clusters, routes, endpoints) comes from the push server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from minimesh.agent.identity import AgentConfigError, PodIdentity

XDS_CLUSTER = "xds-grpc"
PROMETHEUS_CLUSTER = "prometheus_stats"
ADS_SOURCE = {"ads": {}, "resource_api_version": "V3"}
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


@dataclass(frozen=True)
class BootstrapOptions:
    discovery_address: str  # host:port of the push server
    node_type: str = "sidecar"  # or "router" (a standalone gateway, stage 8)
    domain: str = "cluster.local"
    admin_port: int = 15000
    prometheus_port: int = 15090
    access_log_path: str = "/dev/stdout"
    drain_time: float = 5.0  # how long the proxy lets requests in flight finish when it quits
    xds_connect_timeout: float = 1.0


def split_address(address: str, what: str = "--discovery-address") -> tuple[str, int]:
    """`host:port` / `[v6]:port` → (host, port), with an error naming the setting."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise AgentConfigError(f"{what} {address!r}: want host:port, e.g. minimeshd.mesh-system.svc:15010")
    return host, int(port)


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _static_cluster(name: str, host: str, port: int, *, dns: bool, timeout: float) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STRICT_DNS" if dns else "STATIC",
        "connect_timeout": f"{timeout:g}s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _address(host, port)}}]}]},
    }
    if dns:
        cluster["dns_refresh_rate"] = "30s"
    return cluster


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def prometheus_listener(port: int) -> dict[str, Any]:
    """Istio's `prometheus_stats` listener: GET :15090/stats/prometheus → the admin's Prometheus stats."""
    return {
        "name": PROMETHEUS_CLUSTER,
        "address": _address("0.0.0.0", port),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": HCM_TYPE,
                "stat_prefix": "stats",
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
                "route_config": {"name": "prometheus_stats", "virtual_hosts": [{
                    "name": "backend", "domains": ["*"],
                    "routes": [{"match": {"prefix": "/stats/prometheus"},
                                "route": {"cluster": PROMETHEUS_CLUSTER}}]}]},
            },
        }]}],
    }


def build_bootstrap(identity: PodIdentity, options: BootstrapOptions) -> dict[str, Any]:
    host, port = split_address(options.discovery_address)
    return {
        "node": identity.node(options.node_type, options.domain),
        "admin": {"address": _address("127.0.0.1", options.admin_port)},
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                           "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}]},
            "cds_config": ADS_SOURCE,
            "lds_config": ADS_SOURCE,
        },
        "static_resources": {
            "clusters": [
                _static_cluster(XDS_CLUSTER, host, port, dns=not _is_ip(host), timeout=options.xds_connect_timeout),
                _static_cluster(PROMETHEUS_CLUSTER, "127.0.0.1", options.admin_port, dns=False, timeout=0.25),
            ],
            "listeners": [prometheus_listener(options.prometheus_port)] if options.prometheus_port else [],
        },
        "minimesh": {"access_log_path": options.access_log_path, "drain_time": f"{options.drain_time:g}s"},
    }
