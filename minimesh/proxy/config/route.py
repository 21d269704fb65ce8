"""RouteConfiguration, VirtualHost, Route and their parts (envoy.config.route.v3), as frozen dataclasses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from minimesh.proxy.config._reader import ConfigError, Node, drop_empty, format_duration
from minimesh.proxy.config.common import (
    HeaderValueOption,
    StringMatcher,
    parse_header_value_option,
    parse_regex_matcher,
    parse_string_matcher,
)

DEFAULT_ROUTE_TIMEOUT = 15.0  # Envoy's default route timeout

# retry_on values we act on; the gRPC and HTTP/2 ones are accepted (Istio sends them) but never fire here.
RETRY_ON_HTTP = frozenset({"5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx",
                           "retriable-status-codes", "reset-before-request"})
RETRY_ON_ACCEPTED = RETRY_ON_HTTP | frozenset({"refused-stream", "cancelled", "deadline-exceeded",
                                               "internal", "resource-exhausted", "unavailable",
                                               "http3-post-connect-failure", "envoy-ratelimited"})

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d)) if d else _EMPTY


@dataclass(frozen=True, slots=True)
class HeaderMatcher:
    """One `match.headers[]` entry. Exactly one way of matching is set: `exact`, `prefix`, `suffix`,
    `contains` (strings), `regex` (compiled, must match the whole value) or `present` (True/False).
    `invert_match` flips the result; `ignore_case` applies to the string forms."""

    name: str
    exact: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    contains: str | None = None
    regex: re.Pattern[str] | None = None
    present: bool | None = None
    ignore_case: bool = False
    invert_match: bool = False

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.present is not None:
            d["present_match"] = self.present
        else:
            sm = StringMatcher(self.exact, self.prefix, self.suffix, self.contains, self.regex,
                               self.ignore_case)
            d["string_match"] = sm.to_dict()
        if self.invert_match:
            d["invert_match"] = True
        return d


def parse_header_matcher(node: Node) -> HeaderMatcher:
    name = node.nonempty_str("name").lower()
    invert = node.bool("invert_match")
    node.ignore("treat_missing_header_as_empty")
    which = node.one_of("exact_match", "prefix_match", "suffix_match", "contains_match", "present_match",
                        "safe_regex_match", "string_match", "range_match", required=False)
    if which is None:  # Envoy: no specifier means "present"
        return HeaderMatcher(name, present=True, invert_match=invert)
    if which == "range_match":
        raise node.error("range_match is not supported", which)
    if which == "present_match":
        return HeaderMatcher(name, present=node.bool(which), invert_match=invert)
    if which == "safe_regex_match":
        return HeaderMatcher(name, regex=node.obj(which, parse_regex_matcher), invert_match=invert)
    if which == "string_match":
        sm = node.obj(which, parse_string_matcher)
        assert sm is not None
        return HeaderMatcher(name, sm.exact, sm.prefix, sm.suffix, sm.contains, sm.regex,
                             ignore_case=sm.ignore_case, invert_match=invert)
    value = node.str(which)
    kind = which.removesuffix("_match")
    if kind != "exact" and not value:
        raise node.error("must not be empty", which)
    return HeaderMatcher(name, **{kind: value}, invert_match=invert)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """Exactly one of `prefix`, `path` (exact) or `safe_regex` (compiled) is set, plus header matchers."""

    prefix: str | None = None
    path: str | None = None
    safe_regex: re.Pattern[str] | None = None
    case_sensitive: bool = True
    headers: tuple[HeaderMatcher, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = drop_empty({"prefix": self.prefix, "path": self.path})
        if self.prefix == "":
            d["prefix"] = ""
        if self.safe_regex is not None:
            d["safe_regex"] = {"regex": self.safe_regex.pattern}
        if not self.case_sensitive:
            d["case_sensitive"] = False
        if self.headers:
            d["headers"] = [h.to_dict() for h in self.headers]
        return d


def parse_route_match(node: Node) -> RouteMatch:
    which = node.one_of("prefix", "path", "safe_regex", "path_separated_prefix", "connect_matcher",
                        "path_match_policy")
    if which not in ("prefix", "path", "safe_regex"):
        raise node.error(f"{which} is not supported (use prefix, path or safe_regex)", which)
    case_sensitive = node.bool("case_sensitive", True)
    headers = node.items("headers", parse_header_matcher)
    node.ignore("grpc")
    if node.list("query_parameters"):
        raise node.error("query parameter matching is not supported", "query_parameters")
    if which == "safe_regex":
        return RouteMatch(safe_regex=node.obj("safe_regex", parse_regex_matcher),
                          case_sensitive=case_sensitive, headers=headers)
    value = node.str(which)
    if which == "path" and not value.startswith("/"):
        raise node.error(f"path must start with '/', got {value!r}", which)
    return RouteMatch(**{which: value}, case_sensitive=case_sensitive, headers=headers)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`retry_policy`: conditions (`retry_on`), how many retries, per-try timeout, back-off."""

    retry_on: frozenset[str] = frozenset()
    num_retries: int = 1
    per_try_timeout: float | None = None
    retriable_status_codes: frozenset[int] = frozenset()
    base_interval: float = 0.025
    max_interval: float = 0.25
    previous_hosts: bool = False  # retry_host_predicate envoy.retry_host_predicates.previous_hosts
    host_selection_retry_max_attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"retry_on": ",".join(sorted(self.retry_on)), "num_retries": self.num_retries}
        if self.per_try_timeout is not None:
            d["per_try_timeout"] = format_duration(self.per_try_timeout)
        if self.retriable_status_codes:
            d["retriable_status_codes"] = sorted(self.retriable_status_codes)
        d["retry_back_off"] = {"base_interval": format_duration(self.base_interval),
                               "max_interval": format_duration(self.max_interval)}
        if self.previous_hosts:
            d["retry_host_predicate"] = [{"name": "envoy.retry_host_predicates.previous_hosts"}]
            d["host_selection_retry_max_attempts"] = self.host_selection_retry_max_attempts
        return d


