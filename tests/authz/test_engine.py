"""Istio's authorization semantics, table-driven."""

from __future__ import annotations

import pytest

from minimesh.authz.engine import DENIED_BODY, Request, evaluate, policies_for, string_matches
from minimesh.authz.model import parse_policy
from minimesh.authz.normalize import InvalidRequest, normalize_path

PRODUCTPAGE = "cluster.local/ns/default/sa/bookinfo-productpage"
SLEEP = "cluster.local/ns/foo/sa/sleep"


def pol(name: str, spec: dict, namespace: str = "default"):
    return parse_policy(
        {
            "apiVersion": "security.minimesh.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


@pytest.mark.parametrize(
    ("pattern", "value", "want"),
    [
        ("GET", "GET", True),
        ("GET", "GETX", False),
        ("/details*", "/details", True),
        ("/details*", "/details/0", True),
        ("/details*", "/detail", False),
        ("*/sa/sleep", SLEEP, True),
        ("*/sa/sleep", PRODUCTPAGE, False),
        ("*", "anything", True),
        ("*", "", False),  # presence: an empty value is not "present"
        ("*", None, False),
        ("abc", None, False),
    ],
)
def test_string_matches(pattern: str, value: str | None, want: bool) -> None:
    assert string_matches(pattern, value) is want


def test_string_matches_ignore_case() -> None:
    assert string_matches("Details.Default*", "details.default.svc", ignore_case=True)
    assert not string_matches("Details.Default*", "details.default.svc")


@pytest.mark.parametrize(
    ("raw", "mode", "want"),
    [
        ("/details/../x", "BASE", "/x"),
        ("/public/./data/abc/../xyz", "BASE", "/public/data/xyz"),  # Istio's documented example
        ("/../../etc/passwd", "BASE", "/etc/passwd"),
        ("/a/%2e%2e/b", "BASE", "/b"),
        ("/%61%62%63/%7E%5F", "BASE", "/abc/~_"),
        ("/a%2fb", "BASE", "/a%2fb"),  # %2F stays encoded by default
        ("/a%20b", "BASE", "/a%20b"),  # not unreserved: stays encoded
        ("/some%2fdata/%61%62%63", "DECODE_AND_MERGE_SLASHES", "/some/data/abc"),  # Istio's example
        ("/a%5C..%5Cb", "DECODE_AND_MERGE_SLASHES", "/b"),
        ("\\da", "BASE", "/da"),
        ("/some\\data", "BASE", "/some/data"),
        ("/a//b", "BASE", "/a//b"),
        ("/some//data///abc", "MERGE_SLASHES", "/some/data/abc"),
        ("/details?id=1/../x", "BASE", "/details"),  # the query is not part of the path
        ("/x/../y", "NONE", "/x/../y"),
        ("/", "BASE", "/"),
        ("/a/..", "BASE", "/"),
        ("/a/.", "BASE", "/a/"),
    ],
)
def test_normalize_path(raw: str, mode: str, want: str) -> None:
    assert normalize_path(raw, mode) == want  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", ["/a%00b", "details", "%2Fx"])
def test_paths_istio_rejects(raw: str) -> None:
    with pytest.raises(InvalidRequest):
        normalize_path(raw)


DENY_ADMIN = pol("deny-admin", {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]})
ALLOW_GET = pol("allow-get", {"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]})
ALLOW_NOTHING = pol("allow-nothing", {})
DENY_NO_RULES = pol("deny-no-rules", {"action": "DENY"})
ALLOW_ALL = pol("allow-all", {"rules": [{}]})
DENY_ALL = pol("deny-all", {"action": "DENY", "rules": [{}]})


@pytest.mark.parametrize(
    ("policies", "request_", "allowed", "decided_by"),
    [
        ([], Request("POST", "/anything"), True, None),
        ([ALLOW_NOTHING], Request("GET", "/"), False, None),
        ([DENY_NO_RULES], Request("GET", "/"), True, None),  # DENY without rules matches nothing
        ([ALLOW_ALL], Request("DELETE", "/x"), True, "default/allow-all"),
        ([DENY_ALL, ALLOW_ALL], Request("GET", "/"), False, "default/deny-all"),
        ([ALLOW_GET], Request("GET", "/x"), True, "default/allow-get"),
        ([ALLOW_GET], Request("POST", "/x"), False, None),
        ([ALLOW_GET, DENY_ADMIN], Request("GET", "/admin/users"), False, "default/deny-admin"),
        ([DENY_ADMIN], Request("GET", "/public/../admin/users"), False, "default/deny-admin"),  # normalised
        ([DENY_ADMIN], Request("GET", "/%61dmin"), False, "default/deny-admin"),
        ([DENY_ADMIN], Request("GET", "/ADMIN"), True, None),  # case-sensitive
        ([DENY_ADMIN], Request("GET", "/public"), True, None),  # DENY only: everything else allowed
        ([DENY_ADMIN, ALLOW_NOTHING], Request("GET", "/public"), False, None),
    ],
)
def test_istio_order_and_defaults(policies, request_: Request, allowed: bool, decided_by: str | None) -> None:
    d = evaluate(policies, request_)
    assert (d.allowed, d.policy_name) == (allowed, decided_by), d.reason
    assert d.status == (200 if allowed else 403)
    assert d.body == ("" if allowed else DENIED_BODY)


def test_reasons_say_why() -> None:
    assert (
        "denied by DENY policy default/deny-admin (rule 0)"
        in evaluate([DENY_ADMIN], Request("GET", "/admin")).reason
    )
    assert (
        "no ALLOW policy matched (default/allow-get apply"
        in evaluate([ALLOW_GET], Request("PUT", "/")).reason
    )
    assert "no ALLOW policy applies" in evaluate([DENY_ADMIN], Request("GET", "/")).reason
    assert (
        "(rule 1)"
        in evaluate(
            [pol("two", {"rules": [{"to": [{"operation": {"methods": ["PUT"]}}]}, {}]})], Request()
        ).reason
    )


def test_decoded_slashes_depend_on_the_normalization_mode() -> None:
    deny = pol(
        "deny-secret", {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin/secret"]}}]}]}
    )
    req = Request("GET", "/admin%2Fsecret")
    assert evaluate([deny], req).allowed  # BASE (Istio's default) keeps %2F: CVE-2021-31920's lesson
    assert not evaluate([deny], req, normalization="DECODE_AND_MERGE_SLASHES").allowed
    assert not evaluate([deny], Request("GET", "/admin//secret"), normalization="MERGE_SLASHES").allowed


@pytest.mark.parametrize(
    ("req", "why"), [(Request("GET", "/a%00"), "%00"), (Request("get", "/"), "not upper case")]
)
def test_requests_istio_rejects_get_400(req: Request, why: str) -> None:
    d = evaluate([ALLOW_ALL], req)
    assert (d.allowed, d.status, d.bad_request) == (False, 400, True)
    assert why in d.reason


SOURCE_CASES = [
    # (source spec, request kwargs, matches)
    ({"principals": [PRODUCTPAGE]}, {"source_principal": PRODUCTPAGE}, True),
    (
        {"principals": [PRODUCTPAGE]},
        {"source_principal": "spiffe://" + PRODUCTPAGE},
        True,
    ),  # SAN form accepted
    ({"principals": [PRODUCTPAGE]}, {"source_principal": SLEEP}, False),
    ({"principals": [PRODUCTPAGE]}, {}, False),  # plaintext: no principal
    ({"principals": ["*"]}, {}, False),  # presence needs mTLS
    ({"principals": ["*"]}, {"source_principal": SLEEP}, True),
    ({"notPrincipals": [SLEEP]}, {}, True),  # no principal is "not sleep"
    ({"notPrincipals": ["*/sa/sleep"]}, {"source_principal": SLEEP}, False),
    ({"namespaces": ["foo"]}, {"source_principal": SLEEP}, True),  # namespace from the principal
    ({"namespaces": ["default"]}, {"source_principal": SLEEP}, False),
    ({"notNamespaces": ["foo"]}, {"source_principal": PRODUCTPAGE}, True),
    ({"namespaces": ["foo"]}, {"source_namespace": "foo"}, True),
    ({"ipBlocks": ["10.244.0.0/16"]}, {"source_ip": "10.244.3.4"}, True),
    ({"ipBlocks": ["10.244.0.0/16"]}, {"source_ip": "10.96.0.1"}, False),
    ({"ipBlocks": ["10.244.0.0/16"]}, {}, False),
    ({"notIpBlocks": ["10.244.0.5"]}, {"source_ip": "10.244.0.5"}, False),
    ({"ipBlocks": ["fd00::/8"]}, {"source_ip": "10.0.0.1"}, False),
    ({"remoteIpBlocks": ["203.0.113.0/24"]}, {"source_ip": "10.244.0.9", "remote_ip": "203.0.113.7"}, True),
    ({"remoteIpBlocks": ["203.0.113.0/24"]}, {"source_ip": "203.0.113.7"}, True),  # defaults to source ip
    (
        {"principals": [PRODUCTPAGE], "ipBlocks": ["10.0.0.0/8"]},
        {"source_principal": PRODUCTPAGE, "source_ip": "192.168.1.1"},
        False,
    ),
]


@pytest.mark.parametrize(("source", "kwargs", "matches"), SOURCE_CASES)
def test_source_fields(source: dict, kwargs: dict, matches: bool) -> None:
    allow = pol("src", {"rules": [{"from": [{"source": source}]}]})
    assert evaluate([allow], Request(**kwargs)).allowed is matches


OPERATION_CASES = [
    ({"methods": ["GET", "HEAD"]}, {"method": "HEAD"}, True),
    ({"notMethods": ["DELETE"]}, {"method": "DELETE"}, False),
    ({"paths": ["/details*"]}, {"path": "/details/0"}, True),
    ({"paths": ["*/ratings"]}, {"path": "/api/v1/ratings"}, True),
    ({"paths": ["/details"]}, {"path": "/details?x=1"}, True),  # query ignored
    ({"notPaths": ["/healthz"]}, {"path": "/healthz"}, False),
    (
        {"hosts": ["details.default.svc.cluster.local*"]},
        {"host": "Details.default.svc.cluster.local:9080"},
        True,
    ),
    ({"notHosts": ["*.evil.com"]}, {"host": "x.EVIL.com"}, False),
    ({"ports": ["9080"]}, {"port": 9080}, True),
    ({"ports": ["9080"]}, {"port": 9081}, False),
    ({"notPorts": ["15020"]}, {"port": 15020}, False),
    ({"methods": ["GET"], "paths": ["/details*"]}, {"method": "GET", "path": "/reviews"}, False),
]


@pytest.mark.parametrize(("operation", "kwargs", "matches"), OPERATION_CASES)
def test_operation_fields(operation: dict, kwargs: dict, matches: bool) -> None:
    allow = pol("op", {"rules": [{"to": [{"operation": operation}]}]})
    assert evaluate([allow], Request(**kwargs)).allowed is matches


CONDITION_CASES = [
    ({"key": "request.headers[X-Version]", "values": ["v1*"]}, {"headers": {"x-version": "v1.2"}}, True),
    ({"key": "request.headers[x-version]", "values": ["v1"]}, {"headers": {"X-Version": "v2"}}, False),
    ({"key": "request.headers[x-version]", "values": ["*"]}, {}, False),
    ({"key": "request.headers[x-version]", "notValues": ["*"]}, {}, True),
    ({"key": "request.headers[x-a]", "values": ["1,2"]}, {"headers": [("x-a", "1"), ("X-A", "2")]}, True),
    ({"key": "source.ip", "values": ["10.0.0.0/8"]}, {"source_ip": "10.1.1.1"}, True),
    (
        {"key": "remote.ip", "notValues": ["203.0.113.7"]},
        {"source_ip": "10.1.1.1", "remote_ip": "203.0.113.7"},
        False,
    ),
    ({"key": "destination.ip", "values": ["10.244.0.5"]}, {"destination_ip": "10.244.0.5"}, True),
    ({"key": "source.namespace", "values": ["foo"]}, {"source_principal": SLEEP}, True),
    ({"key": "source.principal", "values": ["*/sa/sleep"]}, {"source_principal": SLEEP}, True),
    ({"key": "destination.port", "values": ["9080", "9081"]}, {"port": 9081}, True),
    ({"key": "destination.port", "values": ["9080"], "notValues": ["9080"]}, {"port": 9080}, False),
]


@pytest.mark.parametrize(("condition", "kwargs", "matches"), CONDITION_CASES)
def test_when_conditions(condition: dict, kwargs: dict, matches: bool) -> None:
    allow = pol("when", {"rules": [{"when": [condition]}]})
    assert evaluate([allow], Request(**kwargs)).allowed is matches


def test_a_rule_needs_all_parts_and_lists_are_ored() -> None:
    allow = pol(
        "combo",
        {
            "rules": [
                {
                    "from": [{"source": {"principals": [PRODUCTPAGE]}}, {"source": {"namespaces": ["foo"]}}],
                    "to": [{"operation": {"methods": ["GET"]}}, {"operation": {"paths": ["/public*"]}}],
                    "when": [
                        {"key": "request.headers[x-ok]", "values": ["yes"]},
                        {"key": "destination.port", "values": ["9080"]},
                    ],
                }
            ]
        },
    )
    ok = {"headers": {"x-ok": "yes"}, "port": 9080}
    assert evaluate([allow], Request("GET", "/x", source_principal=PRODUCTPAGE, **ok)).allowed
    assert evaluate([allow], Request("POST", "/public/1", source_principal=SLEEP, **ok)).allowed
    assert not evaluate(
        [allow], Request("POST", "/x", source_principal=SLEEP, **ok)
    ).allowed  # no `to` matches
    assert not evaluate(
        [allow], Request("GET", "/x", source_principal="cluster.local/ns/bar/sa/y", **ok)
    ).allowed
    assert not evaluate(
        [allow], Request("GET", "/x", source_principal=PRODUCTPAGE, headers={"x-ok": "yes"}, port=1)
    ).allowed


def test_plain_tcp_follows_istio() -> None:
    tcp = Request(method=None, port=27017, source_principal=SLEEP)
    allow_http = pol(
        "allow-get", {"rules": [{"to": [{"operation": {"methods": ["GET"], "ports": ["27017"]}}]}]}
    )
    allow_port = pol("allow-port", {"rules": [{"to": [{"operation": {"ports": ["27017"]}}]}]})
    deny_http = pol(
        "deny-get",
        {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["GET"], "ports": ["27017"]}}]}]},
    )
    deny_header = pol(
        "deny-hdr", {"action": "DENY", "rules": [{"when": [{"key": "request.headers[x]", "values": ["1"]}]}]}
    )
    assert not evaluate([allow_http], tcp).allowed  # ALLOW rule with HTTP fields cannot match TCP
    assert evaluate([allow_port], tcp).allowed
    d = evaluate([allow_port, deny_http], tcp)  # DENY ignores the HTTP fields: denies more
    assert (d.allowed, d.policy_name) == (False, "default/deny-get")
    assert evaluate([deny_http], Request(method=None, port=27018)).allowed  # other ports untouched
    assert not evaluate([allow_port, deny_header], tcp).allowed
    # The same DENY on HTTP still needs its method.
    assert evaluate([allow_port, deny_http], Request("POST", "/", port=27017)).allowed


def test_policies_for_selects_by_labels_and_root_namespace() -> None:
    ns_wide = pol("ns-wide", {})
    details_only = pol("details-only", {"selector": {"matchLabels": {"app": "details"}}})
    two_labels = pol("v1-only", {"selector": {"matchLabels": {"app": "details", "version": "v1"}}})
    other_ns = pol("other", {}, namespace="foo")
    mesh_wide = pol("mesh-wide", {"action": "DENY"}, namespace="mesh-system")
    mesh_details = pol(
        "mesh-details", {"selector": {"matchLabels": {"app": "details"}}}, namespace="mesh-system"
    )
    everything = [ns_wide, details_only, two_labels, other_ns, mesh_wide, mesh_details]
    got = policies_for({"app": "details", "version": "v2"}, "default", everything)
    assert [p.key for p in got] == [
        "mesh-system/mesh-details",
        "mesh-system/mesh-wide",
        "default/details-only",
        "default/ns-wide",
    ]
    assert [p.key for p in policies_for({"app": "ratings"}, "foo", everything)] == [
        "mesh-system/mesh-wide",
        "foo/other",
    ]
    assert [p.key for p in policies_for(None, "bar", everything, root_namespace="istio-system")] == []
