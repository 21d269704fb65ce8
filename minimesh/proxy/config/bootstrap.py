"""The Bootstrap (envoy.config.bootstrap.v3) and minimesh's own small `minimesh:` section."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from minimesh.proxy.config._reader import ConfigError, Node, format_duration
from minimesh.proxy.config.cluster import Cluster, parse_cluster
from minimesh.proxy.config.common import SocketAddress, parse_address
from minimesh.proxy.config.listener import Listener, parse_listener

OUTBOUND_POLICIES = ("ALLOW_ANY", "REGISTRY_ONLY")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Who this proxy is: `id` (Istio: sidecar~IP~POD.NS~NS.svc.cluster.local), `cluster`, `metadata`
    (Istio keys such as WORKLOAD_NAME, NAMESPACE, LABELS feed the istio_* metrics)."""

    id: str = ""
    cluster: str = ""
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "cluster": self.cluster, "metadata": dict(self.metadata)}


@dataclass(frozen=True, slots=True)
class MinimeshOptions:
    """Settings Envoy keeps elsewhere (mesh config, command line), in one `minimesh:` bootstrap section.

    outbound_traffic_policy: what the virtual outbound listener does with a destination that no listener
    matches: ALLOW_ANY (PassthroughCluster: plain TCP to the original destination) or REGISTRY_ONLY
    (BlackHoleCluster: close it), like Istio's meshConfig.outboundTrafficPolicy.mode.
    """

    outbound_traffic_policy: str = "ALLOW_ANY"
    access_log_path: str = "/dev/stdout"  # "" disables the stdout/file log (the admin ring buffer stays)
    access_log_ring_size: int = 1000
    drain_time: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        return {"outbound_traffic_policy": self.outbound_traffic_policy, "access_log_path": self.access_log_path,
                "access_log_ring_size": self.access_log_ring_size, "drain_time": format_duration(self.drain_time)}


def _parse_options(node: Node) -> MinimeshOptions:
    return MinimeshOptions(node.enum("outbound_traffic_policy", OUTBOUND_POLICIES, "ALLOW_ANY"),
                           node.str("access_log_path", "/dev/stdout"),
                           node.int("access_log_ring_size", 1000, minimum=0, maximum=1_000_000),
                           node.duration("drain_time", 5.0))


@dataclass(frozen=True, slots=True)
class Bootstrap:
    node: NodeInfo = NodeInfo()
    admin_address: SocketAddress | None = None
    listeners: tuple[Listener, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    dynamic_resources: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)  # stage 4 (ADS) reads this
    options: MinimeshOptions = MinimeshOptions()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"node": self.node.to_dict()}
        if self.admin_address is not None:
            d["admin"] = {"address": self.admin_address.to_dict()}
        d["static_resources"] = {"listeners": [x.to_dict() for x in self.listeners],
                                 "clusters": [c.to_dict() for c in self.clusters]}
        if self.dynamic_resources:
            d["dynamic_resources"] = dict(self.dynamic_resources)
        d["minimesh"] = self.options.to_dict()
        return d


def parse_bootstrap(data: object) -> Bootstrap:
    """Parse a bootstrap dict; raises ConfigError naming the path of the first problem."""
    root = Node(data, "")

    def node_info(n: Node) -> NodeInfo:
        n.ignore("locality", "user_agent_name", "user_agent_version", "user_agent_build_version", "extensions",
                 "client_features", "listening_addresses", "dynamic_parameters")
        return NodeInfo(n.str("id", ""), n.str("cluster", ""), MappingProxyType(n.mapping("metadata")))

    def admin(n: Node) -> SocketAddress:
        n.ignore("access_log_path", "access_log", "profile_path", "socket_options", "ignore_global_conn_limit")
        a = n.obj("address", parse_address, required=True)
        assert a is not None
        return a

    def static(n: Node) -> tuple[tuple[Listener, ...], tuple[Cluster, ...]]:
        if n.list("secrets"):
            raise n.error("static secrets are not supported; put PEM into transport sockets", "secrets")
        return (n.items("listeners", lambda x: x.done(parse_listener)),
                n.items("clusters", lambda x: x.done(parse_cluster)))

    def dynamic(n: Node) -> dict[str, Any]:
        out = {}
        for key in ("ads_config", "lds_config", "cds_config"):
            v = n.mapping(key)
            if v:
                out[key] = v
        n.ignore("lds_resources_locator", "cds_resources_locator")
        return out

    info = root.obj("node", node_info) or NodeInfo()
    admin_addr = root.obj("admin", admin)
    listeners, clusters = root.obj("static_resources", static) or ((), ())
    dyn = root.obj("dynamic_resources", dynamic) or {}
    options = root.obj("minimesh", _parse_options) or MinimeshOptions()
    root.ignore("stats_config", "layered_runtime", "overload_manager", "tracing", "stats_sinks", "stats_flush_interval",
                "cluster_manager", "bootstrap_extensions", "watchdogs", "typed_dns_resolver_config",
                "use_tcp_for_dns_lookups", "enable_dispatcher_stats", "stats_server_version_override")
    root.finish()
    return Bootstrap(info, admin_addr, listeners, clusters, MappingProxyType(dyn), options)


def load_bootstrap(path: str | Path) -> Bootstrap:
    """Read a YAML or JSON bootstrap file (YAML is a superset of JSON)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(str(p), f"cannot read the bootstrap file: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        raise ConfigError(where, f"not valid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        raise ConfigError(str(p), "the bootstrap file is empty")
    return parse_bootstrap(data)
