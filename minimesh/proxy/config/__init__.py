"""The proxy's config model: Envoy's resource names and YAML/JSON shape (snake_case), typed and frozen.

Parse with `parse_bootstrap` / `load_bootstrap` / `Snapshot.from_dict` / `parse_resource`; every error is a
`ConfigError` whose message starts with the path of the problem, e.g.
`static_resources.listeners[0].filter_chains[1].filters[0]: unknown filter "envoy.filters.network.foo"`.
Every type has `to_dict()` (the shape `/config_dump` shows).
"""

from minimesh.proxy.config._reader import ConfigError, Node, format_duration, parse_duration
from minimesh.proxy.config.bootstrap import (
    Bootstrap,
    MinimeshOptions,
    NodeInfo,
    load_bootstrap,
    parse_bootstrap,
)
from minimesh.proxy.config.cluster import (
    Cluster,
    ClusterLoadAssignment,
    LbEndpoint,
    Locality,
    LocalityLbEndpoints,
    OutlierDetection,
    Thresholds,
)
from minimesh.proxy.config.common import HeaderValueOption, SocketAddress, StringMatcher
from minimesh.proxy.config.listener import (
    FilterChain,
    FilterChainMatch,
    HttpConnectionManager,
    HttpFilterConfig,
    Listener,
    ListenerFilter,
    NetworkFilter,
    TcpProxy,
)
from minimesh.proxy.config.route import (
    ClusterWeight,
    DirectResponseAction,
    HeaderMatcher,
    RetryPolicy,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from minimesh.proxy.config.snapshot import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    Resources,
    Snapshot,
    parse_resource,
)
from minimesh.proxy.config.tls import CommonTlsContext, DownstreamTlsContext, UpstreamTlsContext

__all__ = [
    "CLUSTER_TYPE", "ENDPOINT_TYPE", "LISTENER_TYPE", "ROUTE_TYPE",
    "Bootstrap", "Cluster", "ClusterLoadAssignment", "ClusterWeight", "CommonTlsContext", "ConfigError",
    "DirectResponseAction", "DownstreamTlsContext", "FilterChain", "FilterChainMatch", "HeaderMatcher",
    "HeaderValueOption", "HttpConnectionManager", "HttpFilterConfig", "LbEndpoint", "Listener", "ListenerFilter",
    "Locality", "LocalityLbEndpoints", "MinimeshOptions", "NetworkFilter", "Node", "NodeInfo", "OutlierDetection",
    "Resources", "RetryPolicy", "Route", "RouteAction", "RouteConfiguration", "RouteMatch", "Snapshot",
    "SocketAddress", "StringMatcher", "TcpProxy", "Thresholds", "UpstreamTlsContext", "VirtualHost",
    "format_duration", "load_bootstrap", "parse_bootstrap", "parse_duration", "parse_resource",
]
