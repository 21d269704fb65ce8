"""CDS and EDS: clusters and their endpoints, as Envoy-shaped dicts (the shapes Istio sends).

For every port of every Service a proxy may reach there is one outbound cluster
`outbound|<port>||<hostname>` of type EDS: the cluster itself carries no addresses; the endpoints come
separately as a ClusterLoadAssignment of the same name, built from the Service's EndpointSlices. That
split is what lets the push server send only EDS when nothing but endpoints changed (pods scaling,
becoming ready or going away), which is by far the most frequent change in a cluster.

For the ports of its own pod a proxy gets inbound clusters `inbound|<port>||` that lead to the app on
127.0.0.1, connecting from 127.0.0.6 so the init container's iptables rules let that connection past
the capture.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from minimesh.pilot.model import EndpointSlice, Service, ServicePort
from minimesh.xds.resources import (
    BLACKHOLE_CLUSTER,
    INBOUND_PASSTHROUGH_CLUSTER,
    INBOUND_PASSTHROUGH_SOURCE,
    PASSTHROUGH_CLUSTER,
    inbound_cluster_name,
    outbound_cluster_name,  # noqa: F401, RUF100 (used by the exercise)
)

CONNECT_TIMEOUT = "10s"  # Istio's default (meshConfig.connectTimeout)
ADS_CONFIG_SOURCE: dict[str, Any] = {"ads": {}, "resource_api_version": "V3"}


def outbound_cluster(service: Service, port: ServicePort) -> dict[str, Any]:
    """The outbound cluster for one port of a Service: what a caller's proxy balances over.

    Name `outbound|<port>||<service.hostname>`, type EDS (endpoints come over ADS under the same name),
    round robin, Istio's 10 s connect timeout, and Istio's metadata naming the service.
    """
    # BEGIN EXERCISE lab-04
    # TODO: return the cluster as a dict: "name" (outbound_cluster_name(port.port, service.hostname)),
    #   "type": "EDS", "eds_cluster_config" with "eds_config": ADS_CONFIG_SOURCE and "service_name" (the
    #   cluster's own name), "connect_timeout": CONNECT_TIMEOUT, "lb_policy": "ROUND_ROBIN", and
    #   "metadata": {"filter_metadata": {"istio": {"services": [{"host", "name", "namespace"}]}}}.
    raise NotImplementedError("lab 04: outbound_cluster: return the cluster as a dict: \"name\" (outbound_cluster_name(port.port, service.hostname)),")
    # END EXERCISE


def load_assignment(service: Service, port: ServicePort, slices: Iterable[EndpointSlice]) -> dict[str, Any]:
    """The ClusterLoadAssignment of `outbound_cluster(service, port)`: where its ready endpoints are.

    A Service's endpoints are spread over EndpointSlices. A slice port belongs to this Service port when
    their names are equal (both "" for a single unnamed port); its `port` is the number the endpoints
    listen on. Only ready endpoints count (`ready` None means ready; terminating ones are out), each
    address once, sorted, so the same endpoints always give the same assignment.
    """
    # BEGIN EXERCISE lab-04
    # TODO: collect (address, slice port) for every address of every ready, non-terminating endpoint
    #   of every slice that has a port named port.name (skip slices whose address_type is "FQDN");
    #   return {"cluster_name": <the cluster's name>, "endpoints": [...]} where "endpoints" is [] when
    #   nothing is ready, else one locality: [{"locality": {}, "lb_endpoints": [{"endpoint": {"address":
    #   {"socket_address": {"address": ip, "port_value": n}}}, "health_status": "HEALTHY",
    #   "load_balancing_weight": 1}, ...]}] sorted by (ip, n), without duplicates.
    raise NotImplementedError("lab 04: load_assignment: collect (address, slice port) for every address of every ready, non-terminating endpoint")
    # END EXERCISE


# ---- given -------------------------------------------------------------------------------------


def inbound_cluster(port: int) -> dict[str, Any]:
    """`inbound|<port>||`: the app in this pod, reached on 127.0.0.1 from 127.0.0.6."""
    name = inbound_cluster_name(port)
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": "ROUND_ROBIN",
        "upstream_bind_config": {"source_address": {"address": INBOUND_PASSTHROUGH_SOURCE, "port_value": 0}},
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}},
            ]}],
        },
    }


def passthrough_cluster() -> dict[str, Any]:
    """Traffic to destinations the mesh does not know goes where it was going (outboundTrafficPolicy ALLOW_ANY)."""
    return {"name": PASSTHROUGH_CLUSTER, "type": "ORIGINAL_DST", "connect_timeout": CONNECT_TIMEOUT,
            "lb_policy": "CLUSTER_PROVIDED"}


def inbound_passthrough_cluster() -> dict[str, Any]:
    """Inbound traffic to a port no Service declares: on to the original destination, from 127.0.0.6."""
    return {
        "name": INBOUND_PASSTHROUGH_CLUSTER,
        "type": "ORIGINAL_DST",
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": "CLUSTER_PROVIDED",
        "upstream_bind_config": {"source_address": {"address": INBOUND_PASSTHROUGH_SOURCE, "port_value": 0}},
    }


def blackhole_cluster() -> dict[str, Any]:
    """A cluster without endpoints: where REGISTRY_ONLY sends unknown destinations."""
    return {"name": BLACKHOLE_CLUSTER, "type": "STATIC", "connect_timeout": CONNECT_TIMEOUT}
