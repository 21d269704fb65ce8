"""Stage 3 grader: the Envoy-like proxy.

First the trainee's functions on their own (pure: `minimesh/proxy/routing.py`, `minimesh/proxy/balancer.py`),
then the same code at work in the cluster: namespace lab03 (`minimesh/manifests/lab03/`) runs `sleep` and
`details` with the init container and a `minimesh-proxy` sidecar configured by a static bootstrap
(ConfigMaps sleep-proxy, details-proxy). Requests are made with curl inside the sleep pod (exec through the
Kubernetes API); what happened is read from the answers, the proxies' access logs (`kubectl logs -c
minimesh-proxy`) and their admin API (exec curl 127.0.0.1:15000).
"""

from __future__ import annotations

import json
import random
import secrets
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from minimesh.lab.grading import GradeFailure, check, eventually, exec_in, expect, fail, missing
from minimesh.proxy.balancer import LeastRequest, RoundRobin
from minimesh.proxy.config import ClusterWeight, parse_resource
from minimesh.proxy.config.snapshot import ROUTE_TYPE
from minimesh.proxy.routing import (
    header_matches,
    path_matches,
    pick_weighted_cluster,
    select_route,
    select_virtual_host,
)

NS = "lab03"
APPLY = "minimesh apply -f minimesh/manifests/lab03/"
RESTART = f"minimesh kubectl rollout restart deployment -n {NS}"
ROUTING = "minimesh/proxy/routing.py"
BALANCER = "minimesh/proxy/balancer.py"
PROXY = "minimesh-proxy"


# ---- routing, pure ---------------------------------------------------------------------------------


def _routes(vhosts: list[dict[str, Any]]) -> Any:
    return parse_resource(ROUTE_TYPE, {"name": "grader", "virtual_hosts": vhosts})


TABLE = _routes([
    {"name": "catch-all", "domains": ["*"]},
    {"name": "details", "domains": ["details", "details:9080", "details.lab03.svc.cluster.local"]},
    {"name": "any-bookinfo", "domains": ["*.bookinfo.example"]},
    {"name": "shop-bookinfo", "domains": ["*.shop.bookinfo.example"]},
    {"name": "api-prefix", "domains": ["api.*"]},
    {"name": "api-v2-prefix", "domains": ["api.v2.*"]},
])

# authority -> (virtual host wanted, what the case is about)
VHOST_CASES: dict[str, tuple[str, str]] = {
    "details": ("details", "an exact domain"),
    "DETAILS:9080": ("details", "domains compare case-insensitively"),
    "details:8000": ("details", "no domain has this port: retry without the port before '*'"),
    "a.shop.bookinfo.example": ("shop-bookinfo", "the longest suffix wildcard wins"),
    "www.bookinfo.example": ("any-bookinfo", "a suffix wildcard '*.bookinfo.example'"),
    "bookinfo.example": ("catch-all", "'*' in '*.bookinfo.example' stands for at least one character"),
    "api.v2.example": ("api-v2-prefix", "the longest prefix wildcard wins"),
    "api.example": ("api-prefix", "a prefix wildcard 'api.*'"),
    "api.shop.bookinfo.example": ("shop-bookinfo", "suffix wildcards come before prefix wildcards"),
    "nowhere.example": ("catch-all", "nothing else matches: the catch-all '*'"),
}


@pytest.mark.parametrize("authority", list(VHOST_CASES))
def test_virtual_host_selection(authority: str) -> None:
    """select_virtual_host picks Envoy's virtual host"""
    want, why = VHOST_CASES[authority]
    vh = select_virtual_host(TABLE, authority)
    got = vh.name if vh is not None else None
    if got != want:
        raise GradeFailure(f"virtual host {want!r} for Host {authority!r}", repr(got), f"{why} ({ROUTING}: select_virtual_host)")


def test_virtual_host_none_without_catch_all() -> None:
    """select_virtual_host returns None when nothing matches and there is no '*' (-> 404 NR)"""
    table = _routes([{"name": "only", "domains": ["only.example"]}])
    got = select_virtual_host(table, "other.example")
    check(got is None, want="None (no virtual host: the proxy answers 404 NR)",
          got=getattr(got, "name", got), hint=f"{ROUTING}: select_virtual_host")


