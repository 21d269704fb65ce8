"""Config parsing: Envoy's shape in, typed objects out, errors that name the path; all-or-nothing merges."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from minimesh.proxy.config import (
    ConfigError,
    Resources,
    Snapshot,
    parse_bootstrap,
    parse_duration,
    parse_resource,
)
from minimesh.proxy.config.snapshot import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE

BOOT = yaml.safe_load("""
node: {id: "sidecar~10.0.0.5~productpage-1.default~default.svc.cluster.local", cluster: productpage,
       metadata: {WORKLOAD_NAME: productpage-v1, NAMESPACE: default}}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 15000}}}
static_resources:
  clusters:
  - name: "outbound|9080||details.default.svc.cluster.local"
    type: STATIC
    connect_timeout: 0.25s
    lb_policy: LEAST_REQUEST
    circuit_breakers: {thresholds: [{max_connections: 10, max_pending_requests: 5, max_requests: 20, max_retries: 2}]}
    load_assignment:
      cluster_name: "outbound|9080||details.default.svc.cluster.local"
      endpoints:
      - locality: {region: r1, zone: z1}
        lb_endpoints:
        - endpoint: {address: {socket_address: {address: 10.0.0.7, port_value: 9080}}}
        - endpoint: {address: {socket_address: {address: 10.0.0.8, port_value: 9080}}}
          health_status: UNHEALTHY
  - name: reviews
    type: EDS
    eds_cluster_config: {eds_config: {ads: {}}}
  listeners:
  - name: virtualOutbound
    address: {socket_address: {address: 0.0.0.0, port_value: 15001}}
    use_original_dst: true
    traffic_direction: OUTBOUND
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {stat_prefix: PassthroughCluster, cluster: PassthroughCluster}
  - name: 0.0.0.0_9080
    address: {socket_address: {address: 0.0.0.0, port_value: 9080}}
    bind_to_port: false
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound_0.0.0.0_9080
          request_headers_timeout: 10s
          http_filters:
          - name: envoy.filters.http.fault
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault}
          - name: envoy.filters.http.router
          route_config:
            name: "9080"
            virtual_hosts:
            - name: details
              domains: [details, "details:9080"]
              routes:
              - name: default
                match: {prefix: /, headers: [{name: end-user, string_match: {exact: jason}, invert_match: true}]}
                route:
                  cluster: "outbound|9080||details.default.svc.cluster.local"
                  timeout: 0.5s
                  retry_policy: {retry_on: "5xx,connect-failure", num_retries: 3, per_try_timeout: 0.1s}
            - name: reviews
              domains: ["reviews*", "*.reviews.svc"]
              routes:
              - match: {safe_regex: {regex: "/reviews/[0-9]+"}}
                route: {weighted_clusters: {clusters: [{name: reviews, weight: 80}, {name: reviews, weight: 20}]}}
              - match: {path: /health, case_sensitive: false}
                direct_response: {status: 200, body: {inline_string: ok}}
