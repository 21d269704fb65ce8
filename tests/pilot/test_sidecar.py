"""Sidecar scoping: which hosts an egress entry admits, which Sidecar applies, and the size it saves."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from minimesh.pilot import convert, translate
from minimesh.pilot.cache import encode_response
from minimesh.pilot.model import Service, ServicePort, Sidecar
from minimesh.pilot.server import DiscoveryServer
from minimesh.pilot.sidecar import EgressHostError, host_allowed, parse_egress_host, select_sidecar
from minimesh.xds import resources as xr


def svc(name: str, ns: str) -> Service:
    return Service(name, ns, "10.96.0.1", (ServicePort("http", 80, 80),))


DETAILS = svc("details", "default")
PILOT = svc("minimesh-pilot", "mesh-system")
RATINGS = svc("ratings", "shop")


@pytest.mark.parametrize("hosts, proxy_ns, service, want", [
    (["./*"], "default", DETAILS, True),
    (["./*"], "shop", DETAILS, False),
    (["./*", "mesh-system/*"], "shop", PILOT, True),
    (["*/*"], "anything", RATINGS, True),
    (["~/*"], "default", DETAILS, False),
    (["shop/*"], "default", RATINGS, True),
    (["shop/*"], "default", DETAILS, False),
    (["*/ratings.shop.svc.cluster.local"], "default", RATINGS, True),
    (["*/ratings.shop.svc.cluster.local"], "default", DETAILS, False),
    (["default/details.default.svc.cluster.local"], "shop", DETAILS, True),
    (["shop/details.default.svc.cluster.local"], "shop", DETAILS, False),
    (["*/*.shop.svc.cluster.local"], "default", RATINGS, True),
    (["*/*.svc.cluster.local"], "default", DETAILS, True),
    (["*/*.example.com"], "default", DETAILS, False),
    ([], "default", DETAILS, False),
])
def test_host_allowed(hosts: list[str], proxy_ns: str, service: Service, want: bool) -> None:
    assert host_allowed(hosts, proxy_ns, service) is want


@pytest.mark.parametrize("entry, why", [
    ("details", "want 'namespace/dnsName'"), ("/x", "want 'namespace/dnsName'"), ("a/b/c", "want 'namespace/dnsName'"),
    ("*/de*tails", "wildcard"), ("n*/x", "namespace must be"), (7, "want a string"),
])
def test_bad_egress_hosts_say_what_is_wrong(entry: object, why: str) -> None:
    with pytest.raises(EgressHostError, match=why):
        parse_egress_host(entry)  # type: ignore[arg-type]


def test_bad_sidecar_objects_name_the_field(mm) -> None:
    with pytest.raises(convert.ConvertError, match=r"Sidecar default/s: spec.egress\[0\].hosts\[1\]: 'details'"):
        convert.sidecar(mm.sidecar("s", "default", ["./*", "details"]))


def test_which_sidecar_applies(mm) -> None:
    proxy = convert.proxy(json_format.ParseDict(mm.node("reviews-v2-x", labels={"app": "reviews", "version": "v2"}),
                                                base_pb2.Node()))
    root = Sidecar("default", "mesh-system", ("*/*",))
    ns_wide = Sidecar("default", "default", ("./*",))
    for_v2 = Sidecar("v2", "default", ("./*", "shop/*"), (("version", "v2"),))
    for_v1 = Sidecar("v1", "default", ("./*",), (("version", "v1"),))
    elsewhere = Sidecar("default", "shop", ("./*",))
    assert select_sidecar([root, ns_wide, for_v1, for_v2, elsewhere], proxy) is for_v2
    assert select_sidecar([root, ns_wide, for_v1], proxy) is ns_wide
    assert select_sidecar([root, for_v1, elsewhere], proxy) is root
    assert select_sidecar([for_v1, elsewhere], proxy) is None


def test_scoping_shrinks_the_config(mm) -> None:
    """40 services in 10 namespaces: a proxy scoped to ./* and mesh-system/* gets a fraction of the bytes."""
    ds = DiscoveryServer()
    for i in range(40):
        ns = f"ns-{i % 10}"
        ds.store.apply("Service", "ADDED", mm.service(f"svc-{i}", ns=ns, ip=f"10.96.1.{i + 1}"))
        ds.store.apply("EndpointSlice", "ADDED", mm.endpoint_slice(f"svc-{i}", ns=ns, ips=[f"10.244.1.{i + 1}"]))
    ds.store.apply("Service", "ADDED", mm.service("minimesh-pilot", ns="mesh-system", ip="10.96.2.1"))
    proxy = convert.proxy(json_format.ParseDict(mm.node("svc-3-abc", ns="ns-3", labels={"app": "svc-3"}), base_pb2.Node()))

    def size() -> tuple[int, int]:
        ds.ctx = ds.store.snapshot(f"v{len(ds.store.objects['Sidecar'])}")
        config = ds.proxy_config(proxy)
        services = len([c for c in config[xr.CLUSTER_TYPE] if c.name.startswith("outbound|")])
        return sum(len(encode_response("v", t, "n", r)) for t, r in config.items()), services

    full_bytes, full_services = size()
    ds.store.apply("Sidecar", "ADDED", mm.sidecar("default", "ns-3", ["./*", "mesh-system/*"]))
    scoped_bytes, scoped_services = size()
    assert (full_services, scoped_services) == (41, 5)  # ns-3 has svc-3, 13, 23, 33; plus the pilot
    assert full_bytes > 4 * scoped_bytes
    # The scoped config is exactly the unscoped one restricted to the visible services.
    scope = ds.ctx.scope(proxy)
    assert sorted(s.key for s in scope.services) == ["mesh-system/minimesh-pilot", "ns-3/svc-13", "ns-3/svc-23",
                                                    "ns-3/svc-3", "ns-3/svc-33"]
    eds_names, rds_names = translate.subscriptions(ds.ctx, proxy)
    assert len(eds_names) == 5 and rds_names == ["9080"]
