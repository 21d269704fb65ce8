"""The translation AuthorizationPolicy → Envoy RBAC (what the push server sends) decides exactly as the
evaluator with Istio's semantics (the stage-7 exercise): a differential test over generated policies and
requests, HTTP and plain TCP, plus the shapes Istio's builder produces and the proxy's parser round trip."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minimesh.authz import translate
from minimesh.authz.check import attributes
from minimesh.authz.engine import Request, evaluate, string_matches
from minimesh.authz.model import parse_policy
from minimesh.authz.normalize import InvalidRequest
from minimesh.authz.rbac import rules_from_dict
from minimesh.proxy.config._reader import ConfigError

from .test_properties import patterns

PRINCIPALS = ["cluster.local/ns/default/sa/a", "cluster.local/ns/default/sa/b", "cluster.local/ns/foo/sa/a",
              "cluster.local/ns/foo-bar/sa/x.y"]
NAMESPACES = ["default", "foo", "foo-bar"]
PATHS = ["/", "/details", "/details/0", "/details/../admin", "/reviews/./1", "/%64etails/1", "/admin/x?q=/details"]
METHODS = ["GET", "POST", "DELETE"]
HOSTS = ["details", "details:9080", "Details.default.svc.cluster.local", "reviews"]
IPS = ["10.1.2.3", "10.2.0.1", "192.168.0.1"]


def fields(**choices: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A dict with a random subset of the keys, each a short list of values."""
    parts = [st.one_of(st.just({}), st.lists(v, min_size=1, max_size=2).map(lambda vs, k=k: {k: vs}))
             for k, v in choices.items()]
    return st.tuples(*parts).map(lambda ds: {k: v for d in ds for k, v in d.items()})


cidrs = st.sampled_from(["10.0.0.0/8", "10.1.0.0/16", "192.168.0.1", "10.2.0.1/32"])
source = fields(principals=patterns(PRINCIPALS), notPrincipals=patterns(PRINCIPALS),
                namespaces=patterns(NAMESPACES), notNamespaces=patterns(NAMESPACES),
                ipBlocks=cidrs, notIpBlocks=cidrs, remoteIpBlocks=cidrs, notRemoteIpBlocks=cidrs).filter(bool)
operation = fields(methods=patterns(METHODS), notMethods=patterns(METHODS), paths=patterns(["/details", "/admin", "/"]),
                   notPaths=patterns(["/details/0", "/admin/x"]), ports=st.sampled_from(["9080", "9081"]),
                   notPorts=st.sampled_from(["9081"]), hosts=patterns(["details", "details:9080"]),
                   notHosts=patterns(["reviews"])).filter(bool)
condition = st.one_of(
    st.builds(lambda v, n: {"key": "request.headers[x-user]", **({"values": v} if v else {}), **({"notValues": n} if n else {})},
              st.lists(patterns(["alice", "bob", "al"]), max_size=2), st.lists(patterns(["eve"]), max_size=1)),
    st.builds(lambda k, v: {"key": k, "values": v}, st.sampled_from(["source.ip", "remote.ip", "destination.ip"]),
              st.lists(cidrs, min_size=1, max_size=2)),
    st.builds(lambda v: {"key": "source.namespace", "notValues": v}, st.lists(patterns(NAMESPACES), min_size=1, max_size=2)),
    st.builds(lambda v: {"key": "source.principal", "values": v}, st.lists(patterns(PRINCIPALS), min_size=1, max_size=2)),
    st.builds(lambda v: {"key": "destination.port", "values": v}, st.lists(st.sampled_from(["9080", "9081"]), min_size=1)),
).filter(lambda c: "values" in c or "notValues" in c)
rule = st.builds(lambda f, t, w: {k: v for k, v in (("from", f), ("to", t), ("when", w)) if v},
                 st.lists(source.map(lambda s: {"source": s}), max_size=2),
                 st.lists(operation.map(lambda o: {"operation": o}), max_size=2),
                 st.lists(condition, max_size=2))
policy = st.builds(lambda action, rules, empty: {"action": action, **({} if empty else {"rules": rules})},
                   st.sampled_from(["ALLOW", "DENY"]), st.lists(rule, min_size=1, max_size=3),
                   st.sampled_from([False, False, False, True]))
headers = st.sampled_from([(), (("x-user", "alice"),), (("x-user", "bob"),), (("x-user", "alice"), ("x-user", "eve")),
                           (("x-user", "eve,bob"),), (("x-user", ""),), (("x-user", "alice,bob"),)])
http_request = st.builds(Request, method=st.sampled_from(METHODS), path=st.sampled_from(PATHS),
                         host=st.sampled_from(HOSTS), port=st.sampled_from([9080, 9081]), headers=headers,
                         source_principal=st.one_of(st.none(), st.sampled_from(PRINCIPALS)),
                         source_ip=st.sampled_from(IPS), remote_ip=st.one_of(st.none(), st.sampled_from(IPS)),
                         destination_ip=st.sampled_from(IPS))