def parse_retry_policy(node: Node) -> RetryPolicy:
    raw = node.str("retry_on", "")
    retry_on = frozenset(t.strip() for t in raw.split(",") if t.strip())
    for token in sorted(retry_on):
        if token not in RETRY_ON_ACCEPTED:
            raise node.error(f"unknown retry condition {token!r}; known: {', '.join(sorted(RETRY_ON_HTTP))}",
                             "retry_on")
    num = node.uint32_wrapper("num_retries", 1)
    per_try = node.duration("per_try_timeout")
    codes = []
    for i, c in enumerate(node.list("retriable_status_codes")):
        if isinstance(c, bool) or not isinstance(c, int) or not 100 <= c <= 599:
            raise ConfigError(f"{node.sub('retriable_status_codes')}[{i}]", f"not an HTTP status: {c!r}")
        codes.append(c)
    base, maximum = 0.025, None

    def back_off(n: Node) -> tuple[float, float | None]:
        b = n.duration("base_interval")
        if b is None or b <= 0:
            raise n.error("base_interval must be > 0", "base_interval")
        return b, n.duration("max_interval")

    bo = node.obj("retry_back_off", back_off)
    if bo:
        base, maximum = bo
    previous = False
    for i, pred in enumerate(node.list("retry_host_predicate")):
        p = Node(pred, f"{node.sub('retry_host_predicate')}[{i}]")
        name = p.str("name", "")
        p.ignore("typed_config")
        p.finish()
        if name != "envoy.retry_host_predicates.previous_hosts":
            raise p.error(f"unknown retry host predicate {name!r}", "name")
        previous = True
    attempts = node.int("host_selection_retry_max_attempts", 1, minimum=1)
    node.ignore("retry_priority", "retriable_headers", "retriable_request_headers", "rate_limited_retry_back_off",
                "retry_options_predicates")
    return RetryPolicy(retry_on, num, per_try, frozenset(codes), base, maximum or base * 10, previous, attempts)


