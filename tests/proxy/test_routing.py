"""The stage-3 exercises, pure: virtual host, route and weighted cluster selection; load balancers."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from minimesh.proxy.balancer import LeastRequest, RandomPick, RoundRobin
from minimesh.proxy.config import ClusterWeight, parse_resource
from minimesh.proxy.config.snapshot import ROUTE_TYPE
from minimesh.proxy.routing import (
    header_matches,
    path_matches,
    pick_weighted_cluster,
    select_route,
    select_virtual_host,
)


def rc(vhosts: list[tuple[str, list[str]]]) -> Any:
    return parse_resource(ROUTE_TYPE, {"name": "r", "virtual_hosts": [
        {"name": n, "domains": d, "routes": []} for n, d in vhosts]})


DOMAINS = rc([("wild", ["*"]), ("suffix-short", ["*.com"]), ("suffix-long", ["*.example.com"]),
              ("prefix", ["api.*"]), ("prefix-long", ["api.example.*"]), ("exact", ["www.example.com", "details:9080"]),
              ("bare", ["details"])])


@pytest.mark.parametrize(("authority", "want"), [
    ("www.example.com", "exact"),
    ("WWW.Example.COM", "exact"),
    ("shop.example.com", "suffix-long"),   # longest suffix wins
    ("shop.other.com", "suffix-short"),
    ("api.example.org", "prefix-long"),    # suffix wildcards beat prefix ones; longest prefix wins
    ("api.foo", "prefix"),
    ("details:9080", "exact"),
    ("details", "bare"),
    ("details:8000", "bare"),              # no match with the port: retried without it
    ("example.com", "suffix-short"),       # "*.example.com" needs at least one character for "*"
    ("nothing.here", "wild"),
    ("", "wild"),
    ("[::1]:80", "wild"),
])
def test_select_virtual_host(authority: str, want: str) -> None:
    vh = select_virtual_host(DOMAINS, authority)
    assert vh is not None and vh.name == want


def test_no_virtual_host_without_catch_all() -> None:
    assert select_virtual_host(rc([("a", ["a.com"])]), "b.com") is None
    assert select_virtual_host(rc([("a", ["a.com"])]), "a.com:443").name == "a"  # type: ignore[union-attr]


ROUTES = parse_resource(ROUTE_TYPE, {"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
    {"name": "jason", "match": {"prefix": "/reviews", "headers": [{"name": "end-user", "string_match": {"exact": "jason"}}]},
     "route": {"cluster": "v2"}},
    {"name": "not-get", "match": {"prefix": "/reviews", "headers": [{"name": ":method", "exact_match": "GET",
                                                                     "invert_match": True}]},
     "route": {"cluster": "writes"}},
    {"name": "exact", "match": {"path": "/reviews/0"}, "route": {"cluster": "exact"}},
    {"name": "regex", "match": {"safe_regex": {"regex": "/reviews/[0-9]+"}}, "route": {"cluster": "regex"}},
    {"name": "ci", "match": {"prefix": "/CaSe", "case_sensitive": False}, "route": {"cluster": "ci"}},
    {"name": "present", "match": {"prefix": "/p", "headers": [{"name": "x-canary", "present_match": True}]},
     "route": {"cluster": "canary"}},
    {"name": "absent", "match": {"prefix": "/p", "headers": [{"name": "x-canary", "present_match": False}]},
     "route": {"cluster": "stable"}},
    {"name": "suffix", "match": {"prefix": "/s", "headers": [
        {"name": "user-agent", "string_match": {"suffix": "FIREFOX", "ignore_case": True}},
        {"name": "x-v", "safe_regex_match": {"regex": "v[12]"}}]}, "route": {"cluster": "ff"}},
]}]}).virtual_hosts[0]


@pytest.mark.parametrize(("method", "path", "headers", "want"), [
    ("GET", "/reviews/1", {"end-user": "jason"}, "jason"),
    ("GET", "/reviews/0", {"end-user": "Jason"}, "exact"),   # exact match is case sensitive
    ("POST", "/reviews/0", {}, "not-get"),
    ("GET", "/reviews/0?x=1", {}, "exact"),                 # the query string is not part of the path
    ("GET", "/reviews/12", {}, "regex"),
    ("GET", "/reviews/12x", {}, None),                       # the regex must match the whole path
    ("GET", "/case/anything", {}, "ci"),
    ("GET", "/p", {"x-canary": "1"}, "present"),
    ("GET", "/p", {}, "absent"),
    ("GET", "/s", {"user-agent": "Mozilla Firefox", "x-v": "v2"}, "suffix"),
    ("GET", "/s", {"user-agent": "Mozilla Firefox", "x-v": "v3"}, None),
    ("GET", "/nothing", {}, None),
])
def test_select_route(method: str, path: str, headers: dict[str, str], want: str | None) -> None:
    r = select_route(ROUTES, method, path, headers)
    assert (r.name if r else None) == want


def _hm(**kw: Any) -> Any:
    return parse_resource(ROUTE_TYPE, {"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/", "headers": [{"name": "h", **kw}]}, "route": {"cluster": "c"}}]}]}
    ).virtual_hosts[0].routes[0].match.headers[0]


@pytest.mark.parametrize(("matcher", "value", "want"), [
    ({"exact_match": "a"}, None, False),
    ({"exact_match": "a", "invert_match": True}, None, False),   # Envoy: absent never matches a value matcher
    ({"present_match": True, "invert_match": True}, None, True),
    ({"present_match": False}, None, True),
    ({"present_match": False}, "x", False),
    ({"present_match": True}, "", True),
    ({"exact_match": "a", "invert_match": True}, "b", True),
    ({"prefix_match": "ab"}, "abc", True),
    ({"contains_match": "b"}, "abc", True),
    ({"string_match": {"contains": "B", "ignore_case": True}}, "abc", True),
    ({"string_match": {"exact": "A"}}, "a", False),
])
def test_header_matches(matcher: dict[str, Any], value: str | None, want: bool) -> None:
    assert header_matches(_hm(**matcher), value) is want


def test_path_matches_prefix_root_and_fragments() -> None:
    m = ROUTES.routes[2].match  # path /reviews/0
    assert path_matches(m, "/reviews/0#frag")
    assert not path_matches(m, "/reviews/0/")


def test_pick_weighted_cluster_is_deterministic_and_covers_the_range() -> None:
    clusters = (ClusterWeight("a", 20), ClusterWeight("zero", 0), ClusterWeight("b", 80))
    picks = [pick_weighted_cluster(clusters, v) for v in range(100)]
    assert picks[:20] == ["a"] * 20 and picks[20:] == ["b"] * 80
    with pytest.raises(ValueError):
        pick_weighted_cluster(clusters, 100)


@dataclass
class Ep:
    address: str
    healthy: bool = True
    weight: int = 1


def test_round_robin_visits_each_healthy_endpoint_in_turn() -> None:
    eps = [Ep("a"), Ep("b", healthy=False), Ep("c"), Ep("d")]
    rr = RoundRobin()
    picks = [rr.pick(eps).address for _ in range(9)]  # type: ignore[union-attr]
    assert Counter(picks) == {"a": 3, "c": 3, "d": 3}
    assert all(picks[i] != picks[i + 1] for i in range(8))
    assert rr.pick([Ep("x", healthy=False)]) is None and rr.pick([]) is None


def test_least_request_prefers_idle_endpoints() -> None:
    rng = random.Random(7)
    eps = [Ep("busy"), Ep("idle"), Ep("down", healthy=False)]
    lr = LeastRequest()
    picks = Counter(lr.pick(eps, {"busy": 10}, rng).address for _ in range(2000))  # type: ignore[union-attr]
    # P2C with replacement: "busy" only when both draws are "busy" (1/4)
    assert picks["down"] == 0
    assert 0.18 < picks["busy"] / 2000 < 0.32
    assert lr.pick([Ep("only")], {"only": 99}, rng).address == "only"  # type: ignore[union-attr]
    assert lr.pick([Ep("x", healthy=False)], {}, rng) is None


def test_random_spreads() -> None:
    rng = random.Random(1)
    picks = Counter(RandomPick().pick([Ep("a"), Ep("b")], rng).address for _ in range(1000))  # type: ignore[union-attr]
    assert 400 < picks["a"] < 600