tcp_request = st.builds(Request, method=st.none(), port=st.sampled_from([9080, 9081]),
                        source_principal=st.one_of(st.none(), st.sampled_from(PRINCIPALS)),
                        source_ip=st.sampled_from(IPS), destination_ip=st.sampled_from(IPS))


def policies_of(specs: list[dict]) -> list:
    return [parse_policy({"apiVersion": "security.minimesh.io/v1", "kind": "AuthorizationPolicy",
                          "metadata": {"name": f"p{i}", "namespace": "default"}, "spec": s})
            for i, s in enumerate(specs)]


def rbac_decision(filters: list[dict], req: Request) -> bool:
    """Run the filters as the proxy does (in order, each may deny), on what the sidecar sees of `req`."""
    try:
        attrs = attributes(req)
    except InvalidRequest:  # the connection manager answers 400 before any filter
        return False
    for f in filters:
        raw = f["typed_config"].get("rules")
        if raw is not None and not rules_from_dict(raw).decide(attrs).allowed:
            return False
    return True


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(policy, min_size=1, max_size=3), req=http_request)
def test_http_rbac_decides_as_the_evaluator(specs: list[dict], req: Request) -> None:
    policies = policies_of(specs)
    want = evaluate(policies, req).allowed
    assert rbac_decision(translate.http_filters(policies), req) == want, translate.http_filters(policies)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(policy, min_size=1, max_size=3), req=tcp_request)
def test_tcp_rbac_decides_as_the_evaluator(specs: list[dict], req: Request) -> None:
    policies = policies_of(specs)
    want = evaluate(policies, req).allowed
    assert rbac_decision(translate.network_filters(policies), req) == want, translate.network_filters(policies)


@pytest.mark.parametrize("pattern", ["alice", "al*", "*ce", "*", "alice,eve", "bob"])
@pytest.mark.parametrize("values", [(), ("alice",), ("alice", "eve"), ("eve", "alice"), ("eve,alice,bob",), ("",),
                                    ("malice",), ("alice,eve",)])
def test_repeated_headers_match_element_wise_in_both(pattern: str, values: tuple[str, ...]) -> None:
    """A `when` on a header that came several times (joined by ","): Istio's regex matches any element."""
    policies = policies_of([{"rules": [{"when": [{"key": "request.headers[x-user]", "values": [pattern]}]}]}])
    req = Request("GET", "/", headers=tuple(("x-user", v) for v in values), source_ip=IPS[0])
    want = evaluate(policies, req).allowed
    assert rbac_decision(translate.http_filters(policies), req) == want
    joined = ",".join(values) if values else None
    elements = joined.split(",") if joined is not None else []
    assert want is (string_matches(pattern, joined) or any(string_matches(pattern, e) for e in elements))


@pytest.mark.parametrize(("pattern", "principal", "matches"), [
    ("foo*", "cluster.local/ns/foo/sa/a", True), ("foo*", "cluster.local/ns/foo-bar/sa/a", True),
    ("*bar", "cluster.local/ns/foo-bar/sa/a", True), ("*", "cluster.local/ns/default/sa/a", True),
    ("foo", "cluster.local/ns/foo-bar/sa/a", False), ("*o", "cluster.local/ns/default/sa/foo", False),
    ("de*", None, False),
])
def test_namespaces_match_the_spiffe_segment(pattern: str, principal: str | None, matches: bool) -> None:
    policies = policies_of([{"rules": [{"from": [{"source": {"namespaces": [pattern]}}]}]}])
    req = Request("GET", "/", source_principal=principal, source_ip=IPS[0])
    assert evaluate(policies, req).allowed is matches
    assert rbac_decision(translate.http_filters(policies), req) is matches
    assert rbac_decision(translate.network_filters(policies), Request(None, source_principal=principal)) is matches


# ---- shapes, as Istio's builder ------------------------------------------------------------------


def test_details_viewer_has_istios_shape() -> None:
    [p] = policies_of([{"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/bookinfo-productpage"]}}],
                                   "to": [{"operation": {"methods": ["GET"], "paths": ["/details*"]}}]}]}])
    [f] = translate.http_filters([p])
    assert f["name"] == "envoy.filters.http.rbac"
    assert f["typed_config"]["rules"] == {"policies": {"ns[default]-policy[p0]-rule[0]": {
        "permissions": [{"and_rules": {"rules": [
            {"or_rules": {"rules": [{"header": {"name": ":method", "string_match": {"exact": "GET"}}}]}},
            {"or_rules": {"rules": [{"url_path": {"path": {"prefix": "/details"}}}]}}]}}],
        "principals": [{"and_ids": {"ids": [
            {"or_ids": {"ids": [{"authenticated": {"principal_name": {
                "exact": "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"}}}]}}]}}]}}}


