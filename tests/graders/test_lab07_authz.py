"""Stage 7 grader: AuthorizationPolicy.

First the trainee's evaluator on its own (`minimesh/authz/engine.py`: string_matches, rule_matches, evaluate):
Istio's patterns, rules, and the order DENY → no ALLOW policy → some ALLOW matches; then the same evaluator
against what the sidecars really run (the push server's Envoy RBAC translation) on generated cases.

Then the mesh, through the Kubernetes API only:
- the stage task (`lab07/bookinfo-authz.yaml`): everything in `default` denied unless allowed, bookinfo-lite
  still works, and details accepts only GET on /details* from productpage — a matrix of method × path ×
  caller (productpage, sleep, a client outside the mesh), 403 `RBAC: access denied` for the rest;
- the denial is logged by details' sidecar with the matched policy (%RESPONSE_CODE_DETAILS%);
- the evaluator predicts every answer of the matrix from the policies in the cluster;
- a DENY policy wins over the ALLOW ones (a grader policy, removed afterwards);
- Istio's authz-http steps (allow-nothing, productpage-viewer, details-viewer) replayed on bookinfo-lite; the
  trainee's policies are put back afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from minimesh.lab.grading import (
    GradeFailure,
    check,
    eventually,
    fail,
    http_from,
    missing,
    pod_named_by,
)

NS = "default"
EX = "minimesh/authz/engine.py"
SETUP = "minimesh lab setup 07"
GROUP, VERSION, PLURAL = "security.minimesh.io", "v1", "authorizationpolicies"
DENIED = "RBAC: access denied"
PRODUCTPAGE = "cluster.local/ns/default/sa/bookinfo-productpage"
SLEEP = "cluster.local/ns/default/sa/sleep"
DETAILS = "http://details:9080"


def _engine() -> Any:
    from minimesh.authz import engine

    return engine


def _policies(*specs: dict[str, Any], namespace: str = NS) -> list[Any]:
    from minimesh.authz.model import parse_policy

    return [parse_policy({"apiVersion": f"{GROUP}/{VERSION}", "kind": "AuthorizationPolicy",
                          "metadata": {"name": s.pop("name", f"p{i}"), "namespace": namespace}, "spec": s})
            for i, s in enumerate(dict(s) for s in specs)]


def _call(fn: str, *args: Any) -> Any:
    try:
        return getattr(_engine(), fn)(*args)
    except NotImplementedError as e:
        raise GradeFailure(f"{fn} to answer", f"NotImplementedError: {e}", f"{EX}: {fn}", final=True) from None


# ---- the evaluator, pure ------------------------------------------------------------------------------------

MATCHES = [  # pattern, value, want
    ("GET", "GET", True), ("GET", "POST", False), ("/details*", "/details/0", True), ("/details*", "/detail", False),
    ("*.svc.cluster.local", "details.default.svc.cluster.local", True), ("*", "anything", True), ("*", "", False),
    ("*", None, False), ("GET", None, False), ("/details*", "/details", True), ("*/0", "/details/0", True),
]


def test_string_matches() -> None:
    """string_matches: exact, prefix `abc*`, suffix `*abc`, presence `*` (non-empty), nothing matches None"""
    for pattern, value, want in MATCHES:
        got = _call("string_matches", pattern, value)
        check(got is want, want=f"string_matches({pattern!r}, {value!r}) is {want}", got=got,
              hint=f"{EX}: string_matches — check presence/prefix/suffix before exact")
    check(_call("string_matches", "Details:9080", "details:9080", True) is True,
          want="ignore_case=True compares lower-cased", got=False, hint=f"{EX}: string_matches")


def test_rule_matches() -> None:
    """rule_matches: `from`, `to` (any entry may match) and every `when` must hold; empty parts match anything"""
    engine = _engine()
    [p] = _policies({"rules": [
        {"from": [{"source": {"principals": [PRODUCTPAGE]}}, {"source": {"namespaces": ["legacy"]}}],
         "to": [{"operation": {"methods": ["GET"], "paths": ["/details*"]}}, {"operation": {"methods": ["HEAD"]}}],
         "when": [{"key": "request.headers[x-env]", "notValues": ["test"]}]},
        {}]})
    rule, empty = p.rules
    cases = [
        (engine.Request("GET", "/details/0", source_principal=PRODUCTPAGE), True, "productpage GET /details/0"),
        (engine.Request("HEAD", "/anything", source_principal=PRODUCTPAGE), True, "productpage HEAD (second `to`)"),
        (engine.Request("GET", "/details/0", source_principal="cluster.local/ns/legacy/sa/x"), True,
         "a principal of namespace legacy (second `from`)"),
        (engine.Request("POST", "/details/0", source_principal=PRODUCTPAGE), False, "POST matches no `to`"),
        (engine.Request("GET", "/details/0", source_principal=SLEEP), False, "sleep matches no `from`"),
        (engine.Request("GET", "/details/0"), False, "no principal (plaintext) matches no `from`"),
        (engine.Request("GET", "/details/0", headers={"x-env": "test"}, source_principal=PRODUCTPAGE), False,
         "a `when` notValues that matches"),
    ]
    for req, want, what in cases:
        got = _call("rule_matches", rule, req)
        check(got is want, want=f"{what}: rule_matches is {want}", got=got,
              hint=f"{EX}: rule_matches — OR inside from/to, AND across from, to and every when")
    check(_call("rule_matches", empty, engine.Request("DELETE", "/x")) is True, want="an empty rule matches anything",
          got=False, hint=f"{EX}: rule_matches — an empty list matches any request")


def test_evaluate_order() -> None:
    """evaluate: DENY first; no ALLOW policy → allow; ALLOW policies → allow only on a match; spec {} denies all"""
    engine = _engine()
    get = engine.Request("GET", "/details/0", source_principal=PRODUCTPAGE)
    post = engine.Request("POST", "/details/0", source_principal=PRODUCTPAGE)
    allow_get = {"name": "allow-get", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}
    deny_pp = {"name": "deny-pp", "action": "DENY", "rules": [{"from": [{"source": {"principals": [PRODUCTPAGE]}}]}]}
    cases = [
        ([], get, True, None, "no policy at all"),
        (_policies({"name": "deny-post", "action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}),
         get, True, None, "only a DENY policy that does not match"),
        (_policies(allow_get), get, True, "default/allow-get", "an ALLOW policy that matches"),
        (_policies(allow_get), post, False, None, "an ALLOW policy that does not match"),
        (_policies({"name": "allow-nothing"}, allow_get), get, True, "default/allow-get", "allow-nothing + a match"),
        (_policies({"name": "allow-nothing"}), get, False, None, "spec: {} (allow-nothing)"),
        (_policies(allow_get, deny_pp), get, False, "default/deny-pp", "DENY before ALLOW"),
        (_policies({"name": "deny-none", "action": "DENY"}), get, True, None, "a DENY policy without rules"),
    ]
    for policies, req, allowed, name, what in cases:
        d = _call("evaluate", policies, req)
        check(d.allowed is allowed, want=f"{what}: allowed={allowed}", got=f"allowed={d.allowed} ({d.reason})",
              hint=f"{EX}: evaluate — DENY policies, then: no ALLOW policy → allow, else allow on a match")
        if name is not None:
            check(d.policy_name == name, want=f"{what}: policy_name {name!r}", got=d.policy_name,
                  hint=f"{EX}: evaluate — name the deciding policy with policy.key")


def _random_policy(rng: random.Random, i: int) -> dict[str, Any]:
    def pick(values: list[str]) -> list[str]:
        v = rng.choice(values)
        form = rng.randrange(4)
        return [v if form == 0 else v[: rng.randrange(len(v) + 1)] + "*" if form == 1 else "*" + v[rng.randrange(len(v)):]
                if form == 2 else "*"]

    source = rng.choice([{"principals": pick([PRODUCTPAGE, SLEEP])}, {"namespaces": pick(["default", "legacy"])},
                         {"notPrincipals": pick([SLEEP])}, {"ipBlocks": ["10.244.0.0/16"]}])
    operation = rng.choice([{"methods": pick(["GET", "POST"])}, {"paths": pick(["/details/0", "/health"])},
                            {"notPaths": pick(["/details/0"])}, {"ports": ["9080"]}])
    rule: dict[str, Any] = {}
    if rng.random() < 0.7:
        rule["from"] = [{"source": source}]
    if rng.random() < 0.7:
        rule["to"] = [{"operation": operation}]
    if rng.random() < 0.3:
        rule["when"] = [{"key": "request.headers[x-user]", "values": pick(["alice", "bob"])}]
    spec: dict[str, Any] = {"name": f"p{i}", "action": rng.choice(["ALLOW", "ALLOW", "DENY"])}
    if rng.random() < 0.9:
        spec["rules"] = [rule]
    return spec


def test_evaluator_decides_as_the_sidecars() -> None:
    """your evaluator and the push server's Envoy RBAC translation (what sidecars enforce) agree on 400 generated cases"""
    from minimesh.authz import translate
    from minimesh.authz.check import attributes
    from minimesh.authz.rbac import rules_from_dict

    engine = _engine()
    rng = random.Random(7)
    for n in range(400):
        policies = _policies(*[_random_policy(rng, i) for i in range(rng.randint(1, 3))])
        principal = rng.choice([PRODUCTPAGE, SLEEP, "cluster.local/ns/legacy/sa/sleep", None])
        headers = rng.choice([(), (("x-user", "alice"),), (("x-user", "bob"), ("x-user", "alice"))])
        req = engine.Request(rng.choice(["GET", "POST"]), rng.choice(["/details/0", "/health", "/details/../health"]),
                             port=9080, headers=headers, source_principal=principal, source_ip="10.244.0.7",
                             destination_ip="10.244.0.9")
        attrs = attributes(req)
        envoy = all(rules_from_dict(f["typed_config"]["rules"]).decide(attrs).allowed
                    for f in translate.http_filters(policies))
        mine = _call("evaluate", policies, req).allowed
        if mine != envoy:
            specs = [{"name": p.name, "action": p.action, "rules": len(p.rules)} for p in policies]
            fail(f"case {n}: the sidecars' answer allowed={envoy}",
                 f"allowed={mine} for {req.method} {req.path} from {principal or 'no principal'} "
                 f"headers={list(headers)} with policies {specs}",
                 f"{EX}: print the case's policies with _policies in the notebook and compare rule by rule")