minimesh: {outbound_traffic_policy: REGISTRY_ONLY}
""")


def test_bootstrap_parses_into_typed_objects() -> None:
    b = parse_bootstrap(BOOT)
    assert b.node.metadata["WORKLOAD_NAME"] == "productpage-v1"
    assert b.admin_address is not None and b.admin_address.port_value == 15000
    details = b.clusters[0]
    assert (details.connect_timeout, details.lb_policy) == (0.25, "LEAST_REQUEST")
    assert (details.thresholds.max_connections, details.thresholds.max_retries) == (10, 2)
    eps = details.load_assignment.all_endpoints()  # type: ignore[union-attr]
    assert [e.health_status for _, e in eps] == ["UNKNOWN", "UNHEALTHY"]
    assert eps[0][0].locality.zone == "z1"
    virt, http = b.listeners
    assert virt.use_original_dst and virt.traffic_direction == "OUTBOUND"
    assert http.bind_to_port is False
    hcm = http.filter_chains[0].filters[0].config
    assert hcm.request_headers_timeout == 10.0 and hcm.max_request_headers_kb == 60
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.fault"]
    route = hcm.route_config.virtual_hosts[0].routes[0]
    assert route.route.retry_policy.retry_on == {"5xx", "connect-failure"}
    assert route.route.retry_policy.per_try_timeout == pytest.approx(0.1)
    assert route.match.headers[0].exact == "jason" and route.match.headers[0].invert_match
    regex_route = hcm.route_config.virtual_hosts[1].routes[0]
    assert regex_route.match.safe_regex.fullmatch("/reviews/12")
    assert b.options.outbound_traffic_policy == "REGISTRY_ONLY"


def test_defaults_are_envoys() -> None:
    b = parse_bootstrap({"static_resources": {"clusters": [{"name": "c"}]}})
    c = b.clusters[0]
    t = c.thresholds
    assert (t.max_connections, t.max_pending_requests, t.max_requests, t.max_retries) == (1024, 1024, 1024, 3)
    assert (c.type, c.lb_policy, c.connect_timeout) == ("STATIC", "ROUND_ROBIN", 5.0)
    assert b.options.outbound_traffic_policy == "ALLOW_ANY"
    r = parse_resource(ROUTE_TYPE, {"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "c", "retry_policy": {"retry_on": "5xx"}}}]}]})
    action = r.virtual_hosts[0].routes[0].route
    assert action.timeout == 15.0 and action.retry_policy.num_retries == 1


def test_to_dict_round_trips() -> None:
    b = parse_bootstrap(BOOT)
    again = parse_bootstrap(b.to_dict())
    assert again == b


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(BOOT)
    cur: Any = d
    for p in path[:-1]:
        cur = cur[p]
    if value is KeyError:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return d


LST = ["static_resources", "listeners", 1, "filter_chains", 0, "filters", 0]
HCM = [*LST, "typed_config"]
VH = [*HCM, "route_config", "virtual_hosts", 0]


@pytest.mark.parametrize(("path", "value", "want"), [
    ([*LST, "name"], "envoy.filters.network.foo",
     'static_resources.listeners[1].filter_chains[0].filters[0]: unknown filter "envoy.filters.network.foo"'),
    (["static_resources", "clusters", 0, "connect_timeout"], "5",
     "static_resources.clusters[0].connect_timeout: bad duration '5'"),
    (["static_resources", "clusters", 0, "lb_policy"], "MAGLEV",
     "static_resources.clusters[0].lb_policy: unknown value 'MAGLEV'"),
    (["static_resources", "clusters", 0, "conect_timeout"], "1s",
     "static_resources.clusters[0].conect_timeout: unknown field 'conect_timeout' (did you mean 'connect_timeout'?)"),
    ([*HCM, "http_filters", 0, "name"], "envoy.filters.http.nope",
     'static_resources.listeners[1].filter_chains[0].filters[0].typed_config.http_filters[0]: unknown http filter'),
    ([*HCM, "http_filters"], [{"name": "envoy.filters.http.router"}, {"name": "envoy.filters.http.fault"}],
     "http_filters[0]: envoy.filters.http.router must be the last http filter"),
    ([*VH, "routes", 0, "route", "retry_policy", "retry_on"], "5xx,sometimes",
     "retry_policy.retry_on: unknown retry condition 'sometimes'"),
    ([*VH, "routes", 0, "match"], {"prefix": "/", "path": "/x"},
     "virtual_hosts[0].routes[0].match: set only one of prefix, path, safe_regex"),
    ([*VH, "routes", 0, "match"], {"safe_regex": {"regex": "(["}},
     "routes[0].match.safe_regex.regex: bad regex '(['"),
    ([*VH, "domains"], ["a.*.b"], "virtual_hosts[0].domains[0]: wildcard only allowed at the start or the end"),
    ([*HCM, "route_config", "virtual_hosts", 1, "domains"], ["details"],
     "route_config.virtual_hosts[1].domains: domain 'details' is also in virtual host 'details'"),
    (["static_resources", "listeners", 0, "address", "socket_address", "port_value"], 70000,
     "static_resources.listeners[0].address.socket_address.port_value: must be <= 65535"),
    (["static_resources", "listeners", 0, "address", "socket_address", "address"], "localhost",
     "static_resources.listeners[0].address.socket_address.address: 'localhost' is not an IP address"),
    (["static_resources", "clusters", 1, "load_assignment"], {"cluster_name": "reviews"},
     "static_resources.clusters[1].load_assignment: an EDS cluster gets its endpoints from EDS"),
    (["static_resources", "clusters", 0, "circuit_breakers", "thresholds", 0, "max_retries"], -1,
     "thresholds[0].max_retries: must be >= 0"),
    ([*HCM, "http_filters", 0, "typed_config", "abort"], {"http_status": 503, "grpc_status": 14},
     "http_filters[0].typed_config.abort: set only one of http_status, grpc_status, header_abort"),
    (["static_resources", "listeners", 0, "filter_chains", 0, "filters"], [],
     "static_resources.listeners[0].filter_chains[0].filters: needs at least one filter"),
    (["node", "metadata"], "x", "node.metadata: want an object, got a string"),
])
def test_errors_name_the_path(path: list[Any], value: Any, want: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_bootstrap(_with(path, value))
    assert want in str(err.value)


def test_durations() -> None:
    assert parse_duration("0.25s", "x") == 0.25
    assert parse_duration("15s", "x") == 15
    assert parse_duration({"seconds": 1, "nanos": 500_000_000}, "x") == 1.5
    for bad in ("15", "1m", "-1s", 3, "s"):
        with pytest.raises(ConfigError, match="bad duration"):
            parse_duration(bad, "x")


def test_static_config_must_reference_known_clusters() -> None:
    d = _with([*VH, "routes", 0, "route", "cluster"], "nowhere")
    with pytest.raises(ConfigError, match="route to unknown cluster 'nowhere'"):
        Resources.from_bootstrap(parse_bootstrap(d))


LISTENER = {"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "stat_prefix": "x", "rds": {"route_config_name": "r"}}}]}]}


def test_snapshot_merge_versions_and_all_or_nothing() -> None:
    base = Resources.from_bootstrap(parse_bootstrap(BOOT))
    snap = Snapshot.from_dict({"listeners": [LISTENER], "routes": [{"name": "r", "virtual_hosts": []}],
                               "endpoints": [{"cluster_name": "reviews", "endpoints": []}],
                               "version_info": {"listeners": "v1", "routes": "v1", "endpoints": "v7"}})
    state = base.merge(snap)
    assert state.version_info == {"listeners": "v1", "routes": "v1", "endpoints": "v7"}
    assert set(state.listeners) == {"virtualOutbound", "0.0.0.0_9080", "l"}
    assert state.listeners["l"].version_info == "v1" and not state.listeners["l"].static
    assert state.load_assignment(state.clusters["reviews"].resource) is not None
    # a static resource cannot be replaced dynamically; the old state is unchanged
    bad = Snapshot(clusters=(parse_resource(CLUSTER_TYPE, {"name": "reviews"}),), version_info={"clusters": "v2"})
    with pytest.raises(ConfigError, match="static"):
        state.merge(bad)
    assert state.version_info["listeners"] == "v1" and "clusters" not in state.version_info
    # duplicate names are rejected
    with pytest.raises(ConfigError, match="duplicate name 'l'"):
        state.merge(Snapshot(listeners=(parse_resource(LISTENER_TYPE, LISTENER),) * 2))
    # an unchanged resource keeps its version when a new version is applied
    again = state.merge(Snapshot(listeners=(parse_resource(LISTENER_TYPE, LISTENER),), version_info={"listeners": "v2"}))
    assert again.listeners["l"].version_info == "v1" and again.version_info["listeners"] == "v2"
    # an empty list removes all dynamic resources of that type (state of the world)
    gone = again.merge(Snapshot(listeners=()))
    assert set(gone.listeners) == {"virtualOutbound", "0.0.0.0_9080"}


def test_two_listeners_on_one_address_are_rejected() -> None:
    lst = copy.deepcopy(LISTENER)
    lst["address"]["socket_address"]["port_value"] = 15001
    lst["address"]["socket_address"]["address"] = "0.0.0.0"
    base = Resources.from_bootstrap(parse_bootstrap(BOOT))
    with pytest.raises(ConfigError, match=r"0\.0\.0\.0:15001 is already used by listener"):
        base.merge(Snapshot(listeners=(parse_resource(LISTENER_TYPE, lst),)))


def test_parse_resource_types() -> None:
    ep = parse_resource(ENDPOINT_TYPE, {"cluster_name": "x", "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 80}}},
         "load_balancing_weight": {"value": 3}}]}]})
    assert ep.all_endpoints()[0][1].load_balancing_weight == 3
    with pytest.raises(ConfigError, match="unknown resource type"):
        parse_resource("type.googleapis.com/nope", {})
    with pytest.raises(ConfigError, match=r"resource\.endpoints\[0\]\.lb_endpoints\[0\]\.endpoint: required"):
        parse_resource(ENDPOINT_TYPE, {"cluster_name": "x", "endpoints": [{"lb_endpoints": [{}]}]})


def test_load_bootstrap_reports_yaml_position(tmp_path: Any) -> None:
    from minimesh.proxy.config import load_bootstrap

    p = tmp_path / "b.yaml"
    p.write_text("node:\n  id: [unclosed\n")
    with pytest.raises(ConfigError, match=r"b\.yaml:\d+:\d+: not valid YAML"):
        load_bootstrap(p)
    with pytest.raises(ConfigError, match="cannot read the bootstrap file"):
        load_bootstrap(tmp_path / "missing.yaml")


def test_the_example_sidecar_bootstrap_is_valid() -> None:
    from pathlib import Path

    import minimesh.proxy
    from minimesh.proxy.config import load_bootstrap

    boot = load_bootstrap(Path(minimesh.proxy.__file__).parent / "examples" / "sidecar-bootstrap.yaml")
    Resources.from_bootstrap(boot)
    assert [x.name for x in boot.listeners] == ["virtualOutbound", "0.0.0.0_9080", "virtualInbound"]
