"""Istio's authz-http task on Bookinfo, step by step, and stage 7's own task, as policies + requests."""

from __future__ import annotations

import pytest
import yaml

from minimesh.authz.engine import Request, evaluate, policies_for
from minimesh.authz.model import parse_policies

SA = "cluster.local/ns/default/sa/bookinfo-{}"
INGRESS = "cluster.local/ns/mesh-system/sa/ingressgateway"
SLEEP = "cluster.local/ns/default/sa/sleep"
LABELS = {name: {"app": name} for name in ("productpage", "details", "reviews", "ratings")}

ALLOW_NOTHING = """
apiVersion: security.minimesh.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: default}
spec: {}
"""
PRODUCTPAGE_VIEWER = """
apiVersion: security.minimesh.io/v1
kind: AuthorizationPolicy
metadata: {name: productpage-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  action: ALLOW
  rules:
  - to:
    - operation: {methods: ["GET"]}
"""
DETAILS_VIEWER = """
apiVersion: security.minimesh.io/v1
kind: AuthorizationPolicy
metadata: {name: details-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}
    to:
    - operation: {methods: ["GET"]}
"""
REVIEWS_VIEWER = DETAILS_VIEWER.replace("details", "reviews")


class Mesh:
    """The policies of a namespace and the decision for a call `caller -> workload`."""

    def __init__(self, *docs: str) -> None:
        self.policies = parse_policies([yaml.safe_load(d) for d in docs])

    def call(self, workload: str, method: str = "GET", path: str = "/", principal: str | None = None) -> bool:
        applicable = policies_for(LABELS[workload], "default", self.policies)
        return evaluate(applicable, Request(method, path, source_principal=principal)).allowed


def productpage_view(mesh: Mesh) -> dict[str, bool]:
    """What a browser sees: productpage itself, and its calls to details and reviews."""
    return {
        "productpage": mesh.call("productpage", "GET", "/productpage", INGRESS),
        "details": mesh.call("details", "GET", "/details/0", SA.format("productpage")),
        "reviews": mesh.call("reviews", "GET", "/reviews/0", SA.format("productpage")),
    }


def test_no_policy_allows_everything() -> None:
    assert productpage_view(Mesh()) == {"productpage": True, "details": True, "reviews": True}


def test_step1_allow_nothing_denies_everything() -> None:
    assert productpage_view(Mesh(ALLOW_NOTHING)) == {"productpage": False, "details": False, "reviews": False}


def test_step2_productpage_viewer() -> None:
    mesh = Mesh(ALLOW_NOTHING, PRODUCTPAGE_VIEWER)
    # "Error fetching product details / reviews": the page loads, its backends are still denied.
    assert productpage_view(mesh) == {"productpage": True, "details": False, "reviews": False}
    assert not mesh.call("productpage", "POST", "/login", INGRESS)


def test_step3_details_viewer() -> None:
    mesh = Mesh(ALLOW_NOTHING, PRODUCTPAGE_VIEWER, DETAILS_VIEWER)
    assert productpage_view(mesh) == {"productpage": True, "details": True, "reviews": False}
    assert not mesh.call("details", "GET", "/details/0", SLEEP)  # another identity
    assert not mesh.call("details", "GET", "/details/0", None)  # plaintext: no identity


def test_step4_reviews_viewer() -> None:
    mesh = Mesh(ALLOW_NOTHING, PRODUCTPAGE_VIEWER, DETAILS_VIEWER, REVIEWS_VIEWER)
    assert productpage_view(mesh) == {"productpage": True, "details": True, "reviews": True}
    # ratings has no viewer policy yet: reviews -> ratings is still denied ("Ratings service unavailable").
    assert not mesh.call("ratings", "GET", "/ratings/0", SA.format("reviews"))


STAGE_TASK = """
apiVersion: security.minimesh.io/v1
kind: AuthorizationPolicy
metadata: {name: details-get-from-productpage, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}
    to:
    - operation: {methods: ["GET"], paths: ["/details*"]}
"""


@pytest.mark.parametrize(
    ("workload", "method", "path", "principal", "allowed"),
    [
        ("details", "GET", "/details/0", SA.format("productpage"), True),
        ("details", "GET", "/details", SA.format("productpage"), True),
        ("details", "HEAD", "/details/0", SA.format("productpage"), False),
        ("details", "POST", "/details/0", SA.format("productpage"), False),
        ("details", "GET", "/health", SA.format("productpage"), False),
        ("details", "GET", "/details/../health", SA.format("productpage"), False),  # normalised to /health
        ("details", "GET", "/details/0", SA.format("reviews"), False),
        ("details", "GET", "/details/0", SLEEP, False),
        ("details", "GET", "/details/0", None, False),
        ("reviews", "GET", "/reviews/0", SA.format("productpage"), False),  # everything else stays denied
        ("productpage", "GET", "/productpage", INGRESS, False),
    ],
)
def test_stage_task(workload: str, method: str, path: str, principal: str | None, allowed: bool) -> None:
    mesh = Mesh(ALLOW_NOTHING, STAGE_TASK)
    assert mesh.call(workload, method, path, principal) is allowed