@dataclass(frozen=True, slots=True)
class ClusterWeight:
    """One entry of `weighted_clusters.clusters`."""

    name: str
    weight: int
    request_headers_to_add: tuple[HeaderValueOption, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return drop_empty({"name": self.name, "weight": self.weight,
                           "request_headers_to_add": [h.to_dict() for h in self.request_headers_to_add]})


def parse_cluster_weight(node: Node) -> ClusterWeight:
    node.ignore("typed_per_filter_config", "metadata_match", "host_rewrite_literal")
    return ClusterWeight(node.nonempty_str("name"), node.uint32_wrapper("weight", 0),
                         node.items("request_headers_to_add", parse_header_value_option))


@dataclass(frozen=True, slots=True)
class RouteAction:
    """`route:` — where to send the request and how (timeouts, retries, rewrites)."""

    cluster: str | None = None
    weighted_clusters: tuple[ClusterWeight, ...] | None = None
    timeout: float = DEFAULT_ROUTE_TIMEOUT  # 0 disables
    retry_policy: RetryPolicy | None = None
    prefix_rewrite: str | None = None
    host_rewrite_literal: str | None = None

    @property
    def total_weight(self) -> int:
        return sum(c.weight for c in self.weighted_clusters or ())

    def cluster_names(self) -> tuple[str, ...]:
        if self.cluster is not None:
            return (self.cluster,)
        return tuple(c.name for c in self.weighted_clusters or ())

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.cluster is not None:
            d["cluster"] = self.cluster
        else:
            d["weighted_clusters"] = {"clusters": [c.to_dict() for c in self.weighted_clusters or ()]}
        d["timeout"] = format_duration(self.timeout)
        if self.retry_policy:
            d["retry_policy"] = self.retry_policy.to_dict()
        return {**d, **drop_empty({"prefix_rewrite": self.prefix_rewrite,
                                   "host_rewrite_literal": self.host_rewrite_literal})}


def parse_route_action(node: Node) -> RouteAction:
    which = node.one_of("cluster", "weighted_clusters", "cluster_header", "cluster_specifier_plugin")
    if which in ("cluster_header", "cluster_specifier_plugin"):
        raise node.error(f"{which} is not supported", which)
    cluster = node.nonempty_str("cluster") if which == "cluster" else None
    weighted = None
    if which == "weighted_clusters":
        def wc(n: Node) -> tuple[ClusterWeight, ...]:
            n.ignore("total_weight", "runtime_key_prefix", "header_name")
            return n.items("clusters", parse_cluster_weight, required=True)

        weighted = node.obj("weighted_clusters", wc)
        assert weighted is not None
        if not weighted:
            raise node.error("needs at least one cluster", "weighted_clusters.clusters")
        if sum(c.weight for c in weighted) <= 0:
            raise node.error("the sum of the weights must be > 0", "weighted_clusters.clusters")
    timeout = node.duration("timeout", DEFAULT_ROUTE_TIMEOUT)
    retry = node.obj("retry_policy", parse_retry_policy)
    prefix_rewrite = node.str("prefix_rewrite")
    host_rewrite = node.str("host_rewrite_literal")
    # Accepted as Istio sends them; they change nothing for HTTP/1.1 here.
    node.ignore("max_grpc_timeout", "grpc_timeout_offset", "hash_policy", "max_stream_duration",
                "cluster_not_found_response_code", "upgrade_configs", "idle_timeout")
    return RouteAction(cluster, weighted, timeout, retry, prefix_rewrite, host_rewrite)


@dataclass(frozen=True, slots=True)
class DirectResponseAction:
    status: int
    body: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"status": self.status}
        if self.body is not None:
            d["body"] = {"inline_string": self.body}
        return d


def parse_direct_response(node: Node) -> DirectResponseAction:
    status = node.int("status", required=True, minimum=200, maximum=599)

    def body(n: Node) -> str:
        which = n.one_of("inline_string", "inline_bytes", "filename", "environment_variable")
        if which != "inline_string":
            raise n.error(f"{which} is not supported, use inline_string", which)
        return n.str("inline_string", "")

    return DirectResponseAction(status, node.obj("body", body))


def parse_typed_per_filter_config(node: Node) -> Mapping[str, Any]:
    from minimesh.proxy.filters.registry import parse_per_route_config

    out = {}
    for name in node:
        out[name] = parse_per_route_config(name, node.raw(name), node.sub(name))
    return _frozen(out)


@dataclass(frozen=True, slots=True)
class Route:
    """One route: a `match`, and either a `route` (to clusters) or a `direct_response`."""

    match: RouteMatch
    route: RouteAction | None = None
    direct_response: DirectResponseAction | None = None
    name: str = ""
    request_headers_to_add: tuple[HeaderValueOption, ...] = ()
    response_headers_to_add: tuple[HeaderValueOption, ...] = ()
    request_headers_to_remove: tuple[str, ...] = ()
    typed_per_filter_config: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"match": self.match.to_dict()}
        if self.name:
            d = {"name": self.name, **d}
        if self.route is not None:
            d["route"] = self.route.to_dict()
        if self.direct_response is not None:
            d["direct_response"] = self.direct_response.to_dict()
        return {**d, **drop_empty({
            "request_headers_to_add": [h.to_dict() for h in self.request_headers_to_add],
            "response_headers_to_add": [h.to_dict() for h in self.response_headers_to_add],
            "request_headers_to_remove": list(self.request_headers_to_remove),
            "typed_per_filter_config": {k: v.to_dict() for k, v in self.typed_per_filter_config.items()},
        })}


def parse_route(node: Node) -> Route:
    name = node.str("name", "")
    match = node.obj("match", parse_route_match, required=True)
    assert match is not None
    which = node.one_of("route", "direct_response", "redirect", "filter_action", "non_forwarding_action")
    if which not in ("route", "direct_response"):
        raise node.error(f"{which} routes are not supported (use route or direct_response)", which)
    action = node.obj("route", parse_route_action)
    direct = node.obj("direct_response", parse_direct_response)
    node.ignore("decorator", "metadata", "tracing", "per_request_buffer_limit_bytes")
    return Route(match, action, direct, name,
                 node.items("request_headers_to_add", parse_header_value_option),
                 node.items("response_headers_to_add", parse_header_value_option),
                 tuple(h.lower() for h in node.str_list("request_headers_to_remove")),
                 node.obj("typed_per_filter_config", parse_typed_per_filter_config) or _EMPTY)


