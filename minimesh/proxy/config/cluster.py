"""Cluster and ClusterLoadAssignment (envoy.config.cluster.v3 / endpoint.v3) as frozen dataclasses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from minimesh.proxy.config._reader import ConfigError, Node, drop_empty, format_duration
from minimesh.proxy.config.common import SocketAddress, parse_address
from minimesh.proxy.config.tls import UpstreamTlsContext, parse_transport_socket

CLUSTER_TYPES = ("STATIC", "EDS", "ORIGINAL_DST", "STRICT_DNS")
LB_POLICIES = ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM")
HEALTH_STATUSES = ("UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED")
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_IDLE_TIMEOUT = 3600.0  # Envoy: upstream HTTP connections idle for 1 h are closed


@dataclass(frozen=True, slots=True)
class Locality:
    region: str = ""
    zone: str = ""
    sub_zone: str = ""

    def to_dict(self) -> dict[str, Any]:
        return drop_empty({"region": self.region, "zone": self.zone, "sub_zone": self.sub_zone})


SOCKET_MATCH_KEY = "envoy.transport_socket_match"  # endpoint metadata that transport_socket_matches read
Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class LbEndpoint:
    """One endpoint of a cluster: its address, health as reported by the control plane, and weight.

    `socket_match`: its `metadata.filter_metadata["envoy.transport_socket_match"]` (Istio: `tlsMode:
    istio` on endpoints that have a sidecar), which picks the cluster's transport socket for it."""

    address: SocketAddress
    health_status: str = "UNKNOWN"
    load_balancing_weight: int = 1
    hostname: str = ""
    socket_match: Labels = ()

    def to_dict(self) -> dict[str, Any]:
        ep: dict[str, Any] = {"address": self.address.to_dict()}
        if self.hostname:
            ep["hostname"] = self.hostname
        d: dict[str, Any] = {"endpoint": ep, "health_status": self.health_status,
                             "load_balancing_weight": self.load_balancing_weight}
        if self.socket_match:
            d["metadata"] = {"filter_metadata": {SOCKET_MATCH_KEY: dict(self.socket_match)}}
        return d


def parse_string_labels(node: Node, key: str) -> Labels:
    """A metadata Struct used for matching: string values only."""
    out = []
    for k, v in node.mapping(key).items():
        if not isinstance(v, str):
            raise ConfigError(f"{node.sub(key)}.{k}", f"want a string value, got {type(v).__name__}")
        out.append((k, v))
    return tuple(sorted(out))


def _socket_match_metadata(node: Node) -> Labels:
    def meta(m: Node) -> Labels:
        m.ignore("typed_filter_metadata")

        def fm(f: Node) -> Labels:
            for k in f:
                f.ignore(k)  # istio's workload metadata and the like: not read here
            return parse_string_labels(f, SOCKET_MATCH_KEY) if f.has(SOCKET_MATCH_KEY) else ()

        return m.obj("filter_metadata", fm) or ()

    return node.obj("metadata", meta) or ()


def parse_lb_endpoint(node: Node, allow_hostname: bool = False) -> LbEndpoint:
    def endpoint(n: Node) -> tuple[SocketAddress, str]:
        n.ignore("health_check_config", "additional_addresses")
        addr = n.obj("address", lambda a: parse_address(a, allow_hostname=allow_hostname, allow_port_zero=False,
                                                        allow_pipe=True),
                     required=True)
        assert addr is not None
        return addr, n.str("hostname", "")

    ep = node.obj("endpoint", endpoint, required=True)
    assert ep is not None
    return LbEndpoint(ep[0], node.enum("health_status", HEALTH_STATUSES, "UNKNOWN"),
                      node.uint32_wrapper("load_balancing_weight", 1) or 1, ep[1], _socket_match_metadata(node))


@dataclass(frozen=True, slots=True)
class LocalityLbEndpoints:
    lb_endpoints: tuple[LbEndpoint, ...] = ()
    locality: Locality = Locality()
    load_balancing_weight: int = 1
    priority: int = 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"lb_endpoints": [e.to_dict() for e in self.lb_endpoints]}
        if self.locality.to_dict():
            d["locality"] = self.locality.to_dict()
        if self.priority:
            d["priority"] = self.priority
        return d


