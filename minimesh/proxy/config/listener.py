"""Listener, FilterChain and the network filters (http_connection_manager, tcp_proxy)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from minimesh.proxy.config._reader import ConfigError, Node, drop_empty, format_duration
from minimesh.proxy.config.common import SocketAddress, parse_address
from minimesh.proxy.config.route import RouteConfiguration, parse_route_configuration
from minimesh.proxy.config.tls import DownstreamTlsContext, parse_transport_socket

HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ROUTER = "envoy.filters.http.router"
ORIGINAL_DST_FILTER = "envoy.filters.listener.original_dst"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
HTTP_INSPECTOR = "envoy.filters.listener.http_inspector"
LISTENER_FILTERS = (ORIGINAL_DST_FILTER, TLS_INSPECTOR, HTTP_INSPECTOR)
DIRECTIONS = ("UNSPECIFIED", "INBOUND", "OUTBOUND")


@dataclass(frozen=True, slots=True)
class HttpFilterConfig:
    """One entry of `http_filters`: the filter name and its parsed typed_config (an object with to_dict)."""

    name: str
    config: Any = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.config is not None:
            d["typed_config"] = self.config.to_dict()
        return d


@dataclass(frozen=True, slots=True)
class HttpConnectionManager:
    stat_prefix: str
    route_config: RouteConfiguration | None = None
    rds_route_config_name: str | None = None
    http_filters: tuple[HttpFilterConfig, ...] = ()  # without the router (always last)
    use_remote_address: bool = False
    max_request_headers_kb: int = 60
    request_headers_timeout: float | None = None
    idle_timeout: float = 3600.0
    generate_request_id: bool = True
    normalize_path: bool = False  # RFC 3986 normalisation of the path before routing and filters
    merge_slashes: bool = False

    @property
    def path_normalization(self) -> str | None:
        """Istio's meshConfig.pathNormalization this amounts to (None: the path is left alone)."""
        if self.merge_slashes:
            return "MERGE_SLASHES"
        return "BASE" if self.normalize_path else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"@type": HCM_TYPE, "stat_prefix": self.stat_prefix}
        if self.route_config is not None:
            d["route_config"] = self.route_config.to_dict()
        else:
            d["rds"] = {"config_source": {"ads": {}}, "route_config_name": self.rds_route_config_name}
        d["http_filters"] = [f.to_dict() for f in self.http_filters] + [
            {"name": ROUTER, "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
        d["use_remote_address"] = self.use_remote_address
        d["max_request_headers_kb"] = self.max_request_headers_kb
        if self.request_headers_timeout is not None:
            d["request_headers_timeout"] = format_duration(self.request_headers_timeout)
        d["common_http_protocol_options"] = {"idle_timeout": format_duration(self.idle_timeout)}
        if self.normalize_path:
            d["normalize_path"] = True
        if self.merge_slashes:
            d["merge_slashes"] = True
        return d


def parse_http_connection_manager(node: Node) -> HttpConnectionManager:
    from minimesh.proxy.filters.registry import parse_http_filter

    stat_prefix = node.nonempty_str("stat_prefix")
    which = node.one_of("route_config", "rds", "scoped_routes")
    if which == "scoped_routes":
        raise node.error("scoped_routes is not supported", which)
    route_config = node.obj("route_config", parse_route_configuration)

    def rds(n: Node) -> str:
        n.ignore("config_source")
        return n.nonempty_str("route_config_name")

    rds_name = node.obj("rds", rds)
    filters: list[HttpFilterConfig] = []
    raw_filters = node.list("http_filters")
    for i, raw in enumerate(raw_filters):
        path = f"{node.sub('http_filters')}[{i}]"
        f = Node(raw, path)
        name = f.nonempty_str("name")
        typed = f.raw("typed_config")
        f.ignore("is_optional", "disabled")
        f.finish()
        if name == ROUTER:
            if i != len(raw_filters) - 1:
                raise ConfigError(path, f"{ROUTER} must be the last http filter")
            continue
        filters.append(HttpFilterConfig(name, parse_http_filter(name, typed, f"{path}.typed_config")))
    if raw_filters and (not isinstance(raw_filters[-1], dict) or raw_filters[-1].get("name") != ROUTER):
        raise node.error(f"the last http filter must be {ROUTER}", "http_filters")
    kb = node.uint32_wrapper("max_request_headers_kb", 60)
    if not 1 <= kb <= 8192:
        raise node.error("must be between 1 and 8192", "max_request_headers_kb")
    hdr_timeout = node.duration("request_headers_timeout")

    def http_opts(n: Node) -> float:
        n.ignore("headers_with_underscores_action", "max_headers_count", "max_stream_duration",
                 "max_connection_duration", "max_requests_per_connection")
        return n.duration("idle_timeout", 3600.0)

    idle = node.obj("common_http_protocol_options", http_opts) or 3600.0
    node.ignore("codec_type", "access_log", "tracing", "server_name", "forward_client_cert_details",
                "set_current_client_cert_details", "upgrade_configs",
                "path_with_escaped_slashes_action", "stream_idle_timeout", "request_timeout", "delayed_close_timeout",
                "http_protocol_options", "http2_protocol_options", "internal_address_config", "xff_num_trusted_hops",
                "skip_xff_append", "via", "preserve_external_request_id", "always_set_request_id_in_response",
                "local_reply_config", "server_header_transformation", "drain_timeout", "add_user_agent",
                "generate_request_id", "@type", "strip_any_host_port", "stream_error_on_invalid_http_message")
    return HttpConnectionManager(stat_prefix, route_config, rds_name, tuple(filters),
                                 node.bool("use_remote_address"), kb,
                                 hdr_timeout if hdr_timeout else None, idle,
                                 node.bool("generate_request_id", True), node.bool("normalize_path"),
                                 node.bool("merge_slashes"))


@dataclass(frozen=True, slots=True)
class TcpProxy:
    stat_prefix: str
    cluster: str
    idle_timeout: float = 3600.0

    def to_dict(self) -> dict[str, Any]:
        return {"@type": TCP_PROXY_TYPE, "stat_prefix": self.stat_prefix, "cluster": self.cluster,
                "idle_timeout": format_duration(self.idle_timeout)}


def parse_tcp_proxy(node: Node) -> TcpProxy:
    stat_prefix = node.nonempty_str("stat_prefix")
    which = node.one_of("cluster", "weighted_clusters")
    if which == "weighted_clusters":
        raise node.error("weighted_clusters is not supported for tcp_proxy", which)
    node.ignore("access_log", "max_connect_attempts", "metadata_match", "hash_policy", "tunneling_config",
                "@type", "downstream_idle_timeout", "upstream_idle_timeout", "on_demand", "max_downstream_connection_duration")
    return TcpProxy(stat_prefix, node.nonempty_str("cluster"), node.duration("idle_timeout", 3600.0) or 0.0)


NETWORK_FILTERS = {HCM: (HCM_TYPE, parse_http_connection_manager), TCP_PROXY: (TCP_PROXY_TYPE, parse_tcp_proxy)}


@dataclass(frozen=True, slots=True)
class NetworkFilter:
    name: str
    config: Any  # HttpConnectionManager | TcpProxy, or a registered filter's config (e.g. RBAC)

    @property
    def terminal(self) -> bool:
        return self.name in NETWORK_FILTERS

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "typed_config": self.config.to_dict()}


def parse_network_filter(node: Node) -> NetworkFilter:
    from minimesh.proxy.filters.registry import known_network, network_filter

    name = node.nonempty_str("name")
    extra = network_filter(name)
    if name not in NETWORK_FILTERS and extra is None:
        raise ConfigError(node.path, f'unknown filter "{name}" (known: {", ".join([*known_network(), *NETWORK_FILTERS])})')
    type_url, parse = NETWORK_FILTERS[name] if extra is None else (extra.type_url, extra.parse)
    raw = node.raw("typed_config")
    if raw is None:
        raise node.error("required field is missing", "typed_config")
    tc = Node(raw, node.sub("typed_config"))
    got = tc.str("@type", type_url)
    if got != type_url:
        raise tc.error(f"filter {name} wants {type_url}, got {got}", "@type")
    return NetworkFilter(name, tc.done(parse))


@dataclass(frozen=True, slots=True)
class FilterChainMatch:
    """Which connections a filter chain takes (Envoy's matching order: destination port, server names,
    transport protocol, application protocols; an unset criterion matches anything)."""

    destination_port: int | None = None
    server_names: tuple[str, ...] = ()
    transport_protocol: str = ""
    application_protocols: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return drop_empty({"destination_port": self.destination_port, "server_names": list(self.server_names),
                           "transport_protocol": self.transport_protocol,
                           "application_protocols": list(self.application_protocols)})


def parse_filter_chain_match(node: Node) -> FilterChainMatch:
    for unsupported in ("prefix_ranges", "source_prefix_ranges", "source_ports", "direct_source_prefix_ranges",
                        "address_suffix", "suffix_len"):
        if node.raw(unsupported):
            raise node.error("not supported", unsupported)
    node.ignore("source_type")
    port = node.uint32_wrapper("destination_port", 0) or None
    if port is not None and port > 65535:
        raise node.error("not a port", "destination_port")
    tp = node.str("transport_protocol", "")
    if tp not in ("", "tls", "raw_buffer"):
        raise node.error(f"unknown transport protocol {tp!r}, want tls or raw_buffer", "transport_protocol")
    return FilterChainMatch(port, tuple(s.lower() for s in node.str_list("server_names")), tp,
                            node.str_list("application_protocols"))


@dataclass(frozen=True, slots=True)
class FilterChain:
    filters: tuple[NetworkFilter, ...]
    filter_chain_match: FilterChainMatch = FilterChainMatch()
    name: str = ""
    transport_socket: DownstreamTlsContext | None = None

    @property
    def terminal(self) -> NetworkFilter:
        return self.filters[-1]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.name:
            d["name"] = self.name
        if self.filter_chain_match.to_dict():
            d["filter_chain_match"] = self.filter_chain_match.to_dict()
        d["filters"] = [f.to_dict() for f in self.filters]
        if self.transport_socket is not None:
            d["transport_socket"] = self.transport_socket.to_dict()
        return d


def parse_filter_chain(node: Node) -> FilterChain:
    fcm = node.obj("filter_chain_match", parse_filter_chain_match) or FilterChainMatch()
    filters = node.items("filters", lambda n: n.done(parse_network_filter), required=True)
    if not filters:
        raise node.error("needs at least one filter", "filters")
    for i, f in enumerate(filters):
        if f.terminal != (i == len(filters) - 1):
            why = "is a terminal filter and must be the last one" if f.terminal else \
                f"cannot end a filter chain; put {HCM} or {TCP_PROXY} after it"
            raise ConfigError(f"{node.sub('filters')}[{i}]", f"{f.name} {why}")
    ts = node.obj("transport_socket", lambda n: parse_transport_socket(n, upstream=False))
    node.ignore("metadata", "transport_socket_connect_timeout")
    return FilterChain(filters, fcm, node.str("name", ""), ts if isinstance(ts, DownstreamTlsContext) else None)


@dataclass(frozen=True, slots=True)
class ListenerFilter:
    name: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name}