def test_allow_nothing_and_deny_then_allow_order() -> None:
    allow_nothing, deny = policies_of([{}, {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}])
    filters = translate.http_filters([allow_nothing, deny])
    assert [f["typed_config"]["rules"].get("action", "ALLOW") for f in filters] == ["DENY", "ALLOW"]
    assert filters[1]["typed_config"]["rules"] == {"policies": {"ns[default]-policy[p0]-rule[0]": translate.NEVER}}
    assert translate.http_filters([]) == []


def test_tcp_allow_skips_http_rules_but_deny_keeps_them_stripped() -> None:
    allow, deny = policies_of([{"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}, {"to": [{"operation": {"ports": ["9080"]}}]}]},
                               {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}])
    [f] = translate.network_filters([allow])
    assert list(f["typed_config"]["rules"]["policies"]) == ["ns[default]-policy[p0]-rule[1]"]
    assert f["typed_config"]["stat_prefix"] == "tcp."
    [d] = translate.network_filters([deny])
    assert d["typed_config"]["rules"]["policies"]["ns[default]-policy[p1]-rule[0]"]["permissions"] == [
        {"and_rules": {"rules": [{"any": True}]}}]


def test_an_invalid_policy_fails_closed() -> None:
    bad_deny = translate.parse("default", "oops", {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["get"]}}]}]})
    bad_allow = translate.parse("default", "oops2", {"rules": [{"from": [{"source": {"requestPrincipals": ["x"]}}]}]})
    assert isinstance(bad_deny, translate.Invalid) and "did you mean 'GET'" in bad_deny.error
    assert isinstance(bad_allow, translate.Invalid) and "requestPrincipals" in bad_allow.error
    get = Request("GET", "/details/0", port=9080, source_principal=PRINCIPALS[0], source_ip=IPS[0])
    assert rbac_decision(translate.http_filters([bad_deny]), get) is False
    assert rbac_decision(translate.http_filters([bad_allow]), get) is False
    assert rbac_decision(translate.network_filters([bad_deny]), Request(None, port=9080, source_ip=IPS[0])) is False


def test_the_translation_is_valid_envoy_and_survives_the_proxy_parser() -> None:
    """Packed into the real Envoy protobuf (as the push server does) and parsed back by the proxy."""
    from minimesh.xds import resources as xr

    specs = [{}, {"action": "DENY", "rules": [{"when": [{"key": "request.headers[x-user]", "values": ["eve"]}]}]},
             {"rules": [{"from": [{"source": {"namespaces": ["foo*"], "ipBlocks": ["10.0.0.0/8"]}}],
                         "to": [{"operation": {"hosts": ["*.example.com"], "notPaths": ["/admin*"], "ports": ["9080"]}}],
                         "when": [{"key": "destination.ip", "values": ["10.1.0.0/16"]}]}]}]
    policies = policies_of(specs)
    hcm = {"@type": xr.HCM_TYPE, "stat_prefix": "inbound_0.0.0.0_9080", "route_config": {"name": "x"},
           "http_filters": [*translate.http_filters(policies),
                            {"name": "envoy.filters.http.router", "typed_config": {"@type": xr.ROUTER_TYPE}}]}
    listener = {"name": "virtualInbound", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
                "filter_chains": [
                    {"filter_chain_match": {"destination_port": 9080},
                     "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]},
                    {"filters": [*translate.network_filters(policies),
                                 {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                                     "@type": xr.TCP_PROXY_TYPE, "stat_prefix": "x", "cluster": "x"}}]}]}
    back = xr.to_dict(xr.from_dict(xr.LISTENER_TYPE, listener))
    from minimesh.proxy.config import parse_resource

    parsed = parse_resource(xr.LISTENER_TYPE, back)
    http_chain, tcp_chain = parsed.filter_chains
    assert [f.name for f in http_chain.terminal.config.http_filters] == ["envoy.filters.http.rbac"] * 2
    assert [f.name for f in tcp_chain.filters] == ["envoy.filters.network.rbac"] * 2 + ["envoy.filters.network.tcp_proxy"]
    assert http_chain.terminal.config.http_filters[1].config.to_dict()["rules"] == hcm["http_filters"][1]["typed_config"]["rules"]


@pytest.mark.parametrize(("config", "error"), [
    ({"policies": {"x": {"permissions": [{"metadata": {}}], "principals": [{"any": True}]}}},
     "policies['x'].permissions[0]: 'metadata' is not supported"),
    ({"policies": {"x": {"permissions": [{"any": True}], "principals": []}}}, "needs at least one principal"),
    ({"action": "ALLOW!", "policies": {}}, "unknown value 'ALLOW!'"),
    ({"policies": {"x": {"permissions": [{"url_path": {"path": {"safe_regex": {"regex": "("}}}}],
                         "principals": [{"any": True}]}}}, "bad regex"),
    ({"policies": {"x": {"permissions": [{"destination_ip": {"address_prefix": "10.0.0.300", "prefix_len": 8}}],
                         "principals": [{"any": True}]}}}, "not a CIDR range"),
])
def test_bad_rbac_config_names_the_field(config: dict, error: str) -> None:
    with pytest.raises(ConfigError) as e:
        rules_from_dict(config)
    assert error in str(e.value)