def parse_locality_lb_endpoints(node: Node, allow_hostname: bool = False) -> LocalityLbEndpoints:
    def loc(n: Node) -> Locality:
        return Locality(n.str("region", ""), n.str("zone", ""), n.str("sub_zone", ""))

    return LocalityLbEndpoints(
        node.items("lb_endpoints", lambda n: n.done(lambda m: parse_lb_endpoint(m, allow_hostname))),
        node.obj("locality", loc) or Locality(),
        node.uint32_wrapper("load_balancing_weight", 1) or 1,
        node.int("priority", 0, minimum=0))


@dataclass(frozen=True, slots=True)
class ClusterLoadAssignment:
    """The endpoints of one cluster (inline `load_assignment`, or an EDS resource named `cluster_name`)."""

    cluster_name: str
    endpoints: tuple[LocalityLbEndpoints, ...] = ()

    def all_endpoints(self) -> list[tuple[LocalityLbEndpoints, LbEndpoint]]:
        return [(loc, ep) for loc in self.endpoints for ep in loc.lb_endpoints]

    def to_dict(self) -> dict[str, Any]:
        return {"cluster_name": self.cluster_name, "endpoints": [e.to_dict() for e in self.endpoints]}


def parse_cluster_load_assignment(node: Node, *, allow_hostname: bool = False,
                                  default_name: str = "") -> ClusterLoadAssignment:
    node.str("@type")
    node.ignore("policy", "named_endpoints")
    name = node.str("cluster_name", default_name)
    if not name:
        raise node.error("required field is missing", "cluster_name")
    return ClusterLoadAssignment(
        name, node.items("endpoints", lambda n: n.done(lambda m: parse_locality_lb_endpoints(m, allow_hostname))))


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Circuit-breaker limits for one priority (Envoy's defaults: 1024/1024/1024/3)."""

    priority: str = "DEFAULT"
    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3

    def to_dict(self) -> dict[str, Any]:
        return {"priority": self.priority, "max_connections": self.max_connections,
                "max_pending_requests": self.max_pending_requests, "max_requests": self.max_requests,
                "max_retries": self.max_retries}


def parse_thresholds(node: Node) -> Thresholds:
    node.ignore("retry_budget", "track_remaining", "max_connection_pools")
    return Thresholds(node.enum("priority", ("DEFAULT", "HIGH"), "DEFAULT"),
                      node.uint32_wrapper("max_connections", 1024), node.uint32_wrapper("max_pending_requests", 1024),
                      node.uint32_wrapper("max_requests", 1024), node.uint32_wrapper("max_retries", 3))


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Eject a host after `consecutive_5xx` 5xx/connect failures for base_ejection_time x times ejected."""

    consecutive_5xx: int = 5
    consecutive_gateway_failure: int = 0  # 0: not checked (Envoy enforces it at 0% by default)
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10

    def to_dict(self) -> dict[str, Any]:
        return {"consecutive_5xx": self.consecutive_5xx,
                "consecutive_gateway_failure": self.consecutive_gateway_failure,
                "interval": format_duration(self.interval),
                "base_ejection_time": format_duration(self.base_ejection_time),
                "max_ejection_percent": self.max_ejection_percent}


def parse_outlier_detection(node: Node) -> OutlierDetection:
    node.ignore("enforcing_consecutive_5xx", "enforcing_success_rate", "success_rate_minimum_hosts",
                "success_rate_request_volume", "success_rate_stdev_factor", "enforcing_consecutive_gateway_failure",
                "split_external_local_origin_errors", "consecutive_local_origin_failure", "max_ejection_time",
                "enforcing_consecutive_local_origin_failure", "enforcing_local_origin_success_rate",
                "failure_percentage_threshold", "enforcing_failure_percentage", "failure_percentage_minimum_hosts",
                "failure_percentage_request_volume", "max_ejection_time_jitter", "successful_active_health_check_uneject_host")
    return OutlierDetection(node.uint32_wrapper("consecutive_5xx", 5),
                            node.uint32_wrapper("consecutive_gateway_failure", 0),
                            node.duration("interval", 10.0), node.duration("base_ejection_time", 30.0),
                            node.uint32_wrapper("max_ejection_percent", 10))


_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class TransportSocketMatch:
    """One of a cluster's `transport_socket_matches`: endpoints whose socket-match metadata contains all
    of `match` connect with `transport_socket` (None: plaintext). Istio's auto mTLS: `{tlsMode: istio}`
    → TLS with the workload certificate, `{}` → plaintext."""

    name: str
    match: Labels = ()
    transport_socket: UpstreamTlsContext | None = None

    def matches(self, labels: Labels) -> bool:
        return all(kv in labels for kv in self.match)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "match": dict(self.match),
                "transport_socket": self.transport_socket.to_dict() if self.transport_socket else
                {"name": "envoy.transport_sockets.raw_buffer"}}


def parse_transport_socket_match(node: Node) -> TransportSocketMatch:
    name = node.nonempty_str("name")
    ts = node.obj("transport_socket", lambda n: parse_transport_socket(n, upstream=True), required=True)
    return TransportSocketMatch(name, parse_string_labels(node, "match"),
                                ts if isinstance(ts, UpstreamTlsContext) else None)


@dataclass(frozen=True, slots=True)
class Cluster:
    """An upstream cluster: how to find its endpoints (`type`), pick one (`lb_policy`) and connect."""

    name: str
    type: str = "STATIC"
    lb_policy: str = "ROUND_ROBIN"
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    thresholds: Thresholds = Thresholds()
    load_assignment: ClusterLoadAssignment | None = None
    eds_service_name: str = ""
    transport_socket: UpstreamTlsContext | None = None
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_requests_per_connection: int = 0
    outlier_detection: OutlierDetection | None = None
    upstream_bind_address: str | None = None
    dns_refresh_rate: float = 5.0
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    transport_socket_matches: tuple[TransportSocketMatch, ...] = ()

    @property
    def eds_name(self) -> str:
        """Name under which EDS serves this cluster's ClusterLoadAssignment."""
        return self.eds_service_name or self.name

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type, "lb_policy": self.lb_policy,
                             "connect_timeout": format_duration(self.connect_timeout),
                             "circuit_breakers": {"thresholds": [self.thresholds.to_dict()]}}
        if self.type == "EDS":
            d["eds_cluster_config"] = {"eds_config": {"ads": {}}, **(
                {"service_name": self.eds_service_name} if self.eds_service_name else {})}
        if self.load_assignment is not None:
            d["load_assignment"] = self.load_assignment.to_dict()
        if self.transport_socket is not None:
            d["transport_socket"] = self.transport_socket.to_dict()
        if self.transport_socket_matches:
            d["transport_socket_matches"] = [m.to_dict() for m in self.transport_socket_matches]
        opts: dict[str, Any] = {"idle_timeout": format_duration(self.idle_timeout)}
        if self.max_requests_per_connection:
            opts["max_requests_per_connection"] = self.max_requests_per_connection
        d["common_http_protocol_options"] = opts
        if self.outlier_detection:
            d["outlier_detection"] = self.outlier_detection.to_dict()
        if self.upstream_bind_address:
            d["upstream_bind_config"] = {"source_address": {"address": self.upstream_bind_address,
                                                            "port_value": 0}}
        if self.type == "STRICT_DNS":
            d["dns_refresh_rate"] = format_duration(self.dns_refresh_rate)
        if self.metadata:
            d["metadata"] = dict(self.metadata)
        return d


