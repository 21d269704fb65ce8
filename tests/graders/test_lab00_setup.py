"""Stage 0 grader: a cluster that answers, bookinfo-lite and sleep running, productpage answering.

Run with `minimesh lab grade 00` (or the notebook's last cell). Only the Kubernetes API is used, so it
runs the same on the local cluster, kind and minikube.
"""

from __future__ import annotations

import html
import json
from typing import Any

from minimesh.lab.grading import check, eventually, expect, is_ready, missing

APPS = ("productpage", "details", "reviews", "ratings")
APPLY = "minimesh apply -f minimesh/manifests/bookinfo.yaml -f minimesh/manifests/sleep.yaml"


def test_cluster_answers(core: Any) -> None:
    """the cluster answers and its node is Ready"""
    nodes = core.list_node().items
    check(nodes, want="at least one node", got="no nodes", hint="minimesh cluster status")
    ready = [n.metadata.name for n in nodes
             if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])]
    check(ready, want="a Ready node", got=[n.metadata.name for n in nodes], hint="minimesh cluster status; minimesh doctor")


def test_bookinfo_service_accounts(core: Any) -> None:
    """service accounts bookinfo-<name> exist"""
    have = {sa.metadata.name for sa in core.list_namespaced_service_account("default").items}
    want = {f"bookinfo-{a}" for a in APPS}
    expect(sorted(want & have), sorted(want), APPLY, what="service accounts")


def test_bookinfo_pods_ready(core: Any, apps: Any) -> None:
    """bookinfo pods are ready (productpage, details, ratings, reviews v1 v2 v3)"""
    deployments = {d.metadata.name for d in apps.list_namespaced_deployment("default").items}
    want_deployments = ["details-v1", "productpage-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3"]
    if not set(want_deployments) & deployments:
        missing("the bookinfo deployments", APPLY)

    def all_ready() -> None:
        pods = [p for p in core.list_namespaced_pod("default").items if is_ready(p)]
        have = sorted({f"{p.metadata.labels.get('app')}-{p.metadata.labels.get('version')}" for p in pods
                       if (p.metadata.labels or {}).get("app") in APPS})
        want = ["details-v1", "productpage-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3"]
        expect([w for w in want if w in have], want, f"{APPLY}, then kubectl get pods", what="ready app-version pods")

    eventually(all_ready, timeout=60)


def test_sleep_ready(core: Any, apps: Any) -> None:
    """the sleep client pod is ready"""
    if not apps.list_namespaced_deployment("default", label_selector="app=sleep").items:
        missing("the sleep deployment", "minimesh apply -f minimesh/manifests/sleep.yaml")

    def ready() -> None:
        pods = [p.metadata.name for p in core.list_namespaced_pod("default", label_selector="app=sleep").items
                if is_ready(p)]
        check(pods, want="a ready pod labelled app=sleep", got="none",
              hint="minimesh apply -f minimesh/manifests/sleep.yaml")

    eventually(ready, timeout=60)


def _json_from(http_from: Any, pod: str, url: str) -> dict[str, Any]:
    res = http_from(pod, url)
    expect(res.status, 200, f"minimesh exec {pod} -- curl -s {url}", what=f"status of {url}")
    try:
        return json.loads(res.body)
    except ValueError:
        return {}


def test_productpage_from_sleep(http_from: Any, sleep_pod: str) -> None:
    """productpage answers from sleep with the details and reviews blocks filled in"""
    details = eventually(lambda: _json_from(http_from, sleep_pod, "http://details:9080/details/0"), timeout=30)
    reviews = eventually(lambda: _json_from(http_from, sleep_pod, "http://reviews:9080/reviews/0"), timeout=30)
    author = html.escape(str(details.get("author", "")))
    reviewers = [html.escape(str(r.get("reviewer", ""))) for r in reviews.get("reviews", [])]
    check(author and reviewers, want="details with an author and reviews with reviewers",
          got={"details": details, "reviews": reviews}, hint="minimesh logs deploy/details-v1")

    def page() -> None:
        res = http_from(sleep_pod, "http://productpage:9080/productpage")
        expect(res.status, 200, "minimesh logs deploy/productpage-v1", what="GET /productpage from sleep")
        check(author in res.body, want=f"the details block (author {author!r})", got=str(res),
              hint="is details ready? minimesh logs deploy/productpage-v1")
        check(all(r in res.body for r in reviewers), want=f"the reviews block (reviewers {reviewers})",
              got=str(res), hint="are reviews and ratings ready? minimesh logs deploy/productpage-v1")
        check("currently unavailable" not in res.body, want="no 'currently unavailable' block",
              got="an error block on the page", hint="minimesh logs deploy/productpage-v1")

    eventually(page, timeout=30)