# ---- the mesh -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def custom(api_client: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(api_client)


@pytest.fixture(scope="module")
def productpage_pod(core: Any) -> str:
    return pod_named_by(core, "app=productpage", namespace=NS, timeout=120)


@pytest.fixture(scope="module")
def details_pod(core: Any) -> str:
    return pod_named_by(core, "app=details", namespace=NS, timeout=120)


@pytest.fixture(scope="module")
def legacy_sleep(core: Any) -> str:
    try:
        core.read_namespace("legacy")
    except Exception:
        missing("namespace legacy with a sleep that has no sidecar (stage 6)", "minimesh lab setup 06")
    return pod_named_by(core, "app=sleep", namespace="legacy", timeout=120)


@pytest.fixture(scope="module")
def cluster_policies(custom: Any) -> list[dict[str, Any]]:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL).get("items") or []
    names = {i["metadata"]["name"] for i in items}
    want = {"allow-nothing", "productpage-viewer", "details-viewer", "reviews-viewer", "ratings-viewer"}
    if not want <= names:
        missing(f"AuthorizationPolicies {sorted(want)} in default", f"{SETUP} (lab07/bookinfo-authz.yaml)")
    return items


class Case:
    def __init__(self, who: str, method: str, url: str, want: int, principal: str | None) -> None:
        self.who, self.method, self.url, self.want, self.principal = who, method, url, want, principal

    def __str__(self) -> str:
        return f"{self.who}: {self.method} {self.url.removeprefix('http://')}"