def parse_cluster(node: Node) -> Cluster:
    node.str("@type")
    name = node.nonempty_str("name")
    ctype = node.enum("type", CLUSTER_TYPES, "STATIC")
    lb = node.enum("lb_policy", (*LB_POLICIES, "CLUSTER_PROVIDED"), "ROUND_ROBIN")
    if lb == "CLUSTER_PROVIDED":
        if ctype != "ORIGINAL_DST":
            raise node.error("CLUSTER_PROVIDED is only valid for ORIGINAL_DST clusters", "lb_policy")
        lb = "ROUND_ROBIN"
    connect_timeout = node.duration("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    if connect_timeout <= 0:
        raise node.error("must be > 0", "connect_timeout")

    def breakers(n: Node) -> Thresholds:
        found = n.items("thresholds", parse_thresholds)
        n.ignore("per_host_thresholds")
        default = [t for t in found if t.priority == "DEFAULT"]
        return default[0] if default else Thresholds()

    thresholds = node.obj("circuit_breakers", breakers) or Thresholds()
    la = node.obj("load_assignment", lambda n: parse_cluster_load_assignment(
        n, allow_hostname=ctype == "STRICT_DNS", default_name=name))
    if ctype in ("STATIC", "STRICT_DNS") and la is None:
        la = ClusterLoadAssignment(name)
    if ctype == "EDS" and la is not None:
        raise node.error("an EDS cluster gets its endpoints from EDS; remove load_assignment", "load_assignment")
    if ctype == "ORIGINAL_DST" and la is not None and la.all_endpoints():
        raise node.error("an ORIGINAL_DST cluster has no configured endpoints", "load_assignment")
    if ctype == "ORIGINAL_DST" and lb != "ROUND_ROBIN" and node.has("lb_policy"):
        pass  # the policy does not matter: there is one host per original destination

    def eds(n: Node) -> str:
        n.ignore("eds_config")
        return n.str("service_name", "")

    eds_name = node.obj("eds_cluster_config", eds) or ""
    if eds_name and ctype != "EDS":
        raise node.error("eds_cluster_config is only valid for type EDS", "eds_cluster_config")

    def http_opts(n: Node) -> tuple[float, int]:
        n.ignore("headers_with_underscores_action", "max_headers_count", "max_stream_duration",
                 "max_connection_duration")
        return (n.duration("idle_timeout", DEFAULT_IDLE_TIMEOUT),
                n.uint32_wrapper("max_requests_per_connection", 0))

    idle, max_rq = node.obj("common_http_protocol_options", http_opts) or (DEFAULT_IDLE_TIMEOUT, 0)
    if node.has("max_requests_per_connection"):
        max_rq = node.uint32_wrapper("max_requests_per_connection", 0)

    def bind(n: Node) -> str:
        n.ignore("freebind", "socket_options", "source_transparent", "extra_source_addresses",
                 "additional_source_addresses", "local_address_selector")
        addr = n.obj("source_address", lambda a: a.done(lambda x: (x.nonempty_str("address"),
                                                                    x.int("port_value", 0),
                                                                    x.ignore("protocol"))[0]),
                     required=True)
        assert addr is not None
        return addr

    bind_addr = node.obj("upstream_bind_config", bind)
    transport = node.obj("transport_socket", lambda n: parse_transport_socket(n, upstream=True))
    matches = node.items("transport_socket_matches", lambda n: n.done(parse_transport_socket_match))
    node.ignore("typed_extension_protocol_options", "http_protocol_options", "http2_protocol_options",
                "dns_lookup_family", "respect_dns_ttl", "cleanup_interval", "alt_stat_name",
                "per_connection_buffer_limit_bytes", "filters", "original_dst_lb_config", "track_cluster_stats",
                "common_lb_config", "least_request_lb_config", "round_robin_lb_config", "upstream_connection_options",
                "protocol_selection", "load_balancing_policy")
    return Cluster(name, ctype, lb, connect_timeout, thresholds, la, eds_name,
                   transport if isinstance(transport, UpstreamTlsContext) else None, idle, max_rq,
                   node.obj("outlier_detection", parse_outlier_detection), bind_addr,
                   node.duration("dns_refresh_rate", 5.0), MappingProxyType(node.mapping("metadata")), matches)


def check_cluster_refs(clusters: Mapping[str, Cluster], names: set[str], where: str) -> None:
    missing = sorted(n for n in names if n not in clusters)
    if missing:
        raise ConfigError(where, f"unknown cluster {missing[0]!r} (known: {', '.join(sorted(clusters)) or 'none'})")
