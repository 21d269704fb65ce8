"""Stage 3 exercise: which route does a request take? (the first half of Envoy's router)

For every request the proxy calls, in order:

1. `select_virtual_host(route_config, authority)` — the virtual host for the Host header;
2. `select_route(virtual_host, method, path, headers)` — the first route that matches, using
   `path_matches` and `header_matches`;
3. for a route with `weighted_clusters`, `pick_weighted_cluster(clusters, value)` with a random
   `value` in [0, total weight).

No match means a 404 with response flag NR in the access log. All functions are pure: try them in the
notebook with config objects parsed from YAML (`minimesh.proxy.config`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from minimesh.proxy.config import (
    ClusterWeight,
    HeaderMatcher,
    Route,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)


class HeaderLookup(Protocol):
    """Anything with `.get(name)`: a dict with lower-case keys, or the proxy's request header view."""

    def get(self, name: str, /) -> str | None: ...


def select_virtual_host(route_config: RouteConfiguration, authority: str) -> VirtualHost | None:
    """Return the virtual host whose `domains` match `authority` (the Host header), or None.

    Envoy's order, whatever the order of the virtual hosts in the config:
      1. an exact domain ("details" or "details:9080"); domains and host compare case-insensitively;
      2. a suffix wildcard ("*.example.com", "*-v1.example.com"): the longest suffix wins; the `*` must
         stand for at least one character, so "*.example.com" does not match "example.com";
      3. a prefix wildcard ("details.*"): the longest prefix wins, again `*` is at least one character;
      4. the catch-all "*".
    If steps 1–3 find nothing and the authority carries a port ("details:9080"), try 1–3 again with the
    port removed ("details") before falling back to "*". IPv6 literals look like "[::1]:80".
    """
    # BEGIN SOLUTION lab-03
    # TODO: match the authority against every virtual host's domains: exact, then the longest
    #   "*suffix", then the longest "prefix*", then (after retrying without the port) "*".
    def best(host: str) -> VirtualHost | None:
        suffix: tuple[int, VirtualHost] | None = None
        prefix: tuple[int, VirtualHost] | None = None
        for vh in route_config.virtual_hosts:
            for domain in vh.domains:
                d = domain.lower()
                if d == "*":
                    continue
                if d == host:
                    return vh
                if d.startswith("*"):
                    rest = d[1:]
                    if len(host) > len(rest) and host.endswith(rest) and (suffix is None or len(rest) > suffix[0]):
                        suffix = (len(rest), vh)
                elif d.endswith("*"):
                    rest = d[:-1]
                    if len(host) > len(rest) and host.startswith(rest) and (prefix is None or len(rest) > prefix[0]):
                        prefix = (len(rest), vh)
        if suffix is not None:
            return suffix[1]
        return prefix[1] if prefix is not None else None

    host = authority.strip().lower()
    found = best(host)
    if found is None:
        bracket = host.rfind("]")
        colon = host.rfind(":")
        if colon > bracket and (bracket >= 0 or host.count(":") == 1):
            found = best(host[:colon])
    if found is None:
        for vh in route_config.virtual_hosts:
            if "*" in vh.domains:
                return vh
    return found
    # END SOLUTION


def path_matches(match: RouteMatch, path: str) -> bool:
    """Does the request path match the route's path matcher?

    `path` is the request target as sent ("/reviews/1?x=2"); compare without the query string (and
    without a "#fragment"). Exactly one of `match.prefix`, `match.path` or `match.safe_regex` is set:
      * prefix: the path starts with it ("" and "/" match everything);
      * path: the path equals it;
      * safe_regex: a compiled `re.Pattern` that must match the WHOLE path (`fullmatch`).
    `match.case_sensitive` (default True) applies to prefix and path, not to the regex.
    """
    # BEGIN SOLUTION lab-03
    # TODO: strip the query string, then compare with prefix / exact path / full-match regex,
    #   ignoring case for prefix and path when match.case_sensitive is False.
    p = path.split("?", 1)[0].split("#", 1)[0]
    if match.safe_regex is not None:
        return match.safe_regex.fullmatch(p) is not None
    if match.path is not None:
        return p == match.path if match.case_sensitive else p.lower() == match.path.lower()
    prefix = match.prefix or ""
    return p.startswith(prefix) if match.case_sensitive else p.lower().startswith(prefix.lower())
    # END SOLUTION


def header_matches(matcher: HeaderMatcher, value: str | None) -> bool:
    """Does one header matcher accept the request's header `value` (None when the header is absent)?

    The matcher has exactly one of: `exact`, `prefix`, `suffix`, `contains` (strings, compared
    case-insensitively when `ignore_case`), `regex` (a compiled pattern that must match the whole value)
    or `present` (True: the header must be there; False: see below). `invert_match` flips the result.

    Envoy's rule for an absent header: only a presence check can match it — `present=False`, or
    `present=True` with `invert_match=True`. Every other matcher fails on an absent header, even inverted.
    """
    # BEGIN SOLUTION lab-03
    # TODO: handle the absent header first (only "must be absent" presence checks match),
    #   then test present/exact/prefix/suffix/contains/regex and apply invert_match.
    if value is None:
        return matcher.present is not None and matcher.present == matcher.invert_match
    if matcher.present is not None:
        result = matcher.present
    elif matcher.regex is not None:
        result = matcher.regex.fullmatch(value) is not None
    else:
        v = value.lower() if matcher.ignore_case else value

        def want(s: str) -> str:
            return s.lower() if matcher.ignore_case else s

        if matcher.exact is not None:
            result = v == want(matcher.exact)
        elif matcher.prefix is not None:
            result = v.startswith(want(matcher.prefix))
        elif matcher.suffix is not None:
            result = v.endswith(want(matcher.suffix))
        else:
            result = want(matcher.contains or "") in v
    return result != matcher.invert_match
    # END SOLUTION


def select_route(virtual_host: VirtualHost, method: str, path: str, headers: HeaderLookup) -> Route | None:
    """Return the first route of `virtual_host.routes` whose path matcher and ALL header matchers match.

    `headers.get(name)` gives a header's value by lower-case name (None when absent). Header matchers may
    also name the pseudo-headers ":method" (use `method`) and ":path" (use `path`).
    """
    # BEGIN SOLUTION lab-03
    # TODO: return the first route whose path matches (path_matches) and whose header matchers all
    #   match (header_matches, with ":method" and ":path" taken from the arguments).
    for route in virtual_host.routes:
        if not path_matches(route.match, path):
            continue
        for h in route.match.headers:
            value = method if h.name == ":method" else path if h.name == ":path" else headers.get(h.name)
            if not header_matches(h, value):
                break
        else:
            return route
    return None
    # END SOLUTION


def pick_weighted_cluster(weighted_clusters: Sequence[ClusterWeight], value: int) -> str:
    """Return the name of the cluster that `value` falls into.

    Lay the weights end to end: with weights a=20, b=80, values 0..19 pick "a" and 20..99 pick "b".
    `value` is in [0, total weight); the proxy passes a random one, so traffic splits by weight.
    Clusters with weight 0 never get picked.
    """
    # BEGIN SOLUTION lab-03
    # TODO: walk the clusters adding up weights; return the first whose running total exceeds value.
    end = 0
    for c in weighted_clusters:
        end += c.weight
        if value < end:
            return c.name
    raise ValueError(f"value {value} is not below the total weight {end}")
    # END SOLUTION