def _matrix() -> list[Case]:
    return [
        Case("productpage", "GET", f"{DETAILS}/details/0", 200, PRODUCTPAGE),
        Case("productpage", "GET", f"{DETAILS}/health/../details/0", 200, PRODUCTPAGE),
        Case("productpage", "POST", f"{DETAILS}/details/0", 403, PRODUCTPAGE),
        Case("productpage", "DELETE", f"{DETAILS}/details/0", 403, PRODUCTPAGE),
        Case("productpage", "GET", f"{DETAILS}/health", 403, PRODUCTPAGE),
        Case("productpage", "GET", f"{DETAILS}/details/../health", 403, PRODUCTPAGE),
        Case("sleep", "GET", f"{DETAILS}/details/0", 403, SLEEP),
        Case("legacy/sleep", "GET", "http://details.default:9080/details/0", 403, None),
        Case("sleep", "GET", "http://productpage:9080/productpage", 200, SLEEP),
        Case("sleep", "POST", "http://productpage:9080/productpage", 403, SLEEP),
        Case("sleep", "GET", "http://reviews:9080/reviews/0", 403, SLEEP),
    ]


def _ask(core: Any, case: Case, pods: dict[str, str], headers: tuple[str, ...] = ()) -> Any:
    namespace, container = ("legacy", "sleep") if case.who == "legacy/sleep" else (NS, case.who)
    # --path-as-is: the path as written, for the sidecar (not curl) to normalise
    return http_from(core, pods[case.who], case.url, namespace=namespace, container=container, method=case.method,
                     headers=headers, path_as_is=True)


