"""VirtualService http routes in the route configuration (the stage 4 subset), and the path by which an
invalid regex reaches the proxies and is rejected there (the NACK experiment of lab 04)."""

from __future__ import annotations

from typing import Any

import pytest

from minimesh.pilot import listeners, translate, virtualservices
from minimesh.pilot.model import Config, Service, ServicePort
from minimesh.pilot.store import MeshStore
from minimesh.proxy.config import ConfigError
from minimesh.proxy.xds import parse_update
from minimesh.xds import resources as xr

DETAILS = Service("details", "default", "10.96.0.20", (ServicePort("http", 9080, 9080),))


def vs(spec: dict[str, Any], name: str = "v", ns: str = "default", rv: str = "1") -> Config:
    return Config("VirtualService", name, ns, spec, rv)


@pytest.mark.parametrize("host, ns, applies", [
    ("details", "default", True), ("details.default", "default", True), ("details.default.svc", "default", True),
    ("details.default.svc.cluster.local", "other", True), ("details", "other", False), ("reviews", "default", False),
])
def test_hosts_resolve_in_the_virtualservice_namespace(host: str, ns: str, applies: bool) -> None:
    assert virtualservices.applies_to(vs({"hosts": [host]}, ns=ns), DETAILS) is applies


def test_http_routes_translate_matches_and_destinations() -> None:
    spec = {"hosts": ["details"], "http": [
        {"name": "v2", "match": [{"uri": {"prefix": "/v2"}, "headers": {"end-user": {"exact": "jason"}}},
                                 {"uri": {"regex": "/api/v[0-9]+/.*"}}],
         "route": [{"destination": {"host": "details", "subset": "v2"}}]},
        {"route": [{"destination": {"host": "details"}, "weight": 80},
                   {"destination": {"host": "reviews.default.svc.cluster.local", "port": {"number": 9080}}, "weight": 20}]},
    ]}
    routes = virtualservices.http_routes(vs(spec), DETAILS, 9080)
    v2 = "outbound|9080|v2|details.default.svc.cluster.local"
    assert routes[0] == {"name": "v2", "match": {"prefix": "/v2", "headers": [
        {"name": "end-user", "string_match": {"exact": "jason"}}]}, "route": {"cluster": v2, "timeout": "0s"}}
    assert routes[1]["match"] == {"safe_regex": {"regex": "/api/v[0-9]+/.*"}}
    assert routes[2]["match"] == {"prefix": "/"} and routes[2]["name"] == "default/v[1]"
    assert routes[2]["route"]["weighted_clusters"]["clusters"] == [
        {"name": "outbound|9080||details.default.svc.cluster.local", "weight": 80},
        {"name": "outbound|9080||reviews.default.svc.cluster.local", "weight": 20}]


def _routes_for_sleep(*vss: Config) -> dict[str, Any]:
    store = MeshStore()
    store.apply("Service", "ADDED", {"metadata": {"name": "details", "namespace": "default"},
                                     "spec": {"clusterIP": "10.96.0.20", "selector": {"app": "details"},
                                              "ports": [{"name": "http", "port": 9080}]}})
    for v in vss:
        store.apply("VirtualService", "ADDED", {"metadata": {"name": v.name, "namespace": v.namespace,
                                                             "resourceVersion": v.resource_version}, "spec": v.spec})
    from minimesh.pilot.model import Proxy

    proxy = Proxy("sidecar~10.244.0.9~sleep-1.default~default.svc.cluster.local", "sidecar", "10.244.0.9", "sleep-1",
                  "default")
    rcs = translate.build_routes(store.snapshot("v"), proxy, ["9080"])
    return rcs[0]


def test_a_virtualservice_replaces_the_default_route_of_its_service_only() -> None:
    plain = _routes_for_sleep()
    vh = next(v for v in plain["virtual_hosts"] if v["name"].startswith("details"))
    assert [r["name"] for r in vh["routes"]] == ["default"]
    routed = _routes_for_sleep(vs({"hosts": ["details"], "http": [{"match": [{"uri": {"exact": "/health"}}],
                                                                    "route": [{"destination": {"host": "details"}}]}]}))
    vh = next(v for v in routed["virtual_hosts"] if v["name"].startswith("details"))
    assert [r["match"] for r in vh["routes"]] == [{"path": "/health"}]
    assert routed["virtual_hosts"][-1]["name"] == "allow_any"  # the fallback is untouched


def test_an_invalid_regex_passes_the_push_server_and_the_proxy_rejects_it() -> None:
    bad = vs({"hosts": ["details"], "http": [{"match": [{"uri": {"regex": "/details/(\\d+"}}],
                                              "route": [{"destination": {"host": "details"}}]}]})
    rc = _routes_for_sleep(bad)
    wire = xr.to_dict(xr.from_dict(xr.ROUTE_TYPE, rc))  # what the proxy receives: protobuf does not check regexes
    with pytest.raises(ConfigError) as e:
        parse_update(xr.ROUTE_TYPE, [wire])
    assert "routes['9080']" in str(e.value) and "bad regex '/details/(\\\\d+'" in str(e.value)


def test_virtual_inbound_does_not_hand_off_by_original_destination() -> None:
    # With use_original_dst the proxy would hand an inbound connection for :9080 to the OUTBOUND listener
    # 0.0.0.0_9080 and send it out again: a loop. Istio sets it on virtualOutbound only.
    assert "use_original_dst" not in listeners.virtual_inbound([])
    assert listeners.virtual_outbound()["use_original_dst"] is True
