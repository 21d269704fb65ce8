"""The mesh CRDs: structural schemas (every field typed, as apiextensions v1 requires) that accept the
resources the labs apply and reject the mistakes a trainee makes (checked with jsonschema, offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import minimesh

CRD_DIR = Path(minimesh.__file__).parent / "manifests" / "crds"
CRDS = {doc["spec"]["names"]["kind"]: doc for doc in (yaml.safe_load(p.read_text()) for p in sorted(CRD_DIR.glob("*.yaml")))}


def schema(kind: str) -> dict[str, Any]:
    return CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_every_mesh_kind_has_a_crd_in_its_group() -> None:
    groups = {k: d["spec"]["group"] for k, d in CRDS.items()}
    assert groups == {
        "Sidecar": "networking.minimesh.io", "VirtualService": "networking.minimesh.io",
        "DestinationRule": "networking.minimesh.io", "Gateway": "networking.minimesh.io",
        "PeerAuthentication": "security.minimesh.io", "AuthorizationPolicy": "security.minimesh.io",
    }
    for doc in CRDS.values():
        assert doc["metadata"]["name"] == f"{doc['spec']['names']['plural']}.{doc['spec']['group']}"
        (version,) = doc["spec"]["versions"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        assert version["additionalPrinterColumns"][-1]["name"] == "Age"


def _structural_problems(node: dict[str, Any], path: str) -> list[str]:
    problems = []
    if node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string"):
        return problems
    if "type" not in node:
        problems.append(f"{path}: no type")
    for key in ("oneOf", "anyOf", "allOf"):
        for i, alt in enumerate(node.get(key, [])):
            if set(alt) - {"required"}:  # alternatives may only constrain, never declare fields or types
                problems.append(f"{path}.{key}[{i}]: declares {sorted(set(alt) - {'required'})}")
    for name, sub in (node.get("properties") or {}).items():
        problems += _structural_problems(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        problems += _structural_problems(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        problems += _structural_problems(node["items"], f"{path}[]")
    return problems


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_schemas_are_structural(kind: str) -> None:
    assert _structural_problems(schema(kind), kind) == []


GOOD = [
    ("Sidecar", {"egress": [{"hosts": ["./*", "mesh-system/*"]}]}),
    ("Sidecar", {"workloadSelector": {"labels": {"app": "reviews"}}, "egress": [{"hosts": ["*/*"]}],
                 "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}),
    ("VirtualService", {"hosts": ["reviews"], "http": [
        {"match": [{"headers": {"end-user": {"exact": "jason"}}, "uri": {"prefix": "/reviews"}}],
         "fault": {"delay": {"fixedDelay": "2s", "percentage": {"value": 100}}},
         "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
        {"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                   {"destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}}, "weight": 10}],
         "timeout": "1.5s", "retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "5xx,connect-failure"}}]}),
    ("VirtualService", {"hosts": ["bookinfo.example.com"], "gateways": ["mesh-system/ingress"],
                        "http": [{"route": [{"destination": {"host": "productpage"}}]}]}),
    ("DestinationRule", {"host": "reviews", "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"},
                                                              "connectionPool": {"http": {"http1MaxPendingRequests": 1}}},
                         "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}),
    ("Gateway", {"selector": {"app": "ingress"}, "servers": [{"port": {"number": 80, "protocol": "HTTP", "name": "http"},
                                                               "hosts": ["bookinfo.example.com"]}]}),
    ("PeerAuthentication", {"mtls": {"mode": "STRICT"}}),
    ("PeerAuthentication", {"selector": {"matchLabels": {"app": "details"}}, "mtls": {"mode": "PERMISSIVE"},
                            "portLevelMtls": {"9080": {"mode": "DISABLE"}}}),
    ("AuthorizationPolicy", {"selector": {"matchLabels": {"app": "details"}}, "action": "ALLOW", "rules": [
        {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/bookinfo-productpage"]}}],
         "to": [{"operation": {"methods": ["GET"], "paths": ["/details*"]}}],
         "when": [{"key": "request.headers[x-user]", "values": ["*"]}]}]}),
    ("AuthorizationPolicy", {}),  # deny all
]

BAD = [
    ("Sidecar", {"egress": [{"hosts": []}]}, "should be non-empty|is too short"),
    ("Sidecar", {"egress": [{"hosts": ["details"]}]}, "does not match"),
    ("Sidecar", {"egress": [{}]}, "'hosts' is a required property"),
    ("VirtualService", {"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r"}, "weight": 150}]}]},
     "greater than the maximum"),
    ("VirtualService", {"hosts": ["r"], "http": [{"match": [{"uri": {"prefix": "/", "exact": "/"}}]}]}, "valid under each of"),
    ("VirtualService", {"hosts": ["r"], "http": [{"timeout": "1.5 seconds"}]}, "does not match"),
    ("DestinationRule", {"subsets": []}, "'host' is a required property"),
    ("PeerAuthentication", {"mtls": {"mode": "STRICTT"}}, "is not one of"),
    ("AuthorizationPolicy", {"action": "PERMIT"}, "is not one of"),
    ("AuthorizationPolicy", {"rules": [{"to": [{"operation": {"methods": "GET"}}]}]}, "is not of type 'array'"),
]


def resource(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    group = CRDS[kind]["spec"]["group"]
    return {"apiVersion": f"{group}/v1", "kind": kind, "metadata": {"name": "x", "namespace": "default"}, "spec": spec}


@pytest.mark.parametrize("kind, spec", GOOD, ids=[f"{k}-{i}" for i, (k, _) in enumerate(GOOD)])
def test_lab_resources_are_accepted(kind: str, spec: dict[str, Any]) -> None:
    jsonschema.validate(resource(kind, spec), schema(kind))


@pytest.mark.parametrize("kind, spec, why", BAD, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(BAD)])
def test_mistakes_are_rejected(kind: str, spec: dict[str, Any], why: str) -> None:
    with pytest.raises(jsonschema.ValidationError, match=why):
        jsonschema.validate(resource(kind, spec), schema(kind))