@dataclass(frozen=True, slots=True)
class VirtualHost:
    """A set of `domains` (Host/:authority patterns) and the ordered `routes` tried for them."""

    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...] = ()
    retry_policy: RetryPolicy | None = None
    request_headers_to_add: tuple[HeaderValueOption, ...] = ()
    response_headers_to_add: tuple[HeaderValueOption, ...] = ()
    typed_per_filter_config: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    include_request_attempt_count: bool = False
    include_attempt_count_in_response: bool = False

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "domains": list(self.domains),
                             "routes": [r.to_dict() for r in self.routes]}
        if self.retry_policy:
            d["retry_policy"] = self.retry_policy.to_dict()
        if self.include_request_attempt_count:
            d["include_request_attempt_count"] = True
        if self.include_attempt_count_in_response:
            d["include_attempt_count_in_response"] = True
        return {**d, **drop_empty({
            "request_headers_to_add": [h.to_dict() for h in self.request_headers_to_add],
            "response_headers_to_add": [h.to_dict() for h in self.response_headers_to_add],
            "typed_per_filter_config": {k: v.to_dict() for k, v in self.typed_per_filter_config.items()},
        })}


def _check_domain(domain: str, path: str) -> None:
    if not domain:
        raise ConfigError(path, "empty domain")
    if domain != "*" and "*" in domain.strip("*"):
        raise ConfigError(path, f"wildcard only allowed at the start or the end of a domain: {domain!r}")
    if domain.count("*") > 1 or (domain != "*" and domain.startswith("*") and domain.endswith("*")):
        raise ConfigError(path, f"only one wildcard allowed in a domain: {domain!r}")


def parse_virtual_host(node: Node) -> VirtualHost:
    name = node.nonempty_str("name")
    domains = node.str_list("domains")
    if not domains:
        raise node.error("needs at least one domain", "domains")
    for i, dom in enumerate(domains):
        _check_domain(dom, f"{node.sub('domains')}[{i}]")
    node.ignore("require_tls", "cors", "rate_limits", "metadata", "per_request_buffer_limit_bytes")
    return VirtualHost(
        name, tuple(d.lower() for d in domains), node.items("routes", parse_route),
        node.obj("retry_policy", parse_retry_policy),
        node.items("request_headers_to_add", parse_header_value_option),
        node.items("response_headers_to_add", parse_header_value_option),
        node.obj("typed_per_filter_config", parse_typed_per_filter_config) or _EMPTY,
        node.bool("include_request_attempt_count"), node.bool("include_attempt_count_in_response"))


@dataclass(frozen=True, slots=True)
class RouteConfiguration:
    """A named route table (inline in a listener, or served by RDS under `name`)."""

    name: str
    virtual_hosts: tuple[VirtualHost, ...] = ()
    request_headers_to_add: tuple[HeaderValueOption, ...] = ()
    response_headers_to_add: tuple[HeaderValueOption, ...] = ()
    validate_clusters: bool | None = None

    def cluster_names(self) -> set[str]:
        return {c for vh in self.virtual_hosts for r in vh.routes if r.route for c in r.route.cluster_names()}

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "virtual_hosts": [v.to_dict() for v in self.virtual_hosts]}
        if self.validate_clusters is not None:
            d["validate_clusters"] = self.validate_clusters
        return {**d, **drop_empty({
            "request_headers_to_add": [h.to_dict() for h in self.request_headers_to_add],
            "response_headers_to_add": [h.to_dict() for h in self.response_headers_to_add]})}


def parse_route_configuration(node: Node) -> RouteConfiguration:
    node.str("@type")
    name = node.str("name", "")
    vhosts = node.items("virtual_hosts", parse_virtual_host)
    seen: dict[str, str] = {}
    for i, vh in enumerate(vhosts):
        for dom in vh.domains:
            if dom in seen:
                raise ConfigError(f"{node.sub('virtual_hosts')}[{i}].domains",
                                  f"domain {dom!r} is also in virtual host {seen[dom]!r}; domains must be unique")
            seen[dom] = vh.name
    names = [vh.name for vh in vhosts]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise node.error(f"duplicate virtual host name {sorted(dup)[0]!r}", "virtual_hosts")
    node.ignore("internal_only_headers", "response_headers_to_remove", "request_headers_to_remove",
                "max_direct_response_body_size_bytes", "ignore_port_in_host_matching")
    return RouteConfiguration(
        name, vhosts, node.items("request_headers_to_add", parse_header_value_option),
        node.items("response_headers_to_add", parse_header_value_option),
        node.bool("validate_clusters") if node.has("validate_clusters") else None)