VHOST = _routes([{"name": "v", "domains": ["*"], "routes": [
    {"name": "jason", "match": {"prefix": "/reviews", "headers": [{"name": "end-user", "string_match": {"exact": "jason"}}]},
     "route": {"cluster": "reviews-v3"}},
    {"name": "writes", "match": {"prefix": "/reviews", "headers": [{"name": ":method", "exact_match": "GET",
                                                                  "invert_match": True}]},
     "route": {"cluster": "writer"}},
    {"name": "exact", "match": {"path": "/reviews/0"}, "route": {"cluster": "exact"}},
    {"name": "regex", "match": {"safe_regex": {"regex": "/reviews/[0-9]+"}}, "route": {"cluster": "regex"}},
    {"name": "any-case", "match": {"prefix": "/Static", "case_sensitive": False}, "route": {"cluster": "static"}},
    {"name": "canary", "match": {"prefix": "/c", "headers": [{"name": "x-canary", "present_match": True}]},
     "route": {"cluster": "canary"}},
    {"name": "stable", "match": {"prefix": "/c", "headers": [{"name": "x-canary", "present_match": False}]},
     "route": {"cluster": "stable"}},
    {"name": "two-headers", "match": {"prefix": "/h", "headers": [
        {"name": "user-agent", "string_match": {"suffix": "firefox", "ignore_case": True}},
        {"name": "x-version", "safe_regex_match": {"regex": "v[12]"}}]}, "route": {"cluster": "ff"}},
]}]).virtual_hosts[0]

# case -> (method, path, headers, route wanted, hint)
ROUTE_CASES: dict[str, tuple[str, str, dict[str, str], str | None, str]] = {
    "header route first": ("GET", "/reviews/1", {"end-user": "jason"}, "jason",
                           "routes are tried in order: the first whose path AND headers match wins"),
    "exact header is case sensitive": ("GET", "/reviews/0", {"end-user": "Jason"}, "exact",
                                       "string matchers compare exactly unless ignore_case"),
    "pseudo-header :method inverted": ("POST", "/reviews/0", {}, "writes",
                                       "':method' comes from the method argument; invert_match flips the result"),
    "query string ignored": ("GET", "/reviews/0?page=2", {}, "exact", "compare the path without '?query'"),
    "regex matches the whole path": ("GET", "/reviews/12", {}, "regex", "safe_regex must fullmatch the path"),
    "regex partial is no match": ("GET", "/reviews/12x", {}, None, "safe_regex must match the WHOLE path (fullmatch)"),
    "prefix without case": ("GET", "/static/app.js", {}, "any-case", "case_sensitive: false ignores case"),
    "header present": ("GET", "/c", {"x-canary": "yes"}, "canary", "present_match: true needs the header"),
    "header absent": ("GET", "/c", {}, "stable", "present_match: false matches when the header is absent"),
    "all header matchers must match": ("GET", "/h", {"user-agent": "Mozilla Firefox", "x-version": "v3"}, None,
                                       "every header matcher of a route must match (x-version v3 is not v[12])"),
    "suffix ignoring case and regex": ("GET", "/h", {"user-agent": "Mozilla FIREFOX", "x-version": "v2"}, "two-headers",
                                       "suffix with ignore_case, and a regex on a header value"),
    "no route": ("GET", "/nothing", {}, None, "no route matches: None (the proxy answers 404 NR)"),
}


@pytest.mark.parametrize("case", list(ROUTE_CASES))
def test_route_selection(case: str) -> None:
    """select_route picks the first route whose path and headers match"""
    method, path, headers, want, hint = ROUTE_CASES[case]
    route = select_route(VHOST, method, path, headers)
    got = route.name if route is not None else None
    if got != want:
        raise GradeFailure(f"route {want!r} for {method} {path} {headers or ''}".strip(), repr(got),
                           f"{hint} ({ROUTING}: select_route, path_matches, header_matches)")