@pytest.fixture(scope="module")
def pods(core: Any, productpage_pod: str, legacy_sleep: str) -> dict[str, str]:
    return {"productpage": productpage_pod, "sleep": pod_named_by(core, "app=sleep", namespace=NS, timeout=120),
            "legacy/sleep": legacy_sleep}


def _run_matrix(core: Any, pods: dict[str, str], cases: list[Case]) -> dict[str, Any]:
    seen = {}
    for case in cases:
        got = _ask(core, case, pods)
        seen[str(case)] = got
        if got.status != case.want:
            fail(f"{case} → HTTP {case.want}", str(got),
                 "minimesh authz check deploy/details-v1 -X METHOD --path PATH --from PRINCIPAL "
                 f"(policies: {SETUP}; sidecars: stage 5)")
        if case.want == 403:
            check(got.body.strip() == DENIED, want=f"{case}: body {DENIED!r} (the sidecar's RBAC filter)",
                  got=got.body.strip()[:100], hint="a 403 from the app itself is not the mesh's denial")
    return seen


def test_only_productpage_gets_on_details(core: Any, cluster_policies: list[dict[str, Any]], pods: dict[str, str]) -> None:
    """the stage task end to end: GET /details* from productpage passes, every other method, path and caller gets 403"""
    eventually(lambda: _run_matrix(core, pods, _matrix()), timeout=30, interval=1)


def test_bookinfo_still_works_behind_deny_all(core: Any, cluster_policies: list[dict[str, Any]], pods: dict[str, str]) -> None:
    """sleep's /productpage shows details and reviews (with ratings) through four sidecars that deny by default"""
    def page() -> None:
        r = http_from(core, pods["sleep"], "http://productpage:9080/productpage", container="sleep")
        check(r.status == 200, want="HTTP 200 from productpage", got=str(r), hint=SETUP)
        body = r.body.lower()
        for part, policy in (("error fetching product details", "details-viewer"),
                             ("error fetching product reviews", "reviews-viewer"),
                             ("ratings service is currently unavailable", "ratings-viewer")):
            check(part not in body, want=f"no {part!r} on the page", got="it is there",
                  hint=f"kubectl get authorizationpolicy {policy} -o yaml (who may call whom?)")

    eventually(page, timeout=30, interval=1)


def test_denial_is_logged_with_the_policy(core: Any, cluster_policies: list[dict[str, Any]], pods: dict[str, str],
                                          details_pod: str) -> None:
    """details' sidecar logs each denial with %RESPONSE_CODE_DETAILS% rbac_access_denied_matched_policy[none]"""
    import uuid

    rid = f"grade07-{uuid.uuid4().hex[:10]}"
    case = Case("sleep", "GET", f"{DETAILS}/details/0", 403, SLEEP)
    _ask(core, case, pods, (f"x-request-id: {rid}",))

    def logged() -> None:
        log = core.read_namespaced_pod_log(details_pod, NS, container="minimesh-proxy", tail_lines=500)
        lines = [ln for ln in log.splitlines() if rid in ln]
        check(lines, want=f"a line with request id {rid} in details' sidecar log", got="none",
              hint="minimesh logs deploy/details-v1 -c minimesh-proxy")
        check(" 403 - rbac_access_denied_matched_policy[none] " in lines[-1],
              want="403 with details rbac_access_denied_matched_policy[none]", got=lines[-1][:240])

    eventually(logged, timeout=10)


def test_your_evaluator_predicts_the_mesh(core: Any, cluster_policies: list[dict[str, Any]], pods: dict[str, str]) -> None:
    """from the cluster's policies, your evaluator predicts every answer of the matrix"""
    from minimesh.authz.model import parse_policy
    from minimesh.authz.normalize import normalize_path

    engine = _engine()
    policies = [parse_policy(o) for o in cluster_policies]
    for case in _matrix():
        service = case.url.split("//", 1)[1].split(":", 1)[0].split(".", 1)[0]
        path = "/" + case.url.split("//", 1)[1].split("/", 1)[1]
        applicable = engine.policies_for({"app": service}, NS, policies)
        req = engine.Request(case.method, normalize_path(path), host=f"{service}:9080", port=9080,
                             source_principal=case.principal)
        d = _call("evaluate", applicable, req)
        check(d.allowed is (case.want != 403), want=f"{case}: allowed={case.want != 403} (what the mesh answered)",
              got=f"allowed={d.allowed}: {d.reason}", hint=f"{EX}: evaluate")


