"""xDS resource types, Any packing, Envoy-shaped dicts and Istio's resource names.

The push server builds config as Envoy-shaped dicts (what trainees read, the same shape as Envoy YAML),
turns each into the real Envoy v3 message once and packs it into `google.protobuf.Any`. The proxy's
xDS client does the reverse and hands the dicts to the proxy's config parser.
"""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

# Extensions that appear inside `typed_config` Anys: imported so their descriptors are registered and
# json_format can print and parse them.
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from google.protobuf import any_pb2, json_format
from google.protobuf.message import DecodeError, Message

# ---- type URLs ---------------------------------------------------------------------------------

TYPE_PREFIX = "type.googleapis.com/"
CLUSTER_TYPE = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER_TYPE = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
ROUTE_TYPE = TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
HCM_TYPE = TYPE_PREFIX + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TCP_PROXY_TYPE = TYPE_PREFIX + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ROUTER_TYPE = TYPE_PREFIX + "envoy.extensions.filters.http.router.v3.Router"
ORIGINAL_DST_TYPE = TYPE_PREFIX + "envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
TLS_INSPECTOR_TYPE = TYPE_PREFIX + "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"

# Istio pushes in this order (CDS before EDS and LDS before RDS, so a proxy never sees a route or an
# assignment for a cluster it does not know yet).
PUSH_ORDER = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE)
SHORT_NAMES = {CLUSTER_TYPE: "cds", ENDPOINT_TYPE: "eds", LISTENER_TYPE: "lds", ROUTE_TYPE: "rds"}
# CDS and LDS are "wildcard" types: a response carries the complete set. EDS and RDS carry what was asked.
WILDCARD_TYPES = frozenset({CLUSTER_TYPE, LISTENER_TYPE})

MESSAGE_CLASSES: dict[str, type[Message]] = {
    CLUSTER_TYPE: cluster_pb2.Cluster,
    ENDPOINT_TYPE: endpoint_pb2.ClusterLoadAssignment,
    LISTENER_TYPE: listener_pb2.Listener,
    ROUTE_TYPE: route_pb2.RouteConfiguration,
}


class ResourceError(ValueError):
    """A resource that cannot be packed, unpacked or converted; the message names the resource."""


def short_name(type_url: str) -> str:
    """`...Cluster` → `cds`; unknown types → the last part of the URL."""
    return SHORT_NAMES.get(type_url) or type_url.rsplit(".", 1)[-1]


def message_class(type_url: str) -> type[Message]:
    try:
        return MESSAGE_CLASSES[type_url]
    except KeyError:
        raise ResourceError(f"unsupported resource type {type_url!r}; want one of {sorted(MESSAGE_CLASSES)}") from None


def resource_name(message: Message) -> str:
    """The xDS name of a resource: `name`, or `cluster_name` for a ClusterLoadAssignment."""
    if isinstance(message, endpoint_pb2.ClusterLoadAssignment):
        return message.cluster_name
    return message.name  # type: ignore[attr-defined, no-any-return]


# ---- dict <-> message <-> Any ------------------------------------------------------------------


def from_dict(type_url: str, data: dict[str, Any]) -> Message:
    """An Envoy-shaped dict (snake_case or camelCase keys, durations as "10s") → the Envoy message."""
    cls = message_class(type_url)
    name = data.get("cluster_name" if cls is endpoint_pb2.ClusterLoadAssignment else "name", "?")
    try:
        return json_format.ParseDict(data, cls())
    except json_format.ParseError as e:
        raise ResourceError(f"{short_name(type_url)} resource {name!r}: {e}") from None


def to_dict(message: Message) -> dict[str, Any]:
    """An Envoy message → the dict the proxy's config parser reads (proto field names, as in Envoy YAML)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def unpack(packed: any_pb2.Any, type_url: str | None = None) -> Message:
    """Any → message; when `type_url` is given the Any must carry that type (xDS responses are typed)."""
    if type_url is not None and packed.type_url != type_url:
        raise ResourceError(f"resource of type {packed.type_url!r} in a response for {type_url!r}")
    cls = message_class(packed.type_url)
    message = cls()
    try:
        message.ParseFromString(packed.value)
    except DecodeError as e:
        raise ResourceError(f"{short_name(packed.type_url)} resource: cannot decode: {e}") from None
    return message


def http_connection_manager(message: Message) -> hcm_pb2.HttpConnectionManager | None:
    """The HttpConnectionManager inside a network filter's typed_config, or None for other filters."""
    typed = getattr(message, "typed_config", None)
    if typed is None or typed.type_url != HCM_TYPE:
        return None
    hcm = hcm_pb2.HttpConnectionManager()
    hcm.ParseFromString(typed.value)
    return hcm


def rds_route_names(listener: listener_pb2.Listener) -> list[str]:
    """Route configuration names a listener asks for over RDS (what a client subscribes to next)."""
    names: list[str] = []
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        for f in chain.filters:
            hcm = http_connection_manager(f)
            if hcm is not None and hcm.HasField("rds") and hcm.rds.route_config_name not in names:
                names.append(hcm.rds.route_config_name)
    return names


def eds_service_name(cluster: cluster_pb2.Cluster) -> str | None:
    """The ClusterLoadAssignment name an EDS cluster asks for (service_name, else its own name)."""
    if cluster.type != cluster_pb2.Cluster.EDS:
        return None
    return cluster.eds_cluster_config.service_name or cluster.name


# ---- Istio's names -----------------------------------------------------------------------------

DEFAULT_DOMAIN = "cluster.local"
VIRTUAL_OUTBOUND = "virtualOutbound"
VIRTUAL_INBOUND = "virtualInbound"
VIRTUAL_OUTBOUND_PORT = 15001
VIRTUAL_INBOUND_PORT = 15006
PASSTHROUGH_CLUSTER = "PassthroughCluster"
BLACKHOLE_CLUSTER = "BlackHoleCluster"
INBOUND_PASSTHROUGH_CLUSTER = "InboundPassthroughClusterIpv4"
INBOUND_PASSTHROUGH_SOURCE = "127.0.0.6"  # the init container's rules let this source bypass capture


def service_hostname(name: str, namespace: str, domain: str = DEFAULT_DOMAIN) -> str:
    """`("details", "default")` → `details.default.svc.cluster.local`."""
    return f"{name}.{namespace}.svc.{domain}"


def outbound_cluster_name(port: int, hostname: str, subset: str = "") -> str:
    """`outbound|9080||details.default.svc.cluster.local` (subset between the bars, for DestinationRule)."""
    return f"outbound|{port}|{subset}|{hostname}"


def inbound_cluster_name(port: int) -> str:
    """`inbound|9080||`: the local app behind this proxy on `port`."""
    return f"inbound|{port}||"


def parse_cluster_name(name: str) -> tuple[str, int, str, str]:
    """`outbound|9080|v1|details...` → ("outbound", 9080, "v1", "details...")."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] not in ("outbound", "inbound") or not parts[1].isdigit():
        raise ResourceError(f"{name!r} is not an Istio cluster name (direction|port|subset|host)")
    return parts[0], int(parts[1]), parts[2], parts[3]


def listener_name(address: str, port: int) -> str:
    """`("0.0.0.0", 9080)` → `0.0.0.0_9080`; `("10.96.0.7", 3306)` → `10.96.0.7_3306`."""
    return f"{address}_{port}"


def route_config_name(port: int) -> str:
    """Outbound HTTP route configurations are named by port: `9080`."""
    return str(port)