def test_header_matcher_on_absent_header() -> None:
    """header_matches: an absent header matches only 'must be absent' checks, even inverted"""
    exact = VHOST.routes[0].match.headers[0]  # end-user exact jason
    check(header_matches(exact, None) is False, want="False for an absent header", got=header_matches(exact, None),
          hint=f"{ROUTING}: header_matches handles value None first")
    absent = VHOST.routes[6].match.headers[0]  # x-canary present_match false
    expect(header_matches(absent, None), True, f"{ROUTING}: header_matches", what="present_match false on no header")
    check(path_matches(VHOST.routes[2].match, "/reviews/0#top"), want="path /reviews/0 to match '/reviews/0#top'",
          got=False, hint=f"{ROUTING}: path_matches drops '#fragment' too")


def test_weighted_cluster_pick() -> None:
    """pick_weighted_cluster lays the weights end to end (20/0/80)"""
    clusters = (ClusterWeight("v1", 20), ClusterWeight("never", 0), ClusterWeight("v2", 80))
    got = [pick_weighted_cluster(clusters, v) for v in range(100)]
    want = ["v1"] * 20 + ["v2"] * 80
    if got != want:
        wrong = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
        raise GradeFailure("values 0..19 -> v1, 20..99 -> v2 (weight 0 never)",
                           f"value {wrong} -> {got[wrong]!r}", f"{ROUTING}: pick_weighted_cluster")


# ---- balancing, pure -------------------------------------------------------------------------------


@dataclass
class Ep:
    address: str
    healthy: bool = True
    weight: int = 1


def test_round_robin_spread() -> None:
    """RoundRobin takes each healthy endpoint in turn and skips unhealthy ones"""
    eps = [Ep("10.0.0.1:80"), Ep("10.0.0.2:80", healthy=False), Ep("10.0.0.3:80"), Ep("10.0.0.4:80")]
    rr = RoundRobin()
    picks = [getattr(rr.pick(eps), "address", None) for _ in range(9)]
    check(Counter(picks) == {"10.0.0.1:80": 3, "10.0.0.3:80": 3, "10.0.0.4:80": 3},
          want="each of the 3 healthy endpoints 3 times in 9 picks", got=dict(Counter(picks)),
          hint=f"{BALANCER}: RoundRobin.pick keeps only healthy endpoints and advances self._next")
    check(all(picks[i] != picks[i + 1] for i in range(8)), want="never the same endpoint twice in a row",
          got=picks, hint=f"{BALANCER}: RoundRobin.pick")
    eps.append(Ep("10.0.0.5:80"))  # endpoints come and go: keep going round what is there now
    later = {getattr(rr.pick(eps), "address", None) for _ in range(4)}
    expect(sorted(later), ["10.0.0.1:80", "10.0.0.3:80", "10.0.0.4:80", "10.0.0.5:80"],
           f"{BALANCER}: RoundRobin.pick works on the list it is given", what="4 picks after a 4th endpoint joined")


def test_no_healthy_endpoint_gives_none() -> None:
    """both balancers return None when no endpoint is healthy (-> 503 UH)"""
    down = [Ep("10.0.0.9:80", healthy=False)]
    got = {"RoundRobin": RoundRobin().pick(down), "RoundRobin (empty)": RoundRobin().pick([]),
           "LeastRequest": LeastRequest().pick(down, {}, random.Random(1))}
    expect({k: v is None for k, v in got.items()}, dict.fromkeys(got, True), f"{BALANCER}: return None",
           what="None from")


def test_least_request_spread() -> None:
    """LeastRequest (power of two choices) sends most requests to the idle endpoint"""
    rng = random.Random(2025)
    eps = [Ep("busy:80"), Ep("idle:80"), Ep("down:80", healthy=False)]
    lr = LeastRequest()
    picks = Counter(getattr(lr.pick(eps, {"busy:80": 10}, rng), "address", None) for _ in range(4000))
    share = picks["busy:80"] / 4000
    check(picks["down:80"] == 0 and None not in picks, want="only healthy endpoints", got=dict(picks),
          hint=f"{BALANCER}: LeastRequest.pick draws among healthy endpoints")
    check(0.19 < share < 0.31, want="'busy' about 1/4 of the time (only when both draws are 'busy')",
          got=f"{share:.2f} of 4000 picks ({dict(picks)})",
          hint=f"{BALANCER}: draw choice_count endpoints WITH replacement (rng.randrange) and keep the one with"
               " fewer active requests")
    only = lr.pick([Ep("only:80")], {"only:80": 99}, rng)
    expect(getattr(only, "address", None), "only:80", f"{BALANCER}: a single healthy endpoint is returned",
           what="pick from one endpoint")