def _put(custom: Any, body: dict[str, Any]) -> None:
    from kubernetes.client.exceptions import ApiException

    name = body["metadata"]["name"]
    try:
        current = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
        body = {**body, "metadata": {**body["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}}
        custom.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, body)
    except ApiException as e:
        if e.status != 404:
            raise
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)


def _remove(custom: Any, name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
    except ApiException as e:
        if e.status != 404:
            raise


def test_deny_wins_over_allow(core: Any, custom: Any, cluster_policies: list[dict[str, Any]], pods: dict[str, str]) -> None:
    """a DENY policy (grader-deny-debug: header x-debug on details) refuses productpage's allowed GET"""
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AuthorizationPolicy",
            "metadata": {"name": "grader-deny-debug", "namespace": NS},
            "spec": {"selector": {"matchLabels": {"app": "details"}}, "action": "DENY",
                     "rules": [{"when": [{"key": "request.headers[x-debug]", "values": ["*"]}]}]}}
    case = Case("productpage", "GET", f"{DETAILS}/details/0", 403, PRODUCTPAGE)
    _put(custom, body)
    try:
        def denied() -> None:
            got = _ask(core, case, pods, ("x-debug: 1",))
            check(got.status == 403 and got.body.strip() == DENIED, want=f"{case} with x-debug → 403 {DENIED}",
                  got=str(got), hint="DENY policies are evaluated before ALLOW ones")
            plain = _ask(core, case, pods)
            check(plain.status == 200, want=f"{case} without the header → 200", got=str(plain))

        eventually(denied, timeout=20, interval=1)
    finally:
        _remove(custom, "grader-deny-debug")


def _steps() -> list[dict[str, Any]]:
    from minimesh import paths
    from minimesh.k8s.manifests import load_documents

    out = []
    for name in ("1-allow-nothing", "2-productpage-viewer", "3-details-viewer"):
        out += load_documents(paths.MANIFESTS / "lab07" / "steps" / f"{name}.yaml")
    return out


@pytest.fixture
def trainee_policies_restored(custom: Any) -> Iterator[list[dict[str, Any]]]:
    """The trainee's policies of `default`, put back exactly after the test."""
    items = custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL).get("items") or []
    saved = [{"apiVersion": i["apiVersion"], "kind": i["kind"],
              "metadata": {"name": i["metadata"]["name"], "namespace": NS, "labels": i["metadata"].get("labels") or {}},
              "spec": i.get("spec") or {}} for i in items]
    try:
        yield saved
    finally:
        current = {i["metadata"]["name"] for i in custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL).get("items") or []}
        for name in current - {s["metadata"]["name"] for s in saved}:
            _remove(custom, name)
        for s in saved:
            _put(custom, s)


def test_istio_authz_http_steps(core: Any, custom: Any, pods: dict[str, str],
                                trainee_policies_restored: list[dict[str, Any]]) -> None:
    """Istio's authz-http task on bookinfo-lite: allow-nothing → 403; productpage-viewer → page without details; details-viewer → details"""
    for s in trainee_policies_restored:
        _remove(custom, s["metadata"]["name"])
    allow_nothing, productpage_viewer, details_viewer = _steps()

    def page(want_status: int, want_details: bool | None) -> None:
        r = http_from(core, pods["sleep"], "http://productpage:9080/productpage", container="sleep")
        check(r.status == want_status, want=f"/productpage → HTTP {want_status}", got=str(r))
        if want_details is not None:
            has = "error fetching product details" not in r.body.lower()
            check(has is want_details, want="the page " + ("with" if want_details else "without") + " details",
                  got="with" if has else "without")

    _put(custom, allow_nothing)
    eventually(lambda: page(403, None), timeout=20, interval=1)
    _put(custom, productpage_viewer)
    eventually(lambda: page(200, False), timeout=20, interval=1)
    _put(custom, details_viewer)
    eventually(lambda: page(200, True), timeout=20, interval=1)
