"""Parsing AuthorizationPolicy objects: typed results and errors that name the field."""

from __future__ import annotations

import ipaddress

import pytest
import yaml

from minimesh.authz.model import Condition, Operation, PolicyError, Source, parse_policies, parse_policy


def policy(spec, name: str = "p", namespace: str = "default") -> dict:
    return {
        "apiVersion": "security.minimesh.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def test_full_policy_parses_into_typed_objects() -> None:
    doc = yaml.safe_load(
        """
apiVersion: security.minimesh.io/v1
kind: AuthorizationPolicy
metadata: {name: details-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]
        notNamespaces: ["kube-system"]
        ipBlocks: ["10.244.0.0/16", "10.1.2.3"]
    to:
    - operation:
        methods: ["GET", "HEAD"]
        paths: ["/details*"]
        ports: ["9080", 9081]
        hosts: ["details*"]
    when:
    - key: request.headers[X-Version]
      values: ["v1"]
    - key: source.ip
      notValues: ["10.244.0.99"]
    - key: destination.port
      values: ["9080"]
"""
    )
    p = parse_policy(doc)
    assert (p.name, p.namespace, p.action, p.key) == (
        "details-viewer",
        "default",
        "ALLOW",
        "default/details-viewer",
    )
    assert p.match_labels == {"app": "details"}
    (rule,) = p.rules
    assert rule.sources == (
        Source(
            principals=("cluster.local/ns/default/sa/bookinfo-productpage",),
            not_namespaces=("kube-system",),
            ip_blocks=(ipaddress.ip_network("10.244.0.0/16"), ipaddress.ip_network("10.1.2.3/32")),
        ),
    )
    assert rule.operations == (
        Operation(hosts=("details*",), ports=(9080, 9081), methods=("GET", "HEAD"), paths=("/details*",)),
    )
    assert rule.conditions == (
        Condition("request.headers", ("v1",), (), "x-version"),
        Condition("source.ip", (), (ipaddress.ip_network("10.244.0.99/32"),)),
        Condition("destination.port", (9080,)),
    )


def test_empty_spec_is_an_allow_policy_without_rules() -> None:
    p = parse_policy(policy({}, "allow-nothing"))
    assert (p.action, p.rules, p.match_labels) == ("ALLOW", (), None)
    assert parse_policy(policy(None)).rules == ()
    assert parse_policy(policy({"rules": []})).rules == ()
    assert parse_policy(policy({"rules": [{}]})).rules[0].sources == ()


def test_namespace_defaults_and_v1beta1() -> None:
    doc = policy({"action": "DENY", "rules": [{}]})
    del doc["metadata"]["namespace"]
    doc["apiVersion"] = "security.minimesh.io/v1beta1"
    assert parse_policy(doc, default_namespace="shop").key == "shop/p"


def test_parse_policies_skips_empty_documents() -> None:
    assert [p.name for p in parse_policies([policy({}, "a"), None, policy({}, "b")])] == ["a", "b"]  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"rules": [{"to": [{"operation": {"methods": ["GET", "get"]}}]}]},
            r"default/p: spec\.rules\[0\]\.to\[0\]\.operation\.methods\[1\]: 'get' is not an upper-case HTTP method .*did you mean 'GET'",
        ),
        (
            {"rules": [{"from": [{"source": {"principals": ["spiffe://cluster.local/ns/default/sa/x"]}}]}]},
            r"spec\.rules\[0\]\.from\[0\]\.source\.principals\[0\]: .*without 'spiffe://', e\.g\. 'cluster\.local/ns/default/sa/x'",
        ),
        ({"action": "AUDIT"}, r"spec\.action: AUDIT is not supported by minimesh"),
        ({"action": "CUSTOM", "provider": {"name": "x"}}, r"spec\.provider: CUSTOM actions .* not supported"),
        ({"action": "CUSTOM"}, r"spec\.action: CUSTOM is not supported by minimesh"),
        ({"action": "allow"}, r"spec\.action: 'allow': want ALLOW or DENY"),
        (
            {"rules": [{"form": [{"source": {"principals": ["a"]}}]}]},
            r"spec\.rules\[0\]\.form: unknown field; known fields here: from, to, when",
        ),
        ({"rules": [{"from": [{"source": {}}]}]}, r"spec\.rules\[0\]\.from\[0\]\.source: must not be empty"),
        ({"rules": [{"from": [{}]}]}, r"spec\.rules\[0\]\.from\[0\]\.source: must not be empty"),
        (
            {"rules": [{"to": [{"operation": {}}]}]},
            r"spec\.rules\[0\]\.to\[0\]\.operation: must not be empty",
        ),
        (
            {"rules": [{"to": [{"operation": {"ports": ["80*"]}}]}]},
            r"operation\.ports\[0\]: '80\*' is not a port number",
        ),
        (
            {"rules": [{"to": [{"operation": {"ports": [0]}}]}]},
            r"operation\.ports\[0\]: 0 is not a port number",
        ),
        (
            {"rules": [{"to": [{"operation": {"paths": ["details"]}}]}]},
            r"operation\.paths\[0\]: 'details' must start with '/'",
        ),
        ({"rules": [{"to": [{"operation": {"paths": ["/a/{*}/b"]}}]}]}, r"path templates .* not supported"),
        (
            {"rules": [{"to": [{"operation": {"hosts": ["a*b"]}}]}]},
            r"operation\.hosts\[0\]: 'a\*b': '\*' may only be",
        ),
        ({"rules": [{"to": [{"operation": {"hosts": ["*ab*"]}}]}]}, r"'\*ab\*': '\*' may only be"),
        (
            {"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.300/8"]}}]}]},
            r"source\.ipBlocks\[0\]: '10\.0\.0\.300/8' is not an IP",
        ),
        (
            {"rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]},
            r"source\.requestPrincipals: .*JWT",
        ),
        (
            {"rules": [{"when": [{"key": "request.auth.claims[iss]", "values": ["x"]}]}]},
            r"when\[0\]\.key: .*JWT",
        ),
        (
            {"rules": [{"when": [{"key": "connection.sni", "values": ["x"]}]}]},
            r"when\[0\]\.key: 'connection\.sni' is not supported; use one of: request\.headers\[NAME\]",
        ),
        ({"rules": [{"when": [{"key": "source.ip"}]}]}, r"when\[0\]: set values or notValues"),
        ({"rules": [{"when": [{"values": ["x"]}]}]}, r"when\[0\]\.key: must be set"),
        (
            {"rules": [{"when": [{"key": "destination.port", "values": ["http"]}]}]},
            r"when\[0\]\.values\[0\]: 'http' is not a port",
        ),
        (
            {"rules": [{"when": [{"key": "source.ip", "notValues": ["nope"]}]}]},
            r"when\[0\]\.notValues\[0\]: 'nope' is not an IP",
        ),
        ({"rules": {"to": []}}, r"spec\.rules: want a list"),
        ({"selector": {"matchExpressions": []}}, r"spec\.selector\.matchExpressions: unknown field"),
        (
            {"selector": {"matchLabels": {"app": 1}}},
            r"spec\.selector\.matchLabels\.app: label values are strings",
        ),
        ({"targetRefs": [{"kind": "Service"}]}, r"spec\.targetRefs: targetRefs is not supported"),
        ("deny-all", r"default/p: spec: want an object, got str"),
    ],
)
def test_errors_name_the_field(spec, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(policy(spec))


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            {"apiVersion": "security.istio.io/v1"},
            r"apiVersion: 'security\.istio\.io/v1': want security\.minimesh\.io/v1",
        ),
        ({"kind": "PeerAuthentication"}, r"kind: 'PeerAuthentication': want AuthorizationPolicy"),
        ({"metadata": {"namespace": "x"}}, r"x/\?: metadata\.name: must be set"),
    ],
)
def test_header_errors(patch: dict, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy({**policy({}), **patch})
