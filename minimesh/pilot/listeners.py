"""LDS: the listeners of a sidecar, as Envoy-shaped dicts (Istio's layout).

- `virtualOutbound` (0.0.0.0:15001): where iptables sends every outgoing connection. It binds, reads
  the original destination and hands the connection to the listener for that destination:
  `0.0.0.0_<port>` for an HTTP port (routes then pick the service by Host header), `<clusterIP>_<port>`
  for a TCP port (nothing to route by but the address). Unknown destinations fall through to its own
  filter chain: PassthroughCluster (ALLOW_ANY) or BlackHoleCluster (REGISTRY_ONLY).
- `virtualInbound` (0.0.0.0:15006): where iptables sends every incoming connection; one filter chain
  per port of the pod that a Service declares, the rest passes through.
- The per-port listeners do not bind (`bind_to_port: false`): only the two virtual ones own sockets.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from minimesh.pilot.clusters import ADS_CONFIG_SOURCE
from minimesh.pilot.model import Service, ServicePort
from minimesh.pilot.protocol import Protocol
from minimesh.xds.resources import (
    BLACKHOLE_CLUSTER,
    HCM_TYPE,
    INBOUND_PASSTHROUGH_CLUSTER,
    ORIGINAL_DST_TYPE,
    PASSTHROUGH_CLUSTER,
    ROUTER_TYPE,
    TCP_PROXY_TYPE,
    TLS_INSPECTOR_TYPE,
    VIRTUAL_INBOUND,
    VIRTUAL_INBOUND_PORT,
    VIRTUAL_OUTBOUND,
    VIRTUAL_OUTBOUND_PORT,
    inbound_cluster_name,
    listener_name,
    outbound_cluster_name,
    route_config_name,
)

HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
ROUTER_FILTER: dict[str, Any] = {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}


def socket_address(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def tcp_proxy(cluster: str, stat_prefix: str | None = None) -> dict[str, Any]:
    return {"name": TCP_PROXY, "typed_config": {"@type": TCP_PROXY_TYPE, "stat_prefix": stat_prefix or cluster,
                                                "cluster": cluster}}


def http_connection_manager(stat_prefix: str, *, rds: str | None = None,
                            route_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """HCM with either RDS (`rds`: the route configuration's name) or an inline `route_config`."""
    config: dict[str, Any] = {"@type": HCM_TYPE, "stat_prefix": stat_prefix}
    if rds is not None:
        config["rds"] = {"config_source": ADS_CONFIG_SOURCE, "route_config_name": rds}
    else:
        config["route_config"] = route_config
    config["http_filters"] = [ROUTER_FILTER]
    return {"name": HCM, "typed_config": config}


def virtual_outbound(outbound_policy: str = "ALLOW_ANY") -> dict[str, Any]:
    fallback = BLACKHOLE_CLUSTER if outbound_policy == "REGISTRY_ONLY" else PASSTHROUGH_CLUSTER
    return {
        "name": VIRTUAL_OUTBOUND,
        "address": socket_address("0.0.0.0", VIRTUAL_OUTBOUND_PORT),
        "use_original_dst": True,
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"name": "virtualOutbound-catchall-tcp", "filters": [tcp_proxy(fallback)]}],
    }


def outbound_http_listener(port: int) -> dict[str, Any]:
    """`0.0.0.0_<port>`: every HTTP service on this port, told apart by the route configuration `<port>`."""
    name = listener_name("0.0.0.0", port)
    return {
        "name": name,
        "address": socket_address("0.0.0.0", port),
        "bind_to_port": False,
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"filters": [http_connection_manager(f"outbound_{name}", rds=route_config_name(port))]}],
    }


def outbound_tcp_listener(service: Service, port: ServicePort) -> dict[str, Any]:
    """`<clusterIP>_<port>`: a TCP port of one service (needs the Service's ClusterIP)."""
    assert service.cluster_ip, "TCP listeners need a ClusterIP"
    cluster = outbound_cluster_name(port.port, service.hostname)
    return {
        "name": listener_name(service.cluster_ip, port.port),
        "address": socket_address(service.cluster_ip, port.port),
        "bind_to_port": False,
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"filters": [tcp_proxy(cluster)]}],
    }


def inbound_route_config(port: int) -> dict[str, Any]:
    """The inline routes of an inbound HTTP chain: everything to the local app on that port."""
    cluster = inbound_cluster_name(port)
    return {
        "name": cluster,
        "virtual_hosts": [{
            "name": f"inbound|http|{port}",
            "domains": ["*"],
            "routes": [{"name": "default", "match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}],
        }],
        "validate_clusters": False,
    }


def virtual_inbound(ports: Iterable[tuple[int, Protocol]]) -> dict[str, Any]:
    """`virtualInbound` with a chain per (target port, protocol) of this pod, then a passthrough chain."""
    chains: list[dict[str, Any]] = []
    for port, protocol in sorted(ports, key=lambda p: p[0]):
        name = listener_name("0.0.0.0", port)
        if protocol.is_http:
            f = http_connection_manager(f"inbound_{name}", route_config=inbound_route_config(port))
        else:
            f = tcp_proxy(inbound_cluster_name(port))
        chains.append({"name": name, "filter_chain_match": {"destination_port": port}, "filters": [f]})
    chains.append({"name": "PassthroughFilterChain", "filters": [tcp_proxy(INBOUND_PASSTHROUGH_CLUSTER)]})
    return {
        "name": VIRTUAL_INBOUND,
        "address": socket_address("0.0.0.0", VIRTUAL_INBOUND_PORT),
        # No use_original_dst here (as in Istio): a hand-off by original destination would pick the outbound
        # listener 0.0.0.0_<port> and loop. The original_dst listener filter lets chains match on the port.
        "traffic_direction": "INBOUND",
        "listener_filters": [
            {"name": "envoy.filters.listener.original_dst", "typed_config": {"@type": ORIGINAL_DST_TYPE}},
            {"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": TLS_INSPECTOR_TYPE}},
        ],
        "filter_chains": chains,
    }