# ---- the cluster -------------------------------------------------------------------------------------


def _pods(core: Any, selector: str) -> list[Any]:
    return [p for p in core.list_namespaced_pod(NS, label_selector=selector).items if not p.metadata.deletion_timestamp]


def _ready_pod(core: Any, app: str) -> str:
    def ready() -> str:
        pods = _pods(core, f"app={app}")
        if not pods:
            missing(f"a pod labelled app={app} in namespace {NS}", APPLY)
        for p in pods:
            for cs in p.status.init_container_statuses or []:
                term = (cs.state and cs.state.terminated) or (cs.last_state and cs.last_state.terminated)
                if term is not None and term.exit_code:
                    raise GradeFailure(f"{app}'s traffic capture installed", f"{cs.name} exited with {term.exit_code}",
                                       "stage 2's rules must work first: minimesh lab grade 02; then " + RESTART,
                                       final=True)
        good = [p for p in pods if p.status.phase == "Running"
                and all(c.ready for c in p.status.container_statuses or []) and p.status.container_statuses]
        if not good:
            for p in pods:  # the app's readiness probe goes through the proxy: a stub fails it for good
                stub = _stub_in_log(core, p)
                if stub:
                    raise GradeFailure(f"a ready {app} pod in {NS}", f"{p.metadata.name}: its proxy says {stub!r}",
                                       stub_hint(500, f"NotImplementedError: {stub}") or RESTART, final=True)
            states = {p.metadata.name: {c.name: c.ready for c in p.status.container_statuses or []} for p in pods}
            raise GradeFailure(f"a ready {app} pod in {NS} (every container ready)", json.dumps(states),
                               f"minimesh kubectl describe pod -n {NS} -l app={app}; minimesh logs -n {NS}"
                               f" deploy/{app if app == 'sleep' else app + '-v1'} -c {PROXY}")
        return sorted(p.metadata.name for p in good)[0]

    return eventually(ready, timeout=120, interval=1)


def _stub_in_log(core: Any, pod: Any) -> str:
    """The proxy's complaint about an unfinished exercise ("lab 03: …"), if its log has one."""
    from kubernetes.client.exceptions import ApiException

    if not any(c.name == PROXY and c.state and c.state.running for c in pod.status.container_statuses or []):
        return ""
    try:
        text = core.read_namespaced_pod_log(pod.metadata.name, NS, container=PROXY, tail_lines=50) or ""
    except ApiException:
        return ""
    return next((ln.split(": ", 1)[-1].strip() for ln in reversed(text.splitlines()) if ": lab 03: " in ln), "")


@pytest.fixture(scope="module")
def sleep3(core: Any) -> str:
    return _ready_pod(core, "sleep")


@pytest.fixture(scope="module")
def details3(core: Any) -> str:
    return _ready_pod(core, "details")


def _rid(what: str) -> str:
    return f"lab03-{what}-{secrets.token_hex(4)}"


def endpoints(core: Any, pod: str, cluster: str) -> list[str]:
    """The hosts sleep's proxy has for `cluster` (its admin API's /clusters)."""
    res = exec_in(core, pod, ["curl", "-s", "http://127.0.0.1:15000/clusters"], container=PROXY, namespace=NS)
    return sorted({ln.split("::")[1] for ln in res.stdout.splitlines() if ln.startswith(f"{cluster}::")})


def wait_endpoints(core: Any, pod: str, *subsets: str) -> None:
    """Wait until the proxy has found (by DNS, every 5 s) a pod for each `app-version` subset."""

    def found() -> None:
        empty = [s for s in subsets if not endpoints(core, pod, _cluster_of(s))]
        check(not empty, want=f"endpoints in sleep's proxy for {', '.join(subsets)}", got=f"none yet for {empty}",
              hint=f"minimesh kubectl get pods -n {NS}; the pods must be ready for their headless Service to list them")

    eventually(found, timeout=60, interval=1)