def parse_listener_filter(node: Node) -> ListenerFilter:
    name = node.nonempty_str("name")
    if name not in LISTENER_FILTERS:
        raise node.error(f'unknown listener filter "{name}" (known: {", ".join(LISTENER_FILTERS)})', "name")
    node.ignore("typed_config", "filter_disabled")
    return ListenerFilter(name)


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    address: SocketAddress
    filter_chains: tuple[FilterChain, ...] = ()
    default_filter_chain: FilterChain | None = None
    use_original_dst: bool = False
    bind_to_port: bool = True
    traffic_direction: str = "UNSPECIFIED"
    listener_filters: tuple[ListenerFilter, ...] = ()
    listener_filters_timeout: float = 15.0
    continue_on_listener_filters_timeout: bool = False

    def has_listener_filter(self, name: str) -> bool:
        return any(f.name == name for f in self.listener_filters)

    def all_chains(self) -> tuple[FilterChain, ...]:
        return self.filter_chains + ((self.default_filter_chain,) if self.default_filter_chain else ())

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "address": self.address.to_dict(),
                             "filter_chains": [c.to_dict() for c in self.filter_chains]}
        if self.default_filter_chain is not None:
            d["default_filter_chain"] = self.default_filter_chain.to_dict()
        if self.use_original_dst:
            d["use_original_dst"] = True
        if not self.bind_to_port:
            d["bind_to_port"] = False
        if self.traffic_direction != "UNSPECIFIED":
            d["traffic_direction"] = self.traffic_direction
        if self.listener_filters:
            d["listener_filters"] = [f.to_dict() for f in self.listener_filters]
            d["listener_filters_timeout"] = format_duration(self.listener_filters_timeout)
            d["continue_on_listener_filters_timeout"] = self.continue_on_listener_filters_timeout
        return d


