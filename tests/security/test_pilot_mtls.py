"""The push server's mTLS translation (pure): PeerAuthentication precedence, inbound chains per mode,
auto-mTLS clusters and endpoints; every result is a valid Envoy v3 message and parses in the proxy."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

from minimesh.pilot import mtls
from minimesh.pilot.model import Config, EndpointSlice, Pod, Service, ServicePort, SliceEndpoint, SlicePort
from minimesh.pilot.mtls import Mode, effective_mode
from minimesh.pilot.protocol import Protocol
from minimesh.proxy.config._reader import Node
from minimesh.proxy.config.cluster import parse_cluster, parse_cluster_load_assignment
from minimesh.proxy.config.listener import parse_listener
from minimesh.proxy.filter_chain_match import select_filter_chain
from minimesh.xds import resources as xr


def pa(name: str, ns: str, mode: str | None = None, selector: dict[str, str] | None = None,
       ports: dict[str, str] | None = None) -> Config:
    spec: dict = {}
    if mode:
        spec["mtls"] = {"mode": mode}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    if ports:
        spec["portLevelMtls"] = {p: {"mode": m} for p, m in ports.items()}
    return Config("PeerAuthentication", name, ns, spec, "1")


DETAILS = {"app": "details", "version": "v1"}


def test_nothing_means_permissive() -> None:
    assert effective_mode([], "default", DETAILS, 9080) is Mode.PERMISSIVE


def test_precedence_workload_over_namespace_over_mesh() -> None:
    mesh = pa("default", "mesh-system", "STRICT")
    ns = pa("default", "default", "PERMISSIVE")
    wl = pa("details", "default", "DISABLE", {"app": "details"})
    assert effective_mode([mesh], "default", DETAILS) is Mode.STRICT
    assert effective_mode([mesh, ns], "default", DETAILS) is Mode.PERMISSIVE
    assert effective_mode([mesh, ns, wl], "default", DETAILS) is Mode.DISABLE
    assert effective_mode([mesh, ns, wl], "default", {"app": "reviews"}) is Mode.PERMISSIVE
    assert effective_mode([mesh, ns, wl], "other", DETAILS) is Mode.STRICT  # other namespaces: mesh-wide
    # a policy with a selector in the root namespace is not mesh-wide
    assert effective_mode([pa("x", "mesh-system", "STRICT", {"app": "details"})], "default", DETAILS) is Mode.PERMISSIVE


def test_unset_inherits_and_ports_override() -> None:
    mesh = pa("default", "mesh-system", "STRICT")
    wl = pa("details", "default", None, {"app": "details"}, ports={"9080": "DISABLE"})
    assert effective_mode([mesh, wl], "default", DETAILS, 9080) is Mode.DISABLE
    assert effective_mode([mesh, wl], "default", DETAILS, 9090) is Mode.STRICT  # UNSET: inherit
    assert effective_mode([mesh, pa("u", "default", "UNSET")], "default", DETAILS) is Mode.STRICT
    # portLevelMtls only counts on workload policies (Istio)
    assert effective_mode([pa("ns", "default", "STRICT", ports={"9080": "DISABLE"})], "default", DETAILS, 9080) is Mode.STRICT


def test_oldest_of_one_level_is_picked_deterministically() -> None:
    a, b = pa("a", "default", "STRICT"), pa("b", "default", "DISABLE")
    assert effective_mode([b, a], "default", DETAILS) is effective_mode([a, b], "default", DETAILS) is Mode.STRICT


APP = {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    "stat_prefix": "inbound|9080||", "cluster": "inbound|9080||"}}


def _listener(mode: Mode) -> dict:
    return {"name": "virtualInbound", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
            "listener_filters": [{"name": "envoy.filters.listener.tls_inspector"}],
            "filter_chains": mtls.inbound_chains(9080, Protocol.TCP, mode, APP)}


@pytest.mark.parametrize("mode, transport, alpn, want", [
    (Mode.PERMISSIVE, "tls", ("minimesh",), "0.0.0.0_9080-mtls"),
    (Mode.PERMISSIVE, "raw_buffer", (), "0.0.0.0_9080"),
    (Mode.PERMISSIVE, "tls", ("h2",), "0.0.0.0_9080-tls-passthrough"),
    (Mode.STRICT, "tls", ("minimesh",), "0.0.0.0_9080-mtls"),
    (Mode.STRICT, "raw_buffer", (), None),
    (Mode.STRICT, "tls", ("h2",), None),
    (Mode.DISABLE, "raw_buffer", (), "0.0.0.0_9080"),
    (Mode.DISABLE, "tls", ("minimesh",), "0.0.0.0_9080"),
])
def test_inbound_chains_per_mode(mode: Mode, transport: str, alpn: tuple[str, ...], want: str | None) -> None:
    listener = parse_listener(Node(_listener(mode), "l"))
    json_format.ParseDict(_listener(mode), listener_pb2.Listener())  # a real Envoy Listener
    chain = select_filter_chain(listener.filter_chains, listener.default_filter_chain, destination_port=9080,
                                transport_protocol=transport, application_protocols=alpn)
    assert (chain.name if chain else None) == want


def test_strict_is_not_bypassed_by_the_passthrough_chain() -> None:
    base = mtls.virtual_inbound(((9080, Protocol.HTTP, Mode.STRICT),))
    listener = parse_listener(Node(base, "l"))
    names = [c.name for c in listener.filter_chains]
    assert names == ["0.0.0.0_9080-mtls", "PassthroughFilterChain"]
    assert select_filter_chain(listener.filter_chains, None, destination_port=9080,
                               transport_protocol="raw_buffer") is None
    other = select_filter_chain(listener.filter_chains, None, destination_port=8080, transport_protocol="raw_buffer")
    assert other is not None and other.name == "PassthroughFilterChain"  # ports no Service declares


SVC = Service("details", "default", "10.96.0.20", (ServicePort("http", 9080, 9080),), (("app", "details"),))
PODS = {
    ("default", "details-1"): Pod("details-1", "default", "10.244.0.7",
                                  (("app", "details"), ("security.minimesh.io/tlsMode", "minimesh")), "bookinfo-details"),
    ("default", "details-2"): Pod("details-2", "default", "10.244.0.8", (("app", "details"),), "bookinfo-details"),
    ("default", "details-3"): Pod("details-3", "default", "10.244.0.9",
                                  (("app", "details"), ("version", "v3"), ("security.minimesh.io/tlsMode", "minimesh")),
                                  "bookinfo-details-v3"),
}
SLICES = (EndpointSlice("details-x", "default", "details", (SlicePort("http", 9080),), tuple(
    SliceEndpoint((p.ip,), ready=True, pod=p.name) for p in PODS.values())),)


def test_auto_mtls_endpoints_and_identities() -> None:
    assert mtls.service_identities(SVC, SLICES, PODS) == (
        "spiffe://cluster.local/ns/default/sa/bookinfo-details", "spiffe://cluster.local/ns/default/sa/bookinfo-details-v3")
    assert mtls.mtls_endpoints(SVC, SLICES, PODS, [], "http") == {"10.244.0.7", "10.244.0.9"}  # not the one without sidecar
    off = pa("v3", "default", "DISABLE", {"version": "v3"})
    assert mtls.mtls_endpoints(SVC, SLICES, PODS, [off], "http") == {"10.244.0.7"}


def test_cluster_and_assignment_are_envoy_messages_and_parse_in_the_proxy() -> None:
    ids = mtls.service_identities(SVC, SLICES, PODS)
    cluster = mtls.outbound_cluster(SVC, SVC.ports[0], ids)
    json_format.ParseDict(cluster, cluster_pb2.Cluster())
    parsed = parse_cluster(Node(cluster, "c"))
    tls, raw = parsed.transport_socket_matches
    assert tls.match == (("tlsMode", "minimesh"),) and raw.match == () and raw.transport_socket is None
    assert tls.transport_socket is not None
    assert tls.transport_socket.sni == "outbound_.9080_._.details.default.svc.cluster.local"
    assert [m.matcher.exact for m in tls.transport_socket.common.san_matchers] == list(ids)
    assert tls.transport_socket.common.alpn_protocols == ("minimesh",)
    la = mtls.load_assignment(SVC, SVC.ports[0], SLICES, mtls.mtls_endpoints(SVC, SLICES, PODS, [], "http"))
    json_format.ParseDict(la, endpoint_pb2.ClusterLoadAssignment())
    parsed_la = parse_cluster_load_assignment(Node(la, "la"))
    marks = {ep.address.address: ep.socket_match for _, ep in parsed_la.all_endpoints()}
    assert marks == {"10.244.0.7": (("tlsMode", "minimesh"),), "10.244.0.8": (), "10.244.0.9": (("tlsMode", "minimesh"),)}


def dr(name: str, ns: str, host: str, tls: dict | None = None, ports: list | None = None) -> Config:
    policy: dict = {}
    if tls is not None:
        policy["tls"] = tls
    if ports is not None:
        policy["portLevelSettings"] = ports
    return Config("DestinationRule", name, ns, {"host": host, "trafficPolicy": policy}, "1")


def test_destination_rule_tls_settings() -> None:
    pinned = ("spiffe://cluster.local/ns/default/sa/bookinfo-reviews",)
    rules = [dr("details", "default", "details", {"mode": "ISTIO_MUTUAL", "subjectAltNames": list(pinned)})]
    assert mtls.destination_tls(rules, "default", SVC, 9080) == ("ISTIO_MUTUAL", pinned)
    assert mtls.destination_tls(rules, "other", SVC, 9080) == ("ISTIO_MUTUAL", pinned)  # the service's namespace
    assert mtls.destination_tls([dr("x", "other", "details", {"mode": "DISABLE"})], "default", SVC, 9080) == (None, ())
    by_port = [dr("d", "default", "details.default.svc.cluster.local", {"mode": "ISTIO_MUTUAL"},
                  [{"port": {"number": 9080}, "tls": {"mode": "DISABLE"}}])]
    assert mtls.destination_tls(by_port, "default", SVC, 9080) == ("DISABLE", ())
    assert mtls.destination_tls(by_port, "default", SVC, 9090) == ("ISTIO_MUTUAL", ())
    wildcard = [dr("all", "mesh-system", "*.default.svc.cluster.local", {"mode": "DISABLE"})]
    assert mtls.destination_tls(wildcard, "default", SVC, 9080) == ("DISABLE", ())


def test_pinned_identities_replace_the_endpoints_and_modes_shape_the_cluster() -> None:
    pinned = ("spiffe://cluster.local/ns/default/sa/bookinfo-reviews",)
    auto = mtls.outbound_cluster(SVC, SVC.ports[0], ("spiffe://cluster.local/ns/default/sa/bookinfo-details",), None, pinned)
    sans = auto["transport_socket_matches"][0]["transport_socket"]["typed_config"]["common_tls_context"][
        "combined_validation_context"]["default_validation_context"]["match_subject_alt_names"]
    assert sans == [{"exact": pinned[0]}]
    always = mtls.outbound_cluster(SVC, SVC.ports[0], (), "ISTIO_MUTUAL")
    assert "transport_socket_matches" not in always and always["transport_socket"]["name"] == "envoy.transport_sockets.tls"
    json_format.ParseDict(always, cluster_pb2.Cluster())
    never = mtls.outbound_cluster(SVC, SVC.ports[0], (), "DISABLE")
    assert "transport_socket" not in never and "transport_socket_matches" not in never


def test_the_push_server_does_not_share_inbound_chains_across_modes() -> None:
    """details and reviews have the same view (namespace, ports): a policy for details only must still
    reach details only (the push server shares listeners between proxies of one view)."""
    from envoy.config.core.v3 import base_pb2

    from minimesh.pilot import convert
    from minimesh.pilot.server import DiscoveryServer
    from minimesh.pilot.store import MeshStore
    from minimesh.xds import node as xnode

    store = MeshStore()
    for app, ip in (("details", "10.244.0.7"), ("reviews", "10.244.0.8")):
        store.apply("Service", "ADDED", {"metadata": {"name": app, "namespace": "default", "resourceVersion": "1"},
                                         "spec": {"clusterIP": "10.96.0.9", "selector": {"app": app},
                                                  "ports": [{"name": "http", "port": 9080, "targetPort": 9080}]}})
        store.apply("Pod", "ADDED", {"metadata": {"name": f"{app}-1", "namespace": "default", "labels": {"app": app}},
                                     "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 9080}]}]},
                                     "status": {"podIP": ip}})
    store.apply("PeerAuthentication", "ADDED", {"metadata": {"name": "d", "namespace": "default", "resourceVersion": "1"},
                                                "spec": {"selector": {"matchLabels": {"app": "details"}},
                                                         "mtls": {"mode": "STRICT"}}})
    ctx = store.snapshot("v1")
    ds = DiscoveryServer(MeshStore())

    def chains(app: str, ip: str) -> list[str]:
        node = json_format.ParseDict(xnode.node_dict(ip, f"{app}-1", "default", labels={"app": app}), base_pb2.Node())
        node.id = str(xnode.NodeId("sidecar", ip, f"{app}-1", "default", "cluster.local"))
        gen = ds.generate(ctx, convert.proxy(node), xr.LISTENER_TYPE, ())
        inbound = next(r.message() for r in gen.resources if r.name == "virtualInbound")
        return [c.name for c in inbound.filter_chains]

    assert chains("reviews", "10.244.0.8") == ["0.0.0.0_9080-mtls", "0.0.0.0_9080", "0.0.0.0_9080-tls-passthrough",
                                              "PassthroughFilterChain"]
    assert chains("details", "10.244.0.7") == ["0.0.0.0_9080-mtls", "PassthroughFilterChain"]