def _cluster_of(subset: str) -> str:
    app, version = subset.rsplit("-", 1)
    port = 8080 if app == "echo" else 9080
    return f"outbound|{port}|{version}|{app}.{NS}.svc.cluster.local"


def curl(core: Any, pod: str, url: str, *headers: str, timeout: float = 10) -> tuple[int, str, str]:
    """(status, body, x-request-id sent) of curl in the sleep container (its traffic goes through the proxy)."""
    rid = next((h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("x-request-id:")), "")
    argv = ["curl", "-sS", "-m", f"{timeout:g}", "-o", "-", "-w", "\n@@status@@%{http_code}"]
    for h in headers:
        argv += ["-H", h]
    res = exec_in(core, pod, [*argv, url], container="sleep", namespace=NS, timeout=timeout + 20)
    body, _, code = res.stdout.rpartition("\n@@status@@")
    status = int(code) if code.strip().isdigit() else 0
    return status, body if status else (res.stderr.strip() or res.stdout.strip()), rid


def stub_hint(status: int, body: str) -> str | None:
    """The proxy answered 500 because an exercise is a stub (or was, when the pod started)."""
    if status == 500 and "NotImplementedError" in body:
        return (f"the proxies run unfinished exercises ({body.strip()[:120]}): finish {ROUTING} and {BALANCER},"
                f" then restart the pods (they run the code they started with): {RESTART}")
    return None


def access_log(core: Any, pod: str, rid: str) -> str:
    """The access-log line of proxy `pod` with this request id (waits for the 0.2 s flush)."""

    def line() -> str:
        text = core.read_namespaced_pod_log(pod, NS, container=PROXY, tail_lines=2000) or ""
        hits = [ln for ln in text.splitlines() if rid in ln]
        check(hits, want=f"a line with x-request-id {rid} in `minimesh logs -n {NS} {pod} -c {PROXY}`",
              got="none", hint="the proxy writes one access-log line per request to stdout")
        return hits[-1]

    return eventually(line, timeout=15)


def flags(line: str) -> str:
    """The response flags field of an access-log line (after the response code)."""
    after = line.split('" ', 1)[1].split() if '" ' in line else []
    return after[1] if len(after) > 1 else "?"


def expect_status(status: int, body: str, want: int, what: str, hint: str) -> None:
    if status != want:
        stub = stub_hint(status, body)
        raise GradeFailure(f"{what}: HTTP {want}", f"HTTP {status}: {body.strip()[:160]}" if status else body[:200],
                           stub or hint, final=bool(stub))


def test_request_through_both_sidecars(core: Any, sleep3: str, details3: str) -> None:
    """sleep -> details goes through both sidecars; both access logs show the request"""
    rid = _rid("details")

    def answered() -> str:  # a new pod is found at the proxy's next DNS refresh (5 s): poll
        status, body, _ = curl(core, sleep3, "http://details:9080/details/0", f"x-request-id: {rid}")
        if stub_hint(status, body):
            expect_status(status, body, 200, "GET http://details:9080/details/0 from sleep", "")  # final: a stub
        expect_status(status, body, 200, "GET http://details:9080/details/0 from sleep",
                      f"minimesh logs -n {NS} {sleep3} -c {PROXY}")
        return body

    body = eventually(answered, timeout=30, interval=1)
    check("ISBN-10" in body, want="details' JSON (with ISBN-10)", got=body[:160], hint="the route for details")
    out = access_log(core, sleep3, rid)
    check("outbound|9080|v1|details.lab03.svc.cluster.local" in out,
          want="sleep's proxy log: upstream cluster outbound|9080|v1|details.lab03.svc.cluster.local", got=out,
          hint="the details virtual host's route in ConfigMap sleep-proxy")
    inbound = access_log(core, details3, rid)
    check("inbound|9080||" in inbound and " 200 " in inbound,
          want="details' proxy log: 200 through cluster inbound|9080||", got=inbound,
          hint=f"the inbound path: details' init rules (stage 2) and its virtualInbound listener; minimesh logs -n {NS}"
               f" {details3} -c {PROXY}")