def parse_listener(node: Node) -> Listener:
    node.str("@type")
    name = node.nonempty_str("name")
    address = node.obj("address", parse_address, required=True)
    assert address is not None
    chains = node.items("filter_chains", lambda n: n.done(parse_filter_chain))
    default = node.obj("default_filter_chain", parse_filter_chain)
    use_original_dst = node.bool("use_original_dst")
    if not chains and default is None and not use_original_dst:
        # (a use_original_dst listener without chains hands off or falls back to Passthrough/BlackHole)
        raise node.error("needs filter_chains or a default_filter_chain", "filter_chains")
    seen: dict[FilterChainMatch, int] = {}
    for i, c in enumerate(chains):
        if c.filter_chain_match in seen:
            raise ConfigError(f"{node.sub('filter_chains')}[{i}].filter_chain_match",
                              f"same match as filter_chains[{seen[c.filter_chain_match]}]; "
                              "filter chain matches must be unique")
        seen[c.filter_chain_match] = i
    bind = node.bool("bind_to_port", True)
    if isinstance(node.raw("deprecated_v1"), dict):
        bind = node.raw("deprecated_v1").get("bind_to_port", bind)
    node.ignore("per_connection_buffer_limit_bytes", "metadata", "drain_type", "access_log", "socket_options",
                "transparent", "freebind", "connection_balance_config", "reuse_port", "enable_reuse_port",
                "stat_prefix", "tcp_backlog_size", "enable_mptcp", "ignore_global_conn_limit",
                "max_connections_to_accept_per_socket_event")
    lf_timeout = node.duration("listener_filters_timeout", 15.0)
    return Listener(name, address, chains, default, use_original_dst, bind,
                    node.enum("traffic_direction", DIRECTIONS, "UNSPECIFIED"),
                    node.items("listener_filters", lambda n: n.done(parse_listener_filter)),
                    lf_timeout, node.bool("continue_on_listener_filters_timeout"))
