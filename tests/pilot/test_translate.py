"""Translation (pure): Kubernetes objects → the Envoy-shaped config a proxy gets. Golden dicts small enough
to read, and every generated resource must be a valid Envoy v3 message."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from minimesh.pilot import clusters, convert, routes, translate
from minimesh.pilot.model import EndpointSlice, ServicePort, SliceEndpoint, SlicePort
from minimesh.pilot.protocol import Protocol, detect_protocol
from minimesh.pilot.store import MeshStore
from minimesh.xds import resources as xr


def ctx_of(*objs):
    store = MeshStore()
    for kind, obj in objs:
        store.apply(kind, "ADDED", obj)
    return store.snapshot("v1")


def proxy_of(node_dict):
    return convert.proxy(json_format.ParseDict(node_dict, base_pb2.Node()))


def test_outbound_cluster_golden(mm) -> None:
    svc = convert.service(mm.service("details", ip="10.96.0.20"))
    assert clusters.outbound_cluster(svc, svc.ports[0]) == {
        "name": "outbound|9080||details.default.svc.cluster.local",
        "type": "EDS",
        "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"},
                               "service_name": "outbound|9080||details.default.svc.cluster.local"},
        "connect_timeout": "10s",
        "lb_policy": "ROUND_ROBIN",
        "metadata": {"filter_metadata": {"istio": {"services": [
            {"host": "details.default.svc.cluster.local", "name": "details", "namespace": "default"}]}}},
    }


def test_load_assignment_golden_only_ready_endpoints_sorted_and_deduplicated(mm) -> None:
    svc = convert.service(mm.service("reviews", ports=[("http", 9080), ("metrics", 15020)]))
    slices = (
        EndpointSlice("reviews-a", "default", "reviews", (SlicePort("http", 9080), SlicePort("metrics", 9090)), (
            SliceEndpoint(("10.244.0.9",), ready=True),
            SliceEndpoint(("10.244.0.7",), ready=None),  # nil means ready
            SliceEndpoint(("10.244.0.8",), ready=False),
            SliceEndpoint(("10.244.0.6",), ready=True, terminating=True),
        )),
        EndpointSlice("reviews-b", "default", "reviews", (SlicePort("http", 9080),), (
            SliceEndpoint(("10.244.0.7",), ready=True),  # the same pod in two slices (slice migration)
        )),
        EndpointSlice("reviews-c", "default", "reviews", (SlicePort("grpc", 7000),), (SliceEndpoint(("10.244.1.1",)),)),
    )
    ep = lambda ip, port: {"endpoint": {"address": {"socket_address": {"address": ip, "port_value": port}}},  # noqa: E731
                           "health_status": "HEALTHY", "load_balancing_weight": 1}
    assert clusters.load_assignment(svc, svc.ports[0], slices) == {
        "cluster_name": "outbound|9080||reviews.default.svc.cluster.local",
        "endpoints": [{"locality": {}, "lb_endpoints": [ep("10.244.0.7", 9080), ep("10.244.0.9", 9080)]}],
    }
    # The metrics port's endpoints listen on the slice's port (9090), not the Service's (15020).
    metrics = clusters.load_assignment(svc, svc.ports[1], slices)
    assert metrics["cluster_name"] == "outbound|15020||reviews.default.svc.cluster.local"
    assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in metrics["endpoints"][0]["lb_endpoints"]] == [9090, 9090]
    assert clusters.load_assignment(svc, ServicePort("nope", 1, 1), slices)["endpoints"] == []


def test_route_configuration_golden(mm) -> None:
    svc = convert.service(mm.service("details", ip="10.96.0.20"))
    other_ns = convert.service(mm.service("ratings", ns="shop", ip="10.96.0.21"))
    rc = routes.route_configuration(9080, [(svc, svc.ports[0]), (other_ns, other_ns.ports[0])], "default")
    assert rc["name"] == "9080"
    details, ratings, fallback = rc["virtual_hosts"]
    assert details == {
        "name": "details.default.svc.cluster.local:9080",
        "domains": ["details.default.svc.cluster.local", "details.default.svc.cluster.local:9080", "details", "details:9080",
                    "details.default.svc", "details.default.svc:9080", "details.default", "details.default:9080",
                    "10.96.0.20", "10.96.0.20:9080"],
        "routes": [{"name": "default", "match": {"prefix": "/"},
                    "route": {"cluster": "outbound|9080||details.default.svc.cluster.local", "timeout": "0s"}}],
    }
    assert "ratings" not in ratings["domains"]  # no short name across namespaces
    assert fallback["name"] == "allow_any" and fallback["domains"] == ["*"]
    blocked = routes.route_configuration(9080, [], "default", "REGISTRY_ONLY")["virtual_hosts"][-1]
    assert blocked["routes"][0]["direct_response"] == {"status": 502}


def test_a_pod_behind_a_service_gets_inbound_config_and_everything_is_valid_envoy(mm) -> None:
    ctx = ctx_of(
        ("Service", mm.service("details", ip="10.96.0.20")),
        ("EndpointSlice", mm.endpoint_slice("details", ips=["10.244.0.5"])),
        ("Service", mm.service("db", ip="10.96.0.30", ports=[("tcp-mysql", 3306)])),
        ("Service", mm.service("dns", ip="10.96.0.10", ports=[("dns", 53)], selector={})),  # unnamed protocol: TCP
        ("Pod", mm.pod("details-v1-x", ip="10.244.0.5", labels={"app": "details"})),
    )
    proxy = proxy_of(mm.node("details-v1-x", ip="10.244.0.5", labels={"app": "details"}))
    config = translate.translate(ctx, proxy)
    names = {t: [r.get("name") or r.get("cluster_name") for r in items] for t, items in config.items()}
    assert names[xr.CLUSTER_TYPE] == [
        "outbound|3306||db.default.svc.cluster.local", "outbound|9080||details.default.svc.cluster.local",
        "outbound|53||dns.default.svc.cluster.local", "inbound|9080||",
        "PassthroughCluster", "BlackHoleCluster", "InboundPassthroughClusterIpv4"]
    assert names[xr.LISTENER_TYPE] == ["virtualOutbound", "virtualInbound", "10.96.0.30_3306", "10.96.0.10_53",
                                       "0.0.0.0_9080"]
    assert names[xr.ROUTE_TYPE] == ["9080"]
    inbound = config[xr.LISTENER_TYPE][1]
    # PERMISSIVE (no PeerAuthentication, stage 6): mTLS from sidecars, plaintext, other TLS to the app; the rest
    assert [c.get("filter_chain_match") for c in inbound["filter_chains"]] == [
        {"destination_port": 9080, "transport_protocol": "tls", "application_protocols": ["minimesh"]},
        {"destination_port": 9080, "transport_protocol": "raw_buffer"},
        {"destination_port": 9080, "transport_protocol": "tls"}, None]
    tcp = config[xr.LISTENER_TYPE][2]
    assert tcp["bind_to_port"] is False
    assert tcp["filter_chains"][0]["filters"][0]["typed_config"]["cluster"] == "outbound|3306||db.default.svc.cluster.local"
    for type_url, items in config.items():
        for item in items:
            xr.from_dict(type_url, item)  # raises on anything a real Envoy would not parse


def test_protocol_detection_follows_istio() -> None:
    cases = {("http", None): Protocol.HTTP, ("http-web", None): Protocol.HTTP, ("grpc", None): Protocol.GRPC,
             ("grpc-web", None): Protocol.GRPC, ("http2", None): Protocol.HTTP2, ("tcp-db", None): Protocol.TCP,
             ("https", None): Protocol.TLS, ("web", None): Protocol.TCP, ("", None): Protocol.TCP,
             ("web", "http"): Protocol.HTTP, ("http", "tcp"): Protocol.TCP, ("x", "kubernetes.io/h2c"): Protocol.HTTP2}
    for (name, app), want in cases.items():
        assert detect_protocol(ServicePort(name, 80, 80, "TCP", app)) is want, (name, app)
    assert detect_protocol(ServicePort("http", 53, 53, "UDP")) is Protocol.UDP


def test_named_target_ports_resolve_through_the_pod(mm) -> None:
    svc = mm.service("web", ports=[("http", 80)])
    svc["spec"]["ports"][0]["targetPort"] = "web-port"
    ctx = ctx_of(("Service", svc), ("Pod", mm.pod("web-1", labels={"app": "web"}, ports=[("web-port", 8080)])))
    proxy = proxy_of(mm.node("web-1", labels={"app": "web"}))
    assert translate.inbound_ports(ctx, proxy) == ((8080, Protocol.HTTP),)
    lonely = proxy_of(mm.node("web-2", labels={"app": "web"}))  # its Pod object is unknown yet: no inbound chain
    assert translate.inbound_ports(ctx, lonely) == ()