def test_weighted_split(core: Any, sleep3: str) -> None:
    """200 requests to reviews split about 80/20 between v1 and v2"""
    wait_endpoints(core, sleep3, "reviews-v1", "reviews-v2")
    loop = ("for i in $(seq 200); do curl -s -m 5 -o - -w '\\n' http://reviews:9080/reviews/0"
            " || echo '{\"error\": \"curl failed\"}'; done")
    res = exec_in(core, sleep3, ["sh", "-c", loop], container="sleep", namespace=NS, timeout=180)
    versions: Counter[str] = Counter()
    failures: list[str] = []
    for line in res.stdout.splitlines():
        try:
            versions[str(json.loads(line).get("version"))] += 1
        except ValueError:
            failures.append(line)
    if failures or sum(versions.values()) != 200:
        body = failures[0] if failures else res.stderr
        raise GradeFailure("200 JSON answers from reviews", f"{sum(versions.values())} ({body.strip()[:160]})",
                           stub_hint(500, body) or f"minimesh logs -n {NS} {sleep3} -c {PROXY}")
    v1, v2 = versions["v1"] / 200, versions["v2"] / 200
    check(0.70 <= v1 <= 0.90 and 0.10 <= v2 <= 0.30 and v1 + v2 == 1,
          want="v1 70-90 % and v2 10-30 % (weights 80/20), nothing else", got=dict(versions),
          hint=f"{ROUTING}: pick_weighted_cluster gets a random value in [0, total weight); then {RESTART}")


def test_header_route(core: Any, sleep3: str) -> None:
    """a header route sends end-user: jason to reviews v3"""
    wait_endpoints(core, sleep3, "reviews-v3")
    status, body, _ = curl(core, sleep3, "http://reviews:9080/reviews/0", "end-user: jason")
    expect_status(status, body, 200, "GET reviews with end-user: jason", f"{ROUTING}: select_route")
    try:
        version = json.loads(body).get("version")
    except ValueError:
        version = body[:80]
    expect(version, "v3", f"{ROUTING}: select_route tries routes in order, headers must all match; then {RESTART}",
           what="reviews version for end-user jason")


def _expect_flag(core: Any, pod: str, rid: str, flag: str, hint: str) -> str:
    line = access_log(core, pod, rid)
    check(flag in flags(line).split(","), want=f"response flag {flag} in sleep's access log", got=line, hint=hint)
    return line


def test_no_route_is_404_nr(core: Any, sleep3: str) -> None:
    """a Host no virtual host matches gets 404 with flag NR"""
    rid = _rid("nr")
    status, body, _ = curl(core, sleep3, "http://echo:8080/", "Host: nowhere.example", f"x-request-id: {rid}")
    expect_status(status, body, 404, "Host: nowhere.example", f"{ROUTING}: select_virtual_host returns None when"
                  " nothing matches and there is no '*'")
    _expect_flag(core, sleep3, rid, "NR", "404 without a route is logged with NR")


def test_no_endpoint_is_503_uh(core: Any, sleep3: str) -> None:
    """a cluster without endpoints (echo v2 has no pods) gets 503 with flag UH"""
    rid = _rid("uh")
    status, body, _ = curl(core, sleep3, "http://echo:8080/v2/hello", f"x-request-id: {rid}")
    expect_status(status, body, 503, "GET http://echo:8080/v2/hello (echo-v2 has 0 replicas)",
                  f"{BALANCER}: pick returns None when no endpoint is healthy; is deployment echo-v2 at 0 replicas?")
    _expect_flag(core, sleep3, rid, "UH", "no healthy upstream is logged with UH")


def _stat(core: Any, pod: str, name: str) -> int:
    res = exec_in(core, pod, ["curl", "-s", "http://127.0.0.1:15000/stats"], container=PROXY, namespace=NS)
    for line in res.stdout.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


def test_retries_then_urx(core: Any, sleep3: str) -> None:
    """a route with 2 retries on 5xx tries 3 times, then gives up with flag URX"""
    wait_endpoints(core, sleep3, "echo-v1")
    stat = "cluster.outbound|8080|v1|echo.lab03.svc.cluster.local.upstream_rq_retry"
    before = _stat(core, sleep3, stat)
    rid = _rid("urx")
    status, body, _ = curl(core, sleep3, "http://echo:8080/flaky?status=503", f"x-request-id: {rid}")
    expect_status(status, body, 503, "GET /flaky?status=503 (echo always answers 503)", f"minimesh logs -n {NS}"
                  f" {sleep3} -c {PROXY}")
    _expect_flag(core, sleep3, rid, "URX", "the retry limit exceeded is logged with URX")
    after = _stat(core, sleep3, stat)
    expect(after - before, 2, f"retry_policy num_retries 2 on the flaky route; then {RESTART}",
           what=f"increase of {stat}")


def test_timeout_is_504_ut(core: Any, sleep3: str) -> None:
    """a route with a 0.5 s timeout answers 504 with flag UT when the app takes 2 s"""
    wait_endpoints(core, sleep3, "echo-v1")
    rid = _rid("ut")
    status, body, _ = curl(core, sleep3, "http://echo:8080/slow?delay=2", f"x-request-id: {rid}")
    expect_status(status, body, 504, "GET /slow?delay=2 (route timeout 0.5 s)", "the slow route's timeout")
    _expect_flag(core, sleep3, rid, "UT", "an upstream request timeout is logged with UT")


def _config_dump(core: Any, pod: str) -> dict[str, Any]:
    res = exec_in(core, pod, ["curl", "-s", "http://127.0.0.1:15000/config_dump"], container=PROXY, namespace=NS)
    try:
        return {c["@type"].rsplit(".", 1)[-1]: c for c in json.loads(res.stdout)["configs"]}
    except (ValueError, KeyError, TypeError):
        fail("the admin API's /config_dump as JSON", (res.stdout or res.stderr)[:200],
             f"minimesh exec -n {NS} {pod} -c {PROXY} -- curl -s 127.0.0.1:15000/config_dump")


def test_config_dump_shows_the_configmap(core: Any, sleep3: str, details3: str) -> None:
    """sleep's /config_dump holds the ConfigMap's listeners, routes and clusters; /clusters shows details' pod"""
    from kubernetes.client.exceptions import ApiException

    try:
        cm = core.read_namespaced_config_map("sleep-proxy", NS)
    except ApiException as e:
        if e.status == 404:
            missing(f"ConfigMap {NS}/sleep-proxy", APPLY)
        raise
    boot = yaml.safe_load(cm.data["bootstrap.yaml"])
    dump = _config_dump(core, sleep3)
    listeners = sorted(x["listener"]["name"] for x in dump["ListenersConfigDump"]["static_listeners"])
    clusters = sorted(x["cluster"]["name"] for x in dump["ClustersConfigDump"]["static_clusters"])
    expect((listeners, clusters), (sorted(x["name"] for x in boot["static_resources"]["listeners"]),
                                   sorted(x["name"] for x in boot["static_resources"]["clusters"])),
           f"the proxy reads the bootstrap only at start: after editing the ConfigMap, {RESTART}",
           what="(listeners, clusters) in /config_dump, as in ConfigMap sleep-proxy")
    routes = {r["route_config"]["name"]: r["route_config"] for r in dump["RoutesConfigDump"]["static_route_configs"]}
    vhosts = {v["name"]: v for v in routes.get("9080", {}).get("virtual_hosts", [])}
    split = next((r["route"]["weighted_clusters"]["clusters"] for r in
                  vhosts.get("reviews.lab03.svc.cluster.local:9080", {}).get("routes", [])
                  if "weighted_clusters" in r.get("route", {})), None)
    check(split and sorted(c["weight"] for c in split) == [20, 80],
          want="route config '9080': reviews split 80/20 by weighted_clusters", got=split or sorted(vhosts),
          hint=f"ConfigMap sleep-proxy as shipped in {APPLY.split()[-1]}")
    ip = core.read_namespaced_pod(details3, NS).status.pod_ip

    def resolved() -> None:
        hosts = endpoints(core, sleep3, _cluster_of("details-v1"))
        check(f"{ip}:9080" in hosts, want=f"details' pod {ip}:9080 as an endpoint of its STRICT_DNS cluster",
              got=hosts, hint="the cluster resolves details-v1.lab03.svc.cluster.local (a headless Service) every 5 s")

    eventually(resolved, timeout=20)
